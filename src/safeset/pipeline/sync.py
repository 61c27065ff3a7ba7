"""`safeset sync COPY --release NEW --out CLEAN`: "clean my copy". After a dataset's clean-up (as
LAION asked every holder of LAION-5B to do against Re-LAION-5B), a holder's img2dataset copy is
pruned to the rows the new release still has, matched by URL and caption (by URL alone when either
side has no caption), without decoding an image: kept tar members are copied byte for byte.

The copy is img2dataset's webdataset output (`NNNNN.tar` beside `NNNNN.parquet`, the parquet
holding every row, downloaded or not). The identities are compared as `safeset diff` compares them
(256 bucket files on disk, one bucket at a time); then the kept rows' numbers are held, 8 bytes
each (16 GB for 2B kept rows: split such a copy into parts), with one shard's keys; temporary
disk is 24 bytes per row of the copy and of the release, in a hidden folder of CLEAN.
"""

from __future__ import annotations

import json
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..atomic import write_atomic
from ..errors import BadInputError, UsageError
from ..sources.tables import find_column
from .diff import BUCKETS, identity_columns, lacking, spill

SUMMARY = "sync_stats.json"  # named as img2dataset names its own, which a scan knows is no data
_SCRATCH = ".safeset-sync-"


def _shards(copy: Path) -> list[tuple[Path, Path]]:
    tables = sorted(p for p in copy.glob("*.parquet") if not p.name.startswith("."))
    shards = [(p.with_suffix(".tar"), p) for p in tables]
    if not shards:
        raise BadInputError(copy, "holds no img2dataset shard (NNNNN.tar beside NNNNN.parquet)")
    for tar, table in shards:
        if not tar.is_file():
            raise BadInputError(table, f"has no {tar.name} beside it: sync reads img2dataset's webdataset output")
    for tar in sorted(copy.glob("*.tar")):
        if not tar.with_suffix(".parquet").is_file():
            raise BadInputError(tar, "has no parquet beside it: img2dataset writes one per shard, with every row")
    return shards


def _columns(shards: list[tuple[Path, Path]], release: Path) -> tuple[list[str], list[list[str]]]:
    """The release's identity columns and each shard's: url and caption where the release and every
    shard have a caption, else url alone on both sides."""
    wanted = identity_columns(release, None)
    per_shard = []
    for _, table in shards:
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
    both = len(wanted) == 2 and all(caption for _, caption in per_shard)
    return (wanted if both else wanted[:1]), [cols if both else cols[:1] for cols in per_shard]


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
    wanted, mine = _columns(shards, release)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=_SCRATCH, dir=out) as scratch:
        folders = {side: Path(scratch) / side for side in ("copy", "release")}
        for folder in folders.values():
            folder.mkdir()
        if not spill(release, wanted, folders["release"]):
            raise UsageError(f"the release {release} holds no row: every row of the copy would go")
        firsts, total = [], 0
        for (_, table), columns in zip(shards, mine, strict=True):
            firsts.append(total)
            total += spill(table, columns, folders["copy"], total)
        buckets = [(folders["copy"] / f"{i:03d}", folders["release"] / f"{i:03d}") for i in range(BUCKETS)]
        kept = np.sort(np.concatenate([lacking(mine, theirs, present=True) for mine, theirs in buckets]))
    summary = {"copy_rows": total, "kept": int(len(kept)), "dropped_not_in_release": total - int(len(kept))}
    summary["shards"] = []
    for (tar, table), first in zip(shards, firsts, strict=True):
        rows = pq.read_table(table)
        lo, hi = np.searchsorted(kept, [first, first + rows.num_rows])
        local = kept[lo:hi] - first
        _write_shard(tar, rows, local, out)
        summary["shards"].append({"shard": tar.name, "rows": rows.num_rows, "kept": int(len(local))})
    write_atomic(out / SUMMARY, (json.dumps(summary, indent=2) + "\n").encode())  # last: the copy is whole
    return summary


def _write_shard(tar: Path, rows: pa.Table, local: np.ndarray, out: Path) -> None:
    """A shard of the clean copy: its parquet's kept rows, and the tar members of their keys,
    each member's bytes as they were (a new header, as tarfile writes it). A kept row that
    img2dataset downloaded must find its members, or the shard fails, naming the tar."""
    kept_rows = rows.take(pa.array(local, pa.int64()))
    keys = set(kept_rows["key"].to_pylist())
    target = out / tar.name
    partial = target.with_name(target.name + ".partial")
    found: set[str] = set()
    try:
        with tarfile.open(tar, "r:") as source, tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as sink:
            for member in source:
                key = member.name.split(".", 1)[0]  # img2dataset's members: KEY.jpg, KEY.txt, KEY.json at the top
                if member.isfile() and key in keys:
                    sink.addfile(member, source.extractfile(member))
                    found.add(key)
    except (tarfile.TarError, EOFError, OSError) as exc:
        partial.unlink(missing_ok=True)
        raise BadInputError(
            tar, f"cannot be read whole ({type(exc).__name__}): is it a complete img2dataset shard?"
        ) from None
    downloaded = (
        set(kept_rows.filter(pc.equal(kept_rows["status"], "success"))["key"].to_pylist())
        if "status" in kept_rows.column_names
        else set()
    )
    if downloaded - found:
        partial.unlink(missing_ok=True)
        raise BadInputError(
            tar, f"lacks the members of {len(downloaded - found)} downloaded row(s) its parquet lists (cut short?)"
        )
    sink = pa.BufferOutputStream()
    pq.write_table(kept_rows, sink)
    write_atomic(out / tar.with_suffix(".parquet").name, sink.getvalue().to_pybytes())
    partial.replace(target)
