"""report.html: the report as plain, self-contained HTML.

Counts, hashes, row ids and URLs only, as text. No image is ever embedded or linked: the page's
Content-Security-Policy forbids loading anything at all, so even a URL pasted into it cannot fetch.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from html import escape
from typing import Any

from .charts import bars, colour, curves, label, shares

_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; padding: 0 1em; max-width: 72em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; margin: .5em 0; } td, th { padding: .2em .8em; text-align: left; }
th { background: #f2f2f2; } tr:nth-child(even) td { background: #fafafa; }
td.n { text-align: right; font-variant-numeric: tabular-nums; } td.h { overflow-wrap: anywhere; min-width: 12em; }
figure.chart { max-width: 32em; margin: 1em 0 1.5em; } figure.chart svg { display: block; }
figcaption { font-weight: 600; margin-bottom: .4em; overflow-wrap: anywhere; }
figcaption small { font-weight: normal; color: #555; }
.charts { display: flex; flex-wrap: wrap; gap: 0 3em; } .charts > figure { flex: 1 1 20em; min-width: 0; }
.ok { color: #176f2c; } .bad { color: #a11; } code { font-size: .92em; } p { overflow-wrap: anywhere; }
@media (max-width: 40em) { body { padding: 0 .6em; } table { font-size: 13px; } td, th { padding: .2em .4em; } }
"""
# the row of the fetch table that sums the domains past the first hundred: no domain to chart
_OTHERS = re.compile(r"^\([\d,]+ other domains\)$")


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return f"<td>{'yes' if value else 'no'}</td>"
    if isinstance(value, (int, float)):
        return f'<td class="n">{value:,}</td>'
    text = label(value)
    unbroken = len(text) > 32 and " " not in text  # a hash, a URL, a path: wrapped anywhere
    return f"<td class='h'>{text}</td>" if unbroken else f"<td>{text}</td>"


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]], table_id: str) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows)
    return (
        f'<div class="scroll"><table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'
    )


# Rows shown of the tables with one row per shard or input file: a LAION-sized scan has hundreds of
# thousands, more than a browser can lay out; report.json lists them all.
MAX_LISTED = 1000


def _listing(headers: Sequence[str], rows: Sequence[Sequence[Any]], table_id: str, what: str) -> str:
    shown = _table(headers, rows[:MAX_LISTED], table_id)
    if len(rows) > MAX_LISTED:
        shown += f"<p>The first {MAX_LISTED:,} of {len(rows):,} {what}; report.json lists them all.</p>"
    return shown


def _section(title: str, content: str) -> str:
    return f"<section><h2>{escape(title)}</h2>{content}</section>"


def _charts(*figures: str) -> str:
    """Charts side by side where the page is wide enough, one under another where it is not."""
    shown = "".join(figures)
    return f'<div class="charts">{shown}</div>' if shown else ""


def _summary_section(report: dict[str, Any]) -> str:
    totals, conservation = report["totals"], report["conservation"]
    holds = conservation["holds"]
    checked = totals["rows"] - totals["unchecked"]
    return _section(
        "Summary",
        _charts(
            shares("decisions", "Decisions", [(d, totals[d]) for d in ("keep", "remove", "review")]),
            shares("coverage", "Coverage: rows checked against the banks", [
                ("checked", checked), ("unchecked", totals["unchecked"])
            ]),
        )
        + _table(
            ["rows in", "keep", "remove", "review", "checked", "unchecked"],
            [[totals[k] for k in ("rows", "keep", "remove", "review")] + [checked, totals["unchecked"]]],
            "totals",
        )
        + f'<p id="conservation" class="{"ok" if holds else "bad"}">Conservation '
        + ("holds" if holds else "FAILS")
        + f": {conservation['rows_in']:,} rows in, {conservation['results_rows']:,} results, "
        f"{conservation['keep_remove_review']:,} kept + removed + held for review, over "
        f"{conservation['shards']:,} shard(s).</p>"
        + (
            _table(
                ["shard", "rows in", "results", "decided"],
                [[f["shard"], f["declared"], f["results"], f["decided"]] for f in conservation["failures"]],
                "conservation-failures",
            )
            if conservation.get("failures")
            else ""
        ),
    )  # fmt: skip


def _banks_section(banks: list[dict]) -> str:
    return _section(
        "Banks",
        _charts(bars("banks", "Rows matched, by bank", [(b["name"], b["items_matched"]) for b in banks]))
        + _table(
            ["bank", "version", "label", "listed", "items matched", "entries matched", "matches by type", "sha256"],
            [
                [
                    b["name"],
                    b["version"],
                    b["label"],
                    sum(b["counts"].values()),
                    b["items_matched"],
                    b["entries_matched"],
                    ", ".join(f"{t}: {n}" for t, n in b["matches"].items()) or "-",
                    b["sha256"],
                ]
                for b in banks
            ],
            "banks",
        ),
    )


def _coverage_section(report: dict[str, Any]) -> str:
    """Rows no image of which was matched, by why (a row may have several reasons)."""
    unchecked = report["unchecked"]
    return _section(
        "Unchecked",
        _charts(bars("unchecked", "Unchecked rows, by why", list(unchecked.items()), colour("unchecked", 0)))
        + _table(["condition", "rows"], unchecked.items(), "unchecked"),
    )


def _fetch_section(fetch: dict | None) -> str:
    if not fetch:
        return ""
    rate = "-" if fetch["success_rate"] is None else f"{fetch['success_rate']:.1%}"
    by_outcome = {o: sum(d[o] for d in fetch["domains"]) for o in ("ok", "failed", "optout")}
    summary = _table(
        ["requests", "retries", "bytes", "success rate", "downloaded", "failed", "opt-outs"],
        [[fetch["requests"], fetch["retries"], fetch["bytes"], rate, *by_outcome.values()]],
        "fetch",
    )
    charts = _charts(
        shares("fetch", "Downloads", list(by_outcome.items())),
        bars(
            "fetch-failing",
            "Failed downloads, by domain",
            [(d["domain"], d["failed"]) for d in fetch["domains"] if not _OTHERS.match(d["domain"])],
            colour("failed", 0),
        ),
    )
    outcomes = _table(["outcome", "rows"], fetch["outcomes"].items(), "fetch-outcomes")
    domains = _table(
        ["domain", "ok", "failed", "opt-out"],
        [[d["domain"], d["ok"], d["failed"], d["optout"]] for d in fetch["domains"]],
        "fetch-domains",
    )
    return _section("Fetching", charts + summary + outcomes + domains)


def _signals_section(report: dict[str, Any]) -> str:
    """Policy rules (rows fired, rows a signal they read was missing from), the rows each of their
    conditions on a signal holds for, and the signals the results hold, by decision (quantiles and
    a histogram for scores in [0, 1])."""
    rules, signals, conditions = report.get("rules", []), report.get("signals", {}), report.get("conditions", {})
    if not rules and not signals:
        return ""
    quantiles = ("p01", "p10", "p50", "p90", "p99")
    rows = [
        [name, outcome, d["rows"], f"{d['mean']:.4g}", f"{d['min']:.4g}", f"{d['max']:.4g}"]
        + [d.get(q, "-") for q in quantiles]
        for name, outcomes in signals.items()
        for outcome, d in outcomes.items()
    ]
    drawn = {
        name: {o: d["histogram"] for o, d in outcomes.items()}
        for name, outcomes in signals.items()
        if all(isinstance(d.get("histogram"), list) for d in outcomes.values())
    }
    charts = _charts(*(curves(f"signal-{i}", f"{name}, by decision", h) for i, (name, h) in enumerate(drawn.items())))
    bins = max((len(h) for outcomes in drawn.values() for h in outcomes.values()), default=0)
    spread = (
        _table(
            ["signal", "decision", *(f"{b / bins:g}-{(b + 1) / bins:g}" for b in range(bins))],
            [[name, o, *h] for name, outcomes in drawn.items() for o, h in outcomes.items()],
            "signal-histograms",
        )
        if bins
        else ""
    )
    return _section(
        "Rules and signals",
        _charts(bars("rules", "Rows each rule fired on", [(r["rule"], r["rows"]) for r in rules]))
        + _table(
            ["rule", "action", "rows", "signals read", "rows missing a signal"],
            [
                [r["rule"], r["action"], r["rows"], ", ".join(r["signals"]) or "-", r["rows_missing_a_signal"]]
                for r in rules
            ],
            "rules",
        )
        + _table(["condition on a signal", "rows it holds for"], conditions.items(), "conditions")
        + charts
        + _table(["signal", "decision", "rows", "mean", "min", "max", *quantiles], rows, "signals")
        + spread,
    )


def _expansion_section(rounds: list[dict] | None) -> str:
    """What each neighbour-expansion round searched and found (`safeset expand`)."""
    if not rounds:
        return ""
    summary = _table(
        ["round", "seeds given", "searched", "without embedding", "k", "min similarity", "candidate rows",
         "per seed (min / median / max)", "embedding rows", "without audit row", "audit rows without embedding"],
        [
            [
                r["round"], r["seeds"]["given"], r["seeds"]["searched"], r["seeds"]["without_embedding"], r["k"],
                r["min_similarity"], r["candidates"]["rows"],
                " / ".join(str(r["candidates"]["per_seed"][k]) for k in ("min", "median", "max")),
                r["embedding_rows"], r["embedding_rows_without_audit_row"], r["audit_rows_without_embedding"],
            ]
            for r in rounds
        ],
        "expansion",
    )  # fmt: skip
    charts = _charts(
        *(
            bars(
                f"expansion-{r['round']}",
                f"Round {r['round']}: candidate pairs by similarity",
                [(f"{b['from']}-{b['to']}", b["pairs"]) for b in r["candidates"]["similarity"]],
                ranked=False,
            )
            for r in rounds[-4:]
        )
    )
    histogram = _table(
        ["round", "similarity", "pairs"],
        [[r["round"], f"{b['from']}-{b['to']}", b["pairs"]] for r in rounds for b in r["candidates"]["similarity"]],
        "expansion-similarity",
    )
    return _section("Neighbour expansion", summary + charts + histogram)


def _arrow(transition: str) -> str:
    return transition.replace("->", " → ")


def _rounds_section(rounds: list[dict]) -> str:
    """The decide rounds OUT has seen, latest first: what decided each (policy, banks, the
    verdicts in force) and the rows whose decision it changed, by transition (with its reasons)."""
    if len(rounds) < 2 and not any("verdicts" in r for r in rounds):
        return ""
    changed = [(r, t, sum(reasons.values()), reasons) for r in rounds for t, reasons in r["transitions"].items()]
    latest = list(reversed(rounds))
    return _section(
        "Rounds",
        _charts(
            bars(
                "transitions",
                "Decisions changed, by round and transition",
                [(f"round {r['round']}: {_arrow(t)}", n) for r, t, n, _ in changed],
                ranked=False,
            )
        )
        + _listing(
            ["round", "kind", "time", "policy", "banks", "verdicts in force", "rows", "decisions changed"],
            [
                [
                    r["round"],
                    r["kind"],
                    r["time"],
                    r["policy"]["name"],
                    len(r["banks"]),
                    ", ".join(f"{k}: {n:,}" for k, n in r.get("verdicts", {}).get("in_log", {}).items()) or "-",
                    r["rows"],
                    sum(sum(reasons.values()) for reasons in r["transitions"].values()),
                ]
                for r in latest
            ],
            "rounds",
            "rounds, latest first",
        )
        + _listing(
            ["round", "transition", "rows", "by reason"],
            [
                [r["round"], _arrow(t), n, ", ".join(f"{reason}: {k:,}" for reason, k in reasons.items())]
                for r, t, n, reasons in reversed(changed)
            ],
            "transitions",
            "transitions, latest round first",
        ),
    )


def _videos_section(videos: dict[str, int] | None) -> str:
    """Rows holding a video, by decision, and the frames hashed (absent from a scan without one)."""
    if not videos or not videos["rows"]:
        return ""
    decided = [(d, videos[d]) for d in ("keep", "remove", "review")]
    return _section(
        "Videos",
        f"<p>{videos['rows']:,} row(s) held a video; {videos['frames']:,} frame(s) hashed (vPDQ).</p>"
        + _table(["decision", "rows"], decided, "videos"),
    )


def _shards_section(shards: list[dict]) -> str:
    """A summary of every shard, then the first `MAX_LISTED` (report.json lists them all)."""
    sizes = sorted(s["rows"] for s in shards)
    touched = sum(1 for s in shards if s["remove"] or s["review"])
    summary = (
        f"<p>{len(shards):,} shard(s); rows per shard: least {sizes[0]:,}, median {sizes[len(sizes) // 2]:,}, "
        f"most {sizes[-1]:,}; {touched:,} with rows removed or held for review.</p>"
        if shards
        else ""
    )
    return _section(
        "Shards",
        summary
        + _listing(
            ["part", "shard", "kind", "rows", "keep", "remove", "review"],
            [[s["part"], s["shard"], s["kind"], s["rows"], s["keep"], s["remove"], s["review"]] for s in shards],
            "shards",
            "shards",
        ),
    )


def render_html(report: dict[str, Any]) -> str:
    reasons = report["reasons"]
    parts = [
        _summary_section(report),
        _banks_section(report["banks"]),
        _section(
            "Reasons",
            _charts(bars("reasons", "Rows by reason", list(reasons.items())))
            + _table(["reason", "rows"], reasons.items(), "reasons"),
        ),
        _signals_section(report),
        _section("Statuses", _table(["status", "rows"], report["statuses"].items(), "statuses")),
        _videos_section(report.get("videos")),
        _coverage_section(report),
        _section("Errors", _table(["error", "rows"], report["errors"].items(), "errors")),
        _section(
            "Domains of removed and held items",
            _table(
                ["domain", "remove", "review"],
                [[d["domain"], d["remove"], d["review"]] for d in report["domains"]],
                "domains",
            ),
        ),
        _fetch_section(report.get("fetch")),
        _expansion_section(report.get("expansion")),
        _section(
            "Quarantined list entries",
            "<p>Each matched more rows than the policy's flood limit: its matches were held for review, not "
            "acted on. Named by bank and a tag of the entry, never by the entry.</p>"
            + _charts(
                bars(
                    "quarantined",
                    "Rows held, by quarantined entry",
                    [(f"{q['bank']}:{q['entry']}", q["rows"]) for q in report["quarantined"]],
                    colour("review", 0),
                )
            )
            + _table(
                ["bank", "entry tag", "rows"],
                [[q["bank"], q["entry"], q["rows"]] for q in report["quarantined"]],
                "quarantined",
            ),
        )
        if report.get("quarantined")
        else "",
        _rounds_section(report.get("rounds", [])),
        _shards_section(report["shards"]),
        _section(
            "Input files",
            _listing(
                ["file", "bytes", "sha256"],
                [[f["path"], f.get("bytes", "-"), f.get("sha256", "-")] for f in report["inputs"]],
                "inputs",
                "input files",
            ),
        ),
        _section(
            "Files not read",
            "<p>Found beside the data and left out; none of them reaches the clean release.</p>"
            + _listing(
                ["file", "why"],
                [[f["path"], f["reason"]] for f in report.get("ignored_files", [])],
                "ignored",
                "files not read",
            ),
        )
        if report.get("ignored_files")
        else "",
        _section(
            "Problems",
            _table(["problem"], [[p] for p in report["problems"]], "problems")
            + (
                f"<p>{report['problems_total']:,} in all.</p>"
                if report["problems_total"] > len(report["problems"])
                else ""
            ),
        ),
        _section("Settings", _table(["setting", "value"], report["settings"].items(), "settings")),
        _section(
            "Policy",
            _table(
                ["rule", "action"],
                [["match (default)", report["policy"]["match"]["default"]]]
                + [[f"match in {b}", a] for b, a in report["policy"]["match"]["banks"].items()]
                + [[f"unchecked: {c}", a] for c, a in report["policy"]["unchecked"].items()]
                + [[f"[{s}]", report["policy"].get(s, {}).get("action", "review")] for s in ("copies", "expand")],
                "policy",
            ),
        ),
        _section("Versions", _table(["package", "version"], report["versions"].items(), "versions")),
    ]
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">"
        f"<title>safeset report</title><style>{_STYLE}</style></head><body>"
        f"<h1>safeset audit report</h1><p>Created {escape(report['created'])}. "
        "Hashes, row ids and URLs only: no image is shown or linked.</p>"
        + "".join(f'<p class="bad warning"><strong>{escape(w)}</strong></p>' for w in report.get("warnings", []))
        + "".join(parts)
        + "</body></html>\n"
    )
