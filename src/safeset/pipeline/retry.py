"""`--retry-failed`: a done shard run again fetches only the rows whose download failed for a
reason that may pass; every other row's earlier result is carried over (and decided again)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath

import pyarrow.parquet as pq

from ..model import Item, ItemResult, Status
from ..sinks import OutLayout
from ..sinks.clean import saved_images_stem
from ..storage import Remote
from .task import ShardTask


@dataclass(frozen=True)
class Earlier:
    """A done shard's last run, as its outputs record it."""

    summary: dict
    results: dict[int, ItemResult]  # by row index


def earlier_run(layout: OutLayout, part: int) -> Earlier | None:
    """Read the shard's last run, then withdraw its done-marker: from here on the shard is not
    done, so a worker killed while rewriting its outputs leaves it to be run again in full. None
    when there is no done-marker (a retry killed after withdrawing it): the shard runs in full."""
    summary = layout.read_done(part)
    if summary is None:
        return None
    rows = pq.read_table(layout.part(part)).to_pylist()
    layout.done(part).unlink()
    return Earlier(summary, {row["index"]: ItemResult.from_row(row) for row in rows})


def refetched(items: Iterator[Item], earlier: Earlier, carried: list[ItemResult]) -> Iterator[Item]:
    """The rows whose download failed for a reason that may pass, to be fetched again; every
    other row's earlier result goes to `carried`."""
    from ..fetch import worth_refetching

    for item in items:
        before = earlier.results[item.index]
        if before.status is Status.FETCH_FAILED and worth_refetching(before.error):
            yield item
        else:
            carried.append(before)


def fetch_summary(stats, earlier: Earlier | None, refetched: list[ItemResult]) -> dict:
    """The shard's fetch figures; after a retry, the earlier run's too: its requests count, and
    the refetched rows' earlier outcomes give way to their new ones."""
    summary = {"requests": stats.requests, "retries": stats.retries, "bytes": stats.bytes}
    outcomes = Counter(stats.outcomes)
    if earlier is not None:
        before = earlier.summary["fetch"]
        summary = {name: count + before[name] for name, count in summary.items()}
        outcomes.update(before["outcomes"])
        outcomes.subtract(Counter(r.error for r in refetched))
    return {**summary, "outcomes": dict(sorted((+outcomes).items()))}


def stage_earlier_run(remote: Remote, layout: OutLayout, task: ShardTask) -> None:
    """What `earlier_run` reads, from a remote OUT into the local one (the done-marker, the
    results part, the images saved for kept rows), then the remote done-marker withdrawn as the
    local one will be. No done-marker: a retry was killed after withdrawing it; run in full."""
    done = layout.relative(layout.done(task.part))
    if not remote.exists(done):
        return
    wanted = [done, layout.relative(layout.part(task.part))]
    if task.spec.save_images:
        stem = saved_images_stem(task.shard)
        wanted += [
            rel for rel, _ in remote.files(f"clean/{stem.parent}") if PurePosixPath(rel).name.startswith(stem.name)
        ]
    for rel in wanted:
        remote.download(rel, layout.root / rel)
    remote.delete(done)
