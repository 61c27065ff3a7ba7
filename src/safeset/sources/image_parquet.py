"""Parquet files whose rows carry image bytes (the Hugging Face `datasets` layout, img2dataset's
`output_format=parquet`).

An image is plain binary or a struct `{bytes: binary, path: string}` (HF's `Image` feature). Every
byte-holding value of a row is a payload, hashed and matched before the row can reach the clean
release: every binary or image column, every element of a list of images (`Sequence(Image())`),
every binary field of a struct. The primary payload is the column named with `--image-col`, or
the conventional one (`image`, `jpg`, ...), or the first.

An image struct whose `bytes` are null refers to a file by `path` (HF datasets written without
embedding their files): it is read from the path, absolute or relative to the parquet file's folder
or to the input's root; a relative path may not lead outside those. A file that is not there is
`no_image`, with the path.

The clean release is the same file minus removed and held rows, schema unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from ..errors import BadInputError, UsageError
from ..model import Item, Payload, Status, printable
from .base import (
    Reader,
    ReadOptions,
    Shard,
    ShardLog,
    UnreadableFile,
    numeric_signals,
    read_file,
    text_or_none,
)
from .tables import (
    CAPTION_COLUMNS,
    KEY_COLUMNS,
    URL_COLUMNS,
    check_distinct,
    find_column,
    iter_parquet_rows,
    parquet_file,
)

IMAGE_COLUMNS = ("image", "img", "jpg", "jpeg", "png", "webp", "image_bytes", "bytes")


def _holds_bytes(field_type: pa.DataType) -> bool:
    """Whether values of this type can carry bytes anywhere inside them: any binary type (plain,
    large, fixed-size, view, dictionary-encoded), at any depth of structs, lists, maps and unions."""
    t = pa.types
    if t.is_dictionary(field_type):
        return _holds_bytes(field_type.value_type)
    if isinstance(field_type, pa.ExtensionType):
        return _holds_bytes(field_type.storage_type)
    if t.is_binary(field_type) or t.is_large_binary(field_type) or t.is_fixed_size_binary(field_type):
        return True
    if t.is_binary_view(field_type):
        return True
    if t.is_struct(field_type):
        names = {field_type.field(i).name for i in range(field_type.num_fields)}
        # an image struct, even one whose bytes are all null (its images are files at `path`)
        return {"bytes", "path"} <= names or any(
            _holds_bytes(field_type.field(i).type) for i in range(field_type.num_fields)
        )
    if t.is_map(field_type):
        return _holds_bytes(field_type.key_type) or _holds_bytes(field_type.item_type)
    if t.is_union(field_type):
        return any(_holds_bytes(field_type.field(i).type) for i in range(field_type.num_fields))
    if t.is_run_end_encoded(field_type):
        return _holds_bytes(field_type.value_type)
    if hasattr(field_type, "value_type"):  # lists of every kind (list, large, fixed-size, views)
        return _holds_bytes(field_type.value_type)
    return False


def image_columns(schema: pa.Schema, explicit: str | None, where: str | Path = "") -> list[str]:
    """Every column that can carry bytes, the primary one first: the one named, else a
    conventional name, else the first. Empty when there is none (a metadata table)."""
    check_distinct(schema.names, where)
    holding = [f.name for f in schema if _holds_bytes(f.type)]
    if explicit:
        named = find_column(schema.names, explicit, (), where)
        if named is None or named not in holding:
            found = ", ".join(holding) or "none"
            raise UsageError(
                f"{where}: --image-col {explicit!r} names no column holding bytes (those that do: {found})"
            )
        primary = named
    else:
        # any of them will do: every column holding bytes is hashed, the primary is only the first
        primary = next((c for w in IMAGE_COLUMNS for c in holding if c.lower() == w), holding[0] if holding else None)
    return [primary, *(c for c in holding if c != primary)] if primary else []


def image_column(schema: pa.Schema, explicit: str | None, where: str | Path = "") -> str | None:
    """The primary image column, or None for a parquet without bytes (a metadata table)."""
    columns = image_columns(schema, explicit, where)
    return columns[0] if columns else None


def _is_image_struct(value: dict) -> bool:
    return "bytes" in value and "path" in value


class ImageParquetReader(Reader):
    kind = "image_parquet"

    def shards(self, path: Path, name: str, options: ReadOptions) -> list[Shard]:
        return [Shard(self.kind, name, str(path), (str(path),), options=options)]

    def items(self, shard: Shard, log: ShardLog) -> Iterator[Item]:
        path = Path(shard.path)
        problems = log.problems
        opened = parquet_file(path)
        schema = opened.schema_arrow
        log.declare(opened.metadata.num_rows)
        images = image_columns(schema, shard.options.image_col, path)
        if not images:
            raise BadInputError(path, f"no image-bytes column (columns: {', '.join(schema.names)})")
        url = find_column(schema.names, shard.options.url_col, URL_COLUMNS, path, "--url-col")
        caption = find_column(schema.names, shard.options.caption_col, CAPTION_COLUMNS, path, "--caption-col")
        key_col = find_column(schema.names, None, KEY_COLUMNS, path)
        signals = [c for c in schema.names if c.lower() in shard.options.signals]
        columns = list(dict.fromkeys(c for c in (*images, url, caption, key_col, *signals) if c))
        bases = [path.parent] + ([Path(shard.root)] if shard.root and Path(shard.root).is_dir() else [])
        # Small batches: each row holds whole images.
        for index, row in iter_parquet_rows(path, columns, problems, batch_size=64):
            item = Item(row_id=shard.row_id(index), shard=shard.name, index=index, key=str(index))
            if row is None:
                item.status, item.error = Status.UNREADABLE_ROW, "unreadable row group"
                yield item
                continue
            missing: list[str] = []
            for column in images:
                collect_payloads(column, row.get(column), item.payloads, bases, missing, shard.options.max_bytes)
            first = row.get(images[0])
            image_path = text_or_none(first.get("path")) if isinstance(first, dict) else None
            if key_col and row.get(key_col) is not None:
                item.key = str(row[key_col])
            elif image_path:
                item.key = image_path
            item.url = text_or_none(row.get(url)) if url else None
            item.caption = text_or_none(row.get(caption)) if caption else None
            item.signals = numeric_signals(row, shard.options.signals)
            if not item.payloads:
                item.status = Status.NO_IMAGE
                item.error = f"image file not found: {printable(missing[0])}" if missing else "image cell is empty"
            elif missing:
                problems.append(f"{path}, row {index}: image file not found: {printable(missing[0])}")
            yield item


def collect_payloads(
    name: str, value: Any, payloads: list[Payload], bases: list[Path], missing: list[str], max_bytes: int
) -> None:
    """Every payload inside one value of a parquet cell, appended to `payloads`: bytes, an image
    struct (its bytes, or the file at its path), a struct's fields, a list's elements, a map's keys
    and values. `missing`: the paths of image structs that name no readable file."""
    if value is None:
        return
    if isinstance(value, bytes):
        payloads.append(Payload(name, value))
    elif isinstance(value, dict) and _is_image_struct(value) and value["bytes"] is None:
        if value["path"] is not None:
            _referenced(name, value["path"], payloads, bases, missing, max_bytes)
    elif isinstance(value, dict):
        for field, inner in value.items():
            inner_name = name if _is_image_struct(value) else f"{name}.{field}"
            collect_payloads(inner_name, inner, payloads, bases, missing, max_bytes)
    elif isinstance(value, (list, tuple)):  # a map's entries are (key, value) tuples
        for i, inner in enumerate(value):
            collect_payloads(f"{name}[{i}]", inner, payloads, bases, missing, max_bytes)


def _referenced(
    name: str, where: Any, payloads: list[Payload], bases: list[Path], missing: list[str], max_bytes: int
) -> None:
    """The file an image struct names by `path`: absolute, or relative to one of `bases` and
    inside it."""
    if not isinstance(where, str) or not where or "\0" in where:
        missing.append(str(where))
        return
    candidates = [Path(where)] if Path(where).is_absolute() else [base / where for base in bases]
    for candidate in candidates:
        if not Path(where).is_absolute() and not _inside(candidate, bases):
            continue
        try:
            payloads.append(read_file(candidate, name, max_bytes))
            return
        except UnreadableFile:
            continue
    missing.append(where)


def _inside(candidate: Path, bases: list[Path]) -> bool:
    """Whether a relative path, resolved (links followed), stays inside one of the folders."""
    resolved = candidate.resolve()
    return any(resolved.is_relative_to(base.resolve()) for base in bases)
