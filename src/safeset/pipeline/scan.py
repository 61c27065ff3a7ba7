"""A whole scan: plan shards, run the ones not done yet on an engine, then merge and report.

Resume is by shard: a shard whose done-marker exists is skipped, and since every shard's output is a
function of its input, the banks, the policy and the settings alone, a resumed run produces the same
files as an uninterrupted one. `_state/run.json` records those inputs; a rerun that asks for
something different into the same OUT is refused rather than mixing two scans.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..banks import BankStore
from ..errors import ShardsFailedError, UsageError
from ..model import Decision
from ..policy import Policy
from ..report import ReportBuilder, render_report, versions
from ..sinks import ManifestWriter, OutLayout, write_json
from ..sources import ReadOptions, Shard, plan_shards
from ..storage import Remote, is_remote, scratch
from .check import CheckSettings
from .progress import ScanProgress
from .worker import RunSpec, ShardTask

if TYPE_CHECKING:
    from ..fetch import FetchOptions


@dataclass(frozen=True)
class ScanConfig:
    """Everything a scan is asked to do. The CLI and `safeset.scan` both build one of these."""

    inputs: tuple[str, ...]
    out: str
    banks: tuple[str, ...] | None = None  # None: every enabled bank
    policy: Policy = field(default_factory=lambda: Policy.preset("default"))
    workers: int | None = None  # None: all cores
    engine: str = "local"
    ray_address: str | None = None  # the cluster `engine="ray"` joins; None: RAY_ADDRESS, else a new one
    retries: int = 2
    check: CheckSettings = field(default_factory=CheckSettings)
    read: ReadOptions = field(default_factory=ReadOptions)
    fetch: FetchOptions | None = None  # download the images of URL-only rows
    save_images: bool = False  # with fetch: write the kept images as webdataset shards under clean/
    home: str | None = None
    progress: bool = False

    def __post_init__(self) -> None:
        if self.save_images and self.fetch is None:
            raise UsageError("--save-images keeps fetched images: it needs --fetch")
        if self.workers is not None and self.workers < 1:
            raise UsageError(f"--workers must be at least 1, got {self.workers}")
        if not self.inputs:
            raise UsageError("no input given")


def _now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def _fingerprint(config: ScanConfig, shards: Sequence[Shard], spec: RunSpec) -> dict[str, Any]:
    def stat(path: str) -> list:
        if is_remote(path):
            info = Remote(path).info()
            return [path, info.size, info.mtime_ns]
        st = Path(path).stat()
        return [path, st.st_size, st.st_mtime_ns]

    return {
        "safeset": versions()["safeset"],
        "shards": [[s.kind, s.name, [stat(f) for f in s.files]] for s in shards],
        "banks": [list(b) for b in spec.banks],
        "policy": spec.policy.to_dict(),
        "settings": asdict(spec.settings),
        "read": asdict(config.read),
        # what changes which rows are fetched and kept; politeness settings may differ on a rerun
        "fetch": None
        if config.fetch is None
        else {
            "max_bytes": config.fetch.max_bytes,
            "max_redirects": config.fetch.max_redirects,
            "respect_optout": config.fetch.respect_optout,
            "allow_private": config.fetch.allow_private,
            "allowed_networks": list(config.fetch.allowed_networks),
            "save_images": config.save_images,
        },
    }


def _per_worker(fetch: FetchOptions | None, workers: int) -> FetchOptions | None:
    """Per-domain limits are for the whole scan: every worker gets its share, so that N workers
    do not make N times the requests to one server."""
    if fetch is None:
        return None
    return replace(
        fetch,
        per_domain_rate=fetch.per_domain_rate / workers,
        per_domain_concurrency=max(1, fetch.per_domain_concurrency // workers),
    )


def _check_same_scan(layout: OutLayout, fingerprint: dict[str, Any]) -> None:
    if layout.run_spec.is_file():
        previous = json.loads(layout.run_spec.read_text())
        changed = [k for k in fingerprint if previous.get(k) != json.loads(json.dumps(fingerprint[k]))]
        if changed:
            raise UsageError(
                f"{layout.root} holds a scan with different {', '.join(changed)}; "
                "use another --out, or delete it to start over"
            )
    write_json(layout.run_spec, fingerprint)


def run_scan(config: ScanConfig) -> dict[str, Any]:
    # Engines import the pipeline's worker; importing them here, not at module level, keeps the
    # arrows of DESIGN.md pointing one way.
    from ..engines import Progress, engine_for

    started = time.perf_counter()
    store = BankStore(config.home)
    banks = store.resolve(config.banks)
    engine = engine_for(config.engine, config.workers, config.retries, config.ray_address)
    spec = RunSpec(
        str(store.home),
        tuple((b.name, b.sha256) for b in banks),
        config.policy,
        config.check,
        fetch=_per_worker(config.fetch, engine.parallelism),
        save_images=config.save_images,
    )
    shards = plan_shards(config.inputs, config.read)
    remote = Remote(config.out) if is_remote(config.out) else None
    with scratch("safeset-out-") if remote else nullcontext(Path(config.out)) as root:
        layout = OutLayout(root)
        layout.create()
        if remote:
            _pull(remote, layout, "_state")
        with layout.locked():
            _check_same_scan(layout, _fingerprint(config, shards, spec))
            if remote:
                remote.upload(layout.run_spec, _rel(layout, layout.run_spec))
            layout.remove_partials()
            done = {i for i in range(len(shards)) if layout.done(i).is_file()}
            target = remote.uri if remote else str(layout.root)
            tasks = [ShardTask(i, s, target, spec) for i, s in enumerate(shards) if i not in done]
            with ScanProgress(
                len(shards), len(done), enabled=config.progress, fetching=config.fetch is not None
            ) as progress:
                outcomes = engine.run(tasks, Progress(counts=progress.counts, shard_done=progress.shard_done))
            failed = [o for o in outcomes if o.error]
            if failed:
                raise ShardsFailedError(
                    [(o.task.shard.name, o.error) for o in failed], bad_input=all(o.bad_input for o in failed)
                )
            run = {
                "engine": engine.name,
                "workers": config.workers,
                "shards_run": len(tasks),
                "shards_resumed": len(done),
                "rows_run": sum(o.summary["rows"] for o in outcomes),
            }
            fresh = {o.task.part: o.summary for o in outcomes}
            summaries = [fresh.get(i) or layout.read_done(i) for i in range(len(shards))]
            report = _merge_and_report(config, banks, shards, summaries, layout, remote, run, started)
            if remote:
                for path in sorted(layout.root.rglob("*")):
                    rel = _rel(layout, path)
                    if path.is_file() and not rel.startswith(("_state/", "results/")):
                        remote.upload(path, rel)
    return report


def _rel(layout: OutLayout, path: Path) -> str:
    return path.relative_to(layout.root).as_posix()


def _pull(remote: Remote, layout: OutLayout, folder: str) -> None:
    """Copy OUT/folder of a remote OUT into the local staging copy (what is not there yet), many
    files at once: a store answers each request slowly, and there is a done-marker per shard."""
    wanted = [rel for rel, size in remote.files(folder) if not _same_size(layout.root / rel, size)]
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(lambda rel: remote.download(rel, layout.root / rel), wanted))


def _same_size(path: Path, size: int) -> bool:
    return path.is_file() and path.stat().st_size == size


def _merge_and_report(
    config: ScanConfig,
    banks: list,
    shards: Sequence[Shard],
    summaries: Sequence[dict],
    layout: OutLayout,
    remote: Remote | None,
    run: dict,
    started: float,
) -> dict[str, Any]:
    """Every shard is done: merge their counts into the report and their removed and held rows
    into the manifests. A results part is read in full only when it has such rows (or it is an
    image folder's, whose kept files are listed); otherwise its decisions alone are read. `run`:
    how this run went (engine, workers, shards and rows run), for the report's timings."""
    created = _now()
    builder = ReportBuilder()
    folders = {s.name: s.name.rsplit("/", 1)[0] for s in shards if s.kind == "folder"}
    manifests = ManifestWriter(layout, folders, created)
    filesystem = remote.filesystem if remote else None

    def read(i: int) -> tuple[int, pa.Table]:
        """(rows in shard i's results file, what of it the manifests need)."""
        path = remote.path(_rel(layout, layout.part(i))) if remote else str(layout.part(i))
        with filesystem.open_input_file(path) if remote else open(path, "rb") as fh:
            results = pq.ParquetFile(fh)
            part = results.read(columns=["decision"])
            if shards[i].kind == "folder" or pc.any(pc.not_equal(part["decision"], str(Decision.KEEP))).as_py():
                part = results.read()
            return results.metadata.num_rows, part

    # reading is I/O, and from object storage mostly waiting: many parts at once (a window of
    # them, so memory stays flat over a million shards), merged in order
    with ThreadPoolExecutor(16) as pool:
        for start in range(0, len(shards), 256):
            window = range(start, min(len(shards), start + 256))
            for i, (rows, part) in zip(window, pool.map(read, window), strict=True):
                builder.merge(summaries[i]["counts"])
                builder.part_written(shards[i].name, rows)
                manifests.add(part)
    manifests.close()
    elapsed = time.perf_counter() - started
    report = builder.finish(
        summaries=summaries,
        banks=[{k: v for k, v in b.to_dict().items() if k != "sources"} for b in banks],
        policy={**config.policy.to_dict(), "sha256": config.policy.sha256},
        settings={
            **asdict(config.check),
            **{f"read.{k}": v for k, v in asdict(config.read).items()},
        },
        created=created,
        timings={
            "seconds": round(elapsed, 3),
            **run,
            "rows_per_second": round(run["rows_run"] / elapsed, 1) if elapsed > 0 else None,
        },
    )
    write_json(layout.report_json, report)
    render_report(layout.root)  # from report.json, exactly as `safeset report` does
    return report
