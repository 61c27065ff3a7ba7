"""Progress bars for a scan: shards done of all, and items checked with their rate."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

if TYPE_CHECKING:
    from ..engines import ShardOutcome


class _Rate(TextColumn):
    """Items per second over the whole run so far (rich's own speed column smooths over seconds)."""

    def __init__(self) -> None:
        super().__init__("")

    def render(self, task):
        elapsed = task.elapsed or 0
        rate = task.completed / elapsed if elapsed > 0 else 0
        return f"{rate:,.0f}/s"


class ScanProgress:
    def __init__(self, shards: int, already_done: int, enabled: bool = True):
        self.enabled = enabled
        self._lock = threading.Lock()
        self._bar = Progress(
            TextColumn("{task.description:>8}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            _Rate(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            disable=not enabled,
        )
        self._shards = self._bar.add_task("shards", total=shards, completed=already_done)
        self._items = self._bar.add_task("items", total=None)
        self.failed = 0

    def __enter__(self) -> ScanProgress:
        self._bar.start()
        return self

    def __exit__(self, *exc) -> None:
        self._bar.stop()

    def items_done(self, count: int) -> None:
        with self._lock:
            self._bar.update(self._items, advance=count)

    def shard_done(self, outcome: ShardOutcome) -> None:
        with self._lock:
            if outcome.error:
                self.failed += 1
                self._bar.console.print(
                    f"[red]shard {escape(outcome.task.shard.name)} failed:[/] {escape(outcome.error)}"
                )
            self._bar.update(self._shards, advance=1)
