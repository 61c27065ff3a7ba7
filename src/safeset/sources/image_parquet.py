"""Parquet files whose rows carry the image bytes (the Hugging Face `datasets` layout).

The image column is either a struct `{bytes: binary, path: string}` (HF's `Image` feature) or plain
binary. The clean release is the same file minus removed and held rows, schema unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

from ..errors import BadInputError
from ..model import Item, Status
from .base import CleanWriter, Reader, ReadOptions, SecondPass, Shard
from .tables import (
    CAPTION_COLUMNS,
    KEY_COLUMNS,
    URL_COLUMNS,
    filter_parquet,
    find_column,
    iter_parquet_rows,
    parquet_file,
)

IMAGE_COLUMNS = ("image", "img", "jpg", "jpeg", "png", "webp", "image_bytes", "bytes")


def _holds_bytes(field_type: pa.DataType) -> bool:
    if pa.types.is_binary(field_type) or pa.types.is_large_binary(field_type):
        return True
    if pa.types.is_struct(field_type):
        index = field_type.get_field_index("bytes")
        return index >= 0 and _holds_bytes(field_type.field(index).type)
    return False


def image_column(schema: pa.Schema, explicit: str | None) -> str | None:
    """The column holding image bytes: the one named, a conventional name, or the only struct with bytes."""
    if explicit:
        name = find_column(schema.names, explicit, ())
        return name if name is not None and _holds_bytes(schema.field(name).type) else None
    name = find_column(schema.names, None, IMAGE_COLUMNS)
    if name is not None and _holds_bytes(schema.field(name).type):
        return name
    structs = [f.name for f in schema if pa.types.is_struct(f.type) and _holds_bytes(f.type)]
    return structs[0] if len(structs) == 1 else None


class ImageParquetReader(Reader):
    kind = "image_parquet"

    def shards(self, path: Path, name: str, options: ReadOptions) -> list[Shard]:
        return [Shard(self.kind, name, str(path), (str(path),), options=options)]

    def items(self, shard: Shard, problems: list[str]) -> Iterator[Item]:
        path = Path(shard.path)
        schema = parquet_file(path).schema_arrow
        image = image_column(schema, shard.options.image_col)
        if image is None:
            raise BadInputError(
                path, f"no image-bytes column (columns: {', '.join(schema.names)}); name it with --image-col"
            )
        url = find_column(schema.names, shard.options.url_col, URL_COLUMNS)
        caption = find_column(schema.names, shard.options.caption_col, CAPTION_COLUMNS)
        key_col = find_column(schema.names, None, KEY_COLUMNS)
        columns = list(dict.fromkeys(c for c in (image, url, caption, key_col) if c))
        # Small batches: each row holds a whole image.
        for index, row in iter_parquet_rows(path, columns, problems, batch_size=64):
            item = Item(row_id=shard.row_id(index), shard=shard.name, index=index, key=str(index))
            if row is None:
                item.status, item.error = Status.NO_IMAGE, "unreadable row"
                yield item
                continue
            cell = row.get(image)
            data, image_path = (cell.get("bytes"), cell.get("path")) if isinstance(cell, dict) else (cell, None)
            if key_col and row.get(key_col) is not None:
                item.key = str(row[key_col])
            elif image_path:
                item.key = image_path
            item.url = row.get(url) if url else None
            item.caption = row.get(caption) if caption else None
            if data is None:
                item.status, item.error = Status.NO_IMAGE, "image cell is empty"
            item.data = data
            yield item

    def clean_writer(self, shard: Shard, clean_root: Path, save_images: bool = False) -> CleanWriter:
        return SecondPass(lambda keep: filter_parquet(Path(shard.path), clean_root / shard.name, keep, batch_size=64))
