"""Fetching URL-only datasets: `safeset scan --fetch` against img2dataset, the tool people use today,
on the same loopback URL list and the same server.

The server (image_server.py, its own process) serves the benchmark corpus's 512 px JPEGs from 200
loopback addresses, one "domain" each, with 2% dead links. Both tools get one process and write the
downloaded images as webdataset shards:
- img2dataset: 64 threads, no resizing, MD5 of every image (its `compute_hash`);
- safeset: 64 downloads in flight, at most 4 per domain and 8 requests/s per domain, SSRF guard
  (loopback allowed explicitly), byte cap, redirect checks, opt-out headers honoured, and all of
  safeset's hashing (MD5, SHA1, SHA256, PDQ and its variants) and matching, `--save-images`.
Reported: images per second (median of runs) and peak memory of each. Goal (issue 4): >= 1.5x.

Run: python benchmarks/bench_fetch.py
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import common
import corpus
from image_server import loopback

URLS = 10_000
HOSTS = 200
ROOT = corpus.ROOT / "fetch"
HERE = Path(__file__).resolve().parent

_IMG2DATASET = """
import sys
from img2dataset import download
download(url_list=sys.argv[1], input_format="csv", url_col="url", caption_col="caption",
         output_format="webdataset", output_folder=sys.argv[2], processes_count=1, thread_count=64,
         resize_mode="no", compute_hash="md5", number_sample_per_shard=100000, timeout=10, retries=0,
         distributor="multiprocessing", enable_wandb=False)
"""


def main() -> None:
    images = corpus.build() / "jpeg-512"
    server = subprocess.Popen(
        [sys.executable, str(HERE / "image_server.py"), str(images), str(HOSTS)], stdout=subprocess.PIPE, text=True
    )
    try:
        port = int(server.stdout.readline())
        ROOT.mkdir(parents=True, exist_ok=True)
        urls = ROOT / "urls.csv"
        urls.write_text(
            "url,caption\n"
            + "".join(f"http://{loopback(i % HOSTS + 1)}:{port}/img/{i}.jpg,photo {i}\n" for i in range(URLS))
        )
        env = {"NO_ALBUMENTATIONS_UPDATE": "1"}
        runs = 3
        theirs, ours = [], []
        for _ in range(runs):
            out = ROOT / "out-img2dataset"
            shutil.rmtree(out, ignore_errors=True)
            theirs.append(common.timed(sys.executable, "-c", _IMG2DATASET, str(urls), str(out), env=env))
            out = ROOT / "out-safeset"
            shutil.rmtree(out, ignore_errors=True)
            ours.append(
                common.safeset(
                    ROOT / "home",
                    "scan",
                    str(urls),
                    "--out",
                    str(out),
                    "--fetch",
                    "--save-images",
                    "--allow-network",
                    "127.0.0.0/8",
                    "--workers",
                    "1",
                    "--concurrency",
                    "64",
                    "-q",
                )
            )
        downloaded_theirs = _count_images(ROOT / "out-img2dataset")
        downloaded_ours = _count_images(ROOT / "out-safeset" / "clean")
    finally:
        server.kill()
        server.wait()
    rate_theirs = URLS / statistics.median(r["seconds"] for r in theirs)
    rate_ours = URLS / statistics.median(r["seconds"] for r in ours)
    result = {
        "urls": URLS,
        "hosts": HOSTS,
        "img2dataset": {
            "urls_per_second": rate_theirs,
            "peak_mb": max(r["peak_mb"] for r in theirs),
            "images": downloaded_theirs,
            "runs": theirs,
        },
        "safeset": {
            "urls_per_second": rate_ours,
            "peak_mb": max(r["peak_mb"] for r in ours),
            "images": downloaded_ours,
            "runs": ours,
        },
        "ratio": rate_ours / rate_theirs,
    }
    common.table(
        ["", "URLs/s", "peak MB", "images saved"],
        [
            ["img2dataset (1 process, 64 threads)", rate_theirs, result["img2dataset"]["peak_mb"], downloaded_theirs],
            ["safeset scan --fetch (1 worker)", rate_ours, result["safeset"]["peak_mb"], downloaded_ours],
        ],
    )
    print(f"safeset fetches, checks and saves {result['ratio']:.1f}x as fast as img2dataset downloads")
    common.save("fetch", result)


def _count_images(root: Path) -> int:
    import tarfile

    count = 0
    for tar in root.rglob("*.tar"):
        with tarfile.open(tar) as archive:
            count += sum(1 for m in archive.getmembers() if m.name.endswith(".jpg"))
    return count


if __name__ == "__main__":
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    main()
