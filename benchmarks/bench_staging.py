"""Shards on object storage: is the download hidden behind the hashing?

A worker reads a shard's tar as it arrives (downloaded into memory by a background thread), so a
shard should cost its download or its hashing, whichever is longer, not both. Measured with one
worker on webdataset shards served by an S3 API on loopback whose downloads are slowed to a fixed
rate per stream (`slow_store.py`), against the same scan of local copies and the download alone.

Reported (medians of several runs): the local scan, the download alone (one stream, as a worker
has), their sum (what downloading each shard first, then hashing it, costs: measured so with
safeset before it read tars as they arrived), the scan from the store, the ratio of the two, and
the share of the download hidden: (local + download - from store) / download.

Run: python benchmarks/bench_staging.py
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

SHARDS = 8
RATE = float(os.environ.get("SAFESET_BENCH_RATE", 40e6))  # bytes/s per stream
HERE = Path(__file__).resolve().parent
ENV = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}

_DOWNLOAD = """
import sys
from pathlib import Path
from safeset.storage import Remote
source, target = Remote(sys.argv[1]), Path(sys.argv[2])
for rel, _ in source.files():
    source.download(rel, target / rel)
print("{}")
"""


def main() -> None:
    data, md5_list, _ = bench_scan.build(SHARDS)
    size = sum(p.stat().st_size for p in data.iterdir())
    cli = common.SAFESET
    root = bench_scan.ROOT / "staging"
    shutil.rmtree(root, ignore_errors=True)
    home, out, copy = root / "home", root / "out", root / "copy"
    env = {**ENV, "SAFESET_HOME": str(home)}
    subprocess.run([cli, "bank", "add", "md5", str(md5_list), "--type", "md5"], env={**os.environ, **env}, check=True)

    serve = [sys.executable, str(HERE / "slow_store.py"), str(RATE)]
    store = subprocess.Popen(serve, stdout=subprocess.PIPE, text=True)
    try:
        s3_port, proxy_port = store.stdout.readline().split()
        os.environ.update(ENV)
        from pyarrow import fs

        upload, _ = fs.FileSystem.from_uri(
            f"s3://bench?endpoint_override=127.0.0.1:{s3_port}&scheme=http&allow_bucket_creation=true"
        )
        upload.create_dir("bench")
        fs.copy_files(str(data), "bench/shards", destination_filesystem=upload)
        remote = f"s3://bench/shards?endpoint_override=127.0.0.1:{proxy_port}&scheme=http"

        def scan(source: str) -> float:
            shutil.rmtree(out, ignore_errors=True)
            return common.timed(cli, "scan", source, "--out", str(out), "--workers", "1", "-q", env=env)["seconds"]

        def download() -> float:
            shutil.rmtree(copy, ignore_errors=True)
            return common.timed(sys.executable, "-c", _DOWNLOAD, remote, str(copy), env=env)["seconds"]

        runs: dict[str, list[float]] = {"local": [], "download": [], "store": []}
        for _ in range(common.RUNS):  # interleaved, so that the machine's noise falls on all three alike
            runs["local"].append(scan(str(data)))
            runs["download"].append(download())
            runs["store"].append(scan(remote))
    finally:
        store.kill()
        store.wait()
    local, dl, remote_s = (statistics.median(runs[k]) for k in ("local", "download", "store"))
    hidden = (local + dl - remote_s) / dl
    print(f"{SHARDS} shards, {size / 1e6:.0f} MB, downloads slowed to {RATE / 1e6:.0f} MB/s a stream; one worker")
    common.table(
        ["scan of local copies", "download alone", "download, then scan", "scan from the store", "ratio", "hidden"],
        [
            [
                f"{local:.2f} s",
                f"{dl:.2f} s",
                f"{local + dl:.2f} s",
                f"{remote_s:.2f} s",
                f"{(local + dl) / remote_s:.2f}x",
                f"{hidden:.0%}",
            ]
        ],
    )
    result = {"shards": SHARDS, "bytes": size, "rate": RATE, "runs": runs, "hidden": hidden}
    common.save("staging", {**result, "ratio": (local + dl) / remote_s})


if __name__ == "__main__":
    main()
