"""What every input format provides: shards to plan and items to check. Readers only read: the
clean release is written by `sinks.clean`, which reads the input again through them and copies
only kept rows, so the bytes of a removed or held item are never written anywhere (zero view) and
are never kept in memory for it.

A reader is stateless; a `Shard` is a small picklable description a worker process can be handed.
"""

from __future__ import annotations

import errno
import json
import math
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ..hashing import stream_digests
from ..hashing.sniff import decodable
from ..model import DEFAULT_MAX_BYTES, Item, Payload
from ..options import option
from ..storage import UnreadableFile, open_regular

if TYPE_CHECKING:
    import pyarrow as pa

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".jfif", ".pjpeg", ".pjp", ".avif", ".ico"}
)


@dataclass(frozen=True)
class ReadOptions:
    """How to find things in tables whose column names vary between releases."""

    url_col: str | None = field(
        default=None, metadata=option("URL column of metadata tables (default: 'url', any case).")
    )
    caption_col: str | None = field(
        default=None, metadata=option("Caption column (default: 'caption' or 'text', any case).")
    )
    image_col: str | None = field(
        default=None, metadata=option("Image-bytes column of parquet inputs (default: 'image' and kin).")
    )
    folder_chunk: int = 1000  # image files per shard for a folder of images
    table_rows: int = field(
        default=100_000,
        metadata=option("Rows per shard of a large metadata table (the unit of resume and parallelism).", min=1),
    )
    max_bytes: int = field(
        default=DEFAULT_MAX_BYTES,
        metadata=option(
            "Largest payload held in memory and decoded. A larger download fails (too_large, counted while it "
            "streams, after decompression); a larger tar member, file or cell gets its exact digests only, computed "
            "as it streams past (decode_failed: too_large).",
            min=1,
        ),
    )
    signals: tuple[str, ...] = field(
        default=(),
        metadata=option(
            "Numeric column of metadata (LAION's punsafe, pwatermark, ...; any case) recorded as a signal, so that "
            "policy rules of later decide rounds can read it; repeatable, or comma-separated. Columns the policy's "
            "rules read are recorded anyway. 'nsfw': every image's score from an NSFW classifier (needs "
            "safeset[nsfw]).",
            metavar="NAME",
        ),
    )
    input_kind: str | None = field(
        default=None,
        metadata=option(
            "Read every INPUT as this kind instead of detecting it: for a folder that mixes kinds, what does not "
            "belong to it is listed in the report; 'folder' hashes every file as a file, whatever it is.",
            choices=("webdataset", "image_parquet", "table", "folder"),
        ),
    )

    def __post_init__(self) -> None:
        given = (self.signals,) if isinstance(self.signals, str) else self.signals
        names = (n.strip().lower() for value in given for n in value.split(","))
        object.__setattr__(self, "signals", tuple(sorted({n for n in names if n})))


@dataclass(frozen=True)
class Shard:
    """One unit of work: a tar, a parquet or table file, or a chunk of a folder of images."""

    kind: str
    name: str  # "<input name>/<relative path>": row ids and the clean/ layout are built from it
    path: str  # the file (or, for folders, the folder) read
    files: tuple[str, ...]  # every input file this shard reads, for checksums and change detection
    members: tuple[str, ...] = ()  # folder chunks: the image files, relative to `path`
    options: ReadOptions = field(default_factory=ReadOptions)
    part: Any = None  # a part of a large table: which rows, and where they are in the file
    root: str = ""  # the input this shard is part of, as given (files a row refers to may be under it)

    def row_id(self, index: int) -> str:
        return f"{self.name}:{index}"


@dataclass
class ShardLog:
    """What reading a shard notes besides its rows: its problems (lines for the report), and how
    many rows the input says the shard holds, counted from the input's own structure (a parquet
    footer, the parts a table was planned into, an img2dataset parquet's rows, the samples of a
    tar). The worker checks the rows it ends with against this count: rows in = rows out."""

    problems: list[str] = field(default_factory=list)
    rows: int = 0

    def declare(self, rows: int) -> None:
        self.rows += rows


class Reader(ABC):
    """One input format. Subclasses register themselves by `kind`."""

    kind: ClassVar[str]

    @abstractmethod
    def shards(self, path: Path, name: str, options: ReadOptions) -> list[Shard]:
        """Split the input at `path` (called `name` in outputs) into shards, in a stable order."""

    @abstractmethod
    def items(self, shard: Shard, log: ShardLog) -> Iterator[Item]:
        """Every row of the shard exactly once, each declared in `log` as the input's structure
        shows it. Shard-level trouble that still lets the readable rows through (a truncated tar,
        say) goes to `log.problems` instead of raising."""

    def staging(self, shard: Shard, file: str) -> str:
        """How this reader wants `file` of `shard` when it lives on object storage: "whole"
        (downloaded into memory before the shard starts), "streamed" (downloaded into memory and
        read as it arrives, for a file read front to back: a tar), or "in_place" (read from the
        store by ranges: a part of a large table, which holds no image bytes)."""
        return "whole"

    def row_tables(self, shard: Shard, log: ShardLog) -> Iterator[pa.Table] | None:
        """The shard's rows as Arrow tables (`index`, `key`, `url`, `error`), where it holds no
        image bytes and can be read so; None (the default) to be read item by item."""
        return None


def walk(root: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """The files under `root`, recursively, sorted; and what the walk leaves out, with why, for
    the report: hidden files and folders (`.git`, `.cache`, `.DS_Store`), and links to folders
    (not followed: a loop, or a link out of the dataset, would take the walk anywhere)."""
    found: list[Path] = []
    left: list[tuple[Path, str]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        for name in sorted(dirnames + filenames):
            if name.startswith("."):
                left.append((here / name, "hidden: not read"))
            elif name in dirnames and (here / name).is_symlink():
                left.append((here / name, "a link to a folder: not followed"))
            elif name in filenames:
                found.append(here / name)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
    return sorted(found), sorted(left)


def walk_files(root: Path) -> list[Path]:
    """The files under `root` (see `walk`)."""
    return walk(root)[0]


def json_object(text: bytes, problem: Callable[[str], None]) -> dict:
    """A sidecar's JSON object; anything else (not JSON, not an object, nested past what the
    parser follows) is a `problem` noted, and no metadata."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        problem("is not valid JSON")
        return {}
    if not isinstance(value, dict):
        problem("is not a JSON object")
        return {}
    return value


def text_or_none(value: Any) -> str | None:
    """A cell or JSON value that is meant to be text (a URL, a caption): a non-empty string, or
    None for anything else (a number, bytes, a list), never a crash downstream."""
    return value if isinstance(value, str) and value else None


FLOAT32_MAX = 3.4028234663852886e38  # signals are stored as float32


def numeric_signals(values: Mapping[str, Any], wanted: Sequence[str]) -> dict[str, float]:
    """The signals asked for (`ReadOptions.signals`) that a row's values hold as finite numbers,
    their names in any case; text that reads as a number counts (a CSV cell is always text)."""
    found: dict[str, float] = {}
    for key, value in values.items():
        name = key.lower() if isinstance(key, str) else None
        if name in wanted and name not in found:
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                continue
            try:
                number = float(value)
            except (ValueError, OverflowError):  # not a number; an integer beyond any float
                continue
            if math.isfinite(number) and abs(number) <= FLOAT32_MAX:  # as the results hold it
                found[name] = number
    return found


_CHUNK = 1 << 20


def read_file(path: Path, name: str = "", max_bytes: int = DEFAULT_MAX_BYTES) -> Payload:
    """A regular file's bytes as a payload (see `open_regular`): in memory up to `max_bytes`, a
    larger file hashed as it streams past."""
    with open_regular(path) as fh:
        try:
            head = fh.read(max_bytes + 1)
            if len(head) <= max_bytes:
                return Payload(name, head)
            digests = stream_digests(_chain(head, iter(lambda: fh.read(_CHUNK), b"")))
        except OSError as exc:
            raise UnreadableFile(f"read error ({errno.errorcode.get(exc.errno, 'EIO')})") from None
    return Payload(name, digests=digests, error="too_large", head=head[:max_bytes] if decodable(head) else None)


def _chain(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    yield first
    yield from rest
