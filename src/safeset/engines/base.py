"""The engine interface: schedule shard workers, retry failed shards, report progress. Nothing else.

Engines know nothing of hashing, matching or policy; they call `safeset.pipeline.worker.run_shard`
and pass its summaries back. A shard that raises `BadInputError` is not retried (the input will not
read better a second time); any other failure, including a worker process that died, is retried.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

from ..pipeline.worker import ShardTask


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
