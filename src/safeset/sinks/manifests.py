"""The run-level outputs derived from the results parts: removal and review manifests, and the
hash-only evidence export.

Nothing here sees image bytes: the results parts hold hashes, URLs and row ids only.
"""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..atomic import commit, partial_path
from ..model import Decision
from .layout import OutLayout
from .results import RESULTS_SCHEMA

MANIFEST_COLUMNS = (
    "row_id",
    "shard",
    "key",
    "url",
    "status",
    "md5",
    "sha1",
    "sha256",
    "url_md5",
    "pdq",
    "pdq_quality",
    "payloads",
    "matches",
    "reasons",
)
MANIFEST_SCHEMA = pa.schema([RESULTS_SCHEMA.field(c) for c in MANIFEST_COLUMNS])
_EVIDENCE_HASHES = ("md5", "sha1", "sha256", "pdq")


class ManifestWriter:
    """Fed every results part in order; `close()` commits the files."""

    def __init__(self, layout: OutLayout, time: str):
        self.layout = layout
        self.time = time
        self._removed = pq.ParquetWriter(partial_path(layout.removed), MANIFEST_SCHEMA)
        self._review = pq.ParquetWriter(partial_path(layout.review), MANIFEST_SCHEMA)
        self._evidence = open(partial_path(layout.evidence), "w", encoding="utf-8")

    def add(self, part: pa.Table) -> None:
        decision = part["decision"]
        for value, writer in ((Decision.REMOVE, self._removed), (Decision.REVIEW, self._review)):
            chosen = part.filter(pc.equal(decision, str(value)))
            if chosen.num_rows:
                writer.write_table(chosen.select(list(MANIFEST_COLUMNS)))
                self._write_evidence(chosen, value)

    def _write_evidence(self, rows: pa.Table, decision: Decision) -> None:
        """One record per match, with the hashes of the payload that matched (a row's second image
        can be the listed one: the hotline needs its hashes, not the first image's)."""
        for row in rows.select(["row_id", "url", *_EVIDENCE_HASHES, "payloads", "matches"]).to_pylist():
            own = {name: row[name] for name in _EVIDENCE_HASHES}
            payloads = {p["name"]: {name: p[name] for name in _EVIDENCE_HASHES} for p in row["payloads"]}
            for match in row["matches"]:
                hashes = payloads.get(match["payload"], own) if match["payload"] else own
                record = {"row_id": row["row_id"], "url": row["url"], **hashes, **match}
                record.update(decision=str(decision), time=self.time)
                self._evidence.write(json.dumps(record, sort_keys=True) + "\n")

    def discard(self) -> None:
        """Close without committing: the partial files are deleted."""
        self._removed.close()
        self._review.close()
        self._evidence.close()
        for path in (self.layout.removed, self.layout.review, self.layout.evidence):
            partial_path(path).unlink(missing_ok=True)

    def close(self) -> None:
        self._removed.close()
        self._review.close()
        self._evidence.close()
        for path in (self.layout.removed, self.layout.review, self.layout.evidence):
            commit(partial_path(path), path)
