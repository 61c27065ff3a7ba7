"""A folder's clean release: the list of the kept samples' files (a folder is not copied: the list
says what to keep of it), and the parquet of img2dataset's files layout, filtered."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...atomic import atomic_writer
from ...model import ItemResult
from ...sources.base import Shard
from ...sources.folder import FilesPart
from .base import CleanWriter, SecondPass, kept_places
from .tables import filter_parquet

if TYPE_CHECKING:
    import pyarrow as pa


def folder_writer(shard: Shard, clean_root: Path) -> CleanWriter:
    """The kept samples' files, listed (`SHARD.kept`, names NUL-separated); for the files
    layout, its parquet filtered too."""
    part = shard.part

    def write(kept: Mapping[int, Any]) -> int:
        target = clean_root / _list_name(shard)
        with atomic_writer(target) as fh:
            for index in sorted(kept):
                for rel in kept[index]:
                    fh.write(os.fsencode(rel) + b"\0")
        if isinstance(part, FilesPart):  # samples with no row in it (beyond its rows) are listed only
            filter_parquet(Path(shard.path) / part.parquet, target.with_name(part.parquet), kept)
        return len(kept)

    return KeptFiles(write)


class KeptFiles(SecondPass):
    """Collects each kept row's files (its locator) for the list written at the end."""

    columns = ("index", "locator")

    def __init__(self, write: Callable[[Mapping[int, Any]], int]):
        super().__init__(write)
        self._places: dict[int, Any] = {}

    def keep(self, result: ItemResult) -> None:
        self._places[result.index] = result.locator or ()

    def keep_table(self, kept: pa.Table) -> None:
        self._places.update(kept_places(kept))

    def collected(self) -> dict[int, Any]:
        return self._places


def _list_name(shard: Shard) -> str:
    return f"{shard.name}.kept"
