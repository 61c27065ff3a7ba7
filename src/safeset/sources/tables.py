"""Row tables: metadata tables (parquet, CSV, JSON lines) with a URL column, and the parquet helpers
the image-parquet and webdataset readers share.

A metadata table has no image bytes: without `--fetch` every row is recorded as `no_image`, and the
URL, URL-MD5 and domain banks still match. Column names vary in case between LAION releases
(`URL`/`url`, `TEXT`/`caption`), so columns are found case-insensitively and can be named.

LAION's metadata files hold millions of rows each, so a table of more than `table_rows` rows is
split into parts, each its own shard (the unit of resume and of parallelism): a part of a parquet
file is a run of row groups (or of rows, inside one large group), a part of a CSV or JSON-lines
file a byte range found in one pass when the scan is planned. Row indexes stay absolute: row 123456
of a file is row 123456 whichever part reads it.

A parquet table on object storage is planned from its footer and read where it is: each part
fetches only its own row groups' columns, by ranges, rather than the whole file (a LAION metadata
file is gigabytes, a part megabytes). It holds URLs and captions, no image bytes, so nothing needs
holding in memory (zero view). CSV and JSON-lines files have no index to find rows by: on object
storage each is one shard, downloaded whole by the worker that runs it.
"""

from __future__ import annotations

import io
import json
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..csvrecords import csv_records
from ..errors import BadInputError
from ..model import Item, Status
from ..storage import Remote, is_remote
from .base import FLOAT32_MAX, Reader, ReadOptions, Shard, ShardLog, numeric_signals

TABLE_SUFFIXES = (".parquet", ".csv", ".jsonl", ".json")
URL_COLUMNS = ("url", "image_url", "img_url")
CAPTION_COLUMNS = ("caption", "text", "alt", "alt_text")
KEY_COLUMNS = ("key", "id")

Row = tuple[int, dict | None, str | None]  # (absolute row index, row or None, error)


def find_column(
    names: Sequence[str], explicit: str | None, candidates: Sequence[str], where: str | Path, flag: str = ""
) -> str | None:
    """The column called `explicit` (or else the first of `candidates` there is), matched
    case-insensitively; an exact match of `explicit` settles a tie. Where the column decides what
    is checked (`flag` names the option that picks it), columns that tie are refused, naming
    `where`: `url` beside `URL` is two columns a reader could take for the URL, and checking one
    while other tools read the other would check the wrong one. Otherwise the first is taken."""
    check_distinct(names, where)
    for wanted in [explicit] if explicit else candidates:
        found = [n for n in names if n.lower() == wanted.lower()]
        if explicit and explicit in found:
            return explicit
        if len(found) > 1 and flag:
            raise BadInputError(
                where,
                f"columns {' and '.join(map(repr, found))} could each be {wanted!r}: "
                f"name the one to use exactly with {flag}",
            )
        if found:
            return found[0]
    return None


def check_distinct(names: Sequence[str], where: str | Path) -> None:
    """Refuse a table with two columns of one name: a reader keeps one of them, and which one
    differs between tools (a dict keeps the last, pandas renames the second)."""
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise BadInputError(where, f"more than one column is called {', '.join(map(repr, twice))}")


def parquet_file(source, name: str | Path | None = None) -> pq.ParquetFile:
    """Open a parquet file: a path, a URI on object storage (read by ranges as it is used), or an
    open file called `name` in errors."""
    try:
        if isinstance(source, str) and is_remote(source):
            return pq.ParquetFile(Remote(source).open_random())
        return pq.ParquetFile(source)
    except (pa.ArrowException, OSError) as exc:
        raise BadInputError(name or source, f"not a readable parquet file ({type(exc).__name__})") from None


def parquet_batches(
    pf: pq.ParquetFile, groups: Sequence[int], columns: list[str] | None, batch_size: int
) -> Iterator[tuple[int, pa.RecordBatch | None, int]]:
    """(absolute index of its first row, batch, rows) over `groups`, one row group at a time: the
    rows of a group that cannot be read (a corrupt page) come as one (index, None, rows), and
    reading goes on with the next group, so one bad group costs its own rows only."""
    meta = pf.metadata
    first = sum(meta.row_group(g).num_rows for g in range(groups[0])) if groups else 0
    for group in groups:
        index, end = first, first + meta.row_group(group).num_rows
        try:
            for batch in pf.iter_batches(batch_size=batch_size, columns=columns, row_groups=[group]):
                yield index, batch, batch.num_rows
                index += batch.num_rows
        except (pa.ArrowException, OSError):
            yield index, None, end - index
        first = end


def _unreadable(path: Path | str, first: int, end: int) -> str:
    """The problem line for rows [first, end) of a corrupt row group (a part names its own)."""
    return f"{path}: rows {first} to {end - 1} are unreadable (a corrupt row group)"


def _parquet_row_tables(shard: Shard, log: ShardLog, rows: int) -> Iterator[pa.Table] | None:
    """`TableReader.row_tables` of a parquet table, as `items` reads it row by row: for a URL
    column of text and a key column of text or integers (else None: read row by row). The rows of
    a corrupt row group are unreadable rows, as there. Nothing is read or declared until the
    tables are iterated."""
    path = shard.path
    if not isinstance(format_of(path), ParquetTable):
        return None
    pf = parquet_file(path)
    url_col, caption_col, key_col = _columns(path, pf.schema_arrow.names, shard.options)
    types = pf.schema_arrow
    if (
        not pa.types.is_string(types.field(url_col).type)
        or (caption_col and not pa.types.is_string(types.field(caption_col).type))
        or key_col
        and not (pa.types.is_string(types.field(key_col).type) or pa.types.is_integer(types.field(key_col).type))
    ):
        return None
    signals = [c for c in types.names if c.lower() in shard.options.signals]
    if len({c.lower() for c in signals}) < len(signals) or any(
        pa.types.is_string(types.field(c).type) or pa.types.is_large_string(types.field(c).type) for c in signals
    ):
        return None  # numbers written as text, or one signal in two columns: as the rows read them
    # numbers only, as `numeric_signals` takes them: not booleans, decimals or dates
    signals = [
        c for c in signals if pa.types.is_integer(types.field(c).type) or pa.types.is_floating(types.field(c).type)
    ]
    part = shard.part
    groups = list(range(*part.where)) if part and part.where else list(range(pf.metadata.num_row_groups))
    start, stop = (part.start, part.stop) if part and part.where else (0, pf.metadata.num_rows)
    log.declare(stop - start)
    columns = list(dict.fromkeys(c for c in (url_col, caption_col, key_col, *signals) if c))

    def tables() -> Iterator[pa.Table]:
        for index, batch, count in parquet_batches(pf, groups, columns, rows):
            low, high = max(start, index), min(stop, index + count)
            if low >= high:
                if index >= stop:
                    return
                continue
            indexes = pa.array(np.arange(low, high, dtype=np.int64))
            if batch is None:
                log.problems.append(_unreadable(path, low, high))
                n = high - low
                yield pa.table(
                    [
                        indexes,
                        pc.cast(indexes, pa.string()),
                        pa.nulls(n, pa.string()),
                        pa.nulls(n, pa.string()),
                        pa.array(["unreadable row"] * n),
                        _signal_maps(n, {}),
                    ],
                    schema=_ROW_TABLE,
                )
                continue
            batch = batch.slice(low - index, high - low)
            key = pc.cast(batch[key_col], pa.string()) if key_col else pc.cast(indexes, pa.string())
            key = pc.if_else(pc.is_valid(key), key, pc.cast(indexes, pa.string()))
            url = pc.cast(batch[url_col], pa.string())
            caption = batch[caption_col] if caption_col else pa.nulls(high - low, pa.string())
            values = _signal_maps(high - low, {c.lower(): batch[c] for c in signals})
            yield pa.table([indexes, key, url, caption, pa.nulls(high - low, pa.string()), values], schema=_ROW_TABLE)

    return tables()


def _signal_maps(rows: int, columns: dict[str, pa.Array]) -> pa.Array:
    """Each row's signals (`numeric_signals`, as the rows read them): its finite numbers of
    `columns`, by signal name, in the columns' order."""
    names = list(columns)
    values = np.stack(
        # unsafe: an integer beyond 2**53 rounds, as Python's float() rounds it
        [pc.cast(c, pa.float64(), safe=False).to_numpy(zero_copy_only=False) for c in columns.values()]
        or [np.zeros(rows)],
        axis=1,
    )
    held = np.isfinite(values) & (np.abs(values) <= FLOAT32_MAX) & (len(names) > 0)
    offsets = np.concatenate([[0], np.cumsum(held.sum(axis=1))]).astype(np.int32)
    _, which = np.nonzero(held)
    keys = pa.array(np.asarray(names or [""], dtype=object)[which], pa.string())
    return pa.MapArray.from_arrays(pa.array(offsets), keys, pa.array(values[held].astype(np.float32)))


def iter_parquet_rows(
    path: Path,
    columns: list[str],
    problems: list[str],
    batch_size: int = 1024,
    rows: tuple[int, int] | None = None,
    row_groups: Sequence[int] | None = None,
) -> Iterator[tuple[int, dict | None]]:
    """(row index, row) for every row in the file (or in `rows`, read from `row_groups`). The rows
    of a corrupt row group are yielded as None, so they are still recorded, and the failure goes
    to `problems`."""
    pf = parquet_file(path)
    groups = list(row_groups) if row_groups is not None else list(range(pf.metadata.num_row_groups))
    start, stop = rows if rows is not None else (0, pf.metadata.num_rows)
    for index, batch, count in parquet_batches(pf, groups, columns, batch_size):
        if index + count <= start:
            continue
        if index >= stop:
            return
        if batch is None:
            problems.append(_unreadable(path, max(index, start), min(index + count, stop)))
        for offset, row in enumerate(batch.to_pylist() if batch is not None else [None] * count):
            if start <= index + offset < stop:
                yield index + offset, row


# ---- table formats -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Part:
    """Rows [start, stop) of a table file; `where` locates them (row groups, or a byte range and the
    line it starts on); `number`: which part of the table it is."""

    start: int
    stop: int
    where: tuple[int, ...] = ()
    number: int = 0


class TableFormat(ABC):
    suffixes: ClassVar[tuple[str, ...]]

    @abstractmethod
    def columns(self, path: Path) -> list[str]: ...

    @abstractmethod
    def plan(self, path: Path, rows_per_part: int) -> list[Part]:
        """Parts of about `rows_per_part` rows; one part (where=()) for a small file."""

    @abstractmethod
    def rows(self, path: Path, part: Part | None, columns: list[str], problems: list[str]) -> Iterator[Row]:
        """Every row of the part (or the file) once, with its absolute index."""


class ParquetTable(TableFormat):
    suffixes = (".parquet",)

    def columns(self, path: Path) -> list[str]:
        return parquet_file(path).schema_arrow.names

    def plan(self, path: Path, rows_per_part: int) -> list[Part]:
        meta = parquet_file(path).metadata
        if meta.num_rows <= rows_per_part:
            return [Part(0, meta.num_rows)]
        parts, first, start = [], 0, 0
        for group in range(meta.num_row_groups):
            end = start + meta.row_group(group).num_rows
            if end - (parts[-1].stop if parts else 0) >= rows_per_part or group == meta.num_row_groups - 1:
                begin = parts[-1].stop if parts else 0
                for cut in range(begin, end, rows_per_part):  # a large group is read in runs of rows
                    parts.append(Part(cut, min(end, cut + rows_per_part), (first, group + 1)))
                first = group + 1
            start = end
        return parts

    def rows(self, path: Path, part: Part | None, columns: list[str], problems: list[str]) -> Iterator[Row]:
        span = (part.start, part.stop) if part and part.where else None
        groups = range(*part.where) if part and part.where else None
        for index, row in iter_parquet_rows(path, columns, problems, rows=span, row_groups=groups):
            yield index, row, None if row is not None else "unreadable row"


class _TextTable(TableFormat):
    """CSV and JSON lines: read as text, split into byte ranges of whole records."""

    @abstractmethod
    def kept_text(self, path: Path, part: Part | None, keep: Mapping[int, Any]) -> tuple[str, Iterator[str]]:
        """The header, and the records of the rows in `keep`, as read: byte for byte (any bytes
        that were not UTF-8 too), for the clean release (`sinks.clean.tables`)."""

    def _text(self, path: Path, part: Part | None, newline: str = "") -> tuple[io.StringIO, int]:
        """The part's (or file's) text, and the line number it starts on; its lines end as
        `newline` says (see `io.StringIO`), which must be how `plan` counted them."""
        try:
            with open(path, "rb") as fh:
                if part and part.where:
                    fh.seek(part.where[0])
                    raw = fh.read(part.where[1] - part.where[0])
                else:
                    raw = fh.read()
        except OSError as exc:
            raise BadInputError(path, f"cannot read: {exc.strerror}") from None
        first_line = part.where[2] if part and part.where else 1
        # Bytes that are not UTF-8 stay as lone surrogates: their rows are unreadable, the others
        # are read, and kept rows are written back byte for byte. A BOM is the file's first bytes
        # only (plans start their first part after it).
        text = raw.decode("utf-8", "surrogateescape")
        at_start = not (part and part.where and part.where[0])
        return io.StringIO(text.removeprefix("\ufeff") if at_start else text, newline=newline), first_line


class CsvTable(_TextTable):
    """CSV with a header row. Records are copied verbatim into the clean release, quoting and all.

    A record the CSV parser cannot read (an unterminated quote, which would otherwise swallow every
    line after it into one field) is one unreadable row of its first line, and reading resumes on
    the next line: the rows after it are rows, checked, not a caption's text."""

    suffixes = (".csv",)

    def columns(self, path: Path) -> list[str]:
        with open(path, "rb") as fh:
            text = fh.read(1 << 20).decode("utf-8", "surrogateescape").removeprefix("\ufeff")
        header = next((f for f, _, _ in csv_records(io.StringIO(text, newline="")) if f), None)
        if header is None:
            return []
        if any(not _is_utf8(name) for name in header):
            raise BadInputError(path, "header is not UTF-8 text", line=1)
        return header

    def plan(self, path: Path, rows_per_part: int) -> list[Part]:
        with open(path, "rb") as fh:
            offset = 3 if fh.read(3) == b"\xef\xbb\xbf" else 0
        with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as fh:
            records = csv_records(fh, blanks=True)
            header = None
            for record in records:  # blank lines may come before the header
                offset += _size(record[1])
                if record[0]:
                    header = record
                    break
            if header is None:
                return [Part(0, 0)]
            pieces = ((_size(text), fields is None or bool(fields), line) for fields, text, line in records)
            return _cut_text(pieces, offset, header[2] + 1, rows_per_part)

    def _records(self, path: Path, part: Part | None) -> Iterator[tuple[int, list[str] | None, str, int]]:
        """(row index, fields or None if unreadable, raw text, last line number) of the part's rows."""
        text, first_line = self._text(path, part)
        records = csv_records(text)
        if not (part and part.where):
            for fields, _, _ in records:  # the whole file: its header comes first
                if fields:
                    break
        for index, (fields, raw, line) in enumerate(records, start=part.start if part else 0):
            yield index, fields, raw, line + first_line - 1

    def rows(self, path: Path, part: Part | None, columns: list[str], problems: list[str]) -> Iterator[Row]:
        header = self.columns(path)
        for index, fields, _, line in self._records(path, part):
            if fields is None:
                problems.append(f"{path}, line {line}: not a readable CSV record (an unterminated quote?)")
                yield index, None, f"unreadable CSV record (line {line})"
            elif len(fields) != len(header):
                problems.append(f"{path}, line {line}: {len(fields)} fields, header has {len(header)}")
                yield index, None, f"malformed CSV row (line {line})"
            elif not all(_is_utf8(field) for field in fields):
                problems.append(f"{path}, line {line}: not UTF-8 text")
                yield index, None, f"not UTF-8 text (line {line})"
            else:
                yield index, dict(zip(header, fields, strict=True)), None

    def kept_text(self, path: Path, part: Part | None, keep: Mapping[int, Any]) -> tuple[str, Iterator[str]]:
        with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as fh:
            header = next((raw for fields, raw, _ in csv_records(fh) if fields), "")
        return header, (raw for index, _, raw, _ in self._records(path, part) if index in keep)


class JsonLinesTable(_TextTable):
    """One JSON object per line; blank lines are not rows. Lines are copied verbatim."""

    suffixes = (".jsonl", ".json")

    def columns(self, path: Path) -> list[str]:
        with open(path, "rb") as fh:
            for number, line in _byte_lines(fh):
                if not _blank(line):
                    try:
                        return list(_json_row(path, line.decode(), number))
                    except UnicodeDecodeError:
                        raise BadInputError(path, "not UTF-8 text", line=number) from None
        return []

    # A line ends at "\n" only, and is blank if it holds nothing but ASCII white space: how the
    # plan counts rows (in bytes) and how they are read (as text) must agree, or rows in != out.
    # A lone "\r" or a U+00A0 is then inside a row, which is unreadable JSON: a row with a status.
    def plan(self, path: Path, rows_per_part: int) -> list[Part]:
        with open(path, "rb") as fh:
            offset = 3 if fh.read(3) == b"\xef\xbb\xbf" else 0
            fh.seek(offset)
            pieces = ((len(line), not _blank(line), number) for number, line in enumerate(fh, start=1))
            return _cut_text(pieces, offset, 1, rows_per_part)

    def _lines(self, path: Path, part: Part | None) -> Iterator[tuple[int, int, str]]:
        """(row index, line number, line) of the non-blank lines."""
        text, first_line = self._text(path, part, newline="\n")
        index = part.start if part else 0
        for number, line in enumerate(text, start=first_line):
            if not _blank(line):
                yield index, number, line
                index += 1

    def rows(self, path: Path, part: Part | None, columns: list[str], problems: list[str]) -> Iterator[Row]:
        """Each line's object, its keys that name `columns` in another case (the columns were
        found on the first line; another line may spell them otherwise) renamed to them."""
        wanted = {c.lower(): c for c in columns}
        for index, number, line in self._lines(path, part):
            try:
                if not _is_utf8(line):
                    raise BadInputError(path, "not UTF-8 text", line=number)
                row = _json_row(path, line, number)
                yield index, {wanted.get(k.lower(), k): v for k, v in row.items()}, None
            except BadInputError as exc:
                problems.append(str(exc))
                yield index, None, f"{exc.reason} (line {number})"

    def kept_text(self, path: Path, part: Part | None, keep: Mapping[int, Any]) -> tuple[str, Iterator[str]]:
        return "", (_line(line) for i, _, line in self._lines(path, part) if i in keep)


def _registry(*formats: TableFormat) -> dict[str, TableFormat]:
    found: dict[str, TableFormat] = {}
    for table_format in formats:
        for suffix in table_format.suffixes:
            if suffix in found:
                raise RuntimeError(f"table suffix {suffix!r} is registered twice")
            found[suffix] = table_format
    return found


FORMATS = _registry(ParquetTable(), CsvTable(), JsonLinesTable())


def _suffix(path: str | Path) -> str:
    """The file's suffix, lower case; a URI's without its query."""
    name = Remote(path).name if isinstance(path, str) and is_remote(path) else Path(path).name
    return PurePosixPath(name).suffix.lower()


def format_of(path: str | Path) -> TableFormat:
    return FORMATS[_suffix(path)]


def _size(text: str) -> int:
    """Bytes `text` was read from (bytes that were not UTF-8 kept as lone surrogates)."""
    return len(text.encode("utf-8", "surrogateescape"))


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _columns(path: Path, names: Sequence[str], options: ReadOptions) -> tuple[str, str | None, str | None]:
    url = find_column(names, options.url_col, URL_COLUMNS, path, "--url-col")
    if url is None:
        hint = f"no column {options.url_col!r}" if options.url_col else "no URL column"
        raise BadInputError(path, f"{hint} (columns: {', '.join(names)}); name it with --url-col")
    caption = find_column(names, options.caption_col, CAPTION_COLUMNS, path, "--caption-col")
    if options.caption_col and caption is None:
        raise BadInputError(path, f"no column {options.caption_col!r} (columns: {', '.join(names)})")
    return url, caption, find_column(names, None, KEY_COLUMNS, path)


# ---- the reader --------------------------------------------------------------------------------
_ROW_TABLE = pa.schema(
    [
        ("index", pa.int64()),
        ("key", pa.string()),
        ("url", pa.string()),
        ("caption", pa.string()),
        ("error", pa.string()),
        ("signals", pa.map_(pa.string(), pa.float32())),
    ]
)


class TableReader(Reader):
    kind = "table"

    def shards(self, path: str | Path, name: str, options: ReadOptions) -> list[Shard]:
        """`path` may be a URI on object storage if the file is parquet (see `staging`)."""
        table_format = format_of(path)
        _columns(path, table_format.columns(path), options)  # fail fast, naming the file
        parts = table_format.plan(path, max(1, options.table_rows))
        if len(parts) == 1:
            return [Shard(self.kind, name, str(path), (str(path),), options=options, part=parts[0])]
        return [
            Shard(
                self.kind,
                f"{name}/part-{k:05d}{_suffix(path)}",
                str(path),
                (str(path),),
                options=options,
                part=replace(part, number=k),
            )
            for k, part in enumerate(parts)
        ]

    def staging(self, shard: Shard, file: str) -> str:
        return "in_place" if isinstance(format_of(file), ParquetTable) else "whole"

    def row_tables(self, shard: Shard, log: ShardLog, rows: int = 1 << 16) -> Iterator[pa.Table] | None:
        """The shard's rows as tables of `index`, `key`, `url`, `caption`, `error` (an unreadable row's)
        and `signals` (`ReadOptions.signals`),
        `rows` at a time: what a metadata row holds, for a scan that does not fetch (the worker
        then hashes and decides a table at a time, not a row). Parquet tables, whose text is
        UTF-8 as Arrow holds it; None for the rest, read row by row (`items`): CSV and JSON can
        hold what Arrow cannot (a lone surrogate), which is hashed as the one-row path does."""
        return _parquet_row_tables(shard, log, rows)

    def captioned_rows(self, shard: Shard) -> Iterator[tuple[int, dict, str | None]]:
        """(index, every column, caption) of each readable row of the shard: what the clean
        release of `--save-images` writes beside a kept row's image."""
        path = shard.path
        table_format = format_of(path)
        names = table_format.columns(path)
        _, caption_col, _ = _columns(path, names, shard.options)
        for index, row, _ in table_format.rows(path, shard.part, names, []):
            if row is not None:
                yield index, row, _text(row.get(caption_col)) if caption_col else None

    def items(self, shard: Shard, log: ShardLog) -> Iterator[Item]:
        path = shard.path
        table_format = format_of(path)
        names = table_format.columns(path)
        url_col, caption_col, key_col = _columns(path, names, shard.options)
        signals = [c for c in names if c.lower() in shard.options.signals]
        columns = list(dict.fromkeys(c for c in (url_col, caption_col, key_col, *signals) if c))
        part = shard.part
        if part is not None:
            log.declare(part.stop - part.start)  # counted when the scan was planned
        for index, row, error in table_format.rows(path, part, columns, log.problems):
            if part is None:  # a table not planned into parts (one on object storage): each record read
                log.declare(1)
            row = row or {}
            key = row.get(key_col) if key_col else None
            yield Item(
                row_id=shard.row_id(index),
                shard=shard.name,
                index=index,
                key=str(key) if key is not None else str(index),
                url=_text(row.get(url_col)),
                caption=_text(row.get(caption_col)) if caption_col else None,
                status=Status.UNREADABLE_ROW if error else None,  # a URL-only row: fetched, or not, by the worker
                error=error,
                signals=numeric_signals(row, shard.options.signals),
            )


def _cut_text(pieces: Iterable[tuple[int, bool, int]], offset: int, line: int, rows_per_part: int) -> list[Part]:
    """Parts of `rows_per_part` rows of a text table. `pieces`: (bytes, whether it is a row, its
    last line number) of each record, in order, the first starting at byte `offset`, line `line`."""
    parts: list[Part] = []
    count, begin, begin_line = 0, offset, line
    for size, is_row, last in pieces:
        offset += size
        if is_row:
            count += 1
            if count % rows_per_part == 0:
                parts.append(Part(count - rows_per_part, count, (begin, offset, begin_line)))
                begin, begin_line = offset, last + 1
    if not parts:
        return [Part(0, count)]
    if count % rows_per_part:
        parts.append(Part(count - count % rows_per_part, count, (begin, offset, begin_line)))
    return parts


_ASCII_SPACE = " \t\n\r\x0b\x0c"  # what `bytes.strip()` strips


def _byte_lines(fh) -> Iterator[tuple[int, bytes]]:
    """(line number, line) of a binary file, lines ending at b"\\n", a first line's BOM left out."""
    for number, line in enumerate(fh, start=1):
        yield number, line.removeprefix(b"\xef\xbb\xbf") if number == 1 else line


def _blank(line: bytes | str) -> bool:
    return not line.strip(_ASCII_SPACE if isinstance(line, str) else None)


def _line(text: str) -> str:
    return text if text.endswith("\n") else text + "\n"


def _json_row(path: Path, line: str, number: int) -> dict:
    """A JSON line's object. Two of its keys that differ at most in case (`url` and `URL`, or
    `url` twice) make it unreadable: tools read one or the other, and which is not ours to guess."""
    try:
        row = json.loads(line, object_pairs_hook=_Object)
    except (ValueError, RecursionError):
        raise BadInputError(path, "invalid JSON", line=number) from None
    if not isinstance(row, dict):
        raise BadInputError(path, "a JSON line must be an object", line=number)
    if row.same_keys:
        raise BadInputError(path, f"keys {' and '.join(map(repr, row.same_keys))} name one column", line=number)
    return row


class _Object(dict):
    """A JSON object that remembers the first two of its keys that differ at most in case."""

    def __init__(self, pairs: list[tuple[str, Any]]):
        super().__init__(pairs)
        seen: dict[str, str] = {}
        self.same_keys: tuple[str, str] | None = None
        for key, _ in pairs:
            if key.lower() in seen:
                self.same_keys = (seen[key.lower()], key)
                break
            seen[key.lower()] = key


def _text(value) -> str | None:
    return None if value is None else str(value)
