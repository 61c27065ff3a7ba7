"""Merging shards into the run's outputs while the scan runs, in shard order.

The manifests (removed, review, evidence) list rows in shard order, and the report adds up the
counts each shard worker made of its own results. Both are built here as shards finish: shard i is
merged as soon as it and every shard before it are done, so when the last shard finishes only the
tail is left, not a pass over every shard (measured at 1-1.5 ms a shard: a quarter of an hour for
LAION-5B's 550,000). A results part is read in full only when it has removed or held rows;
otherwise its decisions alone are read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..errors import UsageError
from ..model import Decision
from ..report import ReportBuilder
from ..sinks import ManifestWriter, OutLayout
from ..sinks.results import conformed
from ..sources import Shard
from ..storage import Remote

_WINDOW = 256  # parts read at once (I/O, from object storage mostly waiting)
# What the report and the scan's timings need of a merged shard's summary. The rest, its counts
# above all, is let go once merged: the driver holds every shard's summary until the end.
_KEPT = frozenset(
    {"part", "shard", "kind", "rows", "declared", "decisions", "problems", "files", "fetch", "refetched", "transitions"}
)


class Merger:
    def __init__(
        self,
        shards: Sequence[Shard],
        layout: OutLayout,
        remote: Remote | None,
        created: str,
        parts: Callable[[int], Path] | None = None,
    ):
        """The manifests are written into `layout`; shard i's results part is read from
        `parts(i)` (default: `layout`'s; a decide round's shards are in its own folder)."""
        self.shards = shards
        self.layout = layout
        self.remote = remote
        self._parts = parts or layout.part
        self.report = ReportBuilder()
        self.manifests = ManifestWriter(layout, created)
        self.summaries: dict[int, dict] = {}
        self.merged = 0  # shards [0, merged) are in the outputs
        self._pool = ThreadPoolExecutor(16, thread_name_prefix="safeset-merge")

    def done(self, part: int, summary: dict) -> None:
        """Shard `part` is done (its files are in OUT): merge it and whatever it unblocks."""
        if "counts" not in summary or "declared" not in summary:
            raise UsageError(
                f"{self.layout.done(part)} was written by an older safeset; use another --out, or delete it"
            )
        self.summaries[part] = summary
        end = self.merged
        while end in self.summaries:
            end += 1
        for start in range(self.merged, end, _WINDOW):
            window = range(start, min(end, start + _WINDOW))
            for i, (rows, table) in zip(window, self._pool.map(self._read, window), strict=True):
                summary = self.summaries[i]
                self.report.merge(summary["counts"])
                for key in summary.keys() - _KEPT:  # in place: the engine's outcome holds the same dict
                    del summary[key]
                self.report.part_written(self.shards[i].name, rows)
                self.manifests.add(table)
        self.merged = end

    def _read(self, i: int) -> tuple[int, pa.Table]:
        """(rows in shard i's results file, what of it the manifests need)."""
        part = self._parts(i)
        if self.remote:
            opened = self.remote.open_random(self.layout.relative(part))
        else:
            opened = open(part, "rb")
        with opened as fh:
            results = pq.ParquetFile(fh)
            table = results.read(columns=["decision"])
            if pc.any(pc.not_equal(table["decision"], str(Decision.KEEP))).as_py():
                table = conformed(results.read())  # a shard not decided again may be of an older format
            return results.metadata.num_rows, table

    def finish(self) -> list[dict]:
        """Commit the manifests; return every shard's summary, in order."""
        self._pool.shutdown()
        if self.merged != len(self.shards):
            raise RuntimeError(f"{len(self.shards) - self.merged} shard(s) were never merged")
        self.manifests.close()
        return [self.summaries[i] for i in range(len(self.shards))]

    def abandon(self) -> None:
        """The scan failed: leave no manifest behind (a rerun merges again)."""
        self._pool.shutdown()
        self.manifests.discard()
