"""The run-level outputs derived from the results parts: removal and review manifests, the hash-only
evidence export, and the kept-file lists of image folders.

Nothing here sees image bytes: the results parts hold hashes, URLs and row ids only.
"""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..atomic import commit, partial_path, write_atomic
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
    "matches",
    "reasons",
)
MANIFEST_SCHEMA = pa.schema([RESULTS_SCHEMA.field(c) for c in MANIFEST_COLUMNS])


class ManifestWriter:
    """Fed every results part in order; `close()` commits the files."""

    def __init__(self, layout: OutLayout, folder_shards: dict[str, str], time: str):
        self.layout = layout
        self.time = time
        self._folder_shards = folder_shards  # shard name -> input name, for image folders
        self._removed = pq.ParquetWriter(partial_path(layout.removed), MANIFEST_SCHEMA)
        self._review = pq.ParquetWriter(partial_path(layout.review), MANIFEST_SCHEMA)
        self._evidence = open(partial_path(layout.evidence), "w", encoding="utf-8")
        self._kept: dict[str, list[str]] = {}

    def add(self, part: pa.Table) -> None:
        decision = part["decision"]
        for value, writer in ((Decision.REMOVE, self._removed), (Decision.REVIEW, self._review)):
            chosen = part.filter(pc.equal(decision, str(value)))
            if chosen.num_rows:
                writer.write_table(chosen.select(list(MANIFEST_COLUMNS)))
                self._write_evidence(chosen, value)
        self._collect_kept(part)

    def _write_evidence(self, rows: pa.Table, decision: Decision) -> None:
        columns = ["row_id", "url", "md5", "sha1", "sha256", "pdq", "matches"]
        for row in rows.select(columns).to_pylist():
            for match in row.pop("matches") or []:
                record = {**row, **match, "decision": str(decision), "time": self.time}
                self._evidence.write(json.dumps(record, sort_keys=True) + "\n")

    def _collect_kept(self, part: pa.Table) -> None:
        if not self._folder_shards or part.num_rows == 0:
            return
        shard = part["shard"][0].as_py()
        input_name = self._folder_shards.get(shard)
        if input_name is None:
            return
        kept = part.filter(pc.equal(part["decision"], str(Decision.KEEP)))["key"].to_pylist()
        self._kept.setdefault(input_name, []).extend(kept)

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
        for input_name in sorted(set(self._folder_shards.values())):
            target = self.layout.clean / input_name / "kept.txt"
            target.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(target, "".join(k + "\n" for k in self._kept.get(input_name, [])).encode())
