"""Flood quarantine: one bad list entry (an all-white PDQ, a CDN's placeholder image, a URL every
row shares) must not silently take out thousands of rows. A listed entry that matches more rows
of one audit than the policy's `[flood] limit` (1,000 by default, or a share of the audit's rows
such as "0.1%") is quarantined: its matches are
kept in the results but no longer act; the rows get `flood:BANK:TAG` and review instead. TAG names
the entry without being it (the first 12 hex digits of its SHA-256: lists are sensitive, and a
report is read by people the list's owner never cleared).

Keyword matches are not counted: a term in many captions is evidence for rules, not an action.
Counting needs the whole audit's matches, so this is a pass of a round after its shards are
decided (`scan.run_round`), before the copies pass (a quarantined entry flags nothing).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from ..banks.columns import flat, prefixed
from ..banks.verdicts import entry_tag

PREFIX = "flood:"


def reason(bank: str, entry: str) -> str:
    return f"{PREFIX}{bank}:{entry_tag(entry)}"


def limit_of(limit: int | str, rows: int) -> int:
    """The rows an entry may match in an audit of `rows` rows: `limit` itself, or its share of the
    rows for a limit given as a percentage ("0.5%"; at least one row)."""
    if isinstance(limit, str):
        return max(1, int(rows * float(limit.rstrip("%")) / 100))
    return limit


def _entries(part: Path) -> tuple[pa.Table, dict[int, set[str]], int]:
    """A part's distinct (row, bank, entry) matched, the flood reasons its rows hold now, and its
    row count."""
    from .decide import check_format

    table = check_format(part).read(columns=["matches", "reasons"])
    matches, rows = flat(table["matches"])
    found = pa.table(
        {
            "row": rows,
            "bank": matches.field("bank") if len(matches) else pa.array([], pa.string()),
            "entry": matches.field("entry") if len(matches) else pa.array([], pa.string()),
            "type": matches.field("signal_type") if len(matches) else pa.array([], pa.string()),
        }
    )
    # a keyword is evidence for rules, not an action: a common word is no flood
    found = found.filter(pc.not_equal(found["type"], "keyword")).group_by(["row", "bank", "entry"]).aggregate([])
    now: dict[int, set[str]] = {}
    held, texts = prefixed(table["reasons"], (PREFIX,))
    for row, text in zip(held.tolist(), texts, strict=True):
        now.setdefault(row, set()).add(text)
    return found, now, table.num_rows


def quarantine(
    parts: Mapping[int, Path], limit: int | str, exempt: Collection[tuple[str, str]] = ()
) -> tuple[dict[tuple[str, str], int], set[int]]:
    """The entries matching more than `limit` rows (see `limit_of`) over all `parts` (with their
    row counts; not those `exempt` by a verdict, as (bank, tag)), and the parts whose flood
    reasons are not what those entries make them (to decide again)."""
    counts: Counter[tuple[str, str]] = Counter()
    seen: dict[int, tuple[pa.Table, dict[int, set[str]]]] = {}
    rows = 0
    for i, path in parts.items():
        found, now, held = _entries(path)
        rows += held
        seen[i] = (found, now)
        for row in found.group_by(["bank", "entry"]).aggregate([("row", "count")]).to_pylist():
            counts[(row["bank"], row["entry"])] += row["row_count"]
    limit = limit_of(limit, rows)
    over = (
        {(b, e): n for (b, e), n in counts.items() if n > limit and (b, entry_tag(e)) not in exempt}
        if limit > 0
        else {}
    )
    again = set()
    for i, (found, now) in seen.items():
        wanted: dict[int, set[str]] = {}
        if over and len(found):
            for row in found.filter(_among(found, over)).to_pylist():
                wanted.setdefault(row["row"], set()).add(reason(row["bank"], row["entry"]))
        if wanted != now:
            again.add(i)
    return over, again


def _among(found: pa.Table, over: Mapping[tuple[str, str], int]) -> pa.Array:
    keys = pc.binary_join_element_wise(found["bank"], found["entry"], "\x00")
    return pc.is_in(keys, value_set=pa.array([f"{b}\x00{e}" for b, e in over], pa.string()))
