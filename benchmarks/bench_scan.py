"""End to end: `safeset scan` over img2dataset shards against `reference_scan.py`, the same audit
written with the peers (Pillow full decode, pdqhash, hashlib, faiss, a Python set).

Data: webdataset shards of the benchmark photos at mixed sizes (1500x1000, 512x512 and 384x384
JPEGs, in turn), with a few exact copies of listed images; an MD5 list of 1,000 hashes and a PDQ
list of 100,000, each holding a few planted entries. Both tools remove the same planted images.

Reported (medians of several runs, 32 shards of 150 images): images/s on one core for each and
their ratio; safeset with 2 workers against 1; safeset's peak memory (the largest of its processes)
for 4 and 32 shards. Every run includes safeset's fixed start-up (imports, worker processes, bank
loading: about 0.6 s), which is also printed on its own.
Goals (issue 3): >= 5x per core; 2 workers >= 1.8x one; memory that does not grow with shards.

Run: python benchmarks/bench_scan.py
"""

from __future__ import annotations

import hashlib
import shutil
import statistics
import sys
from pathlib import Path

import common
import corpus
import numpy as np
import pyarrow.parquet as pq

from safeset.demo import Sample, write_img2dataset_shard

PER_SHARD = 150
TIMED = 32  # shards in the timed runs (the memory check reuses them)
ROOT = corpus.ROOT / "scan"
HERE = Path(__file__).resolve().parent


def build(shards: int) -> tuple[Path, Path, Path]:
    """Shards of the benchmark photos; an MD5 and a PDQ list with planted entries."""
    root = ROOT / f"data-{shards}"
    data, md5_list, pdq_list = root / "shards", root / "md5.txt", root / "pdq.txt"
    if (root / ".complete").is_file():
        return data, md5_list, pdq_list
    shutil.rmtree(root, ignore_errors=True)
    sets = [sorted((corpus.build() / name).glob("*.jpg")) for name in ("jpeg-1500", "jpeg-512", "photos-384")]
    pool = [
        p for group in zip(*(s * (len(max(sets, key=len)) // len(s) + 1) for s in sets), strict=False) for p in group
    ]
    images = [pool[i % len(pool)].read_bytes() for i in range(shards * PER_SHARD)]
    planted = images[5::PER_SHARD]  # one listed image per shard
    for i, shard in enumerate(range(shards)):
        chunk = images[shard * PER_SHARD : (shard + 1) * PER_SHARD]
        samples = [Sample(f"https://img.example.org/{i}/{k}.jpg", f"photo {k}", d) for k, d in enumerate(chunk)]
        write_img2dataset_shard(data, shard, samples)
    rng = np.random.default_rng(11)
    md5s = [row.tobytes().hex() for row in rng.integers(0, 256, (1000, 16), dtype=np.uint8)]
    md5_list.write_text("".join(f"{h}\n" for h in md5s + [hashlib.md5(d).hexdigest() for d in planted]))
    import safeset

    pdqs = [row.tobytes().hex() for row in rng.integers(0, 256, (100_000, 32), dtype=np.uint8)]
    pdq_list.write_text("".join(f"pdq {h}\n" for h in pdqs + [str(safeset.pdq(d)) for d in planted]))
    (root / ".complete").touch()
    return data, md5_list, pdq_list


def tiny() -> Path:
    """One shard of one image: its scan time is safeset's fixed start-up cost."""
    data = ROOT / "data-tiny"
    if not data.is_dir():
        photo = sorted((corpus.build() / "jpeg-512").glob("*.jpg"))[0].read_bytes()
        write_img2dataset_shard(data, 0, [Sample("https://img.example.org/one.jpg", "one", photo)])
    return data


def safeset_scan(data: Path, home: Path, workers: int) -> dict:
    out = ROOT / "out-safeset"
    shutil.rmtree(out, ignore_errors=True)
    cli = Path(sys.executable).with_name("safeset")
    return common.timed(
        str(cli), "--home", str(home), "scan", str(data), "--out", str(out), "--workers", str(workers), "-q"
    )


def reference_scan(data: Path, md5_list: Path, pdq_list: Path) -> dict:
    out = ROOT / "out-reference"
    shutil.rmtree(out, ignore_errors=True)
    return common.timed(
        sys.executable, str(HERE / "reference_scan.py"), str(data), str(out), str(md5_list), str(pdq_list)
    )


def median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def main() -> None:
    from safeset.banks import BankStore

    homes = {}
    for shards in sorted({4, TIMED, 32}):
        data, md5_list, pdq_list = build(shards)
        home = ROOT / f"home-{shards}"
        shutil.rmtree(home, ignore_errors=True)
        BankStore(home).add("md5", md5_list, type_name="md5")
        BankStore(home).add("pdq", pdq_list)
        homes[shards] = (data, md5_list, pdq_list, home)
    data, md5_list, pdq_list, home = homes[TIMED]
    images = TIMED * PER_SHARD
    runs = common.RUNS if common.RUNS < 5 else 3
    print(f"scanning {images} images, {runs} runs each ...", file=sys.stderr)
    ref = [reference_scan(data, md5_list, pdq_list) for _ in range(runs)]
    one = [safeset_scan(data, home, 1) for _ in range(runs)]
    two = [safeset_scan(data, home, 2) for _ in range(runs)]
    removed = {
        name: pq.read_table(ROOT / f"out-{name}" / "removed.parquet").num_rows for name in ("safeset", "reference")
    }
    memory = {n: safeset_scan(homes[n][0], homes[n][3], 1)["peak_mb"] for n in (4, 32)}
    startup = safeset_scan(tiny(), homes[4][3], 1)["seconds"]
    results = {
        "images": images,
        "reference_per_s": images / median(ref, "seconds"),
        "safeset_1_worker_per_s": images / median(one, "seconds"),
        "safeset_2_workers_per_s": images / median(two, "seconds"),
        "per_core_ratio": median(ref, "seconds") / median(one, "seconds"),
        "two_workers_speedup": median(one, "seconds") / median(two, "seconds"),
        "peak_mb": {
            "reference": max(r["peak_mb"] for r in ref),
            "safeset_4_shards": memory[4],
            "safeset_32_shards": memory[32],
        },
        "startup_seconds_one_image": startup,
        "runs": {"reference": ref, "safeset_1": one, "safeset_2": two},
        "removed": removed,
    }
    common.table(
        ["", "images/s", "peak MB"],
        [
            ["reference script (1 core)", results["reference_per_s"], results["peak_mb"]["reference"]],
            ["safeset scan --workers 1", results["safeset_1_worker_per_s"], max(r["peak_mb"] for r in one)],
            ["safeset scan --workers 2", results["safeset_2_workers_per_s"], max(r["peak_mb"] for r in two)],
        ],
    )
    print(f"per core: safeset is {results['per_core_ratio']:.1f}x the reference script")
    print(f"2 workers: {results['two_workers_speedup']:.2f}x one worker")
    print(f"safeset peak memory: {memory[4]:.0f} MB with 4 shards, {memory[32]:.0f} MB with 32")
    print(f"removed: safeset {removed['safeset']}, reference {removed['reference']} (the planted images)")
    print(f"safeset fixed start-up: a scan of one image takes {startup:.2f} s")
    common.save("scan", results)


if __name__ == "__main__":
    main()
