"""Webdataset tars, with img2dataset's per-shard parquet beside them when it exists.

img2dataset writes `00000.tar` holding `KEY.jpg`, `KEY.txt`, `KEY.json` per downloaded sample, and
`00000.parquet` with one row per *input* row, failed downloads included (`status` =
`failed_to_download`, no tar member). So when the parquet exists it defines the rows: row index =
parquet row, and a row with no sample in the tar is recorded as `no_image`. A tar without a parquet
(other webdataset writers) is read alone, one row per sample key, in tar order.

Every member of a sample that goes into the clean release is checked first. A member is metadata
only if its extension says so (`.txt`, `.json`, `.cls`, ...), it is text (UTF-8, no NUL byte) and
no image decoder takes it (plain PNM images are text); every other member is a payload of the row,
hashed and matched whatever its extension says (a `KEY.png` beside `KEY.jpg`, a `KEY.seg.png`, a
`KEY.bin`, a nested tar). A payload larger than `max_bytes` is hashed as it streams past, never held
whole in memory. Byte columns of the parquet beside the tar are payloads of their rows too.
"""

from __future__ import annotations

import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import pyarrow as pa

from ..errors import BadInputError
from ..hashing import byte_digests, is_metadata, stream_digests
from ..hashing.sniff import decodable
from ..model import Item, Payload, Span, Status, printable
from ..storage import open_input
from .base import (
    Reader,
    ReadOptions,
    Shard,
    ShardLog,
    json_object,
    numeric_signals,
    text_or_none,
    walk_files,
)
from .image_parquet import collect_payloads, image_columns
from .img2dataset import resized
from .tables import parquet_file

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")
_ROW_COLUMNS = (
    "key",
    "status",
    "error_message",
    "url",
    "caption",
    "width",
    "height",
    "original_width",
    "original_height",
)
# Members that describe a sample rather than carry its content, when they are text. Webdataset's
# conventions (`.cls` a class label, `.txt` a caption, `.json` a record) and their common kin.
METADATA_EXTENSIONS = frozenset(
    {"txt", "text", "caption", "cap", "json", "cls", "cls2", "id", "key", "url", "tags", "md", "yaml", "yml", "csv"}
)
_CHUNK = 1 << 20


@dataclass
class _Member:
    info: tarfile.TarInfo
    ext: str
    payload: Payload | None = None  # a payload of the row; None: metadata, its text in `text`
    text: bytes = b""
    md5: str | None = None  # of all its bytes; None when they were not all read (not copied, then)


@dataclass
class _Sample:
    index: int
    key: str
    members: list[_Member] = field(default_factory=list)
    row: ShardRow | None = None


def _split_member(name: str) -> tuple[str, str]:
    """`dir/000012.seg.png` -> key `dir/000012`, extension `seg.png` (the webdataset convention)."""
    head, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{head}/{stem}" if head else stem), ext.lower()


def sidecars(tar_path: Path | PurePosixPath) -> tuple[Path | PurePosixPath, Path | PurePosixPath]:
    """img2dataset's files beside a shard's tar: its parquet (the rows) and its stats."""
    name = tar_path.name
    for suffix in TAR_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return tar_path.with_name(name + ".parquet"), tar_path.with_name(name + "_stats.json")


def read_member(handle, size: int, name: str, max_bytes: int) -> Payload:
    """A tar member's bytes as a payload: in memory if they fit in `max_bytes`, else hashed as
    they stream past (its first `max_bytes` kept as its head). A member the archive ends inside of
    is `truncated` (its digests, of part of it, are not kept; what arrived is its head); the tar
    error that stopped the read is raised after."""
    buffer = bytearray(min(size, max_bytes))  # one allocation, filled in place
    view, got = memoryview(buffer), 0
    try:
        while got < len(buffer) and (n := handle.readinto(view[got : got + _CHUNK])):
            got += n
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise _Truncated(_cut(name, bytes(view[:got]))) from exc
    if got < len(buffer):
        raise _Truncated(_cut(name, bytes(view[:got])))
    view.release()
    if size <= max_bytes:
        return Payload(name, bytes(buffer))
    head = buffer  # hashed with the rest, and kept for a partial look only if it may be an image
    read = len(head)

    def chunks() -> Iterator[bytes]:
        nonlocal read
        yield head
        while chunk := handle.read(_CHUNK):
            read += len(chunk)
            yield chunk

    try:
        digests = stream_digests(chunks())
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise _Truncated(_cut(name, head)) from exc
    if read != size:
        raise _Truncated(_cut(name, head))
    return Payload(name, digests=digests, error="too_large", head=head if decodable(head) else None)


def _cut(name: str, head: bytes | bytearray) -> Payload:
    """A member the archive ends inside of: what arrived is kept for a partial look if it may be
    an image."""
    return Payload(name, error="truncated", head=head if decodable(head) else None)


class _Truncated(Exception):
    """The archive ended inside a member; carries the member's payload, marked as such."""

    def __init__(self, payload: Payload):
        super().__init__("truncated")
        self.payload = payload


class WebdatasetReader(Reader):
    kind = "webdataset"

    def shards(self, path: Path, name: str, options: ReadOptions) -> list[Shard]:
        if path.is_file():
            tars = [(path, name)]
        else:
            tars = [
                (p, f"{name}/{p.relative_to(path).as_posix()}")
                for p in walk_files(path)
                if p.name.endswith(TAR_SUFFIXES)
            ]
        shards = []
        for tar, shard_name in tars:
            side, stats = sidecars(tar)
            files = [str(tar)] + ([str(side)] + ([str(stats)] if stats.is_file() else []) if side.is_file() else [])
            shards.append(Shard(self.kind, shard_name, str(tar), tuple(files), options=options))
        return shards

    def staging(self, shard: Shard, file: str) -> str:
        return "streamed" if file == shard.path else "whole"  # the tar is read front to back

    # ---- one walk serves both passes ---------------------------------------------------------
    def _walk(self, shard: Shard, log: ShardLog) -> Iterator[_Sample]:
        problems = log.problems
        tar_path = Path(shard.path)
        rows = shard_rows(Path(shard.files[1])) if len(shard.files) > 1 else None
        log.declare(len(rows) if rows is not None else 0)  # the parquet's rows; samples beyond them below
        position: dict[str, int] = {}
        if rows is not None:
            for i, row in enumerate(rows):
                position.setdefault(str(row.values.get("key")), i)
        seen: set[int] = set()
        extra = len(rows) if rows is not None else 0

        def place(key: str) -> _Sample:
            nonlocal extra
            i = position.get(key)
            if i is not None and i not in seen:
                seen.add(i)
                return _Sample(i, key, row=rows[i])
            if rows is not None:
                problems.append(f"{tar_path}: sample {key!r} has no row in {Path(shard.files[1]).name}")
            log.declare(1)  # a sample the tar holds beyond the parquet's rows (or in a tar alone)
            extra += 1
            return _Sample(extra - 1, key)

        try:
            with open_input(tar_path) as raw, tarfile.open(fileobj=raw, mode="r:*") as tar:
                yield from self._samples(tar, tar_path, place, problems, shard.options.max_bytes)
        except tarfile.ReadError as exc:
            if rows is None:
                raise BadInputError(tar_path, f"not a readable tar archive ({_tar_error(exc)})") from None
            problems.append(f"{tar_path}: not a readable tar archive; its rows are recorded as no_image")
        except OSError as exc:
            raise BadInputError(tar_path, f"cannot read: {exc.strerror or _tar_error(exc)}") from None
        if rows is not None:
            for i, row in enumerate(rows):
                if i not in seen:
                    yield _Sample(i, str(row.values.get("key")), row=row)

    def _samples(
        self, tar: tarfile.TarFile, tar_path: Path, place: Callable[[str], _Sample], problems: list[str], max_bytes: int
    ) -> Iterator[_Sample]:
        current: _Sample | None = None
        count = 0
        skipped = 0
        try:
            while (info := tar.next()) is not None:
                tar.members.clear()  # tarfile keeps every header otherwise; we read forward only
                if not info.isfile():
                    skipped += not info.isdir()
                    continue
                key, ext = _split_member(info.name)
                if current is None or key != current.key:
                    if current is not None:
                        count += 1
                        yield current
                    current = place(key)
                current.members.append(_read(tar, info, ext, max_bytes))
                if info.issparse() and info.size > max_bytes:
                    problems.append(
                        f"{tar_path}: member {printable(info.name)!r} is sparse and larger than --max-bytes: "
                        "not expanded, so not hashed; left out of the clean tar"
                    )
        except _Truncated as cut:
            current.members.append(_Member(info, ext, cut.payload))
            problems.append(
                f"{tar_path}: tar ends inside a member after {count} complete sample(s); "
                "the rest of its rows are recorded as no_image"
            )
            yield current
            return
        except (tarfile.TarError, EOFError, OSError) as exc:
            problems.append(
                f"{tar_path}: tar unreadable after {count} complete sample(s) ({type(exc).__name__}); "
                "the rest of its rows are recorded as no_image"
            )
            if current is not None:
                # The sample being read when the archive broke: only members read in full are kept.
                yield current
            return
        finally:
            if skipped:
                problems.append(f"{tar_path}: {skipped} link or device member(s) are not samples: left out")
        if current is not None:
            yield current
        if not _ends_cleanly(tar):
            problems.append(f"{tar_path}: data after sample {count} is not a tar header (truncated or corrupt)")

    # ---- pass 1: items ----------------------------------------------------------------------
    def items(self, shard: Shard, log: ShardLog) -> Iterator[Item]:
        for sample in self._walk(shard, log):
            yield self._item(shard, sample, log.problems)

    def _item(self, shard: Shard, sample: _Sample, problems: list[str]) -> Item:
        row = sample.row.values if sample.row is not None else {}
        meta: dict = {}
        caption = None
        for member in sample.members:
            if member.payload is not None:
                continue
            if member.ext == "txt" and caption is None:
                caption = member.text.decode("utf-8")
            elif member.ext == "json" and not meta:
                where = f"{shard.path}: {member.info.name}"
                meta = json_object(member.text, lambda why, where=where: problems.append(f"{where} {why}"))
        payloads = [m.payload for m in sample.members if m.payload is not None]
        if len(payloads) == 1:  # img2dataset's one image: what it did to it, if it says
            payloads[0].resized = resized(row) or resized(meta)
        item = Item(
            row_id=shard.row_id(sample.index),
            shard=shard.name,
            index=sample.index,
            key=sample.key.rpartition("/")[2],
            url=text_or_none(row.get("url")) or text_or_none(meta.get("url")),
            caption=caption
            if caption is not None
            else (text_or_none(row.get("caption")) or text_or_none(meta.get("caption"))),
            payloads=payloads + (sample.row.payloads(shard.options.max_bytes, problems) if sample.row else []),
            # What the clean pass writes: each member read in full, with the digest to check it by.
            locator=tuple(Span(m.info.offset, m.info.size, m.md5) for m in sample.members if m.md5 is not None),
        )
        item.signals = numeric_signals({**meta, **row}, shard.options.signals)
        if not item.payloads:
            item.status = Status.NO_IMAGE
            if sample.members:
                item.error = "sample has no image member"
            else:
                item.error = (sample.row.failure() if sample.row else None) or "missing from tar"
        return item


def _read(tar: tarfile.TarFile, info: tarfile.TarInfo, ext: str, max_bytes: int) -> _Member:
    """One file member, as metadata (text under a metadata extension) or as a payload, with the
    digests of its bytes. A sparse member larger than `max_bytes` is not expanded: its size is
    whatever its header says, not bounded by the archive (a few bytes can declare a terabyte)."""
    if info.issparse() and info.size > max_bytes:
        return _Member(info, ext, Payload(ext, error="too_large"))
    payload = read_member(tar.extractfile(info), info.size, ext, max_bytes)
    if payload.data is not None:
        payload.digests = byte_digests(payload.data)
        if ext.rsplit(".", 1)[-1] in METADATA_EXTENSIONS and is_metadata(payload.data):
            return _Member(info, ext, text=payload.data, md5=payload.digests["md5"])
    return _Member(info, ext, payload, md5=payload.digests["md5"])


@dataclass
class ShardRow:
    """A row of img2dataset's parquet beside a shard: the columns safeset reads, as text, and the
    cells that can hold bytes (img2dataset writes none, but whatever reaches the clean release is
    checked), made payloads when the row's item is."""

    parquet: Path
    index: int
    values: dict
    cells: dict

    def payloads(self, max_bytes: int, problems: list[str]) -> list[Payload]:
        found: list[Payload] = []
        missing: list[str] = []
        for column, value in self.cells.items():
            collect_payloads(f"{self.parquet.name}:{column}", value, found, [self.parquet.parent], missing, max_bytes)
        problems.extend(f"{self.parquet}, row {self.index}: image file not found: {printable(m)}" for m in missing)
        return found

    def failure(self) -> str | None:
        """Why img2dataset has no sample for the row (its download failed), if it says so."""
        status = self.values.get("status")
        if not status or status == "success":
            return None
        message = (text_or_none(self.values.get("error_message")) or "").strip()
        return f"img2dataset {status}" + (f": {message[:200]}" if message else "")


def shard_rows(path: Path) -> list[ShardRow]:
    """The rows of img2dataset's parquet beside a shard (its tar, or its folder of files)."""
    pf = parquet_file(path)
    names = pf.schema_arrow.names
    columns = [c for c in _ROW_COLUMNS if c in names]
    if "key" not in columns:
        raise BadInputError(path, "img2dataset parquet has no 'key' column")
    binary = image_columns(pf.schema_arrow, None, path)
    try:
        table = pf.read(columns=list(dict.fromkeys(columns + binary)))
    except (pa.ArrowException, OSError) as exc:
        raise BadInputError(path, f"not a readable parquet file ({type(exc).__name__})") from None
    return [
        ShardRow(path, i, {c: _text(values[c]) for c in columns}, {c: values[c] for c in binary})
        for i, values in enumerate(table.to_pylist())
    ]


def _text(value: Any) -> Any:
    """A cell as text where a writer stored text as bytes (a key in a binary column)."""
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value


def _tar_error(exc: BaseException) -> str:
    """Why tarfile refused an archive, without the bytes some of its messages quote."""
    text = str(exc)
    return text.split(" (b", 1)[0].split(": b'", 1)[0] or type(exc).__name__


def _ends_cleanly(tar: tarfile.TarFile) -> bool:
    """After the last member only zero blocks may follow; tarfile silently stops at a bad header."""
    fileobj = tar.fileobj
    fileobj.seek(tar.offset)
    seen_any = False
    while True:
        chunk = fileobj.read(1 << 20)
        if not chunk:
            return seen_any
        seen_any = True
        if chunk.count(0) != len(chunk):
            return False
