"""Charts for report.html as inline SVG: drawn here, in Python, so the page needs no script and
loads nothing (its Content-Security-Policy stays `default-src 'none'`).

Three shapes cover the report: `bars` (a ranked list, one labelled bar per item), `shares` (one
bar split into parts that add up to a whole, with a legend) and `curves` (distributions over
[0, 1], one line per series). Each is a `<figure>` whose SVG carries a `<title>` and an
`aria-label`; every chart in the report sits beside a table of the same figures, which is the
text equivalent for a screen reader and for anyone who wants the exact numbers.

The SVGs scale with the page (a viewBox, `width="100%"`), and labels sit above their bars rather
than beside them, so a chart stays readable at a phone's 390 px as at a desktop's 1280 px.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape

from ..model import printable

WIDTH = 420  # the viewBox's width; text is 14 units: 14-15 px on a desktop, 12 px on a phone
MAX_BARS = 15
ROW = 38  # a bar's height with its label
COLOURS = {
    "keep": "#2e7d32",
    "remove": "#c62828",
    "review": "#ef8f00",
    "ok": "#2e7d32",
    "failed": "#c62828",
    "optout": "#6a1b9a",
    "checked": "#2e7d32",
    "unchecked": "#757575",
}
_PALETTE = ("#1565c0", "#c62828", "#2e7d32", "#ef8f00", "#6a1b9a", "#00838f", "#5d4037", "#757575")


def colour(name: str, index: int) -> str:
    return COLOURS.get(name, _PALETTE[index % len(_PALETTE)])


def _text(value: object, limit: int = 64) -> str:
    text = printable(str(value)) or ""
    return escape(text if len(text) <= limit else text[: limit - 1] + "…")


def _number(value: float) -> str:
    return f"{value:,}" if isinstance(value, int) else f"{value:,.4g}"


def _figure(chart_id: str, title: str, height: int, body: str, note: str = "") -> str:
    caption = escape(title) + (f" <small>{escape(note)}</small>" if note else "")
    return (
        f'<figure class="chart" id="chart-{chart_id}"><figcaption>{caption}</figcaption>'
        f'<svg viewBox="0 0 {WIDTH} {height}" width="100%" role="img" aria-label="{escape(title)}" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>{body}</svg></figure>'
    )


def bars(
    chart_id: str, title: str, items: Sequence[tuple[str, float]], fill: str = _PALETTE[0], ranked: bool = True
) -> str:
    """The items as bars, largest first (`ranked`; else in their order, as a histogram's bins),
    the first `MAX_BARS` shown: the note says how many the table beside the chart lists. Nothing
    to draw: no chart."""
    drawn = [(str(k), v) for k, v in items if v]
    if not drawn:
        return ""
    if ranked:
        drawn.sort(key=lambda kv: -kv[1])
    shown, most = drawn[:MAX_BARS], max(v for _, v in drawn)
    body = []
    for i, (label, value) in enumerate(shown):
        y = i * ROW
        length = max(1.0, WIDTH * value / most)
        body.append(
            f"<g><title>{_text(label, 400)}: {_number(value)}</title>"
            f'<text x="0" y="{y + 14}" font-size="14">{_text(label, 48)}</text>'
            f'<text x="{WIDTH}" y="{y + 14}" font-size="14" text-anchor="end">{_number(value)}</text>'
            f'<rect x="0" y="{y + 19}" width="{length:.1f}" height="12" fill="{fill}"/></g>'
        )
    note = f"the first {MAX_BARS} of {len(drawn):,}; the table lists all" if len(drawn) > MAX_BARS else ""
    return _figure(chart_id, title, len(shown) * ROW, "".join(body), note)


def shares(chart_id: str, title: str, parts: Sequence[tuple[str, float]]) -> str:
    """One bar split into `parts` (each in its colour, see `colour`), and a legend with each
    part's count and share. Nothing to split: no chart."""
    parts = [(str(k), v) for k, v in parts if v]
    whole = sum(v for _, v in parts)
    if not whole:
        return ""
    body, x = [], 0.0
    for i, (label, value) in enumerate(parts):
        width = WIDTH * value / whole
        body.append(
            f'<rect x="{x:.2f}" y="0" width="{max(width, 0.5):.2f}" height="24" fill="{colour(label, i)}">'
            f"<title>{_text(label, 400)}: {_number(value)}</title></rect>"
        )
        x += width
    for i, (label, value) in enumerate(parts):
        y = 44 + i * 22
        body.append(
            f'<rect x="0" y="{y - 11}" width="12" height="12" fill="{colour(label, i)}"/>'
            f'<text x="18" y="{y}" font-size="14">{_text(label, 30)}</text>'
            f'<text x="{WIDTH}" y="{y}" font-size="14" text-anchor="end">'
            f"{_number(value)} ({value / whole:.1%})</text>"
        )
    return _figure(chart_id, title, 36 + len(parts) * 22, "".join(body))


def curves(chart_id: str, title: str, series: Mapping[str, Sequence[int]]) -> str:
    """Distributions over [0, 1], each a histogram of equal bins, drawn as the share of its series
    in each bin (so that 500 removed rows and 5 million kept ones can be compared)."""
    series = {name: counts for name, counts in series.items() if sum(counts)}
    if not series:
        return ""
    top, plot = 10, 150
    shares_of = {name: [c / sum(counts) for c in counts] for name, counts in series.items()}
    highest = max(max(s) for s in shares_of.values()) or 1.0
    body = [
        f'<line x1="0" y1="{top + plot}" x2="{WIDTH}" y2="{top + plot}" stroke="#999"/>',
        *(
            f'<text x="{WIDTH * t:.0f}" y="{top + plot + 16}" font-size="13" '
            f'text-anchor="{"start" if t == 0 else "end" if t == 1 else "middle"}">{t:g}</text>'
            for t in (0, 0.25, 0.5, 0.75, 1)
        ),
    ]
    for i, (name, values) in enumerate(shares_of.items()):
        step = WIDTH / len(values)
        points = " ".join(
            f"{x:.1f},{top + plot - plot * v / highest:.1f}"
            for b, v in enumerate(values)
            for x in (b * step, (b + 1) * step)
        )
        body.append(
            f'<polyline points="{points}" fill="none" stroke="{colour(name, i)}" stroke-width="2">'
            f"<title>{_text(name, 400)}: {sum(series[name]):,} rows</title></polyline>"
        )
        y = top + plot + 40 + i * 22
        body.append(
            f'<rect x="0" y="{y - 11}" width="12" height="12" fill="{colour(name, i)}"/>'
            f'<text x="18" y="{y}" font-size="14">{_text(name, 30)}: {sum(series[name]):,} rows</text>'
        )
    return _figure(chart_id, title, top + plot + 30 + len(series) * 22, "".join(body), "share of each line's rows")
