"""A folder of image files (recursive), one image file, or img2dataset's `output_format=files`.

A row is a sample: the files of one folder that share a name up to the extension (`photo.jpg`,
and `photo.json` / `photo.txt` beside it, as img2dataset writes them). Its text sidecars are
metadata (a `.json` gives the URL, a `.txt` the caption); every other file is a payload, hashed
and matched whatever its extension says, and a file that is not an image gets a status with the
reason rather than being skipped. Only regular files are read (links to them followed): a FIFO,
a device, a dangling link or a link loop is a row with the reason, never a read that hangs.

img2dataset's files layout is `00000/` (the samples, keys as file names) beside `00000.parquet`
(one row per input row, failed downloads included) and `00000_stats.json`: each such folder is a
shard whose rows are its parquet's rows, as for a tar with its parquet.

The clean release of each shard is the list of its kept samples' files, `clean/NAME/<shard>.kept`:
NUL-terminated paths relative to the input folder, as `xargs -0`, `rsync --from0 --files-from`
and `tar --null -T` read them (a name may hold any byte but NUL, newlines included), and for the
files layout the shard's parquet filtered beside it. The files themselves need no rewriting.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..hashing import is_metadata
from ..model import Item, Status, printable
from .base import (
    Reader,
    ReadOptions,
    Shard,
    ShardLog,
    UnreadableFile,
    json_object,
    read_file,
    text_or_none,
    walk_files,
)
from .img2dataset import resized
from .webdataset import ShardRow, shard_rows

if TYPE_CHECKING:
    pass

SIDECAR_EXTENSIONS = frozenset({".json", ".txt"})


@dataclass(frozen=True)
class FilesPart:
    """An img2dataset files-layout shard: its samples' folder and the parquet that lists its rows."""

    folder: str  # relative to the input folder
    parquet: str


def sample_key(rel: str) -> str:
    """Files of one sample share this: the path without its last extension."""
    head, _, base = rel.rpartition("/")
    stem = base.rsplit(".", 1)[0] if "." in base.lstrip(".") else base
    return f"{head}/{stem}" if head else stem


def group_samples(rels: list[str]) -> list[tuple[str, ...]]:
    """Relative paths grouped into samples, each in name order, samples in the order of their first file."""
    groups: dict[str, list[str]] = {}
    for rel in rels:
        groups.setdefault(sample_key(rel), []).append(rel)
    return [tuple(files) for files in groups.values()]


def files_layout(folder: Path) -> list[tuple[str, str]]:
    """img2dataset files-layout shards in `folder`: (samples folder, its parquet) pairs, both named
    relative to it, where `NAME/` has a `NAME.parquet` beside it."""
    found = []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.is_dir(follow_symlinks=False) and not entry.name.startswith("."):
            parquet = Path(entry.path).with_name(entry.name + ".parquet")
            if parquet.is_file():
                found.append((entry.name, parquet.name))
    return found


class FolderReader(Reader):
    kind = "folder"

    def shards(self, path: Path, name: str, options: ReadOptions) -> list[Shard]:
        if path.is_file():
            return [Shard(self.kind, f"{name}/chunk-00000", str(path.parent), (str(path),), (path.name,), options)]
        shards = []
        layout = files_layout(path)
        claimed = {folder for folder, _ in layout}
        for folder, parquet in layout:
            files = walk_files(path / folder)
            members = tuple(f.relative_to(path).as_posix() for f in files)
            shards.append(
                Shard(
                    self.kind,
                    f"{name}/{folder}",
                    str(path),
                    (*map(str, files), str(path / parquet)),
                    members,
                    options,
                    part=FilesPart(folder, parquet),
                )
            )
        sidecars = {p for _, p in layout} | {f"{folder}_stats.json" for folder in claimed}
        loose = [
            f.relative_to(path).as_posix()
            for f in walk_files(path)
            if f.relative_to(path).parts[0] not in claimed and f.relative_to(path).as_posix() not in sidecars
        ]
        samples = group_samples(loose)
        chunk = max(1, options.folder_chunk)
        for number, start in enumerate(range(0, len(samples), chunk)):
            members = tuple(rel for sample in samples[start : start + chunk] for rel in sample)
            shards.append(
                Shard(
                    self.kind,
                    f"{name}/chunk-{number:05d}",
                    str(path),
                    tuple(str(path / m) for m in members),
                    members,
                    options,
                )
            )
        return shards

    def items(self, shard: Shard, log: ShardLog) -> Iterator[Item]:
        root = Path(shard.path)
        problems = log.problems
        samples = group_samples(list(shard.members))
        part = shard.part
        if not isinstance(part, FilesPart):
            log.declare(len(samples))  # the samples its planned files make
            for index, files in enumerate(samples):
                yield self._item(shard, root, index, files, None, problems)
            return
        rows = shard_rows(root / part.parquet)
        log.declare(len(rows))
        # A sample's key is its path inside the shard's folder, without the extension: img2dataset
        # keys name files at the top of it, and a file deeper down is no row's sample but its own.
        by_key = {sample_key(files[0])[len(part.folder) + 1 :]: files for files in samples}
        seen: set[str] = set()
        for index, row in enumerate(rows):
            key = str(row.values.get("key"))
            files = by_key.get(key) if key not in seen else None
            seen.add(key)
            if files is None:
                item = Item(
                    row_id=shard.row_id(index),
                    shard=shard.name,
                    index=index,
                    key=key,
                    url=text_or_none(row.values.get("url")),
                    payloads=row.payloads(shard.options.max_bytes, problems),
                )
                if not item.payloads:
                    item.status, item.error = Status.NO_IMAGE, row.failure() or "missing from folder"
                yield item
            else:
                yield self._item(shard, root, index, files, row, problems)
        extra = len(rows)
        for key, files in by_key.items():
            if key not in seen:
                problems.append(f"{root / part.folder}: sample {printable(key)!r} has no row in {part.parquet}")
                log.declare(1)
                yield self._item(shard, root, extra, files, None, problems)
                extra += 1

    def _item(
        self, shard: Shard, root: Path, index: int, files: tuple[str, ...], row: ShardRow | None, problems: list[str]
    ) -> Item:
        """One sample: its text sidecars read as metadata, every other file as a payload. A file
        that cannot be read is named in the row's error and left out of the kept list."""
        item = Item(row_id=shard.row_id(index), shard=shard.name, index=index, key=files[0])
        meta: dict[str, Any] = {}
        listed: list[str] = []
        unreadable: list[str] = []
        for rel in files:
            try:
                payload = read_file(root / rel, rel, shard.options.max_bytes)
            except UnreadableFile as exc:
                problems.append(f"{root / rel}: {exc.reason}")
                unreadable.append(f"{printable(rel)}: {exc.reason}")
                continue
            listed.append(rel)
            suffix = Path(rel).suffix.lower()
            if (
                len(files) > 1
                and suffix in SIDECAR_EXTENSIONS
                and payload.data is not None
                and is_metadata(payload.data)
            ):
                if suffix == ".json" and not meta:
                    meta = json_object(payload.data, lambda why, rel=rel: problems.append(f"{root / rel} {why}"))
                elif suffix == ".txt" and item.caption is None:
                    item.caption = payload.data.decode("utf-8")
                continue
            item.payloads.append(payload)
        values = row.values if row is not None else {}
        if len(item.payloads) == 1:  # img2dataset's one image: what it did to it, if it says
            item.payloads[0].resized = resized(values) or resized(meta)
        if item.payloads:
            item.key = item.payloads[0].name
        if row is not None:
            item.payloads.extend(row.payloads(shard.options.max_bytes, problems))
        item.locator = tuple(listed)
        if not item.payloads:
            item.status = Status.NO_IMAGE
            item.error = unreadable[0] if unreadable else "sample has no image file"
        if unreadable and item.payloads:
            problems.append(f"{root / files[0]}: sample left partly unread ({len(unreadable)} file(s))")
        item.url = text_or_none(values.get("url")) or text_or_none(meta.get("url"))
        if item.caption is None:
            item.caption = text_or_none(values.get("caption"))
        return item
