"""A folder of image files (recursive), or a single image file.

Every regular, non-hidden file is a row, whatever its extension: a file that is not an image gets a
`decode_failed` status with the reason, rather than being silently skipped. The folder is split into
chunks of `folder_chunk` files; the clean release is the list of kept files (`clean/NAME/kept.txt`),
written from the results when the scan finishes, since the images themselves need no rewriting.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from ..model import Item, Status
from .base import CleanWriter, Reader, ReadOptions, SecondPass, Shard, walk_files


class FolderReader(Reader):
    kind = "folder"

    def shards(self, path: Path, name: str, options: ReadOptions) -> list[Shard]:
        if path.is_file():
            return [Shard(self.kind, f"{name}/chunk-00000", str(path.parent), (str(path),), (path.name,), options)]
        files = walk_files(path)
        chunk = max(1, options.folder_chunk)
        shards = []
        for number, start in enumerate(range(0, len(files), chunk)):
            group = files[start : start + chunk]
            shards.append(
                Shard(
                    self.kind,
                    f"{name}/chunk-{number:05d}",
                    str(path),
                    tuple(str(f) for f in group),
                    tuple(f.relative_to(path).as_posix() for f in group),
                    options,
                )
            )
        return shards

    def items(self, shard: Shard, problems: list[str]) -> Iterator[Item]:
        root = Path(shard.path)
        for index, rel in enumerate(shard.members):
            item = Item(row_id=shard.row_id(index), shard=shard.name, index=index, key=rel)
            try:
                item.data = (root / rel).read_bytes()
            except OSError as exc:
                item.status, item.error = Status.NO_IMAGE, f"unreadable file ({type(exc).__name__})"
                problems.append(f"{root / rel}: cannot read ({exc.strerror})")
            yield item

    def clean_writer(self, shard: Shard, clean_root: Path, save_images: bool = False) -> CleanWriter:
        """Nothing per shard: the images need no rewriting, and the kept-file list is written from
        the results when the scan finishes (`safeset.sinks.ManifestWriter`)."""
        return SecondPass(lambda keep: None)
