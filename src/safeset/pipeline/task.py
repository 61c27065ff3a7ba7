"""What a shard worker is handed and what it hands back: the task (`ShardTask`, with what every
shard of a run shares, `RunSpec`), the process's auditor, and the shard's summary (its
done-marker). Shared by the scan's worker (`pipeline.worker`) and a decide round's
(`pipeline.decide`)."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow as pa

from ..banks import BankStore, Matcher
from ..banks.verdicts import Verdicts, log_sha256
from ..errors import SafesetError
from ..policy import Policy
from ..report.build import shard_counts, value_counts
from ..sinks import OutLayout, write_results
from ..sources import Shard
from ..sources.base import ShardLog
from ..storage import UnreadableFile, is_remote, is_staged, open_input, open_regular
from .check import Auditor, CheckSettings

if TYPE_CHECKING:
    from ..fetch import FetchOptions
    from .expand import SearchJob


@dataclass(frozen=True)
class RunSpec:
    """What every shard of one scan shares."""

    home: str
    banks: tuple[tuple[str, str], ...]  # (name, sha256) as planned; a changed bank fails the shard
    policy: Policy
    settings: CheckSettings
    fetch: FetchOptions | None = None  # download the images of URL-only rows (`--fetch`)
    save_images: bool = False  # write fetched images that are kept into the clean release
    # every neighbour-expansion round's candidates: (OUT-relative path, SHA-256), see `pipeline.expand`
    expansions: tuple[tuple[str, str], ...] = ()
    verdicts: str = ""  # the SHA-256 of the verdict log (`banks.verdicts`) as planned; "" none
    # (bank, entry) pairs that flooded the audit (`pipeline.flood`): found by a round's second
    # pass from the whole audit's matches, not an input, so not part of `decided_with`
    quarantine: frozenset[tuple[str, str]] = frozenset()

    @property
    def decided_with(self) -> str:
        """A checksum of what decides, given the observations: the banks' versions, the policy, the
        match thresholds and the expansions' candidates. A done shard decided with another one is
        decided again (a round)."""
        what = {"banks": [list(b) for b in self.banks], "policy": self.policy.sha256, "match": self.settings.thresholds}
        if self.expansions:
            what["expansions"] = [list(e) for e in self.expansions]
        if self.verdicts:
            what["verdicts"] = self.verdicts
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
    # A round's copies of flagged rows in this shard: (row position, reason `copy_of:ROW`), see `pipeline.copies`
    copies: tuple[tuple[int, str], ...] = ()
    # A search of one embedding file for the seeds' neighbours (`pipeline.expand`; `spec` is None)
    expand: SearchJob | None = None


class BankChangedError(SafesetError):
    pass


_CHECKERS: dict[tuple, Auditor] = {}
_BANK_LOADS = 0  # how often this process has loaded banks: once per scan, whatever its shard count


def auditor_for(spec: RunSpec) -> Auditor:
    """The process's auditor for the scan's banks (the very versions it planned), policy and
    settings: loaded once per process, whatever its shard count."""
    key = (spec.home, spec.banks, spec.policy.sha256, spec.settings, spec.verdicts)
    checker = _CHECKERS.get(key)
    if checker is None:
        store = BankStore(spec.home)
        infos = []
        for name, planned in spec.banks:  # the very versions the scan planned with, even if updated since
            info = store.version(name, planned)
            if info is None:
                raise BankChangedError(f"bank {name!r} changed twice while the scan was running; rerun the scan")
            infos.append(info)
        verdicts = Verdicts.load(spec.home) if spec.verdicts else None
        if verdicts is not None and log_sha256(spec.home) != spec.verdicts:
            raise BankChangedError("verdicts were imported while the scan was running; rerun it")
        checker = Auditor.of(Matcher.load(store, infos, spec.settings.match), spec.policy, spec.settings, verdicts)
        global _BANK_LOADS
        _BANK_LOADS += 1
        _CHECKERS.clear()  # one scan per process at a time: do not hold old banks in memory
        _CHECKERS[key] = checker
    return checker


def first_part(shard: Shard) -> bool:
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


def summary_of(
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
        **shard_counts(table, fetched=fetched and task.shard.kind == "table", policy=task.spec.policy),
        "statuses": dict(sorted(value_counts(table["status"]).items())),
        "problems": log.problems,
        # A large table read in parts is hashed once, by its first part.
        "files": [file_record(f) if first_part(task.shard) else {"path": f} for f in task.shard.files],
        "seconds": round(time.perf_counter() - started, 3),
        # where it ran, like the time it took, differs between runs; the outputs never do
        "worker": worker_record(),
        "decided_with": task.spec.decided_with,
        "clean": clean_files(layout, together),
    }
    return summary
