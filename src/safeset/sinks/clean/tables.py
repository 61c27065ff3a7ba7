"""The clean release of tables: the kept rows of a metadata table (parquet, CSV, JSON lines) or of
an image parquet, copied from the input by index, and with `--save-images` the kept rows' images as
an img2dataset shard beside them."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ...atomic import commit, partial_path
from ...errors import BadInputError
from ...model import FetchedImage, ItemResult, Status
from ...sources.base import Shard
from ...sources.tables import ParquetTable, TableReader, format_of, parquet_batches, parquet_file
from ..img2dataset import Img2datasetWriter, SavedShard
from .base import CleanWriter, SecondPass


def table_writer(shard: Shard, clean_root: Path, save_images: bool = False, earlier: Path | None = None) -> CleanWriter:
    """A metadata table's kept rows, in its own format; with `save_images`, their fetched images
    too (`earlier`: the clean release of the round before, in a decide round)."""
    table = SecondPass(lambda keep: _copy_rows(shard, keep, clean_root / shard.name))
    if not save_images:
        return table
    stem = clean_root / saved_images_stem(shard)
    rows = max(shard.options.table_rows, shard.part.stop - shard.part.start if shard.part else 0)
    digits = max(4, len(str(max(1, rows) - 1)))
    writer = Img2datasetWriter(stem.parent, int(stem.name), key_digits=digits)
    saved = SavedShard(earlier / saved_images_stem(shard) if earlier is not None else stem)
    return TableWithImages(shard, table, writer, saved, deciding=earlier is not None)


def image_parquet_writer(shard: Shard, clean_root: Path) -> CleanWriter:
    """An image parquet's kept rows, their bytes with them (a few rows at a time: cells are images)."""
    return SecondPass(lambda keep: filter_parquet(Path(shard.path), clean_root / shard.name, keep, batch_size=64))


def _copy_rows(shard: Shard, keep: np.ndarray, dest: Path) -> int:
    """The rows of the shard's table (or of its part) in `keep` (indexes), copied to `dest`; how many."""
    path, part = shard.path, shard.part  # a URI too: not a Path, which would mangle it
    codec = format_of(path)
    if isinstance(codec, ParquetTable):
        span = (part.start, part.stop) if part and part.where else None
        groups = range(*part.where) if part and part.where else None
        # metadata rows are small: whole row groups at a time (each batch becomes a row group)
        return filter_parquet(path, dest, keep, batch_size=1 << 17, rows=span, row_groups=groups)
    header, lines = codec.kept_text(path, part, set(keep.tolist()))
    return _write_text(dest, header, lines)


def filter_parquet(
    src: Path,
    dest: Path,
    keep: Mapping[int, Any] | np.ndarray,
    batch_size: int = 1024,
    rows: tuple[int, int] | None = None,
    row_groups: Sequence[int] | None = None,
) -> int:
    """Copy the rows of `src` (or of its part) whose index is in `keep` (a mapping's keys, or an
    array of indexes) to `dest`, same schema; returns how many it wrote. A kept row that cannot be
    read back (in a corrupt row group the policy chose to keep) fails the copy, rather than
    leaving a short file behind silently."""
    pf = parquet_file(src)
    groups = list(row_groups) if row_groups is not None else list(range(pf.metadata.num_row_groups))
    start, stop = rows if rows is not None else (0, pf.metadata.num_rows)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(dest)
    written = 0
    lost: list[int] = []
    kept = keep if isinstance(keep, np.ndarray) else np.fromiter(keep, np.int64, len(keep))
    chosen_rows = np.zeros(stop - start, bool)  # by row, from `start`
    chosen_rows[kept[(kept >= start) & (kept < stop)] - start] = True
    with pq.ParquetWriter(tmp, pf.schema_arrow) as writer:
        for index, batch, count in parquet_batches(pf, groups, None, batch_size):
            wanted = np.zeros(count, bool)
            low, high = max(index, start), min(index + count, stop)
            if low < high:
                wanted[low - index : high - index] = chosen_rows[low - start : high - start]
            if batch is None:
                lost += (np.flatnonzero(wanted) + index).tolist()
                continue
            chosen = batch.filter(pa.array(wanted, type=pa.bool_()))
            writer.write_batch(chosen)
            written += chosen.num_rows
    if lost:
        tmp.unlink()
        raise BadInputError(src, f"{len(lost)} kept row(s) from here on cannot be read to copy", row=lost[0])
    commit(tmp, dest)
    return written


def _write_text(dest: Path, header: str, lines: Iterator[str]) -> int:
    """The header and the lines, byte for byte as read (any bytes that were not UTF-8 too);
    returns how many lines it wrote."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(dest)
    count = 0
    with open(tmp, "w", encoding="utf-8", errors="surrogateescape", newline="") as out:
        out.write(header)
        for line in lines:
            out.write(line)
            count += 1
    commit(tmp, dest)
    return count


def saved_images_stem(shard: Shard) -> PurePosixPath:
    """Where `--save-images` writes a table shard's kept images, relative to `clean/`: as
    img2dataset would, `TABLE.images/NNNNN` with NNNNN the part's number (`x.csv.images/00003`),
    so that tables of the same stem (x.csv, x.jsonl) and the parts of one never meet."""
    part = shard.part
    parted = part is not None and bool(part.where)
    table = shard.name.rsplit("/", 1)[0] if parted else shard.name
    return PurePosixPath(f"{table}.images") / f"{part.number if parted else 0:05d}"


class TableWithImages(CleanWriter):
    """The filtered table, and its kept rows as an img2dataset shard (`clean/TABLE.images/`):
    rows whose downloaded image decoded with it, the others with the reason. Images are handed to
    the shard's writer as rows are decided (it keeps them in key order); at the end the input's
    own columns are read back for the kept rows and written beside img2dataset's. A row carried
    over from an earlier run of the shard (no bytes in hand) has its image copied from the shard
    that run saved. In a decide round (`deciding`) a row kept now that was not kept then has no
    saved image: its row says so, and nothing is downloaded again."""

    def __init__(
        self, shard: Shard, table: CleanWriter, images: Img2datasetWriter, earlier: SavedShard, deciding: bool = False
    ):
        self._shard = shard
        self._table = table
        self._images = images
        self._earlier = earlier
        self._deciding = deciding
        self._kept: set[int] = set()
        # img2dataset's keys number a shard's rows from 0: a part's rows, from its first
        self._first = shard.part.start if shard.part else 0

    def keep(self, result: ItemResult) -> None:
        self._table.keep(result)
        self._kept.add(result.index)
        fetched = result.locator
        if result.status is not Status.OK:
            why = f"{result.status}: {result.error}" if result.error else str(result.status)
            self._images.add(None, result.url, None, error=why, index=result.index - self._first)
            return
        data = fetched.data if isinstance(fetched, FetchedImage) else self._earlier.read(result.md5)
        if data is None:
            if not self._deciding:  # a carried row was kept, so its image was saved: the outputs are not whole
                raise RuntimeError(f"{self._earlier.stem.with_suffix('.tar')}: no saved image with MD5 {result.md5}")
            why = "not saved: the row was not kept when its image was fetched (fetch it again to save it)"
            self._images.add(None, result.url, None, error=why, index=result.index - self._first)
            return
        size = (result.width, result.height) if result.width else None
        self._images.add(data, result.url, None, size=size, md5=result.md5, index=result.index - self._first)

    def abort(self) -> None:
        self._images.abort()

    def close(self) -> None:
        self._table.close()
        for index, row, caption in TableReader().captioned_rows(self._shard):
            if index in self._kept:
                self._images.add_columns(index - self._first, row, caption)
        self._images.close()
