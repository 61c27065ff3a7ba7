"""The clean release, one writer per input format: told which rows are kept, each writes only those,
copied from the input (the bytes of a removed or held row reach no file: zero view). Readers only
read; a writer reads its input again through them, and checks what it copies against what the scan
read: a tar's members by size and MD5 as they are copied, every other input whole by its SHA-256
before a decide round copies from it (see `pipeline.decide`)."""

from __future__ import annotations

from pathlib import Path

from ...sources.base import Shard
from .base import CleanWriter
from .folder import folder_writer
from .tables import image_parquet_writer, saved_images_stem, table_writer
from .tar import TarCopy

__all__ = ["CleanWriter", "clean_writer", "copies_checked", "saved_images_stem"]


def clean_writer(shard: Shard, clean_root: Path, save_images: bool = False, earlier: Path | None = None) -> CleanWriter:
    """The writer of a shard's clean release, in the input's own format, under `clean_root` /
    `shard.name`. `save_images`: also write fetched images that are kept (tables). `earlier`: in a
    decide round, the clean release of the round before (fetched images that were kept are copied
    from there: nothing is downloaded again)."""
    if shard.kind == "webdataset":
        return TarCopy(shard, clean_root)
    if shard.kind == "table":
        return table_writer(shard, clean_root, save_images, earlier)
    if shard.kind == "image_parquet":
        return image_parquet_writer(shard, clean_root)
    if shard.kind == "folder":
        return folder_writer(shard, clean_root)
    raise ValueError(f"no clean-release writer for inputs of kind {shard.kind!r}")


def copies_checked(shard: Shard, file: str) -> bool:
    """Whether the clean writer checks each byte it copies from `file` against what the scan read
    (a tar's members, by MD5); the other files are checked whole before a round copies from them."""
    return shard.kind == "webdataset" and file == shard.path
