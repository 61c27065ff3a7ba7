"""Progress bars for a scan: shards done of all, and items checked with their rate."""

from __future__ import annotations

import threading
from collections import Counter
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

from ..redact import redact

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
    """Shards done of all, items checked with their rate, and (when fetching) downloads with their
    success rate, bytes per second and the commonest failure reasons."""

    def __init__(self, shards: int, already_done: int, enabled: bool = True, fetching: bool = False):
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
            TextColumn("{task.fields[note]}"),
            console=Console(stderr=True),
            disable=not enabled,
        )
        self._shards = self._bar.add_task("shards", total=shards, completed=already_done, note="")
        self._items = self._bar.add_task("items", total=None, note="")
        self._fetch = self._bar.add_task("fetched", total=None, note="") if fetching else None
        self._outcomes: Counter[str] = Counter()
        self._bytes = 0
        self.failed = 0

    def __enter__(self) -> ScanProgress:
        self._bar.start()
        return self

    def __exit__(self, *exc) -> None:
        self._bar.stop()

    def counts(self, counts: dict) -> None:
        with self._lock:
            if counts.get("items"):
                self._bar.update(self._items, advance=counts["items"])
            if self._fetch is None:
                return
            fetched = {k.removeprefix("fetch:"): v for k, v in counts.items() if k.startswith("fetch:")}
            self._outcomes.update(fetched)
            self._bytes += counts.get("bytes", 0)
            self._bar.update(self._fetch, advance=sum(fetched.values()), note=self._fetch_note())

    def _fetch_note(self) -> str:
        total = sum(self._outcomes.values()) or 1
        elapsed = self._bar.tasks[self._fetch].elapsed or 1e-9
        failures = [(k, v) for k, v in self._outcomes.most_common() if k != "ok"][:3]
        worst = ", ".join(f"{escape(k)} {v / total:.0%}" for k, v in failures)
        return f"ok {self._outcomes['ok'] / total:.0%}  {self._bytes / elapsed / 2**20:.1f} MB/s" + (
            f"  {worst}" if worst else ""
        )

    def shard_done(self, outcome: ShardOutcome) -> None:
        with self._lock:
            if outcome.error:
                self.failed += 1
                self._bar.console.print(
                    f"[red]shard {escape(outcome.task.shard.name)} failed:[/] {escape(redact(outcome.error))}"
                )
            self._bar.update(self._shards, advance=1)
