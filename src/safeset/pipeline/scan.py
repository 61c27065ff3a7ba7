"""A whole scan: plan shards, run the ones not done yet on an engine, then merge and report.

Resume is by shard: a shard whose done-marker exists is skipped, and since every shard's output is a
function of its input, the banks, the policy and the settings alone, a resumed run produces the same
files as an uninterrupted one. `_state/run.json` records those inputs; a rerun that asks for
something different into the same OUT is refused rather than mixing two scans.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..banks import BankStore
from ..errors import ShardsFailedError, UsageError
from ..model import Status
from ..policy import Policy
from ..redact import redact
from ..report import ConservationError, render_report, versions
from ..sinks import OutLayout, write_json
from ..sources import ReadOptions, Shard, plan_shards, reader_for
from ..storage import Lease, Remote, is_remote, scratch, staging_base
from .check import CheckSettings
from .merge import Merger
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
    retry_failed: bool = False  # with fetch: done shards fetch again the rows that failed for a passing reason
    home: str | None = None
    progress: bool = False

    def __post_init__(self) -> None:
        if self.save_images and self.fetch is None:
            raise UsageError("--save-images keeps fetched images: it needs --fetch")
        if self.retry_failed and self.fetch is None:
            raise UsageError("--retry-failed fetches failed rows again: it needs --fetch")
        if self.workers is not None and self.workers < 1:
            raise UsageError(f"--workers must be at least 1, got {self.workers}")
        if not self.inputs:
            raise UsageError("no input given")


def _now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def _fingerprint(config: ScanConfig, shards: Sequence[Shard], spec: RunSpec) -> dict[str, Any]:
    def stat(path: str) -> list:
        if is_remote(path):
            return [path, *Remote(path).stat()]
        try:
            st = os.stat(path)
        except OSError:  # a dangling link or a loop: a row of its own, noticed if it changes
            st = os.lstat(path)
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
        # as written (URIs' credentials masked: rotating them is not another scan)
        changed = [k for k in fingerprint if previous.get(k) != json.loads(json.dumps(redact(fingerprint[k])))]
        if changed:
            raise UsageError(
                f"{layout.root} holds a scan with different {', '.join(changed)}; "
                "use another --out, or delete it to start over"
            )
    write_json(layout.run_spec, fingerprint)


def _apart(inputs: Sequence[str], out: str) -> None:
    """OUT must not lie inside an input, nor an input inside OUT: a scan would read its own
    outputs as data (and a rerun would find an input that changed under it)."""
    if is_remote(out):
        return
    target = Path(out).resolve()
    for source in inputs:
        if is_remote(source):
            continue
        where = Path(source).resolve()
        if target == where or where in target.parents:
            raise UsageError(f"--out {out} is inside the input {source}: put the outputs somewhere else")
        if target in where.parents:
            raise UsageError(f"the input {source} is inside --out {out}: scan a copy, or use another --out")


def run_scan(config: ScanConfig) -> dict[str, Any]:
    # Engines import the pipeline's worker; importing them here, not at module level, keeps the
    # arrows of DESIGN.md pointing one way.
    from ..engines import Progress, ShardOutcome, engine_for

    started = time.perf_counter()
    store = BankStore(config.home)
    banks = store.resolve(config.banks)
    config.policy.check_banks(store.names())
    engine = engine_for(config.engine, config.workers, config.retries, config.ray_address)
    spec = RunSpec(
        str(store.home),
        tuple((b.name, b.sha256) for b in banks),
        config.policy,
        config.check,
        fetch=_per_worker(config.fetch, engine.parallelism),
        save_images=config.save_images,
    )
    _apart(config.inputs, config.out)
    plan = plan_shards(config.inputs, config.read)
    shards = plan.shards
    if any(reader_for(s.kind).staging(s, f) != "in_place" for s in shards for f in s.files if is_remote(f)):
        staging_base()  # where input shards will be held in memory: refused now if that is a disk
    remote = Remote(config.out) if is_remote(config.out) else None
    with (
        scratch("safeset-out-") if remote else nullcontext(Path(config.out)) as root,
        Lease(remote, "_state/lease.json", "scan") if remote else nullcontext(),
    ):
        layout = OutLayout(root)
        layout.create()
        if remote:
            _pull(remote, layout, "_state")
        with layout.locked():
            _check_same_scan(layout, _fingerprint(config, shards, spec))
            if remote:
                remote.upload(layout.run_spec, layout.relative(layout.run_spec))
            layout.remove_partials()
            earlier = {i: summary for i in range(len(shards)) if (summary := layout.read_done(i)) is not None}
            again = {i for i, summary in earlier.items() if config.retry_failed and _has_passing_failures(summary)}
            done = earlier.keys() - again
            target = remote.uri if remote else str(layout.root)
            tasks = [
                ShardTask(i, s, target, spec, retry_failed=i in again) for i, s in enumerate(shards) if i not in done
            ]
            merger = Merger(shards, layout, remote, created=_now())
            for i in sorted(done):
                merger.done(i, earlier[i])

            def shard_done(outcome: ShardOutcome) -> None:
                progress.shard_done(outcome)
                if outcome.error is None:
                    merger.done(outcome.task.part, outcome.summary)

            with ScanProgress(
                len(shards), len(done), enabled=config.progress, fetching=config.fetch is not None
            ) as progress:
                try:
                    outcomes = engine.run(tasks, Progress(counts=progress.counts, shard_done=shard_done))
                except BaseException:  # Ctrl-C: the done shards stay done, no manifest is left half-written
                    merger.abandon()
                    raise
            failed = [o for o in outcomes if o.error]
            if failed:
                merger.abandon()
                raise ShardsFailedError(
                    [(o.task.shard.name, o.error) for o in failed], bad_input=all(o.bad_input for o in failed)
                )
            run = {
                "engine": engine.name,
                "workers": config.workers,
                "shards_run": len(tasks),
                "shards_resumed": len(done),
                "shard_retries": sum(o.attempts - 1 for o in outcomes),
                "rows_run": sum(o.summary["rows"] for o in outcomes),
                "rows_refetched": sum(o.summary.get("refetched", 0) for o in outcomes),
            }
            report = _report(config, banks, merger, layout, run, started, plan.ignored)
            if remote:  # what the scan wrote itself; the shards' files are there already
                remote.upload_tree(layout.root, skip=("_state/", "results/"))
    return report


def _has_passing_failures(summary: dict) -> bool:
    """Whether a done shard has rows whose download failed for a reason that may pass."""
    from ..fetch import worth_refetching

    prefix = f"{Status.FETCH_FAILED}: "  # the report counts errors as "status: reason"
    errors = summary.get("counts", {}).get("errors", {})  # none: an older safeset's, refused by the merge
    return any(worth_refetching(error.removeprefix(prefix)) for error in errors if error.startswith(prefix))


def _pull(remote: Remote, layout: OutLayout, folder: str) -> None:
    """Copy OUT/folder of a remote OUT into the local staging copy (what is not there yet), many
    files at once: a store answers each request slowly, and there is a done-marker per shard."""
    wanted = [rel for rel, size in remote.files(folder) if not _same_size(layout.root / rel, size)]
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(lambda rel: remote.download(rel, layout.root / rel), wanted))


def _same_size(path: Path, size: int) -> bool:
    return path.is_file() and path.stat().st_size == size


def _report(
    config: ScanConfig,
    banks: list,
    merger: Merger,
    layout: OutLayout,
    run: dict,
    started: float,
    ignored: list[dict[str, str]],
) -> dict[str, Any]:
    """Every shard is merged: commit the manifests, write report.json and report.html. `run`: how
    this run went (engine, workers, shards and rows run), for the report's timings."""
    summaries = merger.finish()
    elapsed = time.perf_counter() - started
    report = merger.report.finish(
        summaries=summaries,
        banks=[{k: v for k, v in b.to_dict().items() if k != "sources"} for b in banks],
        policy={**config.policy.to_dict(), "sha256": config.policy.sha256},
        settings={
            **asdict(config.check),
            **{f"read.{k}": v for k, v in asdict(config.read).items()},
        },
        created=merger.manifests.time,
        ignored=ignored,
        timings={
            "seconds": round(elapsed, 3),
            **run,
            "rows_per_second": round(run["rows_run"] / elapsed, 1) if elapsed > 0 else None,
        },
    )
    write_json(layout.report_json, report)
    render_report(layout.root)  # from report.json, exactly as `safeset report` does
    if not report["conservation"]["holds"]:
        raise ConservationError(
            f"rows in != keep + remove + review (see conservation in {layout.report_json}); this is a bug in safeset"
        )
    return redact(report)
