"""`safeset sync COPY --release NEW --out CLEAN`: "clean my copy". After a dataset's clean-up (as
LAION asked every holder of LAION-5B to do against Re-LAION-5B), a holder's img2dataset copy is
pruned to the rows the new release still has, matched by URL and caption (by URL alone when either
side has no caption), without decoding an image: kept tar members are copied byte for byte.

The copy is img2dataset's webdataset output (`NNNNN.tar` beside `NNNNN.parquet`, the parquet
holding every row, downloaded or not). Memory is bounded as for `safeset diff` (identities in 256
bucket files on disk, compared one bucket at a time) plus one shard's kept keys; temporary disk is
24 bytes per row of the copy and of the release.
"""

from __future__ import annotations

import json
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..atomic import write_atomic
from ..errors import BadInputError, UsageError
from ..sources.tables import find_column
from .diff import BUCKETS, identity_columns, lacking, spill


def _shards(copy: Path) -> list[tuple[Path, Path]]:
    tables = sorted(p for p in copy.glob("*.parquet") if not p.name.startswith("."))
    shards = [(p.with_suffix(".tar"), p) for p in tables]
    if not shards:
        raise BadInputError(copy, "holds no img2dataset shard (NNNNN.tar beside NNNNN.parquet)")
    for tar, table in shards:
        if not tar.is_file():
            raise BadInputError(table, f"has no {tar.name} beside it: sync reads img2dataset's webdataset output")
    return shards


def sync(copy: str | Path, release: str | Path, out: str | Path) -> dict[str, Any]:
    copy, release, out = Path(copy), Path(release), Path(out)
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"{out} is not empty: sync writes a new copy")
    shards = _shards(copy)
    wanted = identity_columns(release, None)
    names = pq.read_schema(shards[0][1]).names
    mine = [find_column(names, None, ("url",), shards[0][1])]
    caption = find_column(names, None, ("caption", "text"), shards[0][1])
    if mine[0] is None:
        raise BadInputError(shards[0][1], "has no url column")
    if len(wanted) == 2 and caption:
        mine.append(caption)
    else:
        wanted = wanted[:1]
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="safeset-sync-", dir=out) as scratch:
        folders = {side: Path(scratch) / side for side in ("copy", "release")}
        for folder in folders.values():
            folder.mkdir()
        spill(release, wanted, folders["release"])
        firsts, total = [], 0
        for _, table in shards:
            firsts.append(total)
            total += spill(table, mine, folders["copy"], total)
        kept = np.sort(
            np.concatenate(
                [
                    lacking(folders["copy"] / f"{i:03d}", folders["release"] / f"{i:03d}", present=True)
                    for i in range(BUCKETS)
                ]
            )
        )
    summary = {
        "copy_rows": total,
        "kept": int(len(kept)),
        "dropped_not_in_release": total - int(len(kept)),
        "shards": [],
    }
    for (tar, table), first in zip(shards, firsts, strict=True):
        rows = pq.read_table(table)
        lo, hi = np.searchsorted(kept, [first, first + rows.num_rows])
        local = kept[lo:hi] - first
        _write_shard(tar, rows, local, out)
        summary["shards"].append({"shard": tar.name, "rows": rows.num_rows, "kept": int(len(local))})
    write_atomic(out / "sync.json", (json.dumps(summary, indent=2) + "\n").encode())
    return summary


def _write_shard(tar: Path, rows: pa.Table, local: np.ndarray, out: Path) -> None:
    """A shard of the clean copy: its parquet's kept rows, and the tar members of their keys,
    each member's bytes as they were (a new header, as tarfile writes it)."""
    kept_rows = rows.take(pa.array(local, pa.int64()))
    pq.write_table(kept_rows, out / tar.with_suffix(".parquet").name)
    keys = set(kept_rows["key"].to_pylist()) if "key" in kept_rows.column_names else set()
    target = out / tar.name
    partial = target.with_name(target.name + ".partial")
    with tarfile.open(tar, "r:") as source, tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as sink:
        for member in source:
            key = member.name.rsplit("/", 1)[-1].split(".", 1)[0]
            if member.isfile() and key in keys:
                sink.addfile(member, source.extractfile(member))
    partial.replace(target)
