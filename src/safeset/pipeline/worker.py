"""The shard worker: one input shard in, one results part and one clean part out, done-marker last.

`run_shard` is the only entry point engines call. It is a plain picklable function of a picklable
`ShardTask` (`pipeline.task`), so any engine (a local process pool, Ray) can run it, and every
engine gets identical bytes. Banks are loaded once per process and reused for every shard that
process runs. A shard goes through these stages:

1. staged (`_run_staged`): inputs on object storage brought into memory, a remote OUT written
   locally and uploaded after;
2. observed and decided, either as Arrow tables (`pipeline.metadata`: a metadata table without
   `--fetch`) or item by item (`_run_items`): read -> (retry filter: `pipeline.retry`) -> fetched or
   marked not fetched -> hashed, matched, decided (`Auditor.check`) -> kept rows to the clean
   release (`sinks.clean`);
3. counted: rows in = rows out, or the shard fails;
4. summed up (`task.summary_of`): the results part, then the done-marker.

A decide round's shard (`task.round`) goes to `pipeline.decide` instead, and an expansion's
search of an embedding file (`task.expand`) to `pipeline.expand`.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import replace

from ..atomic import commit_together
from ..model import Decision, FetchedImage, Item, ItemResult, Status
from ..sinks import OutLayout, results_table, write_json
from ..sinks.clean import CleanWriter, clean_writer
from ..sources import reader_for
from ..sources.base import ShardLog
from ..storage import Remote, arriving, is_remote, scratch, wait_for_input
from .check import BATCH, Auditor
from .metadata import NOT_FETCHED, run_columns
from .retry import earlier_run, fetch_summary, refetched, stage_earlier_run
from .task import ShardTask, auditor_for, summary_of

# A fetching worker runs its downloads' event loop beside the hashing, in one process; with two
# hashing threads, decoding and hashing (which release the GIL) overlap with the event loop and
# with each other. Measured on the fetch benchmark: 14.3 s -> 12.7 s for 10,000 URLs in one
# process. Without fetching a worker has a core of its own to fill, and one thread does that.
FETCH_HASH_THREADS = 2


_FETCHED_SHARDS = 0  # shards this process has fetched for


def _counted(items: Iterator[Item], counter: Counter) -> Iterator[Item]:
    """Count the rows a reader yields: conservation is checked against this, at the source."""
    for item in items:
        counter["rows"] += 1
        yield item


def _unfetched(items: Iterator[Item]) -> Iterator[Item]:
    """Without --fetch, a row that has only a URL is recorded as having no image."""
    for item in items:
        if item.status is None and not item.payloads and item.url:
            item.status, item.error = Status.NO_IMAGE, NOT_FETCHED
        yield item


def _count_fetched(items: Iterator[Item], progress: Callable[[dict], None] | None, save_images: bool) -> Iterator[Item]:
    """Report download outcomes as they come (for the progress bars); with `save_images`, let each
    downloaded row carry its bytes to the clean writer, which writes them only if the row is kept."""
    counts: Counter[str] = Counter()
    for item in items:
        if not item.fetched:  # rows that had their bytes already (a tar's) pass through untouched
            yield item
            continue
        counts["fetch:" + (item.error or "ok")] += 1
        counts["bytes"] += len(item.data or b"")
        if save_images and item.data is not None:  # written only if the row ends kept with an image
            item.locator = FetchedImage(item.data)
        if progress is not None and sum(counts.values()) - counts["bytes"] >= 32:
            progress(dict(counts))
            counts.clear()
        yield item
    if progress is not None and counts:
        progress(dict(counts))


def run_shard(task: ShardTask, progress: Callable[[dict], None] | None = None) -> dict:
    """Process one shard and return its summary (also written as the shard's done-marker)."""
    if task.round is not None:
        from .decide import decide_shard

        return decide_shard(task, progress)
    if task.expand is not None:
        from .expand import search_file

        return search_file(task.expand, progress)
    if is_remote(task.out) or any(is_remote(f) for f in task.shard.files):
        return _run_staged(task, progress)
    return _run_local(task, progress)


def _run_staged(task: ShardTask, progress: Callable[[dict], None] | None) -> dict:
    """A shard with its input or OUT on object storage (see `safeset.storage`): inputs are
    downloaded into memory (a tmpfs) as their reader wants them (`Reader.staging`), outputs (kept
    rows only) written locally and uploaded, the done-marker last."""
    reader = reader_for(task.shard.kind)
    ways = {f: reader.staging(task.shard, f) for f in task.shard.files if is_remote(f)}
    staged = [uri for uri, way in ways.items() if way != "in_place"]
    holding = scratch("safeset-input-", in_memory=True) if staged else nullcontext()
    with scratch("safeset-shard-") as tmp, holding as held:
        local_of = {uri: held / Remote(uri).name for uri in staged}
        with arriving(local_of):
            for uri, local in local_of.items():
                if ways[uri] == "whole":
                    wait_for_input(local)
            names = {uri: str(local) for uri, local in local_of.items()}
            shard = replace(
                task.shard,
                path=names.get(task.shard.path, task.shard.path),
                files=tuple(names.get(f, f) for f in task.shard.files),
            )
            out = str(tmp / "out") if is_remote(task.out) else task.out
            layout = OutLayout(out)
            layout.create()
            if is_remote(task.out) and task.retry_failed:
                stage_earlier_run(Remote(task.out), layout, task)
            summary = _run_local(replace(task, shard=shard, out=out), progress, {v: k for k, v in names.items()})
        if is_remote(task.out):
            done = layout.relative(layout.done(task.part))
            Remote(task.out).upload_tree(layout.root, last=(done,))
        return summary


def _run_local(task: ShardTask, progress: Callable[[dict], None] | None, names: dict[str, str] | None = None) -> dict:
    """`names`: input files as the user named them, by the local copies read (staged shards)."""
    log = ShardLog()
    reader = reader_for(task.shard.kind)
    tables = reader.row_tables(task.shard, log) if task.spec.fetch is None else None
    summary = run_columns(task, tables, log, progress) if tables is not None else _run_items(task, progress)
    for local, name in (names or {}).items():
        for record in summary["files"]:
            record["path"] = name if record["path"] == local else record["path"]
        summary["problems"] = [problem.replace(local, name) for problem in summary["problems"]]
    if sum(summary["decisions"].values()) != summary["rows"]:
        raise RuntimeError(f"{task.shard.name}: rows in != keep + remove + review")
    write_json(OutLayout(task.out).done(task.part), summary)
    return summary


def _run_items(task: ShardTask, progress: Callable[[dict], None] | None) -> dict:
    """A shard whose rows go through one by one: images decoded, or fetched."""
    started = time.perf_counter()
    layout, checker, log = OutLayout(task.out), auditor_for(task.spec), ShardLog()
    read: Counter[str] = Counter()
    items = _counted(reader_for(task.shard.kind).items(task.shard, log), read)
    earlier = earlier_run(layout, task.part) if task.retry_failed else None
    carried: list[ItemResult] = []  # rows of the earlier run not fetched again
    if earlier is not None:
        items = refetched(items, earlier, carried)
    fetcher = None
    if task.spec.fetch is not None:
        fetcher = _fetcher(task, checker)
        items = _count_fetched(fetcher.fetch(items), progress, task.spec.save_images)
    else:
        items = _unfetched(items)
    # The clean release appears after every check of the shard has passed, or not at all: a shard
    # that fails on the way leaves no file of it, not even the partial one it was copying into.
    with commit_together() as together:
        writer = clean_writer(task.shard, layout.clean, save_images=task.spec.save_images)
        try:
            threads = FETCH_HASH_THREADS if fetcher is not None else 1
            results = _checked(checker, items, writer, progress, threads)
            again = [earlier.results[r.index] for r in results] if earlier is not None else []
            results += _carried(checker, carried, writer, progress)
            writer.close()
        except BaseException:
            writer.abort()
            raise
        results.sort(key=lambda r: r.index)
        _conserved(task, results, read["rows"], log)
    if fetcher is not None and fetcher.stats.bugs:
        kinds = ", ".join(f"{name} x{count}" for name, count in sorted(fetcher.stats.bugs.items()))
        log.problems.append(
            f"{task.shard.name}: downloads failed inside safeset ({kinds}), not at the server: a bug, "
            "please report it; their rows are fetch_failed: internal"
        )
    if checker.settings.embed_model:
        write_embeddings(layout, task.part, results, checker.embedding_dim())
    summary = summary_of(task, layout, results_table(results), log, together, started, fetched=fetcher is not None)
    if fetcher is not None:
        summary["fetch"] = fetch_summary(fetcher.stats, earlier, again)
    if earlier is not None:
        summary["refetched"] = len(again)
    return summary


def write_embeddings(layout: OutLayout, part: int, results: list[ItemResult], dim: int) -> None:
    """The shard's `--embed-model` embeddings in LAION's layout (what `safeset expand` reads):
    `embeddings/img_emb/img_emb_NNNNN.npy`, a float16 row per result row (zeros where the row had
    no image to embed: no direction, nobody's neighbour), beside `metadata/metadata_NNNNN.parquet`
    (row_id, key, url). Written before the done-marker, each file whole or not at all."""
    import io

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ..atomic import write_atomic

    vectors = np.zeros((len(results), dim), np.float16)
    for i, result in enumerate(results):
        if result.embedding is not None:
            vectors[i] = result.embedding
    buffer = io.BytesIO()
    np.save(buffer, vectors)
    write_atomic(layout.embeddings / "img_emb" / f"img_emb_{part:05d}.npy", buffer.getvalue())
    table = pa.table(
        {
            "row_id": pa.array([r.row_id for r in results], pa.string()),
            "key": pa.array([r.key for r in results], pa.string()),
            "url": pa.array([r.url for r in results], pa.string()),
        }
    )
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    write_atomic(layout.embeddings / "metadata" / f"metadata_{part:05d}.parquet", sink.getvalue().to_pybytes())


def _fetcher(task: ShardTask, checker: Auditor):
    """The shard's downloader; an opted-out domain (a `domain` bank) is never requested."""
    from .. import __version__
    from ..fetch import Fetcher

    global _FETCHED_SHARDS
    stagger = _FETCHED_SHARDS == 0  # this process's first: every worker starts one at once
    _FETCHED_SHARDS += 1
    return Fetcher(task.spec.fetch, __version__, skip=checker.matcher.optout_reason, stagger=stagger)


def _checked(
    checker: Auditor,
    items: Iterator[Item],
    writer: CleanWriter,
    progress: Callable[[dict], None] | None,
    threads: int,
) -> list[ItemResult]:
    """Every item hashed, matched and decided, in the order items come (fetched: as done); kept
    rows handed to the clean writer, which alone may use a fetched image's bytes."""
    results = []
    for result in checker.check(items, progress, threads):
        if result.decision is Decision.KEEP:
            writer.keep(result)
        if isinstance(result.locator, FetchedImage):
            result.locator = None  # a removed or held row's bytes are dropped here
        results.append(result)
    return results


def _carried(
    checker: Auditor, carried: list[ItemResult], writer: CleanWriter, progress: Callable[[dict], None] | None
) -> list[ItemResult]:
    """An earlier run's rows not fetched again, decided again (this run may match other banks, or
    decide by another policy, than the last)."""
    for start in range(0, len(carried), BATCH):
        checker.decide(carried[start : start + BATCH])
    for result in carried:
        if result.decision is Decision.KEEP:
            writer.keep(result)
    if carried and progress is not None:
        progress({"items": len(carried)})
    return carried


def _conserved(task: ShardTask, results: list[ItemResult], read: int, log: ShardLog) -> None:
    """Rows in = rows out: every row the input holds was read once and has one result."""
    indexes = [r.index for r in results]
    if len(set(indexes)) != len(indexes) or not len(results) == read == log.rows:
        raise RuntimeError(
            f"{task.shard.name}: the input holds {log.rows} rows, {read} were read, "
            f"{len(results)} have results (rows in != out)"
        )
