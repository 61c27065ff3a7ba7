"""The shard worker: one input shard in, one results part and one clean part out, done-marker last.

`run_shard` is the only entry point engines call. It is a plain picklable function of a picklable
`ShardTask`, so any engine (a local process pool, Ray) can run it, and every engine gets identical
bytes. Banks are loaded once per process and reused for every shard that process runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .. import __version__
from ..atomic import commit_together
from ..banks import BankStore, Matcher
from ..errors import SafesetError
from ..hashing.columns import url_digests
from ..model import Decision, FetchedImage, Item, ItemResult, Status, printable
from ..policy import Policy
from ..report.build import shard_counts, value_counts
from ..sinks import OutLayout, results_table, write_json, write_results
from ..sinks.clean import clean_writer, saved_images_stem
from ..sinks.results import observed_table
from ..sources import Shard, reader_for
from ..sources.base import ShardLog
from ..storage import (
    Remote,
    UnreadableFile,
    arriving,
    is_remote,
    is_staged,
    open_input,
    open_regular,
    scratch,
    wait_for_input,
)
from .check import BATCH, Auditor, CheckSettings, decide_table

if TYPE_CHECKING:
    from ..fetch import FetchOptions

# A fetching worker runs its downloads' event loop beside the hashing, in one process; with two
# hashing threads, decoding and hashing (which release the GIL) overlap with the event loop and
# with each other. Measured on the fetch benchmark: 14.3 s -> 12.7 s for 10,000 URLs in one
# process. Without fetching a worker has a core of its own to fill, and one thread does that.
FETCH_HASH_THREADS = 2


@dataclass(frozen=True)
class RunSpec:
    """What every shard of one scan shares."""

    home: str
    banks: tuple[tuple[str, str], ...]  # (name, sha256) as planned; a changed bank fails the shard
    policy: Policy
    settings: CheckSettings
    fetch: FetchOptions | None = None  # download the images of URL-only rows (`--fetch`)
    save_images: bool = False  # write fetched images that are kept into the clean release

    @property
    def decided_with(self) -> str:
        """A checksum of what decides, given the observations: the banks' versions, the policy and
        the match thresholds. A done shard decided with another one is decided again (a round)."""
        what = {"banks": [list(b) for b in self.banks], "policy": self.policy.sha256, "match": self.settings.thresholds}
        return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class ShardTask:
    part: int
    shard: Shard
    out: str
    spec: RunSpec
    # A done shard run again for `--retry-failed`: only the rows whose download failed for a
    # reason that may pass are fetched; every other row's result is carried over unchanged.
    retry_failed: bool = False
    # A decide round (`pipeline.decide`): the shard's stored observations in `out` are matched and
    # decided again, and its new outputs written under this folder, committed with the round's.
    round: str | None = None
    checksums: tuple[tuple[str, str], ...] = ()  # (input file, SHA-256 the scan found), for a round


class BankChangedError(SafesetError):
    pass


_CHECKERS: dict[tuple, Auditor] = {}
_BANK_LOADS = 0  # how often this process has loaded banks: once per scan, whatever its shard count
_FETCHED_SHARDS = 0  # shards this process has fetched for


def _checker(spec: RunSpec) -> Auditor:
    key = (spec.home, spec.banks, spec.policy.sha256, spec.settings)
    checker = _CHECKERS.get(key)
    if checker is None:
        store = BankStore(spec.home)
        infos = []
        for name, planned in spec.banks:  # the very versions the scan planned with, even if updated since
            info = store.version(name, planned)
            if info is None:
                raise BankChangedError(f"bank {name!r} changed twice while the scan was running; rerun the scan")
            infos.append(info)
        checker = Auditor.of(Matcher.load(store, infos, spec.settings.match), spec.policy, spec.settings)
        global _BANK_LOADS
        _BANK_LOADS += 1
        _CHECKERS.clear()  # one scan per process at a time: do not hold old banks in memory
        _CHECKERS[key] = checker
    return checker


NOT_FETCHED = "metadata only: images are not fetched (use --fetch)"


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


@dataclass(frozen=True)
class _Earlier:
    """A done shard's last run, as its outputs record it."""

    summary: dict
    results: dict[int, ItemResult]  # by row index


def _earlier_run(layout: OutLayout, part: int) -> _Earlier | None:
    """Read the shard's last run, then withdraw its done-marker: from here on the shard is not
    done, so a worker killed while rewriting its outputs leaves it to be run again in full. None
    when there is no done-marker (a retry killed after withdrawing it): the shard runs in full."""
    summary = layout.read_done(part)
    if summary is None:
        return None
    rows = pq.read_table(layout.part(part)).to_pylist()
    layout.done(part).unlink()
    return _Earlier(summary, {row["index"]: ItemResult.from_row(row) for row in rows})


def _refetched(items: Iterator[Item], earlier: _Earlier, carried: list[ItemResult]) -> Iterator[Item]:
    """The rows whose download failed for a reason that may pass, to be fetched again; every
    other row's earlier result goes to `carried`."""
    from ..fetch import worth_refetching

    for item in items:
        before = earlier.results[item.index]
        if before.status is Status.FETCH_FAILED and worth_refetching(before.error):
            yield item
        else:
            carried.append(before)


def _fetch_summary(stats, earlier: _Earlier | None, refetched: list[ItemResult]) -> dict:
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


def _first_part(shard: Shard) -> bool:
    """Whether this shard checksums its files: a table read in parts is hashed by its first part."""
    return getattr(shard.part, "start", 0) == 0


def file_record(path: str) -> dict:
    """An input file's size and checksum, for the report; a file that is not a regular one (a
    FIFO, a device, a dangling link: recorded as rows of their own) is named with why."""
    digest = hashlib.sha256()
    size = 0
    try:
        opened = open_input(path) if is_remote(path) or is_staged(path) else open_regular(path)
    except UnreadableFile as exc:
        return {"path": path, "unreadable": exc.reason}
    with opened as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return {"path": path, "bytes": size, "sha256": digest.hexdigest()}


def worker_record() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "bank_loads": _BANK_LOADS}


def clean_files(layout: OutLayout, together) -> list[str]:
    """The files of the shard's clean release (`commit_together`'s), relative to clean/: a decide
    round that writes the shard again deletes those of them it does not write."""
    return sorted(
        final.relative_to(layout.clean).as_posix() for final in together.finals if final.is_relative_to(layout.clean)
    )


def run_shard(task: ShardTask, progress: Callable[[dict], None] | None = None) -> dict:
    """Process one shard and return its summary (also written as the shard's done-marker)."""
    if task.round is not None:
        from .decide import decide_shard

        return decide_shard(task, progress)
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
                _stage_earlier_run(Remote(task.out), layout, task)
            summary = _run_local(replace(task, shard=shard, out=out), progress, {v: k for k, v in names.items()})
        if is_remote(task.out):
            done = layout.relative(layout.done(task.part))
            Remote(task.out).upload_tree(layout.root, last=(done,))
        return summary


def _stage_earlier_run(remote: Remote, layout: OutLayout, task: ShardTask) -> None:
    """What `_earlier_run` reads, from a remote OUT into the local one (the done-marker, the
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


def _summary(
    task: ShardTask, layout: OutLayout, table: pa.Table, log: ShardLog, together, started: float, fetched: bool
) -> dict:
    """The shard's results part written, and its summary (the done-marker's content)."""
    write_results(table, layout.part(task.part))
    summary = {
        "part": task.part,
        "shard": task.shard.name,
        "kind": task.shard.kind,
        "rows": table.num_rows,
        "declared": log.rows,
        # the report's counts for this shard, merged by the scan
        **shard_counts(table, fetched=fetched and task.shard.kind == "table"),
        "statuses": dict(sorted(value_counts(table["status"]).items())),
        "problems": log.problems,
        # A large table read in parts is hashed once, by its first part.
        "files": [file_record(f) if _first_part(task.shard) else {"path": f} for f in task.shard.files],
        "seconds": round(time.perf_counter() - started, 3),
        # where it ran, like the time it took, differs between runs; the outputs never do
        "worker": worker_record(),
        "decided_with": task.spec.decided_with,
        "clean": clean_files(layout, together),
    }
    return summary


def _run_columns(
    task: ShardTask, tables: Iterator[pa.Table], log: ShardLog, progress: Callable[[dict], None] | None
) -> dict:
    """A metadata table scanned without fetching: no row has image bytes, so rows go through as
    tables (their URLs hashed, matched and decided column by column), not one object each."""
    started = time.perf_counter()
    layout = OutLayout(task.out)
    checker = _checker(task.spec)
    decided = []
    with commit_together() as together:
        writer = clean_writer(task.shard, layout.clean)
        try:
            for rows in tables:
                table, _ = decide_table(
                    _metadata_results(task.shard, rows),
                    checker.matcher,
                    checker.policy,
                    task.spec.settings.pdq_min_quality,
                )
                writer.keep_decided(table)
                decided.append(table)
                if progress is not None:
                    progress({"items": table.num_rows})
            writer.close()
        except BaseException:
            writer.abort()
            raise
        table = pa.concat_tables(decided) if decided else results_table([])
        indexes = table["index"].to_numpy()
        ascending = bool(np.all(indexes[1:] > indexes[:-1]))  # as read: distinct without sorting
        distinct = len(indexes) if ascending else len(np.unique(indexes))
        if table.num_rows != log.rows or distinct != len(indexes):
            raise RuntimeError(
                f"{task.shard.name}: the input holds {log.rows} rows, {table.num_rows} have results, "
                f"{distinct} of them distinct (rows in != out)"
            )
    return _summary(task, layout, table, log, together, started, fetched=False)


def _metadata_results(shard: Shard, rows: pa.Table) -> pa.Table:
    """The results of metadata rows (see `TableReader.row_tables`), as `hash_item` and
    `_unfetched` record them one by one: no image; the URL's digests."""
    url, error = rows["url"].combine_chunks(), rows["error"].combine_chunks()
    has_url = pc.fill_null(pc.not_equal(url, ""), False)
    held, pytx = url_digests(pc.if_else(has_url, url, pa.scalar(None, pa.string())))
    unreadable = pc.is_valid(error)
    status = pc.if_else(unreadable, str(Status.UNREADABLE_ROW), str(Status.NO_IMAGE))
    why = pc.if_else(has_url, NOT_FETCHED, "no image bytes")
    name = printable(shard.name)
    indexes = rows["index"].combine_chunks()
    return observed_table(
        rows.num_rows,
        {
            "row_id": pc.binary_join_element_wise(name, pc.cast(indexes, pa.string()), ":"),
            "shard": pa.array([name] * rows.num_rows, pa.string()),
            "index": indexes,
            "key": rows["key"],
            "url": url,
            "status": status,
            "error": pc.if_else(unreadable, error, why),
            "url_md5": held,
            "url_md5_threatexchange": pytx,
        },
    )


def _run_local(task: ShardTask, progress: Callable[[dict], None] | None, names: dict[str, str] | None = None) -> dict:
    """`names`: input files as the user named them, by the local copies read (staged shards)."""
    log = ShardLog()
    reader = reader_for(task.shard.kind)
    tables = reader.row_tables(task.shard, log) if task.spec.fetch is None else None
    summary = _run_columns(task, tables, log, progress) if tables is not None else _run_items(task, progress)
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
    layout = OutLayout(task.out)
    checker = _checker(task.spec)
    reader = reader_for(task.shard.kind)
    log = ShardLog()
    read = Counter()
    items = _counted(reader.items(task.shard, log), read)
    earlier = _earlier_run(layout, task.part) if task.retry_failed else None
    carried: list[ItemResult] = []
    if earlier is not None:
        items = _refetched(items, earlier, carried)
    fetcher = None
    if task.spec.fetch is not None:
        from ..fetch import Fetcher

        global _FETCHED_SHARDS
        stagger = _FETCHED_SHARDS == 0  # this process's first: every worker starts one at once
        _FETCHED_SHARDS += 1
        fetcher = Fetcher(task.spec.fetch, __version__, skip=checker.matcher.optout_reason, stagger=stagger)
        items = _count_fetched(fetcher.fetch(items), progress, task.spec.save_images)
    else:
        items = _unfetched(items)
    # The clean release appears after every check of the shard has passed, or not at all: a shard
    # that fails on the way leaves no file of it, not even the partial one it was copying into.
    with commit_together() as together:
        writer = clean_writer(task.shard, layout.clean, save_images=task.spec.save_images)
        try:
            results = []
            threads = FETCH_HASH_THREADS if fetcher is not None else 1
            for result in checker.check(items, progress, threads):  # in the order items come (fetched: as done)
                if result.decision is Decision.KEEP:
                    writer.keep(result)
                if isinstance(result.locator, FetchedImage):
                    result.locator = None  # a removed or held row's bytes are dropped here
                results.append(result)
            refetched = [earlier.results[r.index] for r in results] if earlier is not None else []
            # decided again: the run may match other banks, or decide by another policy, than the last
            for start in range(0, len(carried), BATCH):
                checker.decide(carried[start : start + BATCH])
            for result in carried:
                if result.decision is Decision.KEEP:
                    writer.keep(result)
                results.append(result)
            if carried and progress is not None:
                progress({"items": len(carried)})
            writer.close()
        except BaseException:
            writer.abort()
            raise
        results.sort(key=lambda r: r.index)
        indexes = [r.index for r in results]
        if len(set(indexes)) != len(indexes) or not len(results) == read["rows"] == log.rows:
            raise RuntimeError(
                f"{task.shard.name}: the input holds {log.rows} rows, {read['rows']} were read, "
                f"{len(results)} have results (rows in != out)"
            )
    if fetcher is not None and fetcher.stats.bugs:
        kinds = ", ".join(f"{name} x{count}" for name, count in sorted(fetcher.stats.bugs.items()))
        log.problems.append(
            f"{task.shard.name}: downloads failed inside safeset ({kinds}), not at the server: a bug, "
            "please report it; their rows are fetch_failed: internal"
        )

    table = results_table(results)
    summary = _summary(task, layout, table, log, together, started, fetched=fetcher is not None)
    if fetcher is not None:
        summary["fetch"] = _fetch_summary(fetcher.stats, earlier, refetched)
    if earlier is not None:
        summary["refetched"] = len(refetched)
    return summary
