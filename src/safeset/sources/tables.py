"""Row tables: metadata tables (parquet, CSV, JSON lines) with a URL column, and the parquet helpers
the image-parquet and webdataset readers share.

A metadata table has no image bytes: without `--fetch` every row is recorded as `no_image`, and the
URL, URL-MD5 and domain banks still match. Column names vary in case between LAION releases
(`URL`/`url`, `TEXT`/`caption`), so columns are found case-insensitively and can be named.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..atomic import commit, partial_path
from ..errors import BadInputError
from ..model import FetchedImage, Item, Status
from .base import CleanWriter, Reader, ReadOptions, SecondPass, Shard
from .img2dataset import Img2datasetWriter

TABLE_SUFFIXES = (".parquet", ".csv", ".jsonl", ".json")
URL_COLUMNS = ("url", "image_url", "img_url")
CAPTION_COLUMNS = ("caption", "text", "alt", "alt_text")
KEY_COLUMNS = ("key", "id")


def find_column(names: Sequence[str], explicit: str | None, candidates: Sequence[str]) -> str | None:
    """The column called `explicit` (or else the first of `candidates`), matched case-insensitively."""
    by_lower = {n.lower(): n for n in names}
    for wanted in [explicit] if explicit else candidates:
        if wanted.lower() in by_lower:
            return by_lower[wanted.lower()]
    return None


def parquet_file(path: Path) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise BadInputError(path, f"not a readable parquet file ({type(exc).__name__})") from None


def iter_parquet_rows(
    path: Path, columns: list[str], problems: list[str], batch_size: int = 1024
) -> Iterator[tuple[int, dict | None]]:
    """(row index, row) for every row in the file's metadata. Rows past a corrupt row group are
    yielded as None, so they are still recorded, and the failure goes to `problems`."""
    pf = parquet_file(path)
    total = pf.metadata.num_rows
    index = 0
    try:
        for batch in pf.iter_batches(batch_size=batch_size, columns=columns):
            for row in batch.to_pylist():
                yield index, row
                index += 1
    except (pa.ArrowException, OSError) as exc:
        problems.append(f"{path}: unreadable after row {index} ({type(exc).__name__}); later rows recorded as no_image")
    for missing in range(index, total):
        yield missing, None


def filter_parquet(src: Path, dest: Path, keep: Mapping[int, Any], batch_size: int = 1024) -> None:
    """Copy the rows of `src` whose index is in `keep` to `dest`, same schema, streaming."""
    pf = parquet_file(src)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(dest)
    start = 0
    with pq.ParquetWriter(tmp, pf.schema_arrow) as writer:
        try:
            for batch in pf.iter_batches(batch_size=batch_size):
                mask = pa.array([start + i in keep for i in range(batch.num_rows)], type=pa.bool_())
                writer.write_batch(batch.filter(mask))
                start += batch.num_rows
        except (pa.ArrowException, OSError):
            pass  # pass 1 recorded the unreadable rows; nothing past them can be copied
    commit(tmp, dest)


def _columns(path: Path, names: Sequence[str], options: ReadOptions) -> tuple[str, str | None, str | None]:
    url = find_column(names, options.url_col, URL_COLUMNS)
    if url is None:
        hint = f"no column {options.url_col!r}" if options.url_col else "no URL column"
        raise BadInputError(path, f"{hint} (columns: {', '.join(names)}); name it with --url-col")
    caption = find_column(names, options.caption_col, CAPTION_COLUMNS)
    if options.caption_col and caption is None:
        raise BadInputError(path, f"no column {options.caption_col!r} (columns: {', '.join(names)})")
    return url, caption, find_column(names, None, KEY_COLUMNS)


class TableReader(Reader):
    kind = "table"

    def shards(self, path: Path, name: str, options: ReadOptions) -> list[Shard]:
        self._header(path, options)  # fail fast, naming the file, before any work starts
        return [Shard(self.kind, name, str(path), (str(path),), options=options)]

    def _header(self, path: Path, options: ReadOptions) -> tuple[str, str | None, str | None]:
        suffix = path.suffix.lower()
        if suffix == ".parquet":
            names = parquet_file(path).schema_arrow.names
        elif suffix == ".csv":
            with _open_text(path) as fh:
                names = next(_csv_records(fh), ([], "", 0))[0]
        else:
            names = []
            with _open_text(path) as fh:
                for number, line in enumerate(fh, start=1):
                    if line.strip():
                        names = list(_json_row(path, line, number))
                        break
        return _columns(path, names, options)

    def items(self, shard: Shard, problems: list[str]) -> Iterator[Item]:
        path = Path(shard.path)
        url_col, caption_col, key_col = self._header(path, shard.options)
        for index, row, error in self._rows(path, [c for c in (url_col, caption_col, key_col) if c], problems):
            row = row or {}
            key = row.get(key_col) if key_col else None
            yield Item(
                row_id=shard.row_id(index),
                shard=shard.name,
                index=index,
                key=str(key) if key is not None else str(index),
                url=_text(row.get(url_col)),
                caption=_text(row.get(caption_col)) if caption_col else None,
                status=Status.NO_IMAGE if error else None,  # a URL-only row: fetched, or not, by the worker
                error=error,
            )

    def _rows(
        self, path: Path, columns: list[str], problems: list[str]
    ) -> Iterator[tuple[int, dict | None, str | None]]:
        suffix = path.suffix.lower()
        if suffix == ".parquet":
            for index, row in iter_parquet_rows(path, columns, problems):
                yield index, row, None if row is not None else "unreadable row"
        elif suffix == ".csv":
            with _open_text(path) as fh:
                records = _csv_records(fh)
                header = next(records, ([], "", 0))[0]
                for index, (fields, _, line) in enumerate(records):
                    if len(fields) != len(header):
                        problems.append(f"{path}, line {line}: {len(fields)} fields, header has {len(header)}")
                        yield index, None, f"malformed CSV row (line {line})"
                    else:
                        yield index, dict(zip(header, fields, strict=True)), None
        else:
            with _open_text(path) as fh:
                index = 0
                for number, line in enumerate(fh, start=1):
                    if not line.strip():
                        continue
                    try:
                        yield index, _json_row(path, line, number), None
                    except BadInputError as exc:
                        problems.append(str(exc))
                        yield index, None, f"invalid JSON (line {number})"
                    index += 1

    def clean_writer(self, shard: Shard, clean_root: Path, save_images: bool = False) -> CleanWriter:
        table = SecondPass(lambda keep: self._write_table(shard, keep, clean_root))
        if not save_images:
            return table
        images = Img2datasetWriter(clean_root / Path(shard.name).with_suffix(""), 0)
        return _TableWithImages(table, images)

    def _write_table(self, shard: Shard, keep: Mapping[int, Any], clean_root: Path) -> None:
        src = Path(shard.path)
        dest = clean_root / shard.name
        suffix = src.suffix.lower()
        if suffix == ".parquet":
            filter_parquet(src, dest, keep)
            return
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = partial_path(dest)
        with _open_text(src) as fh, open(tmp, "w", encoding="utf-8", newline="") as out:
            if suffix == ".csv":  # records are copied verbatim, quoting and all
                records = _csv_records(fh)
                out.write(next(records, ([], "", 0))[1])
                for index, (_, text, _) in enumerate(records):
                    if index in keep:
                        out.write(text)
            else:
                index = 0
                for line in fh:  # JSON lines are copied verbatim
                    if not line.strip():
                        continue
                    if index in keep:
                        out.write(line if line.endswith("\n") else line + "\n")
                    index += 1
        commit(tmp, dest)


class _TableWithImages(CleanWriter):
    """The filtered table, and the fetched images of its kept rows as an img2dataset shard beside
    it (`clean/NAME/00000.tar`), written as each row is decided."""

    def __init__(self, table: CleanWriter, images):
        self._table = table
        self._images = images

    def keep(self, index: int, locator: Any) -> None:
        self._table.keep(index, locator)
        if isinstance(locator, FetchedImage):
            self._images.add(locator.data, locator.url, locator.caption)

    def close(self) -> None:
        self._table.close()
        self._images.close()


def _open_text(path: Path):
    try:
        raw = path.read_bytes()
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadInputError(path, "not UTF-8 text", line=raw[: exc.start].count(b"\n") + 1) from None
    except OSError as exc:
        raise BadInputError(path, f"cannot read: {exc.strerror}") from None
    return io.StringIO(text, newline=None if path.suffix.lower() != ".csv" else "")


def _csv_records(fh) -> Iterator[tuple[list[str], str, int]]:
    """(fields, raw text, last line number) of each non-blank CSV record; a quoted field may span lines."""
    raw: list[str] = []

    def lines():
        for line in fh:
            raw.append(line)
            yield line

    reader = csv.reader(lines())
    for fields in reader:
        text = "".join(raw)
        raw.clear()
        if fields:
            yield fields, text if text.endswith("\n") else text + "\n", reader.line_num


def _json_row(path: Path, line: str, number: int) -> dict:
    try:
        row = json.loads(line)
    except ValueError:
        raise BadInputError(path, "invalid JSON", line=number) from None
    if not isinstance(row, dict):
        raise BadInputError(path, "a JSON line must be an object", line=number)
    return row


def _text(value) -> str | None:
    return None if value is None else str(value)
