"""Release diff and "clean my copy" (issue 14): two releases' metadata compared by (url, caption),
against DuckDB's anti-joins, each in a fresh process (wall time and peak memory).

- safeset: `safeset diff A B --to DIR` (256 bucket files on disk, one bucket in memory at a time,
  then each table read again to write the rows the other lacks).
- duckdb: `COPY (SELECT * FROM a ANTI JOIN b USING (url, caption)) TO ...` and the reverse, at 1
  thread (safeset's diff is one process on one core) and at its default (every core), memory
  limit left at its default (80% of RAM).

The corpus: SAFESET_BENCH_DIFF_SIZES release rows (default "1000000,4000000") as LAION's
metadata holds them (url ~ 70 characters, caption ~ 60, plus similarity, width and height), in
parquet files of 500,000 rows; B is A without 1% of its rows (as Re-LAION dropped rows) with 0.5%
new ones. Every method must find the same row counts. Then `safeset sync` of an img2dataset-like
webdataset copy of SAFESET_BENCH_SYNC_ROWS rows (default 200,000; tiny members, so the figure is
the bookkeeping, not the disk) against B: rows per second.

Run: python benchmarks/bench_diff.py         (medians of SAFESET_BENCH_RUNS runs, 3 by default)
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
from pathlib import Path

import common
import corpus
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = corpus.ROOT / "diff"
RUNS = int(os.environ.get("SAFESET_BENCH_RUNS", "3"))
PER_FILE = 500_000


def _release(rows: int, seed: int, first: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    ids = np.arange(first, first + rows)
    hosts = rng.integers(0, 50_000, rows)
    urls = [
        f"https://cdn{h}.example-images.com/photos/2019/{i:012d}/large-{i % 977}.jpg"
        for h, i in zip(hosts, ids, strict=True)
    ]
    captions = [f"a photograph of item {i} on a white background, number {i % 9973} in the set" for i in ids]
    return pa.table(
        {
            "url": urls,
            "caption": captions,
            "similarity": rng.random(rows).astype(np.float32),
            "width": rng.integers(64, 4096, rows).astype(np.int32),
            "height": rng.integers(64, 4096, rows).astype(np.int32),
        }
    )


def _write(table: pa.Table, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, start in enumerate(range(0, table.num_rows, PER_FILE)):
        pq.write_table(table.slice(start, PER_FILE), folder / f"part-{i:05d}.parquet")


def build(rows: int) -> tuple[Path, Path, dict]:
    """Releases A and B of `rows` rows as one parquet each (what `safeset diff` takes) and as
    folders (what DuckDB globs); the expected counts."""
    root = ROOT / f"release-{rows}"
    expected = {"only_in_a": rows // 100, "only_in_b": rows // 200}
    if (root / "b.parquet").is_file():
        return root / "a.parquet", root / "b.parquet", expected
    a = _release(rows, 1)
    dropped = np.random.default_rng(2).choice(rows, expected["only_in_a"], replace=False)
    keep = np.ones(rows, bool)
    keep[dropped] = False
    b = pa.concat_tables([a.filter(pa.array(keep)), _release(expected["only_in_b"], 3, first=10 * rows)])
    root.mkdir(parents=True, exist_ok=True)
    pq.write_table(a, root / "a.parquet", row_group_size=100_000)
    pq.write_table(b, root / "b.parquet", row_group_size=100_000)
    return root / "a.parquet", root / "b.parquet", expected


_DUCKDB = """
import json, resource, sys, time
import duckdb
a, b, out, threads = sys.argv[1:5]
started = time.perf_counter()
con = duckdb.connect()
if threads != "default":
    con.execute(f"SET threads = {int(threads)}")
counts = {}
for side, (mine, theirs) in {"only_in_a": (a, b), "only_in_b": (b, a)}.items():
    target = f"{out}/{side}.parquet"
    con.execute(
        f"COPY (SELECT m.* FROM read_parquet('{mine}') m ANTI JOIN read_parquet('{theirs}') t "
        f"USING (url, caption)) TO '{target}' (FORMAT parquet)"
    )
    counts[side] = con.execute(f"SELECT count(*) FROM read_parquet('{target}')").fetchone()[0]
print(json.dumps({"seconds": time.perf_counter() - started,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, **counts}))
"""


def run_safeset(a: Path, b: Path, out: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)  # diff writes into a new folder
    measured = common.safeset(ROOT / "home", "diff", str(a), str(b), "--to", str(out), "--json")
    summary = json.loads((out / "summary.json").read_text())
    return {**measured, "only_in_a": summary["only_in_a"], "only_in_b": summary["only_in_b"]}


def run_duckdb(a: Path, b: Path, out: Path, threads: str) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    return common.child(_DUCKDB, str(a), str(b), str(out), threads)


def _sync_copy(rows: int) -> tuple[Path, Path]:
    """An img2dataset-like webdataset copy of the first `rows` rows of a 1M-row release A (tiny
    members), and B's metadata."""
    from safeset.demo import Sample, write_img2dataset_shard

    a, b, _ = build(1_000_000)
    root = ROOT / f"copy-{rows}"
    if not (root / "done").is_file():
        table = pq.read_table(a, columns=["url", "caption"]).slice(0, rows).to_pylist()
        per = 10_000
        for shard, start in enumerate(range(0, rows, per)):
            samples = [Sample(r["url"], r["caption"], b"\xff\xd8tiny\xff\xd9") for r in table[start : start + per]]
            write_img2dataset_shard(root, shard, samples)
        (root / "done").touch()
    return root, b


def sync_rate(rows: int) -> dict:
    copy, release = _sync_copy(rows)
    runs = []
    for _ in range(RUNS):
        out = ROOT / "synced"
        shutil.rmtree(out, ignore_errors=True)
        runs.append(common.safeset(ROOT / "home", "sync", str(copy), "--release", str(release), "--out", str(out)))
    seconds = statistics.median(r["seconds"] for r in runs)
    kept = json.loads((ROOT / "synced" / "sync_stats.json").read_text())["kept"]
    return {"rows": rows, "kept": kept, "seconds": seconds, "rows_per_s": rows / seconds,
            "peak_mb": max(r["peak_mb"] for r in runs)}  # fmt: skip


def main() -> None:
    sizes = [int(s) for s in os.environ.get("SAFESET_BENCH_DIFF_SIZES", "1000000,4000000").split(",")]
    results = {}
    for rows in sizes:
        a, b, expected = build(rows)
        print(f"\nrelease diff: {rows:,} rows against {rows - expected['only_in_a'] + expected['only_in_b']:,}")
        methods = {
            "safeset": lambda out, a=a, b=b: run_safeset(a, b, out),
            "duckdb (1 thread)": lambda out, a=a, b=b: run_duckdb(a, b, out, "1"),
            "duckdb (all cores)": lambda out, a=a, b=b: run_duckdb(a, b, out, "default"),
        }
        measured = {}
        for name, method in methods.items():
            runs = [method(ROOT / "out" / name.replace(" ", "-") / str(run)) for run in range(RUNS)]
            for run in runs:
                got = {k: run[k] for k in expected}
                if got != expected:
                    sys.exit(f"{name} found {got}, not {expected}")
            measured[name] = {
                "seconds": statistics.median(r["seconds"] for r in runs),
                "runs": [round(r["seconds"], 2) for r in runs],
                "peak_mb": max(r["peak_mb"] for r in runs),
            }
        ours = measured["safeset"]
        common.table(
            ["method", "seconds", "rows/s", "peak MB", "safeset is x faster", "x less memory", "runs"],
            [
                [m, r["seconds"], 2 * rows / r["seconds"], r["peak_mb"], r["seconds"] / ours["seconds"],
                 r["peak_mb"] / ours["peak_mb"], " ".join(map(str, r["runs"]))]
                for m, r in measured.items()
            ],
        )  # fmt: skip
        results[rows] = measured
    synced = sync_rate(int(os.environ.get("SAFESET_BENCH_SYNC_ROWS", "200000")))
    print(
        f"\nsync: {synced['rows']:,} copy rows ({synced['kept']:,} kept) in {synced['seconds']:.2f} s, "
        f"{synced['rows_per_s']:,.0f} rows/s, peak {synced['peak_mb']:,.0f} MB"
    )
    common.save("diff", {"sizes": results, "sync": synced})


if __name__ == "__main__":
    main()
