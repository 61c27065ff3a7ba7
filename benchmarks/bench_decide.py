"""Decide rounds against the scans that made their OUTs: what re-matching and re-deciding an audit
costs when no image is read again (issue 11).

Two OUTs, each scanned once with one worker, then decided again several times with one worker:
- "images": img2dataset shards of small LAION-like JPEGs (bench_scan's "small" set, 16 shards of
  150), scanned against an MD5 list, decided against the MD5 list and a PDQ list of 100,000.
  The ratio scan time / decide time is the goal (>= 20x).
- "metadata": a LAION-like metadata parquet (URL, TEXT, punsafe, WIDTH, HEIGHT; SAFESET_BENCH_ROWS
  rows, default 300,000), scanned without fetching against a url_md5 bank (SAFESET_BENCH_BANK
  random entries, default a million; Re-LAION's lists held 16.2M), decided against it and a
  domain bank. Rows per second of the decide is the goal (>= 1M/s/core).
Then the metadata-only audit itself (url_md5 and domain banks, results and clean table) against
DuckDB doing the same join and writes (`reference_metadata.py`), at 1 and 2 workers / threads:
goal >= 2x DuckDB.

Each timed round changes decisions in every shard; a round run again with the same banks changes
none, and is timed apart ("unchanged": its shards' files are linked, nothing is written again).
Both times include safeset's start-up (1.6-2.0 s on the CI machine), which is printed on its own. Medians of
SAFESET_BENCH_RUNS runs (3 unless fewer are asked for).

Run: python benchmarks/bench_decide.py
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import bench_scan
import common
import corpus
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = corpus.ROOT / "decide"
HERE = Path(__file__).resolve().parent
ROWS = int(os.environ.get("SAFESET_BENCH_ROWS", "300000"))
BANK_ENTRIES = int(os.environ.get("SAFESET_BENCH_BANK", "1000000"))


def _cli(home: Path, *args: str, workers: int = 1) -> dict:
    return common.safeset(home, *args, "--workers", str(workers), "-q")


def _metadata() -> tuple[Path, Path, Path]:
    """A LAION-like metadata parquet, a url_md5 list (a million random entries and every 10,000th
    row's URL) and a domain list (sites of the long tail: their subdomains are what matches)."""
    root = ROOT / f"metadata-zipf-{ROWS}-{BANK_ENTRIES}"
    table, urls, domains = root / "laion.parquet", root / "url_md5.txt", root / "domains.txt"
    if (root / ".complete").is_file():
        return table, urls, domains
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    rng = np.random.default_rng(3)
    # hosts as a crawl holds them: a long tail (Zipf over 200,000 sites, so a batch holds tens of
    # thousands of distinct hosts), subdomains and several TLDs
    tlds = ["com", "org", "net", "co.uk", "de", "fr", "com.br", "ru", "jp", "it"]
    sites = [f"site{k}.{tlds[k % len(tlds)]}" for k in range(200_000)]
    pick = (rng.zipf(1.2, ROWS) - 1) % len(sites)
    url = [
        f"https://{'www' if i % 3 else 'img'}.{sites[k]}/images/{i:09d}/{rng.integers(1 << 40):x}.jpg"
        for i, k in enumerate(pick.tolist())
    ]
    pq.write_table(
        pa.table(
            {
                "URL": url,
                "TEXT": [f"a photo of thing {i} on a table" for i in range(ROWS)],
                "WIDTH": rng.integers(200, 1500, ROWS),
                "HEIGHT": rng.integers(200, 1500, ROWS),
                "punsafe": rng.random(ROWS).astype(np.float32),
            }
        ),
        table,
        row_group_size=100_000,
    )
    import hashlib

    random_md5 = (row.tobytes().hex() for row in rng.integers(0, 256, (BANK_ENTRIES, 16), dtype=np.uint8))
    planted = (hashlib.md5(u.encode()).hexdigest() for u in url[::10_000])
    urls.write_text("".join(f"{h}\n" for h in random_md5) + "".join(f"{h}\n" for h in planted))
    domains.write_text("".join(f"{h}\n" for h in sites[250::500]))  # the tail's, not the head's
    (root / ".complete").touch()
    return table, urls, domains


def against_duckdb(
    home: Path, table: Path, lists: list[Path], scan: list[str], work: Path, rows: int, runs: int, what: str, goal: str
) -> dict:
    """A metadata-only audit (results, clean table and report written) by `safeset scan TABLE
    *scan` and by DuckDB (`reference_metadata.py`, its lists `prepare`d first, untimed), at 1 and 2
    workers / threads; printed with `what` and `goal`. `work`: where both write."""
    database = work / "reference.duckdb"
    peer = [sys.executable, str(HERE / "reference_metadata.py")]
    subprocess.run([*peer, "prepare", str(database), *map(str, lists)], check=True)
    out, peer_out = work / "out-audit", work / "out-duckdb"
    found: dict = {}
    printed = []
    for workers in (1, 2):
        ours, theirs = [], []
        for _ in range(runs):
            shutil.rmtree(out, ignore_errors=True)
            ours.append(_cli(home, "scan", str(table), "--out", str(out), *scan, workers=workers))
            theirs.append(common.timed(*peer, "run", str(database), str(table), str(peer_out), str(workers)))
        removed = pq.read_table(out / "removed.parquet").num_rows
        peer_removed = pq.read_table(peer_out / "results.parquet", filters=[("removed", "=", True)]).num_rows
        ours_s = statistics.median(r["seconds"] for r in ours)
        theirs_s = statistics.median(r["seconds"] for r in theirs)
        found[f"{workers}_workers"] = {
            "safeset_rows_per_s": rows / ours_s,
            "duckdb_rows_per_s": rows / theirs_s,
            "ratio": theirs_s / ours_s,
            "removed": {"safeset": removed, "duckdb": peer_removed},
        }
        printed.append(
            [
                workers,
                f"{rows / ours_s:,.0f}",
                f"{rows / theirs_s:,.0f}",
                f"{theirs_s / ours_s:.2f}x",
                f"{removed} / {peer_removed}",
            ]
        )
    print(f"\nmetadata-only audit of {rows:,} rows {what}")
    common.table(
        ["workers", "safeset rows/s", "DuckDB rows/s", "safeset vs DuckDB", "removed (ours / DuckDB)"], printed
    )
    print(f"goal: {goal}")
    return found


def main() -> None:
    from safeset.banks import BankStore

    runs = min(common.RUNS, 3)
    results: dict = {}
    rows = []

    data, md5_list, pdq_list = bench_scan.build(16, "small")
    home = ROOT / "home-images"
    shutil.rmtree(home, ignore_errors=True)
    BankStore(home).add("md5", md5_list, type_name="md5")
    BankStore(home).add("pdq", pdq_list)
    table, url_list, domain_list = _metadata()
    meta_home = ROOT / "home-metadata"
    shutil.rmtree(meta_home, ignore_errors=True)
    BankStore(meta_home).add("urls", url_list, type_name="url_md5")
    BankStore(meta_home).add("domains", domain_list, type_name="domain")
    startup = _cli(home, "scan", str(bench_scan.tiny()), "--out", str(ROOT / "out-tiny"))["seconds"]
    shutil.rmtree(ROOT / "out-tiny")

    for name, source, scan_bank, decide_banks, work_home, count in (
        ("images", data, "md5", ("md5", "pdq"), home, 16 * bench_scan.PER_SHARD),
        ("metadata", table, "urls", ("urls", "domains"), meta_home, ROWS),
    ):
        out = ROOT / f"out-{name}"
        print(f"{name}: scanning {count:,} rows, then deciding {runs} times ...", file=sys.stderr)
        scans = []
        for _ in range(runs):
            shutil.rmtree(out, ignore_errors=True)
            scans.append(_cli(work_home, "scan", str(source), "--out", str(out), "--bank", scan_bank))
        bank_args = [arg for bank in decide_banks for arg in ("--bank", bank)]
        decides, unchanged = [], []
        for _ in range(runs):
            # each timed round changes decisions in every shard (a shard decided as before is
            # linked, not rewritten: timed apart, as "unchanged")
            decides.append(_cli(work_home, "decide", str(out), *bank_args))
            unchanged.append(_cli(work_home, "decide", str(out), *bank_args))
            _cli(work_home, "decide", str(out), "--bank", scan_bank)
        scan_s = statistics.median(r["seconds"] for r in scans)
        decide_s = statistics.median(r["seconds"] for r in decides)
        unchanged_s = statistics.median(r["seconds"] for r in unchanged)
        results[name] = {
            "rows": count,
            "scan_seconds": scan_s,
            "decide_seconds": decide_s,
            "decide_faster_than_scan": scan_s / decide_s,
            "scan_rows_per_s": count / scan_s,
            "decide_rows_per_s": count / decide_s,
            "decide_rows_per_s_without_startup": count / max(decide_s - startup, 1e-9),
            "decide_peak_mb": max(r["peak_mb"] for r in decides),
            "unchanged_decide_seconds": unchanged_s,
            "runs": {"scan": scans, "decide": decides, "unchanged": unchanged},
        }
        r = results[name]
        rows.append(
            [
                name,
                f"{count:,}",
                f"{scan_s:.2f}",
                f"{decide_s:.2f}",
                f"{r['decide_faster_than_scan']:.1f}x",
                f"{r['decide_rows_per_s']:,.0f}",
                f"{r['decide_rows_per_s_without_startup']:,.0f}",
                f"{r['decide_peak_mb']:.0f}",
                f"{unchanged_s:.2f}",
            ]
        )
    results["metadata_audit"] = against_duckdb(
        meta_home,
        table,
        [url_list, domain_list],
        ["--bank", "urls", "--bank", "domains"],
        ROOT,
        ROWS,
        runs,
        f"against {BANK_ENTRIES:,} url_md5s and a domain list",
        ">= 2x DuckDB at equal threads",
    )
    results["startup_seconds"] = startup
    print(f"\nsafeset start-up (a one-image scan): {startup:.2f} s; 1 worker each, medians of {runs} runs")
    common.table(
        [
            "OUT",
            "rows",
            "scan s",
            "decide s",
            "decide vs scan",
            "decide rows/s",
            "(no start-up)",
            "decide MB",
            "unchanged s",
        ],
        rows,
    )
    print("goals: decide >= 20x faster than the scan; >= 1,000,000 rows/s per core")
    common.save("decide", results)


if __name__ == "__main__":
    main()
