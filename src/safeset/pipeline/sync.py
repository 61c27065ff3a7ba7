"""`safeset sync COPY --release NEW --out CLEAN`: "clean my copy". After a dataset's clean-up (as
LAION asked every holder of LAION-5B to do against Re-LAION-5B), a holder's img2dataset copy is
pruned to the rows the new release still has, matched by URL and caption (by URL alone when either
side has no caption), without decoding an image.

The copy is any of img2dataset's outputs, each shard a `NNNNN.parquet` holding every row,
downloaded or not: webdataset (`NNNNN.tar` beside it), files (a folder `NNNNN/` of KEY.jpg,
KEY.txt, KEY.json beside it) or parquet (the images in a column of the parquet itself). Kept
images are copied as they were: tar members and files byte for byte, parquet values unchanged.

The identities are compared as `safeset diff` compares them (256 bucket files on disk, one bucket
at a time); then the kept rows' numbers are held, 8 bytes each (16 GB for 2B kept rows: split
such a copy into parts), with one shard's keys; temporary disk is 24 bytes per row of the copy
and of the release, in a hidden folder of CLEAN.
"""

from __future__ import annotations

import json
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..atomic import write_atomic
from ..errors import BadInputError, UsageError
from ..sources.tables import find_column
from .diff import BUCKETS, identity_columns, lacking, release_tables, spill

SUMMARY = "sync_stats.json"  # named as img2dataset names its own, which a scan knows is no data
_SCRATCH = ".safeset-sync-"


@dataclass(frozen=True)
class _Shard:
    """One shard of an img2dataset copy: its parquet (every row, downloaded or not) and where its
    images are: `tar` (webdataset), a folder of KEY.* files (files), or the parquet itself."""

    table: Path
    images: Path | None  # the tar or the folder; None: the parquet holds the images
    kind: str  # "webdataset", "files" or "parquet"


def _shards(copy: Path) -> list[_Shard]:
    tables = sorted(p for p in copy.glob("*.parquet") if not p.name.startswith("."))
    if not tables:
        raise BadInputError(copy, "holds no img2dataset shard (NNNNN.parquet, with NNNNN.tar or NNNNN/ beside it)")
    shards = []
    for table in tables:
        tar, folder = table.with_suffix(".tar"), table.with_suffix("")
        if tar.is_file():
            shards.append(_Shard(table, tar, "webdataset"))
        elif folder.is_dir():
            shards.append(_Shard(table, folder, "files"))
        elif any(pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type) for f in pq.read_schema(table)):
            shards.append(_Shard(table, None, "parquet"))
        else:
            raise BadInputError(
                table,
                f"has no {tar.name} or {folder.name}/ beside it and no image column: sync reads img2dataset's "
                "webdataset, files or parquet output",
            )
    for tar in sorted(copy.glob("*.tar")):
        if not tar.with_suffix(".parquet").is_file():
            raise BadInputError(tar, "has no parquet beside it: img2dataset writes one per shard, with every row")
    return shards


def _columns(shards: list[_Shard], release: list[Path]) -> tuple[list[list[str]], list[list[str]]]:
    """Each release table's identity columns and each shard's: url and caption where every table
    of the release and every shard have a caption, else url alone on both sides."""
    wanted = [identity_columns(table, None) for table in release]
    per_shard = []
    for table in (shard.table for shard in shards):
        schema = pq.read_schema(table)
        names = schema.names
        url = find_column(names, None, ("url",), table)
        if url is None:
            raise BadInputError(table, "has no url column")
        key = schema.field("key").type if "key" in names else None
        if key is None or not (pa.types.is_string(key) or pa.types.is_large_string(key)):
            raise BadInputError(
                table, "has no key column of text (img2dataset's sample keys) to find its tar members by"
            )
        per_shard.append([url, find_column(names, None, ("caption", "text"), table)])
    both = all(len(cols) == 2 for cols in wanted) and all(caption for _, caption in per_shard)
    return [cols if both else cols[:1] for cols in wanted], [cols if both else cols[:1] for cols in per_shard]


def sync(copy: str | Path, release: str | Path, out: str | Path) -> dict[str, Any]:
    copy, release, out = Path(copy), Path(release), Path(out)
    if out.resolve().is_relative_to(copy.resolve()):
        raise UsageError(f"{out} is inside the copy {copy}: write the clean copy elsewhere")
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
    shards = _shards(copy)
    tables = release_tables(release)
    wanted, mine = _columns(shards, tables)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=_SCRATCH, dir=out) as scratch:
        folders = {side: Path(scratch) / side for side in ("copy", "release")}
        for folder in folders.values():
            folder.mkdir()
        listed = 0
        for table, columns in zip(tables, wanted, strict=True):
            listed += spill(table, columns, folders["release"], listed)
        if not listed:
            raise UsageError(f"the release {release} holds no row: every row of the copy would go")
        firsts, total = [], 0
        for shard, columns in zip(shards, mine, strict=True):
            firsts.append(total)
            total += spill(shard.table, columns, folders["copy"], total)
        buckets = [(folders["copy"] / f"{i:03d}", folders["release"] / f"{i:03d}") for i in range(BUCKETS)]
        kept = np.sort(np.concatenate([lacking(mine, theirs, present=True) for mine, theirs in buckets]))
    summary = {"copy_rows": total, "kept": int(len(kept)), "dropped_not_in_release": total - int(len(kept))}
    summary["shards"] = []
    for shard, first in zip(shards, firsts, strict=True):
        rows = pq.read_table(shard.table, columns=["key", "status"] if shard.kind == "parquet" else None)
        lo, hi = np.searchsorted(kept, [first, first + rows.num_rows])
        local = kept[lo:hi] - first
        _WRITERS[shard.kind](shard, rows, local, out)
        name = (shard.images or shard.table).name
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


def _write_metadata(shard: _Shard, kept_rows: pa.Table, out: Path) -> None:
    sink = pa.BufferOutputStream()
    pq.write_table(kept_rows, sink)
    write_atomic(out / shard.table.name, sink.getvalue().to_pybytes())


def _lacking(where: Path, missing: set[str]) -> BadInputError:
    return BadInputError(where, f"lacks the images of {len(missing)} downloaded row(s) its parquet lists (cut short?)")


def _write_tar(shard: _Shard, rows: pa.Table, local: np.ndarray, out: Path) -> None:
    """A webdataset shard of the clean copy: its parquet's kept rows, and the tar members of their
    keys, each member's bytes as they were (a new header, as tarfile writes it). A kept row that
    img2dataset downloaded must find its members, or the shard fails, naming the tar."""
    tar = shard.images
    kept_rows = rows.take(pa.array(local, pa.int64()))
    keys = set(kept_rows["key"].to_pylist())
    target = out / tar.name
    partial = target.with_name(target.name + ".partial")
    found: set[str] = set()
    try:
        with tarfile.open(tar, "r:") as source, tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as sink:
            for member in source:
                if member.isfile() and _member_key(member.name) in keys:
                    sink.addfile(member, source.extractfile(member))
                    found.add(_member_key(member.name))
    except (tarfile.TarError, EOFError, OSError) as exc:
        partial.unlink(missing_ok=True)
        raise BadInputError(
            tar, f"cannot be read whole ({type(exc).__name__}): is it a complete img2dataset shard?"
        ) from None
    if _downloaded(kept_rows) - found:
        partial.unlink(missing_ok=True)
        raise _lacking(tar, _downloaded(kept_rows) - found)
    _write_metadata(shard, kept_rows, out)
    partial.replace(target)


def _write_files(shard: _Shard, rows: pa.Table, local: np.ndarray, out: Path) -> None:
    """A files shard of the clean copy: its parquet's kept rows, and a folder of their keys' files,
    copied byte for byte."""
    kept_rows = rows.take(pa.array(local, pa.int64()))
    keys = set(kept_rows["key"].to_pylist())
    target = out / shard.images.name
    partial = target.with_name(target.name + ".partial")
    partial.mkdir()
    found = set()
    for path in sorted(shard.images.iterdir()):
        if path.is_file() and not path.is_symlink() and _member_key(path.name) in keys:
            shutil.copyfile(path, partial / path.name)
            found.add(_member_key(path.name))
    if _downloaded(kept_rows) - found:
        shutil.rmtree(partial)
        raise _lacking(shard.images, _downloaded(kept_rows) - found)
    _write_metadata(shard, kept_rows, out)
    partial.replace(target)


def _write_parquet(shard: _Shard, rows: pa.Table, local: np.ndarray, out: Path) -> None:
    """A parquet shard of the clean copy (img2dataset's parquet output: the images in a column):
    its kept rows, every value as it was, read and written a row group at a time."""
    source = pq.ParquetFile(shard.table)
    target = out / shard.table.name
    partial = target.with_name(target.name + ".partial")
    wanted = np.zeros(rows.num_rows, bool)
    wanted[local] = True
    first = 0
    with pq.ParquetWriter(partial, source.schema_arrow) as sink:
        for group in range(source.num_row_groups):
            batch = source.read_row_group(group)
            sink.write_table(batch.filter(pa.array(wanted[first : first + batch.num_rows])))
            first += batch.num_rows
    partial.replace(target)


_WRITERS = {"webdataset": _write_tar, "files": _write_files, "parquet": _write_parquet}
