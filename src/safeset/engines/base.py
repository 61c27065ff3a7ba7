"""The engine interface: schedule shard workers, retry failed shards, report progress. Nothing else.

Engines know nothing of hashing, matching or policy; they call `safeset.pipeline.worker.run_shard`
and pass its summaries back. A shard that raises `BadInputError` is not retried (the input will not
read better a second time); any other failure, including a worker process that died, is retried.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import ClassVar

from ..errors import BadInputError, SafesetError
from ..pipeline.worker import ShardTask

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
    attempts: int = 0


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
        it would not read better a second time. A shard's outputs are committed only when it
        succeeds (done-marker last), so a failed attempt leaves nothing a retry could trip on."""
        outcomes = {task.part: ShardOutcome(task) for task in tasks}
        pending = list(tasks)
        with self.started(progress):
            while pending:
                retry: list[ShardTask] = []
                for task, result in self.run_round(pending):
                    outcome = outcomes[task.part]
                    outcome.attempts += 1
                    if isinstance(result, BaseException):
                        outcome.summary = None
                        outcome.bad_input = isinstance(result, BadInputError)
                        outcome.error = str(result) if isinstance(result, SafesetError) else _describe(result)
                    else:
                        outcome.summary, outcome.error = result, None
                    if outcome.error and not outcome.bad_input and outcome.attempts <= self.retries:
                        retry.append(task)
                    else:
                        progress.shard_done(outcome)
                pending = retry
        return [outcomes[task.part] for task in tasks]

    @abstractmethod
    def started(self, progress: Progress) -> AbstractContextManager[None]:
        """Set up what the rounds need (progress plumbing, a cluster connection) and tear it down."""

    @abstractmethod
    def run_round(self, tasks: Sequence[ShardTask]) -> Iterator[tuple[ShardTask, dict | BaseException]]:
        """Run `tasks` once each; yield each with its summary, or with what went wrong (`WorkerDied`
        when the worker process died), as they finish."""


class WorkerDied(SafesetError):
    def __init__(self):
        super().__init__("the worker process died")


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
