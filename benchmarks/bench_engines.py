"""The figures docs/scale.md is built on: end-to-end throughput per core with both engines, and the
memory a worker needs for LAION-sized hash lists.

1. Throughput: `safeset scan` over the 4,800 images of bench_scan.py (32 img2dataset shards of
   1500, 512 and 384 px JPEGs, a 1,000-entry MD5 list and a 100,000-entry PDQ list), with the local
   engine and with the Ray engine on a 2-CPU local cluster started once (`ray start`, as a cluster
   would be), at 1 and 2 workers. Medians of 3 runs; each run includes the scan's fixed costs
   (start-up, planning, merging and the report), which are measured on their own with a
   one-image scan. Also the merge (manifests and report) per shard: a rerun of a finished scan.
2. Memory: one worker process loads a 10M-hash PDQ bank and a 16.2M-hash MD5 bank (random
   entries, LAION-clean-up sized), checks 600 images against them, and reports what it holds:
   private memory (its own, per worker) and shared file pages (the memory-mapped bank store:
   hashes and PDQ search tables, one copy per machine in the page cache however many workers read
   it).

Run: python benchmarks/bench_engines.py
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
from pathlib import Path

import bench_scan
import common
import corpus
import numpy as np

ROOT = corpus.ROOT / "engines"
RUNS = 3
PDQ_HASHES = 10_000_000


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RayCluster:
    """`ray start --head --num-cpus 2` with token authentication, stopped on exit."""

    def __init__(self):
        token = ROOT / "ray-token"
        token.write_text(secrets.token_hex(32))
        token.chmod(0o600)
        self.env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token), "RAY_USAGE_STATS_ENABLED": "0"}
        self.ray = Path(sys.executable).with_name("ray")
        self.address = f"127.0.0.1:{_free_port()}"

    def __enter__(self) -> RayCluster:
        port = self.address.rsplit(":", 1)[1]
        command = [self.ray, "start", "--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false"]
        subprocess.run(command, check=True, capture_output=True, env={**os.environ, **self.env})
        return self

    def __exit__(self, *exc) -> None:
        subprocess.run([self.ray, "stop", "--force"], capture_output=True, env={**os.environ, **self.env})


def scan(data: Path, home: Path, workers: int, engine: list[str], env: dict, fresh: bool = True) -> float:
    out = ROOT / "out"
    if fresh:
        shutil.rmtree(out, ignore_errors=True)
    argv = ["scan", str(data), "--out", str(out), "--workers", str(workers), "-q", *engine]
    return common.safeset(home, *argv, env=env)["seconds"]


def throughput() -> dict:
    from safeset.banks import BankStore

    data, md5_list, pdq_list = bench_scan.build(bench_scan.TIMED)
    home = ROOT / "home-scan"
    shutil.rmtree(home, ignore_errors=True)
    BankStore(home).add("md5", md5_list, type_name="md5")
    BankStore(home).add("pdq", pdq_list)
    images = bench_scan.TIMED * bench_scan.PER_SHARD
    tiny = bench_scan.tiny()
    results: dict = {"images": images}
    with RayCluster() as cluster:
        engines = {"local": ([], {}), "ray": (["--engine", "ray", "--ray-address", cluster.address], cluster.env)}
        for name, (flags, env) in engines.items():
            for workers in (1, 2):
                seconds = [scan(data, home, workers, flags, env) for _ in range(RUNS)]
                results[f"{name}_{workers}"] = {"seconds": seconds, "images_per_s": images / statistics.median(seconds)}
            fixed = [scan(tiny, home, 1, flags, env) for _ in range(RUNS)]
            results[f"{name}_fixed_seconds"] = statistics.median(fixed)
    rows = []
    for name in ("local", "ray"):
        fixed = results[f"{name}_fixed_seconds"]
        for workers in (1, 2):
            run = results[f"{name}_{workers}"]
            steady = images / (statistics.median(run["seconds"]) - fixed) / workers
            run["steady_per_core"] = steady
            rows.append([f"{name}, {workers} worker(s)", run["images_per_s"], steady, fixed])
    print(f"end to end, {images} images in {bench_scan.TIMED} shards, median of {RUNS} runs")
    common.table(["engine", "images/s", "per core, fixed costs left out", "fixed s"], rows)
    return results


def merge() -> dict:
    """A rerun of a finished scan runs no shard and only merges: its time for 32 shards less its
    time for one is what 31 more shards cost the merge."""
    data, _, _ = bench_scan.build(bench_scan.TIMED)
    home = ROOT / "home-scan"
    seconds = {}
    for name, source in (("one", bench_scan.tiny()), ("all", data)):
        scan(source, home, 2, [], {})
        seconds[name] = statistics.median(scan(source, home, 2, [], {}, fresh=False) for _ in range(5))
    per_shard = (seconds["all"] - seconds["one"]) / (bench_scan.TIMED - 1) * 1000
    print(f"merging a finished scan: {per_shard:.1f} ms per shard (every shard here has a removal)")
    return {"rerun_seconds": seconds, "ms_per_shard": per_shard}


_MEMORY = """
import json, sys
from pathlib import Path
from safeset import Auditor
from safeset.model import Item

def rollup():
    fields = {}
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:]:
        key, value = line.split(":", 1)
        fields[key] = int(value.split()[0]) / 1024
    return fields

home, images = sys.argv[1], sorted(Path(sys.argv[2]).glob("*.jpg"))
before = rollup()
checker = Auditor(home)
loaded = rollup()
photos = [p.read_bytes() for p in images]
items = [Item(row_id=str(i), shard="s", index=i, key=str(i), url=f"https://x/{i}", data=photos[i % len(photos)])
         for i in range(600)]
results = list(checker.check(items))
after = rollup()
print(json.dumps({"before": before, "loaded": loaded, "after": after, "checked": len(results)}))
"""


def memory() -> dict:
    from safeset.banks import BankStore

    home = ROOT / "home-large"
    if not (home / ".complete").is_file():
        shutil.rmtree(home, ignore_errors=True)
        md5s = corpus.ROOT / "cache" / "md5-16.2M.txt"
        if not md5s.is_file():
            raise SystemExit("run bench_exact.py first: it builds the 16.2M-line MD5 list")
        pdqs = ROOT / "pdq-10M.txt"
        rng = np.random.default_rng(5)
        with open(pdqs, "w") as fh:
            for _ in range(PDQ_HASHES // 1_000_000):
                block = rng.integers(0, 256, (1_000_000, 32), dtype=np.uint8)
                fh.write("".join(f"pdq {row.tobytes().hex()}\n" for row in block))
        BankStore(home).add("md5", md5s, type_name="md5")
        BankStore(home).add("pdq", pdqs)
        pdqs.unlink()
        (home / ".complete").touch()
    figures = common.child(_MEMORY, str(home), str(corpus.build() / "jpeg-512"))
    loaded, after = figures["loaded"], figures["after"]
    shared_files = after["Rss"] - after["Anonymous"]
    result = {
        "pdq_hashes": PDQ_HASHES,
        "md5_hashes": 16_200_000,
        "rss_mb": after["Rss"],
        "private_anonymous_mb": after["Anonymous"],
        "file_backed_mb": shared_files,
        "banks_anonymous_mb": loaded["Anonymous"] - figures["before"]["Anonymous"],
        "rollups": figures,
    }
    common.table(
        ["one worker, 10M PDQ + 16.2M MD5 listed", "MB"],
        [
            ["resident in all", after["Rss"]],
            ["its own (anonymous: interpreter, libraries, buffers)", after["Anonymous"]],
            ["  of which loading the banks added", result["banks_anonymous_mb"]],
            ["file pages (bank store: hashes and PDQ tables, mapped; shared)", shared_files],
        ],
    )
    return result


def main() -> None:
    ROOT.mkdir(parents=True, exist_ok=True)
    common.save("engines", {"throughput": throughput(), "merge": merge(), "memory": memory()})


if __name__ == "__main__":
    main()
