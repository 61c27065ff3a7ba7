"""The audit report: counts, conservation, coverage, per-bank / per-reason / per-domain tables, and
everything needed to reproduce the run (input and bank checksums, thresholds, versions).

Counted where the rows are: each shard worker counts its own results (`ReportBuilder.add`) and
keeps the counts in its done-marker; the scan merges those (`merge`), so the report costs one
small record per shard, not a second pass over billions of rows. Conservation is computed here
from figures that could disagree (rows the inputs declare, rows the results files hold, decisions
counted in them); if it fails, the report says so and the scan fails after writing it.
"""

from __future__ import annotations

import platform
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..banks.columns import flat, struct_field
from ..errors import SafesetError
from ..hashing import url_host
from ..hashing.columns import whole
from ..model import Decision, Status
from ..policy import Policy
from ..policy.rules import Condition, Rule, signal_conditions, signal_entries, signal_holds, signal_values

TOP_DOMAINS = 100
# How a fetched row's status counts in the fetch section: its download worked (whatever the bytes
# then were), failed, or was not made (an opt-out). Rows never handed to the fetcher count nowhere.
_FETCH_OUTCOMES = {
    "ok": "ok",
    "decode_failed": "ok",
    "unsupported_media": "ok",
    "fetch_failed": "failed",
    "skipped_optout": "optout",
}
MAX_PROBLEMS = 1000
HISTOGRAM_BINS = 20  # a signal's distribution in report.json: bins of 0.05 over [0, 1]
_PACKAGES = ("numpy", "pillow", "pyarrow", "pdqhash", "click", "rich")


class ConservationError(SafesetError):
    """Rows went missing or were counted twice: a bug, never a property of the input."""


def _input_files(summaries: Sequence[dict]) -> list[dict]:
    """Each input file once, with its size and checksum (a table read in parts is hashed by one)."""
    files: dict[str, dict] = {}
    for summary in summaries:
        for record in summary["files"]:
            if "sha256" in record or record["path"] not in files:
                files[record["path"]] = {**record, "kind": summary["kind"]}
    return [files[path] for path in sorted(files)]


def versions() -> dict[str, str]:
    found = {"safeset": _version("safeset"), "python": platform.python_version()}
    found.update({p: _version(p) for p in _PACKAGES})
    return found


def _version(package: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def value_counts(column: pa.Array | pa.ChunkedArray) -> dict[str, int]:
    """How often each value of a column occurs."""
    counted = pc.value_counts(column)
    return dict(zip(counted.field("values").to_pylist(), counted.field("counts").to_pylist(), strict=True))


def shard_counts(table: pa.Table, fetched: bool, policy: Policy) -> dict[str, Any]:
    """What a shard's done-marker keeps of its results: its decisions and its report counts
    (`policy`: the one that decided them, whose conditions on signals are counted)."""
    counted = ReportBuilder()
    counted.add(table, fetched, signal_conditions(policy.rules))
    decisions = value_counts(table["decision"])
    return {"decisions": {str(d): decisions.get(str(d), 0) for d in Decision}, "counts": counted.counts()}


def condition_counts(part: pa.Table, conditions: Sequence[Condition]) -> dict[str, int]:
    """The rows of a results part each condition on a signal holds for."""
    values = signal_values(part, sorted({c.name for c in conditions}))
    return {str(c): int(signal_holds(c, values, part.num_rows).sum()) for c in conditions}


class ReportBuilder:
    def __init__(self) -> None:
        self.rows = 0
        self.decisions: Counter[str] = Counter()
        self.statuses: Counter[str] = Counter()
        self.reasons: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.unchecked: Counter[str] = Counter()
        self.unchecked_rows = 0
        self.bank_items: Counter[str] = Counter()
        self.bank_matches: dict[str, Counter[str]] = defaultdict(Counter)
        self.bank_entries: dict[str, set[str]] = defaultdict(set)
        self.domains: dict[str, Counter[str]] = defaultdict(Counter)
        self.fetch_domains: dict[str, Counter[str]] = defaultdict(Counter)
        self.part_rows: dict[str, int] = {}
        self.signal_sets: Counter[str] = Counter()  # rows by the signals they hold ("a,b"; "" none)
        self.signal_values: dict[str, Counter[str]] = defaultdict(Counter)  # see `_signals`
        self.conditions: Counter[str] = Counter()  # rows each condition on a signal holds for
        self.videos: Counter[str] = Counter()  # rows holding a video, by decision; "frames": frames hashed

    _COUNTERS = (
        "decisions", "statuses", "reasons", "errors", "unchecked", "bank_items", "signal_sets", "conditions", "videos"
    )  # fmt: skip
    _TABLES = ("bank_matches", "domains", "fetch_domains")

    def counts(self) -> dict[str, Any]:
        """What `add` counted, as JSON, for `merge`."""
        return {
            "rows": self.rows,
            "unchecked_rows": self.unchecked_rows,
            **{name: dict(sorted(getattr(self, name).items())) for name in self._COUNTERS},
            **{
                name: {k: dict(sorted(v.items())) for k, v in sorted(getattr(self, name).items())}
                for name in self._TABLES
            },
            "bank_entries": {bank: sorted(entries) for bank, entries in sorted(self.bank_entries.items())},
            "signal_values": {key: dict(sorted(c.items())) for key, c in sorted(self.signal_values.items())},
        }

    def merge(self, counts: dict[str, Any]) -> None:
        """Add the `counts()` of a shard's own builder."""
        self.rows += counts["rows"]
        self.unchecked_rows += counts["unchecked_rows"]
        for name in self._COUNTERS:
            getattr(self, name).update(counts.get(name, {}))
        for name in self._TABLES:
            for key, counter in counts[name].items():
                getattr(self, name)[key].update(counter)
        for bank, entries in counts["bank_entries"].items():
            self.bank_entries[bank].update(entries)
        for key, counter in counts.get("signal_values", {}).items():
            self._merge_values(self.signal_values[key], counter)

    @staticmethod
    def _merge_values(into: Counter[str], counter: dict[str, Any]) -> None:
        for field, value in counter.items():
            if field in ("min", "max"):
                into[field] = (min if field == "min" else max)(into.get(field, value), value)
            else:
                into[field] += value

    def part_written(self, shard: str, rows: int) -> None:
        """The row count of a shard's results file, as the file itself says (for conservation)."""
        self.part_rows[shard] = rows

    def add(self, part: pa.Table, fetched: bool = False, conditions: Sequence[Condition] = ()) -> None:
        """Count one results part; `fetched` when its rows' images were downloaded by the scan.
        Column by column: per-row Python only for rows that matched or were not kept, and for
        every row of a fetched part (its domains)."""
        self.rows += part.num_rows
        status, error, decision = part["status"], part["error"], part["decision"]
        self.statuses.update(value_counts(status))
        self.decisions.update(value_counts(decision))
        erred = pc.fill_null(pc.not_equal(error, ""), False)
        if pc.any(erred).as_py():
            # counted by (status, error) codes, and only the distinct pairs named in Python: a
            # metadata table's every row holds the same "not fetched" error
            statuses = pc.dictionary_encode(whole(status.filter(erred)))
            errors = pc.dictionary_encode(whole(error.filter(erred)))
            width = len(errors.dictionary)
            codes = statuses.indices.to_numpy().astype(np.int64) * width + errors.indices.to_numpy()
            pairs, counts = np.unique(codes, return_counts=True)
            names, texts = statuses.dictionary.to_pylist(), errors.dictionary.to_pylist()
            for pair, count in zip(pairs.tolist(), counts.tolist(), strict=True):
                self.errors[f"{names[pair // width]}: {texts[pair % width].split(':', 1)[0]}"] += count
        reasons = pc.list_flatten(part["reasons"])
        self.reasons.update(value_counts(reasons))
        unchecked = pc.starts_with(reasons, "unchecked:")
        self.unchecked.update(value_counts(pc.utf8_slice_codeunits(reasons.filter(unchecked), len("unchecked:"))))
        owners = pc.list_parent_indices(part["reasons"]).filter(unchecked)
        self.unchecked_rows += len(pc.unique(owners))
        self._signals(part["signals"], decision)
        self._videos(part, decision)
        self.conditions.update(condition_counts(part, conditions))
        matched = pc.greater(pc.list_value_length(part["matches"]), 0)
        for matches in part["matches"].filter(matched).to_pylist():
            for match in matches:
                self.bank_matches[match["bank"]][match["signal_type"]] += 1
                self.bank_entries[match["bank"]].add(f"{match['signal_type']}:{match['entry']}")
            self.bank_items.update({match["bank"] for match in matches})
        held = pc.and_(pc.not_equal(decision, str(Decision.KEEP)), pc.is_valid(part["url"]))
        held = pc.and_(held, pc.not_equal(part["url"], ""))
        for url, decided in zip(part["url"].filter(held).to_pylist(), decision.filter(held).to_pylist(), strict=True):
            self.domains[url_host(url) or "(no host)"][decided] += 1
        if fetched:
            urls, statuses = part["url"].to_pylist(), status.to_pylist()
            for url, outcome in zip(urls, (_FETCH_OUTCOMES.get(s) for s in statuses), strict=True):
                if outcome and url:
                    self.fetch_domains[url_host(url) or "(no host)"][outcome] += 1

    def _videos(self, part: pa.Table, decision: pa.ChunkedArray) -> None:
        """Rows holding a video (their own, or a payload's: hashed, or not wholly), by decision, and
        the frames hashed."""

        def videos(frames: pa.Array, status: pa.Array) -> np.ndarray:
            found = pc.or_(pc.is_valid(frames), pc.equal(status, str(Status.VIDEO_INCOMPLETE)))
            return pc.fill_null(found, False).to_numpy(zero_copy_only=False)

        video = videos(whole(part["frames"]), whole(part["status"]))
        frames = int(pc.sum(pc.list_value_length(part["frames"])).as_py() or 0)
        payloads, parents = flat(part["payloads"])
        if len(payloads):
            held = struct_field(payloads, "frames")
            video[parents[videos(held, struct_field(payloads, "status"))]] = True
            frames += int(pc.sum(pc.list_value_length(held)).as_py() or 0)
        if video.any():
            self.videos.update(value_counts(whole(decision).filter(pa.array(video))))
            self.videos["frames"] += frames

    def _signals(self, signals: pa.ChunkedArray, decision: pa.ChunkedArray) -> None:
        """Count rows by the set of signals they hold (so that a rule's rows with a missing input
        can be counted from any merge of parts), and each signal's values by decision: how many,
        their sum, least and greatest, and a histogram of 1,000 bins over [0, 1] (where scores
        lie) with the values outside it counted apart. All of it adds up across parts."""
        rows = len(signals)
        if rows == 0:
            return
        owners, held, values, _ = signal_entries(signals)
        if len(owners) == 0:
            self.signal_sets[""] += rows
            return
        keys = pc.dictionary_encode(held)
        names, codes = keys.dictionary.to_pylist(), keys.indices.to_numpy().astype(np.int64)
        if len(names) <= 62:  # the names a row holds as one bit mask per row
            masks = np.zeros(rows, np.int64)
            np.bitwise_or.at(masks, owners, np.left_shift(1, codes))
            for mask, count in zip(*np.unique(masks, return_counts=True), strict=True):
                held = ",".join(sorted(n for bit, n in enumerate(names) if int(mask) >> bit & 1))
                self.signal_sets[held] += int(count)
        else:  # more names than bits: row by row
            per_row: dict[int, set[str]] = defaultdict(set)
            for owner, code in zip(owners.tolist(), codes.tolist(), strict=True):
                per_row[owner].add(names[code])
            self.signal_sets.update(",".join(sorted(held)) for held in per_row.values())
            self.signal_sets[""] += rows - len(per_row)
        decided = pc.dictionary_encode(whole(decision)).take(pa.array(owners))
        outcomes, which = decided.dictionary.to_pylist(), decided.indices.to_numpy()
        inside = (values >= 0) & (values <= 1)
        bins = np.minimum((values * 1000).astype(np.int64, copy=False), 999)
        for code, name in enumerate(names):
            for d, outcome in enumerate(outcomes):
                chosen = (codes == code) & (which == d)
                if not chosen.any():
                    continue
                found = values[chosen]
                spread = np.bincount(bins[chosen & inside], minlength=1000)
                self._merge_values(
                    self.signal_values[f"{name}|{outcome}"],
                    {
                        "count": len(found),
                        "sum": float(found.sum()),
                        "min": float(found.min()),
                        "max": float(found.max()),
                        "outside": int((~inside[chosen]).sum()),
                    }
                    | {f"bin{b}": int(spread[b]) for b in np.flatnonzero(spread)},
                )

    def _signal_section(self, rules: Sequence[Rule]) -> dict[str, Any]:
        """Per signal and decision: count, mean, least, greatest and, for scores in [0, 1],
        quantiles to a thousandth and a histogram of `HISTOGRAM_BINS` equal bins; per rule: rows
        it fired on, and rows a signal it reads was missing from (its conditions on that signal
        were false there)."""
        distributions: dict[str, dict[str, Any]] = defaultdict(dict)
        for key, counter in sorted(self.signal_values.items()):
            name, outcome = key.split("|", 1)
            count = counter["count"]
            shown: dict[str, Any] = {
                "rows": count,
                "mean": counter["sum"] / count,
                "min": counter["min"],
                "max": counter["max"],
            }
            if not counter["outside"]:
                spread = np.array([counter.get(f"bin{b}", 0) for b in range(1000)])
                cumulative = np.cumsum(spread)
                for q in (0.01, 0.1, 0.5, 0.9, 0.99):
                    shown[f"p{round(q * 100):02d}"] = float(np.searchsorted(cumulative, q * count) + 1) / 1000
                shown["histogram"] = spread.reshape(HISTOGRAM_BINS, -1).sum(axis=1).tolist()
            distributions[name][outcome] = shown
        shown_rules = []
        for rule in rules:
            held_by = (set(filter(None, held.split(","))) for held in self.signal_sets)
            missing = sum(n for n, held in zip(self.signal_sets.values(), held_by, strict=True) if rule.signals - held)
            shown_rules.append(
                {"rule": rule.name, "action": str(rule.action), "rows": self.reasons.get(rule.reason, 0)}
                | {"signals": sorted(rule.signals), "rows_missing_a_signal": missing}
            )
        return {"rules": shown_rules, "conditions": dict(self.conditions), "signals": dict(distributions)}

    def finish(
        self,
        *,
        summaries: Sequence[dict],
        banks: Sequence[dict],
        policy: Policy,
        settings: dict,
        created: str,
        timings: dict,
        ignored: Sequence[dict] = (),
        rounds: Sequence[dict] = (),
    ) -> dict[str, Any]:
        """`rounds`: the decide rounds OUT has seen, the scan's first (see `pipeline.decide`)."""
        totals = {"rows": self.rows, **{str(d): self.decisions.get(str(d), 0) for d in Decision}}
        totals["unchecked"] = self.unchecked_rows
        problems = [p for s in summaries for p in s["problems"]]
        warnings = []
        if not banks:
            warnings.append(
                "No bank was used: no row was matched against any list. Add one with `safeset bank add`, or enable one."
            )
        unused = sorted(set(policy.match_banks) - {bank["name"] for bank in banks})
        if unused:
            warnings.append(
                f"The policy has rules for bank(s) {', '.join(unused)}, which this scan did not use (disabled, "
                "or not chosen with --bank): those rules applied to nothing."
            )
        worded = [rule.name for rule in policy.rules if any(c.kind == "keyword" for c in rule.conditions)]
        if worded and not any(bank["counts"].get("keyword") for bank in banks):
            warnings.append(
                f"Rule(s) {', '.join(worded)} read keyword matches, and no keyword bank was used: no caption "
                "was looked at. Add one with `safeset bank add NAME FILE --type keyword`."
            )
        if self.rows and self.unchecked_rows == self.rows:
            worst = ", ".join(f"{k} {v:,}" for k, v in sorted(self.unchecked.items(), key=lambda kv: -kv[1])[:3])
            warnings.append(
                f"Every row ({self.rows:,}) is unchecked: no image of any row was hashed and matched "
                f"({worst}); only URL banks could match."
            )
        domains = sorted(self.domains.items(), key=lambda kv: (-sum(kv[1].values()), kv[0]))[:TOP_DOMAINS]
        return {
            "warnings": warnings,
            "created": created,
            "versions": versions(),
            "settings": settings,
            "policy": {**policy.to_dict(), "sha256": policy.sha256},
            "banks": [
                {
                    **bank,
                    "items_matched": self.bank_items.get(bank["name"], 0),
                    "matches": dict(sorted(self.bank_matches.get(bank["name"], Counter()).items())),
                    "entries_matched": len(self.bank_entries.get(bank["name"], ())),
                }
                for bank in banks
            ],
            "totals": totals,
            "conservation": self._conservation(summaries),
            "statuses": dict(sorted(self.statuses.items())),
            "reasons": dict(sorted(self.reasons.items(), key=lambda kv: (-kv[1], kv[0]))),
            "errors": dict(sorted(self.errors.items(), key=lambda kv: (-kv[1], kv[0]))),
            "unchecked": dict(sorted(self.unchecked.items())),
            "videos": {
                "rows": sum(n for k, n in self.videos.items() if k != "frames"),
                "frames": self.videos.get("frames", 0),
                **{str(d): self.videos.get(str(d), 0) for d in Decision},
            },
            "domains": [
                {"domain": d, "remove": c.get(Decision.REMOVE, 0), "review": c.get(Decision.REVIEW, 0)}
                for d, c in domains
            ],
            **self._signal_section(policy.rules),
            "rounds": list(rounds),
            "inputs": _input_files(summaries),
            "ignored_files": list(ignored)[:MAX_PROBLEMS],
            "ignored_files_total": len(ignored),
            "shards": [
                {"part": s["part"], "shard": s["shard"], "kind": s["kind"], "rows": s["rows"], **s["decisions"]}
                for s in summaries
            ],
            "fetch": self._fetch_section(summaries),
            "problems": problems[:MAX_PROBLEMS],
            "problems_total": len(problems),
            "timings": timings,
        }

    def _fetch_section(self, summaries: Sequence[dict]) -> dict | None:
        fetched = [s["fetch"] for s in summaries if "fetch" in s]
        if not fetched:
            return None
        outcomes: Counter[str] = Counter()
        for f in fetched:
            outcomes.update(f["outcomes"])
        optouts = self.statuses.get("skipped_optout", 0)
        attempted = sum(outcomes.values()) - optouts
        ranked = sorted(self.fetch_domains.items(), key=lambda kv: (-sum(kv[1].values()), kv[0]))
        domains = ranked[:TOP_DOMAINS]
        if len(ranked) > TOP_DOMAINS:  # the rest in one row, so that the table adds up to the outcomes
            rest: Counter[str] = Counter()
            for _, counter in ranked[TOP_DOMAINS:]:
                rest.update(counter)
            domains.append((f"({len(ranked) - TOP_DOMAINS:,} other domains)", rest))
        return {
            "requests": sum(f["requests"] for f in fetched),
            "retries": sum(f["retries"] for f in fetched),
            "bytes": sum(f["bytes"] for f in fetched),
            "success_rate": round(outcomes.get("ok", 0) / attempted, 4) if attempted else None,
            "optouts": optouts,
            "outcomes": dict(sorted(outcomes.items(), key=lambda kv: (-kv[1], kv[0]))),
            "domains": [
                {"domain": d, "ok": c.get("ok", 0), "failed": c.get("failed", 0), "optout": c.get("optout", 0)}
                for d, c in domains
            ],
        }

    def _conservation(self, summaries: Sequence[dict]) -> dict[str, Any]:
        """Rows in = keep + remove + review, from three places that could disagree: the rows each
        input declares (its own structure: a parquet footer, a table's planned parts, a tar's
        samples), the rows each results file holds (its footer), and the decisions counted in
        them. Any disagreement is listed, and `holds` is false."""
        failures = []
        for s in summaries:
            figures = {
                "declared": s["declared"],
                "results": self.part_rows.get(s["shard"], 0),
                "decided": sum(s["decisions"].values()),
            }
            if len(set(figures.values())) != 1:
                failures.append({"shard": s["shard"], **figures})
        declared = sum(s["declared"] for s in summaries)
        decided = sum(self.decisions.values())
        holds = not failures and declared == self.rows == decided
        return {
            "holds": holds,
            "rows_in": declared,
            "results_rows": self.rows,
            "keep_remove_review": decided,
            "shards": len(summaries),
            "failures": failures[:MAX_PROBLEMS],
        }
