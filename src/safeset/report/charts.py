"""Charts for report.html as inline SVG: drawn here, in Python, so the page needs no script and
loads nothing (its Content-Security-Policy stays `default-src 'none'`).

Three shapes cover the report: `bars` (a ranked list, one labelled bar per item), `shares` (one
bar split into parts that add up to a whole, with a legend) and `curves` (distributions over
[0, 1], one line per series). Each is a `<figure>` whose SVG carries a `<title>` and an
`aria-label`; every chart in the report sits beside a table of the same figures, which is the
text equivalent for a screen reader and for anyone who wants the exact numbers.

The SVGs scale with the page (a viewBox, `width="100%"`), labels sit on a line of their own
above their bars, and whatever a label's letters make of its width, nothing is drawn outside
the chart (each clips to its own box), so a chart stays readable at a phone's 390 px as at a
desktop's 1280 px. A report.json is input like any other: counts that are not finite,
non-negative numbers are left out of a chart, and labels are shown as text, never as markup or
as direction controls that would reorder what follows them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from html import escape

from ..model import printable

WIDTH = 420  # the viewBox's width; text is 14 units: 14-15 px on a desktop, 12 px on a phone
MAX_BARS = 15
ROW = 38  # a bar's height with its label
CHAR = 8.5  # a digit's advance at 14 units, and then some: room kept for a value
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
# Bidirectional controls would reverse the text after them (a caption, a value): shown as escapes.
_BIDI = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def colour(name: str, index: int) -> str:
    return COLOURS.get(name, _PALETTE[index % len(_PALETTE)])


def label(value: object, limit: int | None = None) -> str:
    """`value` as HTML text: printable, direction controls as escapes, cut to `limit` characters."""
    text = _BIDI.sub(lambda m: f"\\u{ord(m.group()):04x}", printable(str(value)) or "")
    if limit is not None and len(text) > limit:
        text = text[: limit - 1] + "…"
    return escape(text)


def count(value: object) -> float | None:
    """A chart's figure: a finite number not below zero, else None (left out)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        return None
    return value


def _number(value: float) -> str:
    return f"{value:,}" if isinstance(value, int) else f"{value:,.4g}"


def percent(part: float, whole: float) -> str:
    """A share as the legend shows it: never 0.0% for a part that is there."""
    share = part / whole
    return "<0.1%" if 0 < share < 0.001 else f"{share:.1%}"


def _figure(chart_id: str, title: str, height: int, body: str, note: str = "") -> str:
    ident = escape(f"chart-{chart_id}")
    caption = label(title) + (f" <small>{label(note)}</small>" if note else "")
    return (
        f'<figure class="chart" id="{ident}"><figcaption>{caption}</figcaption>'
        f'<svg viewBox="0 0 {WIDTH} {height}" width="100%" role="img" aria-label="{label(title)}" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{label(title)}</title>'
        f'<clipPath id="{ident}-box"><rect width="{WIDTH}" height="{height}"/></clipPath>'
        f'<g clip-path="url(#{ident}-box)">{body}</g></svg></figure>'
    )


def bars(
    chart_id: str, title: str, items: Sequence[tuple[str, object]], fill: str = _PALETTE[0], ranked: bool = True
) -> str:
    """The items as bars, largest first, the first `MAX_BARS` (the note says how many the table
    beside the chart lists); or, not `ranked`, in their order, the last `MAX_BARS` (a histogram's
    bins, zeros kept; rounds, the latest). Nothing to draw: no chart."""
    drawn = [(str(k), n) for k, v in items if (n := count(v)) is not None and (n or not ranked)]
    if not drawn or not any(v for _, v in drawn):
        return ""
    shown = sorted(drawn, key=lambda kv: -kv[1])[:MAX_BARS] if ranked else drawn[-MAX_BARS:]
    most = max(v for _, v in shown)
    room = WIDTH - CHAR * max(len(_number(v)) for _, v in shown) - 6  # the bar's longest, its value after it
    body = []
    for i, (name, value) in enumerate(shown):
        y = i * ROW
        length = max(1.0, room * value / most) if value else 0.0
        body.append(
            f"<g><title>{label(name)}: {_number(value)}</title>"
            f'<text x="0" y="{y + 14}" font-size="14">{label(name, 48)}</text>'
            f'<rect x="0" y="{y + 19}" width="{length:.1f}" height="12" fill="{fill}"/>'
            f'<text x="{length + 4:.1f}" y="{y + 30}" font-size="13">{_number(value)}</text></g>'
        )
    if len(drawn) > MAX_BARS:
        which = "largest" if ranked else "last"
        note = f"the {MAX_BARS} {which} of {len(drawn):,}; the table lists them"
    else:
        note = ""
    return _figure(chart_id, title, len(shown) * ROW, "".join(body), note)


def shares(chart_id: str, title: str, parts: Sequence[tuple[str, object]]) -> str:
    """One bar split into `parts` (each in its colour, see `colour`), and a legend with each
    part's count and share. Nothing to split: no chart."""
    parts = [(str(k), n) for k, v in parts if (n := count(v))]
    whole = sum(v for _, v in parts)
    if not whole or not math.isfinite(whole):
        return ""
    body, x = [], 0.0
    for i, (name, value) in enumerate(parts):
        width = WIDTH * value / whole
        body.append(
            f'<rect x="{x:.2f}" y="0" width="{max(width, 0.5):.2f}" height="24" fill="{colour(name, i)}">'
            f"<title>{label(name)}: {_number(value)}</title></rect>"
        )
        x += width
    for i, (name, value) in enumerate(parts):
        y = 44 + i * 22
        body.append(
            f'<rect x="0" y="{y - 11}" width="12" height="12" fill="{colour(name, i)}"/>'
            f'<text x="18" y="{y}" font-size="14">{label(name, 24)}: {_number(value)} '
            f"({percent(value, whole)})</text>"
        )
    return _figure(chart_id, title, 36 + len(parts) * 22, "".join(body))


def curves(chart_id: str, title: str, series: Mapping[str, Sequence[object]]) -> str:
    """Distributions over [0, 1], each a histogram of equal bins, drawn as the share of its series
    in each bin (so that 500 removed rows and 5 million kept ones can be compared)."""
    clean = {}
    for name, counts in series.items():
        values = [count(c) for c in counts]
        if values and None not in values and sum(values) > 0 and math.isfinite(sum(values)):
            clean[name] = values
    if not clean:
        return ""
    top, plot = 10, 150
    shares_of = {name: [c / sum(counts) for c in counts] for name, counts in clean.items()}
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
        rows = sum(clean[name])
        body.append(
            f'<polyline points="{points}" fill="none" stroke="{colour(name, i)}" stroke-width="2">'
            f"<title>{label(name)}: {_number(rows)} rows</title></polyline>"
        )
        y = top + plot + 40 + i * 22
        body.append(
            f'<rect x="0" y="{y - 11}" width="12" height="12" fill="{colour(name, i)}"/>'
            f'<text x="18" y="{y}" font-size="14">{label(name, 30)}: {_number(rows)} rows</text>'
        )
    return _figure(chart_id, title, top + plot + 30 + len(clean) * 22, "".join(body), "share of each line's rows")
