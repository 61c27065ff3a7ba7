"""The engine interface: schedule shard workers, retry failed shards, report progress. Nothing else.

Engines know nothing of hashing, matching or policy; they call `safeset.pipeline.worker.run_shard`
and pass its summaries back. A shard that raises `BadInputError` is not retried (the input will not
read better a second time); any other failure, including a worker process that died, is retried.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.abc
import os
import resource
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence, Set
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import ClassVar

from ..errors import BadInputError, SafesetError
from ..pipeline.task import ShardTask

# One shard worker per core is the whole of our parallelism. A numeric library that also starts a
# thread per core in every worker (OpenBLAS does, for PDQ's small matrix products) only spins on
# cores the other workers, and the fetcher's servers on loopback, need: measured, it doubled the
# CPU time of a one-worker `--fetch` scan for no gain in speed.
WORKER_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def worker_env() -> dict[str, str]:
    """WORKER_ENV, where the user has not set these variables already."""
    return {name: os.environ.get(name, value) for name, value in WORKER_ENV.items()}


@dataclass
class ShardOutcome:
    task: ShardTask
    summary: dict | None = None
    error: str | None = None
    bad_input: bool = False
    attempts: int = 0  # runs that ended, or that its worker died in


@dataclass(frozen=True)
class Progress:
    """Callbacks an engine calls from the scheduling process."""

    counts: Callable[[dict], None] = lambda counts: None  # items checked, fetch outcomes, bytes
    shard_done: Callable[[ShardOutcome], None] = lambda outcome: None


class Engine(ABC):
    name: ClassVar[str]
    clustered: ClassVar[bool] = False  # runs on a cluster it joins at `address`

    def __init__(self, workers: int | None = None, retries: int = 2, address: str | None = None):
        self.workers = workers
        self.retries = retries
        self.address = address

    @property
    @abstractmethod
    def parallelism(self) -> int:
        """How many shard workers run at once (per-domain fetch limits are shared among them)."""

    def run(self, tasks: Sequence[ShardTask], progress: Progress) -> list[ShardOutcome]:
        """Run every task; return one outcome per task, in task order.

        The retry rule, the same for every engine: a shard whose worker raised or died is run
        again, up to `retries` more times; a shard with bad input (`BadInputError`) is not, since
        it would not read better a second time. A shard that did not get to run, or was cut short
        by another shard's worker dying, is run again without that counting against it; a shard
        whose worker died is a suspect, run on its own from then on (`run_round`'s `alone`), so that
        if it kills its worker again it takes no other shard down with it. A shard's outputs are
        committed only when it succeeds (done-marker last), so a failed attempt leaves nothing a
        retry could trip on."""
        outcomes = {task.part: ShardOutcome(task) for task in tasks}
        pending = list(tasks)
        suspects: set[int] = set()
        with self.started(progress):
            while pending:
                again: list[ShardTask] = []
                # closed on the way out whatever happens (Ctrl-C in a callback), so that the engine
                # stops its workers now, not when the interpreter exits
                with contextlib.closing(self.run_round(pending, frozenset(suspects))) as rounds:
                    for task, result in rounds:
                        if self._settle(outcomes[task.part], result, suspects):
                            again.append(task)
                        else:
                            progress.shard_done(outcomes[task.part])
                pending = sorted(again, key=lambda t: t.part)
        return [outcomes[task.part] for task in tasks]

    def _settle(self, outcome: ShardOutcome, result: dict | BaseException, suspects: set[int]) -> bool:
        """Record one run's result; whether the shard is to run again."""
        if isinstance(result, NotRun):
            return True
        outcome.attempts += 1
        if isinstance(result, BaseException):
            outcome.summary = None
            outcome.bad_input = isinstance(result, BadInputError)
            outcome.error = str(result) if isinstance(result, SafesetError) else _describe(result)
            if isinstance(result, WorkerDied):
                suspects.add(outcome.task.part)
        else:
            outcome.summary, outcome.error = result, None
        return bool(outcome.error) and not outcome.bad_input and outcome.attempts <= self.retries

    @abstractmethod
    def started(self, progress: Progress) -> AbstractContextManager[None]:
        """Set up what the rounds need (progress plumbing, a cluster connection) and tear it down."""

    @abstractmethod
    def run_round(
        self, tasks: Sequence[ShardTask], alone: Set[int] = frozenset()
    ) -> Iterator[tuple[ShardTask, dict | BaseException]]:
        """Run `tasks` once each; yield each with its summary, or with what went wrong
        (`WorkerDied` when its worker process died, `NotRun` when it was not run to its end through
        no fault of its own). The tasks whose parts are in `alone` killed a worker before: an
        engine whose workers share a fate (a process pool) runs each of them by itself."""


class WorkerDied(SafesetError):
    def __init__(self, how: str = ""):
        super().__init__("the worker process died" + (f" ({how})" if how else ""))


class NotRun(Exception):
    """The task did not run to its end, through no fault of its own (another shard's worker died,
    and the pool with it): it is run again, and that does not count as an attempt."""


def harden_process() -> None:
    """What every process that reads flagged bytes does first: no core dumps (a dump would write
    its memory, images included, to disk: RLIMIT_CORE 0), and not dumpable (no other process of
    the same user can read its memory through /proc or ptrace)."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if sys.platform.startswith("linux"):
        PR_SET_DUMPABLE = 4
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)


def arrow_without_pandas() -> None:
    """Spare a process of safeset's own (the CLI, a local worker) pandas' import (0.2-0.35 s):
    pyarrow imports it the first time it is handed a Python object (a list, a string), only to
    ask whether that is a pandas one, and safeset never hands it one. pyarrow's first look finds
    no pandas and keeps that answer for such questions. Asked to convert to or from pandas, it
    imports pandas then and works as usual; but other code in the process that hands
    `pa.array` a pandas Series before any such conversion gets it converted as a plain sequence
    (a categorical's values, not a dictionary). No code but safeset's runs in these processes.
    """
    if "pandas" in sys.modules:
        return
    import pyarrow as pa

    class NoPandas(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "pandas":
                raise ModuleNotFoundError("not for pyarrow's first look", name=name)
            return None

    finder = NoPandas()
    sys.meta_path.insert(0, finder)
    try:
        pa.array([])
    finally:
        sys.meta_path.remove(finder)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
