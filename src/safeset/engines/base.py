"""The engine interface: schedule shard workers, retry failed shards, report progress. Nothing else.

Engines know nothing of hashing, matching or policy; they call `safeset.pipeline.worker.run_shard`
and pass its summaries back. A shard that raises `BadInputError` is not retried (the input will not
read better a second time); any other failure, including a worker process that died, is retried.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

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

    def __init__(self, workers: int | None = None, retries: int = 2):
        self.workers = workers
        self.retries = retries

    @property
    @abstractmethod
    def parallelism(self) -> int:
        """How many shard workers run at once (per-domain fetch limits are shared among them)."""

    @abstractmethod
    def run(self, tasks: Sequence[ShardTask], progress: Progress) -> list[ShardOutcome]:
        """Run every task; return one outcome per task, in task order."""
