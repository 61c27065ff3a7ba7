"""Copies of flagged rows: one confirmed hit takes its copies in the dataset with it.

A row removed for its own reasons (a bank match, a rule, a verdict; not for being a copy) is
flagged. Any other row whose image has the same MD5 or SHA-256 as a flagged row's, or a PDQ
within the PDQ threshold of one (both of usable quality), is its copy: it gets the reason
`copy_of:ROW` (the flagged row's id: the nearest, then the lowest id) and the policy's `[copies]`
action, review by default, remove if the policy says so, and no search at all if it says keep.
Copies are not transitive: a row removed only as a copy flags nothing.

This needs the whole audit's decisions, so it is a second pass of a round (`scan.run_round`):
every results part is read for its hashes and decisions only (columns, not rows), the flagged
rows' PDQs go into a `PdqIndex`, every row's PDQ is searched in it, and the shards whose copies
differ from what their results say are decided again with them. A scan that flagged rows ends
with such a round ("copies") of its own.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..banks.columns import flat, hex_values, prefixed
from ..banks.index import PdqIndex
from ..model import Decision
from ..policy import Policy
from .flood import PREFIX as FLOOD
from .flood import reason as flood_reason

PREFIX = "copy_of:"
FLOODED_COPIES = "flood:copies:"
_COLUMNS = ["row_id", "decision", "reasons", "md5", "sha256", "pdq", "pdq_quality"]


def _read(part: Path) -> pa.Table:
    from .decide import check_format

    return check_format(part).read(columns=_COLUMNS)


def _flagged_rows(table: pa.Table, policy: Policy) -> np.ndarray:
    """Positions of the rows the policy removes for their own reasons: for a reason other than
    being a copy whose action is remove. (A copy also held for a reason that keeps is no flag.)"""
    values, rows = flat(table["reasons"])
    if not len(values):
        return np.zeros(0, np.int64)
    distinct = pc.unique(values)
    removes = []
    for reason in distinct.to_pylist():
        action = policy.action_of(reason) if reason and not reason.startswith(PREFIX) else Decision.KEEP
        removes.append(action == Decision.REMOVE)
    at = pc.index_in(values, value_set=distinct).to_numpy(zero_copy_only=False)
    own = np.zeros(table.num_rows, bool)
    own[rows[np.asarray(removes, bool)[at]]] = True
    return np.flatnonzero(own)


class Flagged:
    """The flagged rows' ids, digests and PDQs (of usable quality), across every part."""

    def __init__(self, tables: Mapping[int, pa.Table], policy: Policy, min_quality: int):
        self.rows: dict[int, set[int]] = {}  # per part, its flagged rows' positions
        ids, md5, sha256, pdq_ids, pdqs = [], [], [], [], []
        for i, table in tables.items():
            rows = _flagged_rows(table, policy)
            self.rows[i] = set(rows.tolist())
            if not len(rows):
                continue
            picked = table.take(pa.array(rows))
            ids += picked["row_id"].to_pylist()
            md5.append(picked["md5"])
            sha256.append(picked["sha256"])
            quality = pc.fill_null(picked["pdq_quality"], 0).to_numpy(zero_copy_only=False) >= min_quality
            at, bits = hex_values(picked["pdq"], 32)
            usable = quality[at]
            pdq_ids += [picked["row_id"][int(i)].as_py() for i in at[usable]]
            pdqs.append(bits[usable])
        self.ids = ids
        self.md5 = pa.chunked_array(md5, pa.string()).combine_chunks() if md5 else pa.array([], pa.string())
        self.sha256 = pa.chunked_array(sha256, pa.string()).combine_chunks() if sha256 else pa.array([], pa.string())
        self.pdq_ids = np.array(pdq_ids, dtype=object)
        self.pdqs = np.concatenate(pdqs) if pdqs else np.zeros((0, 32), np.uint8)

    def __len__(self) -> int:
        return len(self.ids)

    def copies(self, part: int, table: pa.Table, threshold: int, min_quality: int) -> dict[int, str]:
        """The copies among a part's rows: position -> `copy_of:ROW`."""
        found: dict[int, str] = {}
        flagged = self.rows[part]
        for column, values in (("md5", self.md5), ("sha256", self.sha256)):
            at = pc.index_in(table[column], value_set=values, skip_nulls=True)  # an absent digest is nobody's
            at = pc.fill_null(at, -1).to_numpy(zero_copy_only=False)
            for row in np.flatnonzero(at >= 0).tolist():
                if row not in flagged and row not in found:
                    found[row] = PREFIX + self.ids[int(at[row])]
        if len(self.pdqs):
            quality = pc.fill_null(table["pdq_quality"], 0).to_numpy(zero_copy_only=False) >= min_quality
            at, bits = hex_values(table["pdq"], 32)
            keep = quality[at]
            at, bits = at[keep], bits[keep]
            # the part's rows indexed and the few flagged PDQs looked up in them: a row's buckets
            # are then one probe each from the flagged side, rather than 272 random ones per row
            query, entry, distance = PdqIndex(bits).search(self.pdqs, threshold) if len(bits) else ((),) * 3
            if len(query):
                rows = at[entry]
                ids = self.pdq_ids[query]
                order = np.lexsort((ids.astype(str), distance, rows))
                rows, ids = rows[order], ids[order]
                first = np.r_[True, rows[1:] != rows[:-1]]
                for row, flagged_id in zip(rows[first].tolist(), ids[first].tolist(), strict=True):
                    if row not in flagged and row not in found:
                        found[row] = PREFIX + flagged_id
        return found


def copy_reasons(table: pa.Table) -> dict[int, str]:
    """The `copy_of:` reasons (and floods of copies) a decided part holds: position -> reason."""
    rows, reasons = prefixed(table["reasons"], (PREFIX, FLOODED_COPIES))
    return dict(zip(rows.tolist(), reasons, strict=True))


def _quarantined_rows(table: pa.Table) -> set[int]:
    """Rows a quarantined list entry matched (`flood:BANK:TAG`, not a flood of copies)."""
    return set(prefixed(table["reasons"], (FLOOD,), (FLOODED_COPIES,))[0].tolist())


def _held(reason: str) -> str:
    """A copy's reason when its flagged image has flooded the audit: `flood:copies:TAG`."""
    return flood_reason("copies", reason.removeprefix(PREFIX))


def find_copies(
    parts: Mapping[int, Path], policy: Policy, threshold: int, min_quality: int
) -> dict[int, dict[int, str]]:
    """Per part whose copies differ from what it says now, its copies (see the module); `policy`
    decided the parts, and says which rows are flagged."""
    tables = {i: _read(path) for i, path in parts.items()}
    flagged = Flagged(tables, policy, min_quality)
    found = {i: flagged.copies(i, table, threshold, min_quality) if len(flagged) else {} for i, table in tables.items()}
    # a flagged image with more copies than the flood limit is a placeholder's: its copies are
    # held for review as a flood (`pipeline.flood`), not given the copies' action
    counts = Counter(reason for copies in found.values() for reason in copies.values())
    flooded = {r for r, n in counts.items() if policy.flood and n > policy.flood}
    changed = {}
    for i, table in tables.items():
        quarantined = _quarantined_rows(table)  # a row a flood holds is held, not a copy acted on
        mine = {row: _held(r) if r in flooded or row in quarantined else r for row, r in found[i].items()}
        if mine != copy_reasons(table):
            changed[i] = mine
    return changed
