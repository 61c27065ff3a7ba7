"""Decide rounds: the stored observations of a scan matched against the banks again and decided by
the policy again, and the clean release, manifests and report written anew, without reading an
image again.

`safeset decide OUT` runs one, and so does a rerun of `safeset scan` into an OUT whose shards were
decided with other banks (or other versions of them), another policy or other match thresholds
(a done-marker records what its shard was decided with: `RunSpec.decided_with`).

A round writes everything it changes under `OUT/_state/round/`, laid out as OUT is: the results
parts, clean files and done-markers of the shards it decided, the manifests, the report and the
run's record. Until it is complete, OUT's own outputs stay as they were. Then one file,
`OUT/_state/round.commit.json`, says which files move into place and which clean files of the
round before are deleted; it is written atomically, and is the round's commit. The moves follow
(each a rename), the done-markers and the report last. A round killed before its commit is
thrown away by the next command on OUT; one killed after it is completed by that command
(`finish_pending_round`): either way OUT ends holding one round's outputs whole.

Kept rows are copied from the input by their stored places (tar members by span, checked by size
and MD5; table rows by index; files by name), so the inputs must be where and as the scan found
them: a changed input is refused.
"""

from __future__ import annotations

import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..atomic import commit_together, fsync_dir
from ..banks.verdicts import read_log
from ..errors import BadInputError, UsageError
from ..model import Decision
from ..policy.rules import signal_conditions
from ..report.build import condition_counts, shard_counts, value_counts
from ..sinks import OutLayout, read_json, write_json, write_results
from ..sinks.clean import clean_writer, copies_checked
from ..sinks.results import READABLE_VERSIONS, conformed
from ..storage import is_remote
from .check import decide_table
from .diff import changed_rows
from .expand import candidates_of
from .task import ShardTask, auditor_for, clean_files, file_record, worker_record

CHANGED = "changed"  # under a staged round's _state/: its shards' changed rows, before it has a number
ROUND_RECORD = "round.json"

_COMMIT = "round.commit.json"


def round_layout(layout: OutLayout) -> OutLayout:
    """Where a round writes its outputs before they are committed."""
    return OutLayout(layout.state / "round")


def check_format(part: Path) -> pq.ParquetFile:
    """A results part a round can read: refused if an older safeset wrote it (it lacks
    observations a round needs, such as PDQ variants and where each row sits)."""
    try:
        parquet = pq.ParquetFile(part)
    except (OSError, pa.ArrowException) as exc:
        raise BadInputError(part, f"cannot read this results part ({exc}): restore it, or scan again") from None
    version = (parquet.schema_arrow.metadata or {}).get(b"safeset.format_version", b"1").decode()
    if version not in READABLE_VERSIONS:
        raise UsageError(
            f"{part} holds results of format {version}; this safeset decides from formats "
            f"{', '.join(READABLE_VERSIONS)}: "
            "scan again into a new OUT"
        )
    return parquet


def read_results(part: Path) -> pa.Table:
    """A results part as the results schema names it (parquet names a list's elements its own way)."""
    parquet = check_format(part)
    try:
        table = conformed(parquet.read())
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise BadInputError(part, f"cannot read this results part ({exc}): restore it, or scan again") from None
    if table["status"].null_count or table["index"].null_count:
        raise BadInputError(part, "holds rows without a status or an index: not a results part safeset wrote")
    return table


def decide_shard(task: ShardTask, progress: Callable[[dict], None] | None = None) -> dict:
    """One shard of a round: its results part read from OUT, matched and decided again, its new
    results part, clean files and done-marker written under the round's folder."""
    started = time.perf_counter()
    layout, target = OutLayout(task.out), OutLayout(task.round)
    earlier = layout.read_done(task.part)
    if earlier is None:
        raise RuntimeError(f"{task.shard.name}: the shard has no done-marker, so no observations to decide on")
    observed = read_results(layout.part(task.part))
    checker = auditor_for(task.spec)
    expanded = candidates_of(task, observed["row_id"]) if task.spec.expansions else None
    table, _ = decide_table(
        observed,
        checker.matcher,
        checker.policy,
        task.spec.settings.pdq_min_quality,
        expanded,
        dict(task.copies),
        checker.verdicts,
        task.spec.quarantine,
    )
    if progress is not None:
        progress({"items": table.num_rows})
    summary = {
        **earlier,
        "seconds": 0.0,
        "worker": worker_record(),
        "decided_with": task.spec.decided_with,
        "transitions": transitions(observed, table),
    }
    _keep_changes(target, task.part, changed_rows(observed, table, reasons_too=True))
    alike = all(table[name].equals(observed[name]) for name in ("matches", "decision", "reasons"))
    if alike and _linked(layout, target, task.part, earlier["clean"]):
        # decided as before, but perhaps by another policy: the counts of its conditions are its own
        conditions = condition_counts(table, signal_conditions(task.spec.policy.rules))
        summary["counts"] = {**earlier["counts"], "conditions": conditions}
    else:
        summary.update(_write_shard(task, layout, target, earlier, table))
    summary["seconds"] = round(time.perf_counter() - started, 3)
    write_json(target.done(task.part), summary)
    return summary


def _keep_changes(target: OutLayout, part: int, changed: pa.Table) -> None:
    """The rows of a shard this round decides otherwise or for other reasons, for `safeset diff OUT
    --rounds`. A shard decided twice in one round (a pass over the whole audit) keeps its last."""
    path = target.state / CHANGED / f"part-{part:05d}.parquet"
    if changed.num_rows:
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(changed, path)
    else:
        path.unlink(missing_ok=True)


def round_changes(layout: OutLayout, number: int) -> Path:
    """Where round `number` keeps the rows it decided otherwise (one parquet per shard)."""
    return layout.state / "rounds" / f"round-{number:03d}"


def file_changes(staged: OutLayout, number: int) -> None:
    """File a finished round's changed rows under its number (known only once it is done), with a
    record that it kept them, before it is committed."""
    target = round_changes(staged, number)
    target.parent.mkdir(parents=True, exist_ok=True)
    if (staged.state / CHANGED).is_dir():
        (staged.state / CHANGED).rename(target)
    else:
        target.mkdir()
    rows = sum(pq.read_metadata(p).num_rows for p in target.glob("part-*.parquet"))
    write_json(target / ROUND_RECORD, {"round": number, "rows_changed": rows})


def _linked(layout: OutLayout, target: OutLayout, part: int, clean: list[str]) -> bool:
    """A shard decided as before: its results part and clean files are the ones OUT holds,
    linked into the round (no byte copied, no input read). False if any of them is missing."""
    pairs = [(layout.part(part), target.part(part))]
    pairs += [(layout.clean / rel, target.clean / rel) for rel in clean]
    if not all(source.is_file() for source, _ in pairs):
        return False
    try:
        for source, link in pairs:
            link.parent.mkdir(parents=True, exist_ok=True)
            link.unlink(missing_ok=True)  # left by an attempt at this shard whose worker died
            os.link(source, link)
    except OSError:  # a file system without hard links: the shard is written again instead
        return False
    return True


# Input files this process found as the scan did, by path, checksum and the file's identity: a
# table read in parts is hashed once per worker, not once per part.
_SCANNED_AS: set[tuple] = set()


def _as_scanned(path: str, sha256: str) -> bool:
    """Whether the file at `path` still has the SHA-256 the scan took of it."""
    try:
        found = os.stat(path) if not is_remote(path) else None
    except OSError:
        found = None
    # ctime too: a copy that restores the modification time (cp -p, rsync -t) still changes it
    stat = (found.st_dev, found.st_ino, found.st_size, found.st_mtime_ns, found.st_ctime_ns) if found else None
    identity = (path, sha256, *stat) if stat else None
    if identity in _SCANNED_AS:
        return True
    alike = file_record(path).get("sha256") == sha256
    if alike and identity:
        _SCANNED_AS.add(identity)
    return alike


def _write_shard(task: ShardTask, layout: OutLayout, target: OutLayout, earlier: dict, table: pa.Table) -> dict:
    """A shard's clean files, copied from its inputs (checked against what the scan read), and
    its results part, written into the round; its summary's fields for them."""
    for path, sha256 in task.checksums:
        if not copies_checked(task.shard, path):
            if not _as_scanned(path, sha256):
                raise BadInputError(
                    path,
                    "changed since the scan read it (its SHA-256 differs): kept rows are copied from the "
                    "inputs as the scan found them; scan again into a new OUT",
                )
    with commit_together() as together:
        writer = clean_writer(task.shard, target.clean, save_images=task.spec.save_images, earlier=layout.clean)
        try:
            writer.keep_decided(table)
            writer.close()
        except BaseException:
            writer.abort()
            raise
    write_results(table, target.part(task.part))
    fetched = "fetch" in earlier and task.shard.kind == "table"
    return {**shard_counts(table, fetched, task.spec.policy), "clean": clean_files(target, together)}


def transitions(before: pa.Table, after: pa.Table) -> dict[str, dict]:
    """How decisions changed, `{"keep->remove": {reason: rows}}`: counted under the reasons of the
    new decision, except for a row now kept, counted under the reasons it was held for."""
    old, new = before["decision"], after["decision"]
    changed = pc.not_equal(old, new)
    if not pc.any(changed).as_py():
        return {}
    rows = pa.table(
        {
            "old": old.filter(changed),
            "new": new.filter(changed),
            "why": pc.if_else(
                pc.equal(new.filter(changed), str(Decision.KEEP)),
                before["reasons"].filter(changed),
                after["reasons"].filter(changed),
            ),
        }
    )
    found: dict[str, Counter[str]] = {}
    for change in rows.group_by(["old", "new"]).aggregate([]).to_pylist():
        picked = rows.filter(pc.and_(pc.equal(rows["old"], change["old"]), pc.equal(rows["new"], change["new"])))
        why = pc.list_flatten(picked["why"])
        counts = Counter(value_counts(why))
        unexplained = pc.sum(pc.equal(pc.list_value_length(picked["why"]), 0)).as_py() or 0
        if unexplained:
            counts["(none)"] += unexplained
        found[f"{change['old']}->{change['new']}"] = counts
    return {change: dict(sorted(counts.items())) for change, counts in sorted(found.items())}


def merge_transitions(summaries: Sequence[dict]) -> dict[str, dict]:
    merged: dict[str, Counter[str]] = {}
    for summary in summaries:
        for change, counts in summary.get("transitions", {}).items():
            merged.setdefault(change, Counter()).update(counts)
    return {change: dict(sorted(counts.items())) for change, counts in sorted(merged.items())}


def commit_round(layout: OutLayout, replaced: dict[int, dict], decided: dict[int, dict]) -> None:
    """The round under `round_layout(layout)` is complete: commit it (see the module's docstring).
    `replaced`, `decided`: the done-markers of the shards the round decided, before and after."""
    staged = round_layout(layout)
    moves = sorted(
        (p.relative_to(staged.root).as_posix() for p in staged.root.rglob("*") if p.is_file() or p.is_symlink()),
        key=_move_order,
    )
    deletes = sorted(
        f"clean/{rel}" for i, old in replaced.items() for rel in set(old.get("clean", ())) - set(decided[i]["clean"])
    )
    write_json(layout.state / _COMMIT, {"moves": moves, "deletes": deletes})
    _apply(layout)


def _move_order(rel: str) -> tuple[int, str]:
    """Shards' results and clean files first, then their done-markers, the run's record, the
    manifests, and the report last: what a reader looks at to see that a round is done."""
    if rel.startswith(("results/", "clean/", "expansion/")):
        rank = 0
    elif rel.startswith("_state/"):
        rank = 1
    elif rel.startswith("report."):
        rank = 3
    else:
        rank = 2
    return rank, rel


def _apply(layout: OutLayout) -> None:
    """Carry out a committed round's moves and deletes; what a kill left done is skipped."""
    record = _commit_record(layout)
    staged = round_layout(layout)
    for rel in record["deletes"]:
        (layout.root / rel).unlink(missing_ok=True)
    touched = set()
    for rel in record["moves"]:
        source, target = staged.root / rel, layout.root / rel
        if source.is_file() or source.is_symlink():
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, target)
            touched.add(target.parent)
    for folder in touched:
        fsync_dir(folder)
    shutil.rmtree(staged.root, ignore_errors=True)
    (layout.state / _COMMIT).unlink()


def _commit_record(layout: OutLayout) -> dict:
    """The commit record, refused unless every path it names is a file of OUT's outputs: a
    record that names anything else was not written by safeset."""
    path = layout.state / _COMMIT
    record = read_json(path)
    allowed = {p.name for p in layout.outputs}
    names = record.get("moves"), record.get("deletes")
    for name in [n for group in names if isinstance(group, list) for n in group]:
        parts = PurePosixPath(name).parts if isinstance(name, str) else ()
        folder = len(parts) > 1 and parts[0] in ("results", "clean", "_state", "expansion")
        if not parts or ".." in parts or parts[0] not in allowed or (len(parts) > 1 and not folder):
            raise BadInputError(path, f"names {name!r}, which is not an output of OUT; not a record safeset wrote")
    if not all(isinstance(group, list) for group in names):
        raise BadInputError(path, "is not a round's commit record")
    return record


def finish_pending_round(layout: OutLayout) -> None:
    """What the last run on OUT left of a round: completed if it was committed, thrown away if
    not. Called with OUT locked, before anything else reads OUT."""
    if (layout.state / _COMMIT).is_file():
        _apply(layout)
    else:
        shutil.rmtree(round_layout(layout).root, ignore_errors=True)


def start_round(layout: OutLayout) -> OutLayout:
    staged = round_layout(layout)
    shutil.rmtree(staged.root, ignore_errors=True)
    staged.create()
    return staged


def round_entry(number: int, kind: str, spec: Any, created: str, rows: int, changes: dict) -> dict:
    """A `rounds` record of the report: what decided (banks, policy, thresholds, and the verdicts
    in force: the log's checksum and its verdicts by kind), how many rows, what changed."""
    entry = {
        "round": number,
        "kind": kind,
        "time": created,
        "banks": [{"name": name, "sha256": sha} for name, sha in spec.banks],
        "policy": {"name": spec.policy.name, "sha256": spec.policy.sha256},
        "match": spec.settings.thresholds,
        "rows": rows,
        "transitions": changes,
    }
    if spec.verdicts:
        counts = Counter(record["verdict"] for record in read_log(spec.home))
        entry["verdicts"] = {"log_sha256": spec.verdicts, "in_log": dict(sorted(counts.items()))}
    return entry
