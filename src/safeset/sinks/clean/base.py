"""What every clean-release writer is: told which rows are kept, it writes only those."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from ...model import Decision, ItemResult, read_locator

if TYPE_CHECKING:
    import pyarrow as pa


class CleanWriter(ABC):
    """Told, in the order rows are decided, which ones to keep; writes one shard's clean release.

    Only kept rows are ever written: the bytes of a removed or held row reach no file (zero view).
    Files are written as `.partial` and renamed by `close()`, so a killed worker leaves no torn file.
    """

    @abstractmethod
    def keep(self, result: ItemResult) -> None:
        """The row of `result` is kept; `result.locator` is what its Item carried (a tar's members,
        fetched bytes), its digests are there to be reused."""

    # The results columns `keep_table` reads (None: all of them, for `ItemResult.from_row`).
    columns: tuple[str, ...] | None = None

    def keep_table(self, kept: pa.Table) -> None:
        """Every row of `kept` (results rows, in order, at least `columns`) is kept: a decide
        round's way of saying so, a table at a time. Writers that need no more than the rows'
        indexes and places do it without a Python object per row."""
        for row in kept.to_pylist():
            self.keep(ItemResult.from_row(row))

    def keep_decided(self, table: pa.Table) -> None:
        """The rows of a decided results table that are kept (`keep_table`)."""
        import pyarrow.compute as pc

        wanted = table.select(list(self.columns)) if self.columns else table
        self.keep_table(wanted.filter(pc.equal(table["decision"], str(Decision.KEEP))))

    @abstractmethod
    def close(self) -> None:
        """Finish and commit the files."""

    def abort(self) -> None:  # noqa: B027 (most writers hold nothing open between rows)
        """The shard failed: let go of every file the writer holds open. (Its partial files are
        removed by the worker's `atomic.commit_together`.)"""


def kept_places(kept: pa.Table) -> list[tuple[int, tuple]]:
    """(index, locator) of each kept row of a results table (see `model.stored_locator`)."""
    return [
        (i, read_locator(loc) or ())
        for i, loc in zip(kept["index"].to_pylist(), kept["locator"].to_pylist(), strict=True)
    ]


class SecondPass(CleanWriter):
    """For formats rewritten in one pass over the input once every decision is known (tables):
    collects the kept rows and hands them to `write` at the end (`collected`: their indexes,
    ascending and distinct), which says how many rows it wrote. That must be every kept row: a
    clean release short of a kept row is a failed shard."""

    def __init__(self, write: Callable[[Any], int]):
        self._write = write
        self._kept: list[np.ndarray] = []  # the row is re-read from the input; nothing of it is held here
        self._rows: list[int] = []

    def keep(self, result: ItemResult) -> None:
        self._rows.append(result.index)

    columns = ("index",)

    def keep_table(self, kept: pa.Table) -> None:
        self._kept.append(kept["index"].to_numpy())

    def collected(self) -> Any:
        """What `write` is given; its length is the rows kept."""
        kept = np.concatenate([*self._kept, np.array(self._rows, np.int64)]).astype(np.int64, copy=False)
        return kept if np.all(kept[1:] > kept[:-1]) else np.unique(kept)  # as read: ascending already

    def close(self) -> None:
        kept = self.collected()
        written = self._write(kept)
        if written != len(kept):
            raise RuntimeError(f"the clean release holds {written} rows, {len(kept)} were kept")
