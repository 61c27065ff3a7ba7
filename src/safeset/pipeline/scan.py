"""Runs over OUT: a scan (plan shards, observe and decide the ones not done yet on an engine, merge,
report) and a decide round (`safeset decide`, or a rescan with other banks or policy: see
`pipeline.decide`).

Resume is by shard: a shard whose done-marker exists is skipped, and since every shard's output is a
function of its input, the banks, the policy and the settings alone, a resumed run produces the same
files as an uninterrupted one. `_state/run.json` records those inputs. A rerun that observes
differently (other inputs, read or hashing settings, fetch options) into the same OUT is refused
rather than mixing two scans; one that decides differently (other banks, policy or match
thresholds) is a decide round over the shards decided otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..banks import BankStore
from ..banks.verdicts import Verdicts, entry_tag, log_sha256
from ..errors import BadInputError, ShardsFailedError, UsageError
from ..model import Decision, Status
from ..neighbours import SIGNAL as EXPANDED
from ..policy import Policy
from ..redact import redact
from ..report import ConservationError, render_report, versions
from ..signals import models, nsfw
from ..signals.optout import SIGNALS as HASHED_SIGNALS
from ..sinks import OutLayout, read_json, write_json
from ..sources import ReadOptions, Shard, plan_shards, reader_for
from ..storage import Lease, Remote, is_remote, scratch, staging_base
from .check import MATCH_SETTINGS, CheckSettings
from .copies import find_copies
from .decide import (
    check_format,
    commit_round,
    file_changes,
    finish_pending_round,
    merge_transitions,
    round_entry,
    start_round,
)
from .expand import expansion_files, expansion_summaries
from .flood import quarantine
from .merge import Merger
from .progress import ScanProgress
from .task import RunSpec, ShardTask

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


def _fingerprint_shards(shards: Sequence[Shard]) -> list:
    """Each shard's files as they are now (size, time): a changed input is another scan's."""

    def stat(path: str) -> list:
        if is_remote(path):
            return [path, *Remote(path).stat()]
        try:
            st = os.stat(path)
        except OSError:  # a dangling link or a loop: a row of its own, noticed if it changes
            st = os.lstat(path)
        return [path, st.st_size, st.st_mtime_ns]

    return [[s.kind, s.name, [stat(f) for f in s.files]] for s in shards]


def _fingerprint(config: ScanConfig, shards: Sequence[Shard], spec: RunSpec) -> dict[str, Any]:
    settings = asdict(spec.settings)
    return {
        "safeset": versions()["safeset"],
        # as paths from anywhere: `decide` plans the shards again, from whatever folder it runs in
        "inputs": [i if is_remote(i) else os.path.abspath(i) for i in config.inputs],
        "shards": _fingerprint_shards(shards),
        "banks": [list(b) for b in spec.banks],
        "policy": spec.policy.to_dict(),
        "match": {name: settings.pop(name) for name in MATCH_SETTINGS},
        "settings": settings,
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


# What decides, given the observations: a run that changes only these is a decide round.
DECISION_KEYS = ("banks", "policy", "match")


def _observed_alike(layout: OutLayout, fingerprint: dict[str, Any]) -> None:
    """Refuse a run whose observations would differ from those OUT holds."""
    if not layout.run_spec.is_file():
        return
    previous = read_json(layout.run_spec)
    keys = [k for k in fingerprint if k not in DECISION_KEYS]
    # as written (URIs' credentials masked: rotating them is not another scan)
    changed = [k for k in keys if previous.get(k) != json.loads(json.dumps(redact(fingerprint[k])))]
    if changed:
        raise UsageError(
            f"{layout.root} holds a scan with different {', '.join(changed)}; "
            "use another --out, or delete it to start over"
        )


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
    # the columns the policy's rules read are observed, as those asked for
    asked = set(config.read.signals) | set(config.policy.signals)
    modelled = {nsfw.SIGNAL, EXPANDED} | {name for name, _ in config.check.score_models}
    columns = tuple(s for s in sorted(asked) if s not in HASHED_SIGNALS and s not in modelled)
    config = replace(config, read=replace(config.read, signals=columns))
    if nsfw.SIGNAL in asked:  # a classifier's score, not a column: stop now if it is not installed
        nsfw.require()
        config = replace(config, check=replace(config.check, nsfw=True))
    if config.check.score_models and not config.check.embed_model:
        raise UsageError("--score-model scores the embeddings of --embed-model: give one")
    if config.check.embed_model:
        if is_remote(config.out):
            raise UsageError("--embed-model writes OUT/embeddings/: not yet on object storage, give a local --out")
        encoder = models.Encoder(config.check.embed_model)  # read once here: refused now, not in every worker
        for name, path in config.check.score_models:
            models.Scorer(name, path)
        config = replace(config, check=replace(config.check, embed_size=encoder.size))
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
        expansions=() if is_remote(config.out) else expansion_files(OutLayout(config.out)),
        verdicts=log_sha256(store.home),
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
            if not remote:
                finish_pending_round(layout)
            fingerprint = _fingerprint(config, shards, spec)
            _observed_alike(layout, fingerprint)
            layout.remove_partials()
            earlier = {i: summary for i in range(len(shards)) if (summary := layout.read_done(i)) is not None}
            again = {i for i, summary in earlier.items() if config.retry_failed and _has_passing_failures(summary)}
            done = earlier.keys() - again
            # Shards observed before but decided otherwise: a decide round, once the rest are observed.
            stale = {i for i in done if earlier[i].get("decided_with") != spec.decided_with}
            if stale and remote:
                raise UsageError(
                    f"{config.out} was decided with other banks or another policy; deciding again on object "
                    "storage is not supported yet: scan into a new OUT"
                )
            if not stale:  # else the round writes it, with its outputs: until then OUT says what decided them
                write_json(layout.run_spec, fingerprint)
                if remote:
                    remote.upload(layout.run_spec, layout.relative(layout.run_spec))
            target = remote.uri if remote else str(layout.root)
            tasks = [
                ShardTask(i, s, target, spec, retry_failed=i in again) for i, s in enumerate(shards) if i not in done
            ]
            # Merged as shards finish; with a round to come, the round merges every shard instead.
            merger = None if stale else Merger(shards, layout, remote, created=_now())
            for i in sorted(done - stale if merger else ()):
                merger.done(i, earlier[i])

            def shard_done(outcome: ShardOutcome) -> None:
                progress.shard_done(outcome)
                if outcome.error is None and merger is not None:
                    merger.done(outcome.task.part, outcome.summary)

            with ScanProgress(
                len(shards), len(done), enabled=config.progress, fetching=config.fetch is not None
            ) as progress:
                try:
                    outcomes = engine.run(tasks, Progress(counts=progress.counts, shard_done=shard_done))
                except BaseException:  # Ctrl-C: the done shards stay done, no manifest is left half-written
                    if merger is not None:
                        merger.abandon()
                    raise
            fail_if_any(outcomes, merger)
            run = {
                "engine": engine.name,
                "workers": config.workers,
                "shards_run": len(tasks),
                "shards_resumed": len(done),
                "shard_retries": sum(o.attempts - 1 for o in outcomes),
                "rows_run": sum(o.summary["rows"] for o in outcomes),
                "rows_refetched": sum(o.summary.get("refetched", 0) for o in outcomes),
            }
            reported = Reported(config.policy, banks, config.check, config.read, plan.ignored, started)
            if stale:
                return run_round(
                    layout, shards, spec, stale, engine, reported, run, "scan", config.progress, fingerprint
                )
            rounds = _rounds(layout, None, spec, merger.manifests.time, merger.report.rows)
            report = _report(reported, merger, layout, run, rounds)
            if not remote and _audit_wide(layout, len(shards), spec):
                # entries that flood the audit, copies of what it flagged: a round of their own
                return run_round(
                    layout, shards, spec, set(), engine, reported, run, "audit-wide", config.progress, fingerprint
                )
            if remote:  # what the scan wrote itself; the shards' files are there already
                remote.upload_tree(layout.root, skip=("_state/", "results/"))
    return report


@dataclass(frozen=True)
class DecideConfig:
    """A decide round over OUT: `safeset decide` and `safeset.decide` build one of these."""

    out: str
    banks: tuple[str, ...] | None = None  # None: the banks OUT was last decided with, current versions
    policy: Policy | None = None  # None: the policy OUT was last decided with
    pdq_threshold: int | None = None  # None: as OUT was last decided
    pdq_variant_threshold: int | None = None
    vpdq_query_percent: float | None = None
    vpdq_compared_percent: float | None = None
    flood_limit: int | str | None = None  # None: the policy's [flood] limit; "0.1%": a share of the rows
    workers: int | None = None
    engine: str = "local"
    ray_address: str | None = None
    retries: int = 2
    home: str | None = None
    progress: bool = False


def run_decide(config: DecideConfig) -> dict[str, Any]:
    """Match OUT's stored observations against the banks and decide them again, every shard, then
    rewrite the clean release, manifests and report as one round (see `pipeline.decide`)."""
    started = time.perf_counter()
    if is_remote(config.out):
        raise UsageError(f"{config.out}: deciding again on object storage is not supported yet")
    layout = OutLayout(config.out)
    if not layout.run_spec.is_file():
        raise UsageError(f"{config.out} holds no scan: run `safeset scan ... --out {config.out}` first")
    with layout.locked():
        finish_pending_round(layout)
        return decide_locked(config, layout, started=started)


def decide_locked(
    config: DecideConfig,
    layout: OutLayout,
    kind: str = "decide",
    pending: tuple[tuple[str, str], ...] = (),
    prepare: Callable[[OutLayout], None] | None = None,
    started: float | None = None,
) -> dict[str, Any]:
    """`run_decide`'s round, with OUT locked. `pending`, `prepare`: the candidates of an expansion
    round (`pipeline.expand`), and what writes them into the round, committed with it."""
    from ..engines import engine_for

    started = time.perf_counter() if started is None else started
    last = read_json(layout.run_spec)
    if (
        not isinstance(last, dict)
        or not {"inputs", "shards", "read", "settings", "match", "banks", "policy"} <= last.keys()
    ):
        raise UsageError(f"{layout.run_spec} was written by an older safeset: scan again into a new OUT to decide")
    read = ReadOptions(**last["read"])
    plan = plan_shards(last["inputs"], read)
    shards = plan.shards
    missing = [s.name for i, s in enumerate(shards) if not layout.done(i).is_file()]
    if missing:
        raise UsageError(
            f"the scan in {config.out} is not complete ({len(missing)} shard(s) not done, the first "
            f"{missing[0]}): run the scan again to finish it, then decide"
        )
    store = BankStore(config.home)
    inherited = [name for name, _ in last["banks"]]
    try:
        banks = store.resolve(config.banks) if config.banks else store.resolve(inherited) if inherited else []
    except UsageError as exc:
        if config.banks:
            raise
        raise UsageError(
            f"{exc}; {config.out} was last decided with bank(s) {', '.join(inherited) or '(none)'}: "
            "name the banks to decide with (--bank)"
        ) from None
    policy = config.policy or Policy.from_dict(last["policy"], source=f"{layout.run_spec} (policy)")
    if config.flood_limit is not None:
        policy = replace(policy, flood=config.flood_limit)
    policy.check_banks(store.names())
    scored = {nsfw.SIGNAL} if last["settings"].get("nsfw") else set()
    scored |= {name for name, _ in last["settings"].get("score_models", ())}
    lacking = sorted(set(policy.signals) - set(read.signals) - set(HASHED_SIGNALS) - scored - {EXPANDED})
    if lacking:
        raise UsageError(
            f"policy {policy.name!r} reads signal(s) {', '.join(lacking)}, which the scan in {config.out} did not "
            f"record (it recorded: {', '.join(read.signals) or 'none'}): scan again into a new OUT with "
            f"--signals {','.join(lacking)}"
        )
    asked = {name: getattr(config, name) for name in MATCH_SETTINGS}  # None: as last decided
    # a match setting an older scan did not record is at its default
    last_match = {name: value for name, value in last["match"].items() if name in MATCH_SETTINGS}
    check = CheckSettings(**last["settings"], **{**last_match, **{k: v for k, v in asked.items() if v is not None}})
    match = check.thresholds
    fetched = last.get("fetch") or {}
    spec = RunSpec(
        str(store.home),
        tuple((b.name, b.sha256) for b in banks),
        policy,
        check,
        save_images=bool(fetched.get("save_images")),
        expansions=expansion_files(layout) + pending,
        verdicts=log_sha256(store.home),
    )
    _same_shards(shards, last["shards"])
    fingerprint = {**last, "banks": [list(b) for b in spec.banks], "policy": policy.to_dict(), "match": match}
    engine = engine_for(config.engine, config.workers, config.retries, config.ray_address)
    reported = Reported(policy, banks, check, read, plan.ignored, started)
    run = {"engine": engine.name, "workers": config.workers, "shards_run": len(shards), "rows_run": 0}
    every = set(range(len(shards)))
    return run_round(layout, shards, spec, every, engine, reported, run, kind, config.progress, fingerprint, prepare)


_MARKER_KEYS = frozenset({"part", "shard", "kind", "rows", "declared", "decisions", "files", "counts", "problems"})


def _done_marker(layout: OutLayout, part: int) -> dict:
    """A done shard's marker, as a round needs it whole."""
    summary = layout.read_done(part)
    if not isinstance(summary, dict) or not _MARKER_KEYS <= summary.keys():
        raise BadInputError(
            layout.done(part), "is not a done-marker this safeset reads (damaged, or older): scan again into a new OUT"
        )
    return summary


def _same_shards(shards: Sequence[Shard], scanned: list) -> None:
    """The inputs still plan into the shards and files the scan read (their content is checked
    by each shard of the round, against the checksums the scan took)."""
    planned = [[s.kind, s.name, list(s.files)] for s in shards]
    before = [[kind, name, [record[0] for record in files]] for kind, name, files in scanned]
    if planned == before:
        return
    for now, then in zip(planned + [None] * len(before), before + [None] * len(planned), strict=False):
        if now != then:
            what = now or then
            raise BadInputError(
                what[2][0] if what[2] else what[1],
                "the inputs are not those the scan read (a file or shard "
                + ("appeared" if then is None else "is gone" if now is None else "differs")
                + "): kept rows are copied from the inputs as the scan found them; scan again into a new OUT",
            )


def fail_if_any(outcomes: Sequence, merger: Merger | None, deciding: bool = False) -> None:
    failed = [o for o in outcomes if o.error]
    if failed:
        if merger is not None:
            merger.abandon()
        raise ShardsFailedError(
            [(o.task.shard.name, o.error) for o in failed],
            bad_input=all(o.bad_input for o in failed),
            deciding=deciding,
        )


@dataclass(frozen=True)
class Reported:
    """What the report says of a run besides its counts."""

    policy: Policy
    banks: list
    check: CheckSettings
    read: ReadOptions
    ignored: list[dict[str, str]]
    started: float


def _rounds(layout: OutLayout, entry: dict | None, spec: RunSpec, created: str, rows: int = 0) -> list[dict]:
    """The report's `rounds`: those of the report OUT holds, and `entry` after them; a scan that
    decides nothing anew (a resumed or repeated one) adds none, except the scan's own first."""
    before = read_json(layout.report_json).get("rounds", []) if layout.report_json.is_file() else []
    if entry is not None and not before:  # the first report: nothing decided before was reported
        entry = {**entry, "transitions": {}}
    if entry is not None:
        return [*before, {**entry, "round": len(before) + 1}]
    return before or [round_entry(1, "scan", spec, created, rows, {})]


def run_round(
    layout: OutLayout,
    shards: Sequence[Shard],
    spec: RunSpec,
    stale: set[int],
    engine: Any,
    reported: Reported,
    run: dict,
    kind: str,
    show_progress: bool,
    record: dict[str, Any],
    prepare: Callable[[OutLayout], None] | None = None,
) -> dict[str, Any]:
    """Decide the shards `stale` again into a round of their own; then, unless the policy keeps
    copies, the shards whose copies of flagged rows changed (`pipeline.copies`) again with them;
    merge every shard, write the manifests, the report and the run's `record` (run.json) into the
    round, and commit it (see `pipeline.decide`)."""
    from ..engines import Progress

    started = time.perf_counter()
    check_format(layout.part(min(stale or {0})))  # one safeset wrote every part (run.json says which)
    staged = start_round(layout)
    if prepare is not None:
        prepare(staged)
    markers = {i: _done_marker(layout, i) for i in range(len(shards))}
    # what the scan found each input file to be, from the shard that hashed it (a table read in parts
    # is hashed by its first): every shard the round writes checks its files against it
    sums = {r["path"]: r["sha256"] for marker in markers.values() for r in marker["files"] if "sha256" in r}

    def decide(parts: dict[int, dict[int, str]], spec: RunSpec = spec) -> dict[int, dict]:
        tasks = [
            ShardTask(
                i,
                shards[i],
                str(layout.root),
                spec,
                round=str(staged.root),
                checksums=tuple((f, sums[f]) for f in shards[i].files if f in sums),
                copies=tuple(sorted(copies.items())),
            )
            for i, copies in sorted(parts.items())
        ]
        with ScanProgress(len(tasks), 0, enabled=show_progress and bool(tasks), fetching=False) as progress:
            outcomes = engine.run(tasks, Progress(counts=progress.counts, shard_done=progress.shard_done))
        try:
            fail_if_any(outcomes, None, deciding=True)
        except BaseException:
            shutil.rmtree(staged.root, ignore_errors=True)
            raise
        return {o.task.part: o.summary for o in outcomes}

    decided = decide({i: {} for i in stale})

    def current() -> dict[int, Path]:
        return {i: (staged if i in decided else layout).part(i) for i in range(len(shards))}

    # what needs the whole audit's decisions: entries that flood it, then copies of what it flags
    flooded, again = quarantine(current(), spec.policy.flood, _exempt(spec))
    spec = replace(spec, quarantine=frozenset(flooded))
    decided.update(decide({i: {} for i in again}, spec))
    if spec.policy.copies != Decision.KEEP:
        changed = find_copies(current(), spec.policy, spec.settings.pdq_threshold, spec.settings.pdq_min_quality)
        decided.update(decide(changed, spec))
    before = {i: markers[i] for i in sorted(decided)}
    changes = merge_transitions(decided.values())
    merger = Merger(shards, staged, None, created=_now(), parts=lambda i: (staged if i in decided else layout).part(i))
    for i in range(len(shards)):
        merger.done(i, dict(decided[i]) if i in decided else markers[i])
    rows = sum(s["rows"] for s in decided.values())
    entry = round_entry(0, kind, spec, merger.manifests.time, rows, changes)
    run = {**run, "round_seconds": round(time.perf_counter() - started, 3), "rows_decided": rows}
    expansion = expansion_summaries(layout) + expansion_summaries(staged)
    quarantined = [{"bank": b, "entry": entry_tag(e), "rows": n} for (b, e), n in sorted(flooded.items())]
    rounds = _rounds(layout, entry, spec, merger.manifests.time)
    report = _report(reported, merger, staged, run, rounds, expansion, quarantined)
    write_json(staged.run_spec, record)
    file_changes(staged, rounds[-1]["round"])
    commit_round(layout, before, decided)
    return report


def _exempt(spec: RunSpec) -> set[tuple[str, str]]:
    """The list entries no flood quarantines, as (bank, tag): those a verdict released, and those
    it disabled (their matches no longer act, so they flood nothing)."""
    if not spec.verdicts:
        return set()
    verdicts = Verdicts.load(spec.home)
    return verdicts.released | verdicts.disabled


def _audit_wide(layout: OutLayout, shards: int, spec: RunSpec) -> bool:
    """Whether a scan's decisions need the round that looks at the whole audit: an entry floods it
    (or a flood reason is no longer right), or a copy of a flagged row is not decided as one."""
    parts = {i: layout.part(i) for i in range(shards)}
    _, again = quarantine(parts, spec.policy.flood, _exempt(spec))
    if again:
        return True
    if spec.policy.copies == Decision.KEEP:
        return False
    return bool(find_copies(parts, spec.policy, spec.settings.pdq_threshold, spec.settings.pdq_min_quality))


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
    reported: Reported,
    merger: Merger,
    layout: OutLayout,
    run: dict,
    rounds: list[dict],
    expansion: list[dict] = (),
    quarantined: list[dict] = (),
) -> dict[str, Any]:
    """Every shard is merged: commit the manifests, write report.json and report.html into
    `layout`. `run`: how this run went (engine, workers, shards and rows run), for the timings."""
    summaries = merger.finish()
    elapsed = time.perf_counter() - reported.started
    report = merger.report.finish(
        summaries=summaries,
        banks=[{k: v for k, v in b.to_dict().items() if k != "sources"} for b in reported.banks],
        policy=reported.policy,
        settings={
            **asdict(reported.check),
            **{f"read.{k}": v for k, v in asdict(reported.read).items()},
        },
        created=merger.manifests.time,
        ignored=reported.ignored,
        rounds=rounds,
        timings={
            "seconds": round(elapsed, 3),
            **run,
            "rows_per_second": round(run["rows_run"] / elapsed, 1) if elapsed > 0 else None,
        },
    )
    if expansion:
        report["expansion"] = list(expansion)
    if quarantined:  # each entry named by its bank and tag, never by the listed value
        report["quarantined"] = list(quarantined)
    write_json(layout.report_json, report)
    render_report(layout.root)  # from report.json, exactly as `safeset report` does
    if not report["conservation"]["holds"]:
        raise ConservationError(
            f"rows in != keep + remove + review (see conservation in {layout.report_json}); this is a bug in safeset"
        )
    return redact(report)
