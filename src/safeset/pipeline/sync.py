"""`safeset sync COPY --release NEW --out CLEAN`: "clean my copy". After a dataset's clean-up (as
LAION asked every holder of LAION-5B to do against Re-LAION-5B), a holder's img2dataset copy is
pruned to the rows the new release still has, matched by URL and caption (by URL alone when either
side has no caption), without decoding an image.

The copy is any of img2dataset's outputs, each shard a `NNNNN.parquet` holding every row,
downloaded or not: webdataset (`NNNNN.tar` beside it), files (a folder `NNNNN/` of KEY.jpg,
KEY.txt, KEY.json beside it) or parquet (the images in a column of the parquet itself), in a
folder or on object storage (any pyarrow filesystem URI; tars are streamed, parquet read by
ranges). Kept images are copied as they were: tar members and files byte for byte, parquet
values unchanged. The clean copy is written to a local folder.

The identities are compared as `safeset diff` compares them (256 bucket files on disk, one bucket
at a time); then the kept rows' numbers are held, 8 bytes each (16 GB for 2B kept rows: split
such a copy into parts), with one shard's keys; temporary disk is 24 bytes per row of the copy
and of the release, in a hidden folder of CLEAN.
"""

from __future__ import annotations

import errno
import json
import shutil
import tarfile
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..atomic import write_atomic
from ..errors import BadInputError, UsageError
from ..redact import redact_uri
from ..sinks.img2dataset import member_header
from ..sources.tables import find_column
from ..storage import Remote, is_remote
from .diff import BUCKETS, identity_columns, lacking, release_tables, spill, table_batches

SUMMARY = "sync_stats.json"  # named as img2dataset names its own, which a scan knows is no data
_SCRATCH = ".safeset-sync-"


class _Copy:
    """The copy's files, in a folder or on object storage, read through one pyarrow filesystem
    (a folder as a file:// URI): listed once, parquet read by ranges, the rest streamed."""

    def __init__(self, location: str | Path):
        self.local = None if is_remote(location) else Path(location)
        if self.local is not None and not self.local.is_dir():
            raise BadInputError(self.local, "is not a folder: give the folder img2dataset wrote the copy into")
        self.remote = Remote(str(location) if self.local is None else self.local.resolve().as_uri())
        if self.local is None and not self.remote.is_dir():
            raise BadInputError(self.name(), "is not a folder on its store: give the copy's folder URI")
        self.files = dict(self.remote.files())

    def name(self, rel: str = "") -> str:
        """How messages name a file of the copy: its path, or its URI without credentials."""
        if self.local is not None:
            return str(self.local / rel) if rel else str(self.local)
        return redact_uri(self.remote.child(rel).uri if rel else self.remote.uri)

    def parquet(self, rel: str) -> pq.ParquetFile:
        try:
            return pq.ParquetFile(self.remote.open_random(rel))
        except (OSError, pa.ArrowException) as exc:
            raise BadInputError(self.name(rel), f"cannot be read as parquet ({type(exc).__name__})") from None

    def batches(self, rel: str, columns: list[str]) -> Iterator[pa.RecordBatch]:
        try:
            yield from self.parquet(rel).iter_batches(columns=columns)
        except (OSError, pa.ArrowException) as exc:  # e.g. text that is not UTF-8: its value is not ours to print
            raise BadInputError(self.name(rel), f"cannot be read whole ({type(exc).__name__})") from None

    def read(self, rel: str, columns: Sequence[str] | None = None) -> pa.Table:
        """The shard parquet `rel` whole, or those of `columns` it has (the file opened once)."""
        parquet = self.parquet(rel)
        held = None if columns is None else [c for c in columns if c in parquet.schema_arrow.names]
        try:
            return parquet.read(columns=held)
        except (OSError, pa.ArrowException) as exc:
            raise BadInputError(self.name(rel), f"cannot be read whole ({type(exc).__name__})") from None

    def members(self, folder: str) -> list[str]:
        """The files directly in `folder` (a files shard's), by name."""
        return sorted(rel.split("/", 1)[1] for rel in self.files if rel.startswith(folder + "/"))


@dataclass(frozen=True)
class _Shard:
    """One shard of an img2dataset copy: its parquet (every row, downloaded or not) and where its
    images are: `tar` (webdataset), a folder of KEY.* files (files), or the parquet itself."""

    table: str  # relative to the copy, as are the others
    images: str | None  # the tar or the folder; None: the parquet holds the images
    kind: str  # "webdataset", "files" or "parquet"


def _is_binary(field: pa.Field) -> bool:
    return pa.types.is_binary(field.type) or pa.types.is_large_binary(field.type)


def _shards(copy: _Copy) -> list[_Shard]:
    tables = sorted(rel for rel in copy.files if "/" not in rel and rel.endswith(".parquet"))
    if not tables:
        raise BadInputError(
            copy.name(), "holds no img2dataset shard (NNNNN.parquet, with NNNNN.tar or NNNNN/ beside it)"
        )
    folders = {rel.split("/", 1)[0] for rel in copy.files if "/" in rel}
    shards = []
    for table in tables:
        stem = table[: -len(".parquet")]
        if f"{stem}.tar" in copy.files:
            shards.append(_Shard(table, f"{stem}.tar", "webdataset"))
        elif stem in folders:
            shards.append(_Shard(table, stem, "files"))
        elif any(_is_binary(f) for f in copy.parquet(table).schema_arrow):
            shards.append(_Shard(table, None, "parquet"))
        else:
            raise BadInputError(
                copy.name(table),
                f"has no {stem}.tar or {stem}/ beside it and no image column: sync reads img2dataset's "
                "webdataset, files or parquet output",
            )
    for tar in sorted(rel for rel in copy.files if "/" not in rel and rel.endswith(".tar")):
        if tar[: -len(".tar")] + ".parquet" not in copy.files:
            raise BadInputError(
                copy.name(tar), "has no parquet beside it: img2dataset writes one per shard, with every row"
            )
    return shards


def _columns(copy: _Copy, shards: list[_Shard], release: list[Path]) -> tuple[list[list[str]], list[list[str]]]:
    """Each release table's identity columns and each shard's: url and caption where every table
    of the release and every shard have a caption, else url alone on both sides."""
    wanted = [identity_columns(table, None, keyed=False) for table in release]
    per_shard = []
    for table in (shard.table for shard in shards):
        schema = copy.parquet(table).schema_arrow
        names = schema.names
        url = find_column(names, None, ("url",), copy.name(table))
        if url is None:
            raise BadInputError(copy.name(table), "has no url column")
        key = schema.field("key").type if "key" in names else None
        if key is None or not (pa.types.is_string(key) or pa.types.is_large_string(key)):
            raise BadInputError(
                copy.name(table), "has no key column of text (img2dataset's sample keys) to find its images by"
            )
        per_shard.append([url, find_column(names, None, ("caption", "text"), copy.name(table))])
    both = all(len(cols) == 2 for cols in wanted) and all(caption for _, caption in per_shard)
    return [cols if both else cols[:1] for cols in wanted], [cols if both else cols[:1] for cols in per_shard]


def _prepare(out: Path, copy: _Copy, release: Path) -> None:
    """Refuse what would lose the copy or keep every row: CLEAN inside the copy or holding it, a
    release that holds the copy or lies inside it (its own rows would be "the release")."""
    if copy.local is not None:
        mine, clean, new = copy.local.resolve(), out.resolve(), release.resolve()
        if clean.is_relative_to(mine) or mine.is_relative_to(clean):
            raise UsageError(f"{out} and the copy {copy.local} overlap: write the clean copy to a folder of its own")
        if mine.is_relative_to(new) or new.is_relative_to(mine):
            raise UsageError(
                f"the release {release} and the copy {copy.local} overlap: give the new release's metadata"
            )
    if out.exists():
        for stale in out.glob(f"{_SCRATCH}*"):  # what a killed run left of its own
            shutil.rmtree(stale, ignore_errors=True)
        if any(out.iterdir()):
            unfinished = not (out / SUMMARY).is_file()
            raise UsageError(
                f"{out} is not empty"
                + (f" (a sync that did not finish: no {SUMMARY}; remove it and run again)" if unfinished else "")
                + ": sync writes a new copy"
            )


def sync(copy: str | Path, release: str | Path, out: str | Path) -> dict[str, Any]:
    """See the module: `copy` a folder or URI, `release` a table or a folder of them, `out` a
    new or empty local folder. Returns the summary written to OUT/sync_stats.json."""
    found, release, out = _Copy(copy), Path(release), Path(out)
    _prepare(out, found, release)
    shards = _shards(found)
    tables = release_tables(release)
    wanted, mine = _columns(found, shards, tables)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=_SCRATCH, dir=out) as scratch:
        folders = {side: Path(scratch) / side for side in ("copy", "release")}
        for folder in folders.values():
            folder.mkdir()
        listed = 0
        for table, columns in zip(tables, wanted, strict=True):
            listed += spill(table_batches(table, columns), folders["release"], listed)
        if not listed:
            raise UsageError(f"the release {release} holds no row: every row of the copy would go")
        firsts, total = [], 0
        for shard, columns in zip(shards, mine, strict=True):
            firsts.append(total)
            total += spill(found.batches(shard.table, columns), folders["copy"], total)
        buckets = [(folders["copy"] / f"{i:03d}", folders["release"] / f"{i:03d}") for i in range(BUCKETS)]
        kept = np.sort(np.concatenate([lacking(mine, theirs, present=True) for mine, theirs in buckets]))
    summary = {"copy_rows": total, "kept": int(len(kept)), "dropped_not_in_release": total - int(len(kept))}
    summary["shards"] = []
    for shard, first in zip(shards, firsts, strict=True):
        rows = found.read(shard.table, ("key", "status") if shard.kind == "parquet" else None)  # images unread
        lo, hi = np.searchsorted(kept, [first, first + rows.num_rows])
        local = kept[lo:hi] - first
        _WRITERS[shard.kind](found, shard, rows, local, out)
        name = shard.images or shard.table
        summary["shards"].append({"shard": name, "format": shard.kind, "rows": rows.num_rows, "kept": int(len(local))})
    write_atomic(out / SUMMARY, (json.dumps(summary, indent=2) + "\n").encode())  # last: the copy is whole
    return summary


def _downloaded(kept_rows: pa.Table) -> set[str]:
    """The keys of the kept rows img2dataset downloaded: their images must be in the copy."""
    if "status" not in kept_rows.column_names:
        return set()
    return set(kept_rows.filter(pc.equal(kept_rows["status"], "success"))["key"].to_pylist())


def _member_key(name: str) -> str:
    return name.split(".", 1)[0]  # img2dataset's members: KEY.jpg, KEY.txt, KEY.json


# what img2dataset names an image member (--encode_format), and what other writers might
_IMAGES = frozenset({"jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff", "avif", "jp2", "jxl", "heic"})


def _image_key(name: str) -> str | None:
    """The key of an image member (KEY.jpg, ...); None for the caption, the row's JSON and others."""
    stem, _, ext = name.rpartition(".")
    return _member_key(name) if stem and ext.lower() in _IMAGES else None


def _write_metadata(shard: _Shard, kept_rows: pa.Table, out: Path) -> None:
    sink = pa.BufferOutputStream()
    pq.write_table(kept_rows, sink)
    write_atomic(out / shard.table, sink.getvalue().to_pybytes())


def _lacking(where: str, missing: set[str]) -> BadInputError:
    return BadInputError(
        where, f"lacks the image of {len(missing)} downloaded row(s) its parquet lists (cut short, or a link?)"
    )


_BLOCK = tarfile.BLOCKSIZE
_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)  # errors writing the clean copy, not reading the input
_SKIP = 1 << 20


class _BadTar(Exception):
    """What makes a tar unreadable, said without quoting it."""


def _tar_number(field: bytes) -> int:
    """A header's number: octal text, or base-256 when its first byte is 0x80 (a negative one,
    0xff, is no size, time or mode a member may have)."""
    if field[:1] == b"\x80":
        return int.from_bytes(field[1:], "big")
    text = field.strip(b" \0")
    try:
        return int(text, 8) if text else 0
    except ValueError:
        raise _BadTar("a header's number is not octal") from None


def _exactly(stream, size: int) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise _BadTar("it ends inside a member (cut short?)")
    return data


def _skip(stream, size: int) -> None:
    while size > 0:
        size -= len(_exactly(stream, min(size, _SKIP)))


def _pax(data: bytes) -> dict[bytes, bytes]:
    """A PAX extended header's records ("LEN key=value\n" each)."""
    records, at = {}, 0
    while at < len(data) and data[at : at + 1] not in (b"", b"\0"):
        length, _, rest = data[at:].partition(b" ")
        try:
            size = int(length)
        except ValueError:
            raise _BadTar("a PAX record has no length") from None
        key, _, value = data[at + len(length) + 1 : at + size].rstrip(b"\n").partition(b"=")
        if size <= 0 or not rest:
            raise _BadTar("a PAX record is malformed")
        records[key] = value
        at += size
    return records


def _checksum_holds(header: bytes) -> bool:
    """Whether a header's checksum is its bytes summed (the checksum field as spaces), unsigned, or
    signed as some old writers summed them."""
    stored, rest = _tar_number(header[148:156]), sum(header) - sum(header[148:156]) + 256
    return stored == rest or stored == rest - 256 * sum(b > 127 for b in header[:148] + header[156:])


def _tar_members(stream, wanted) -> Iterator[tuple[str, int, int, bytes]]:
    """The regular file members of a tar read as a stream, those whose name `wanted` accepts with
    their data: (name, mtime, mode, data). Headers are parsed here, not by `tarfile`, which spends
    tens of microseconds a member: a LAION shard has 30,000. Long names (GNU and PAX) and PAX sizes
    are honoured; a sparse member, a bad checksum or an end inside a member is an error."""
    name = size = None
    while True:
        header = stream.read(_BLOCK)
        if len(header) < _BLOCK or header == bytes(_BLOCK):
            if header.strip(b"\0"):
                raise _BadTar("it ends inside a header (cut short?)")
            return  # the end-of-archive blocks (or, as some writers leave it, none)
        if not _checksum_holds(header):
            raise _BadTar("a header's checksum is wrong")
        kind = header[156:157]
        length = _tar_number(header[124:136]) if size is None else size
        padded = length + (-length % _BLOCK)
        if kind in (b"x", b"g", b"L", b"K"):
            data = _exactly(stream, padded)[:length]
            if kind == b"x":
                records = _pax(data)
                name = records[b"path"].decode("utf-8", "surrogateescape") if b"path" in records else name
                size = int(records[b"size"]) if b"size" in records else None
            elif kind == b"L":
                name = data.rstrip(b"\0").decode("utf-8", "surrogateescape")
            continue
        if kind == b"S":
            raise _BadTar("it holds a sparse member, which img2dataset never writes")
        member = name
        if member is None:
            member = header[:100].split(b"\0", 1)[0]
            prefix = header[345:500].split(b"\0", 1)[0] if header[257:262] == b"ustar" else b""
            member = (prefix + b"/" + member if prefix else member).decode("utf-8", "surrogateescape")
        name = size = None
        if kind in (b"0", b"\0", b"7") and wanted(member):
            data = _exactly(stream, padded)[:length]
            yield member, _tar_number(header[136:148]), _tar_number(header[100:108]), data
        else:
            _skip(stream, padded)


def _write_tar(copy: _Copy, shard: _Shard, rows: pa.Table, local: np.ndarray, out: Path) -> None:
    """A webdataset shard of the clean copy: its parquet's kept rows, and the tar members of their
    keys, each member's bytes as they were under a new header (as the scan's clean tars have:
    name, size, mode and time), the tar read as a stream. A kept row that img2dataset downloaded
    must find its members, or the shard fails, naming the tar."""
    kept_rows = rows.take(pa.array(local, pa.int64()))
    keys = set(kept_rows["key"].to_pylist())
    target = out / shard.images
    partial = target.with_name(target.name + ".partial")
    found: set[str] = set()
    try:
        with copy.remote.open(shard.images) as stream, open(partial, "wb") as sink:
            written = 0
            for name, mtime, mode, data in _tar_members(stream, lambda n: _member_key(n) in keys):
                header = member_header(name, len(data), mtime, mode)
                sink.write(header + data + bytes(-len(data) % _BLOCK))
                written += len(header) + len(data) + (-len(data) % _BLOCK)
                found.add(_image_key(name))
            end = written + 2 * _BLOCK  # two zero blocks, then zeros to a whole record
            sink.write(bytes(end + -end % tarfile.RECORDSIZE - written))
    except (_BadTar, OSError, pa.ArrowException) as exc:
        partial.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno in _FULL:
            raise  # the clean copy's disk, not the input: said as such by the command line
        why = str(exc) if isinstance(exc, _BadTar) else type(exc).__name__
        raise BadInputError(copy.name(shard.images), f"cannot be read whole ({why}): is it a complete tar?") from None
    if _downloaded(kept_rows) - found:
        partial.unlink(missing_ok=True)
        raise _lacking(copy.name(shard.images), _downloaded(kept_rows) - found)
    _write_metadata(shard, kept_rows, out)
    partial.replace(target)


def _write_files(copy: _Copy, shard: _Shard, rows: pa.Table, local: np.ndarray, out: Path) -> None:
    """A files shard of the clean copy: its parquet's kept rows, and a folder of their keys' files,
    copied byte for byte."""
    kept_rows = rows.take(pa.array(local, pa.int64()))
    keys = set(kept_rows["key"].to_pylist())
    target = out / shard.images
    partial = target.with_name(target.name + ".partial")
    partial.mkdir()
    found = set()
    try:
        for name in copy.members(shard.images):
            if "/" not in name and _member_key(name) in keys:
                copy.remote.download(f"{shard.images}/{name}", partial / name)
                found.add(_image_key(name))
    except (OSError, pa.ArrowException) as exc:
        shutil.rmtree(partial)
        if isinstance(exc, OSError) and exc.errno in _FULL:
            raise
        raise BadInputError(copy.name(shard.images), f"cannot be read ({type(exc).__name__})") from None
    if _downloaded(kept_rows) - found:
        shutil.rmtree(partial)
        raise _lacking(copy.name(shard.images), _downloaded(kept_rows) - found)
    _write_metadata(shard, kept_rows, out)
    partial.replace(target)


def _write_parquet(copy: _Copy, shard: _Shard, rows: pa.Table, local: np.ndarray, out: Path) -> None:
    """A parquet shard of the clean copy (img2dataset's parquet output: the images in a column):
    its kept rows, every value as it was, read and written a row group at a time."""
    source = copy.parquet(shard.table)
    target = out / shard.table
    partial = target.with_name(target.name + ".partial")
    wanted = np.zeros(rows.num_rows, bool)
    wanted[local] = True
    first = 0
    try:
        with pq.ParquetWriter(partial, source.schema_arrow) as sink:
            for group in range(source.num_row_groups):
                try:
                    batch = source.read_row_group(group)
                except (OSError, pa.ArrowException) as exc:
                    raise BadInputError(
                        copy.name(shard.table), f"cannot be read whole ({type(exc).__name__})"
                    ) from None
                sink.write_table(batch.filter(pa.array(wanted[first : first + batch.num_rows])))
                first += batch.num_rows
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(target)


_WRITERS = {"webdataset": _write_tar, "files": _write_files, "parquet": _write_parquet}
