"""Exact lists at Re-LAION scale: a 16.2M-line MD5 list, safeset's bank against a Python set of the
hex strings (the peer).

- load: safeset imports the text list into its bank store (`safeset bank add`), after which a
  scan maps the stored list in no time; the peer reads the file into a set;
- memory: peak resident memory of the process doing it;
- lookups: 1M lookups in one batch, half of them listed, median of several runs.
Goals (issue 3): load <= 15 s in <= 400 MB; >= 1M lookups/s.

Run: python benchmarks/bench_exact.py
"""

from __future__ import annotations

import binascii
import shutil
import sys
import tempfile

import common
import corpus
import numpy as np

LINES = 16_200_000
LOOKUPS = 1_000_000


def list_file() -> common.Path:
    path = corpus.CACHE / "md5-16.2M.txt"
    if not path.is_file():
        corpus.CACHE.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(7)
        with open(path, "wb") as fh:
            for start in range(0, LINES, 1_000_000):
                rows = rng.integers(0, 256, (min(1_000_000, LINES - start), 16), dtype=np.uint8)
                hexed = np.frombuffer(binascii.hexlify(rows.tobytes()), dtype="S32")
                fh.write(b"\n".join(hexed.tolist()) + b"\n")
    return path


def queries(path: common.Path) -> list[str]:
    rng = np.random.default_rng(8)
    listed = []
    wanted = set(rng.choice(LINES, LOOKUPS // 2, replace=False).tolist())
    with open(path) as fh:
        for i, line in enumerate(fh):
            if i in wanted:
                listed.append(line.strip())
    absent = [row.tobytes().hex() for row in rng.integers(0, 256, (LOOKUPS // 2, 16), dtype=np.uint8)]
    return listed + absent


def safeset_import(path: str) -> dict:
    import time

    from safeset.banks import BankStore

    home = tempfile.mkdtemp()
    started = time.perf_counter()
    BankStore(home).add("relaion", path, type_name="md5")
    seconds = time.perf_counter() - started
    shutil.rmtree(home)
    return {"seconds": seconds, "peak_mb": common.peak_rss_mb()}


def safeset_lookups(path: str) -> dict:
    import time

    from safeset.banks import BankStore, ExactHashIndex

    home = tempfile.mkdtemp()
    BankStore(home).add("relaion", path, type_name="md5")
    started = time.perf_counter()
    index = ExactHashIndex(BankStore(home).load("relaion", "md5"), 16)  # what a scan worker does
    load_seconds = time.perf_counter() - started
    batch = np.frombuffer(bytes.fromhex("".join(queries(common.Path(path)))), np.uint8).reshape(-1, 16)
    rate, runs = common.median_rate(lambda: (index.search(batch), len(batch))[1])
    found = len(index.search(batch)[0])
    shutil.rmtree(home)
    return {"load_seconds": load_seconds, "lookups_per_second": rate, "runs": runs, "found": found}


def peer_load(path: str) -> dict:
    import time

    started = time.perf_counter()
    with open(path) as fh:
        listed = {line.strip().lower() for line in fh}
    return {"seconds": time.perf_counter() - started, "peak_mb": common.peak_rss_mb(), "size": len(listed)}


def peer_lookups(path: str) -> dict:
    with open(path) as fh:
        listed = {line.strip().lower() for line in fh}
    batch = queries(common.Path(path))
    rate, runs = common.median_rate(lambda: (sum(q in listed for q in batch), len(batch))[1])
    return {"lookups_per_second": rate, "runs": runs, "found": sum(q in listed for q in batch)}


def _in_child(function: str, path: str) -> dict:
    here = str(common.Path(__file__).parent)
    return common.child(
        f"import sys, json; sys.path.insert(0, {here!r}); import bench_exact; "
        f"print(json.dumps(bench_exact.{function}({path!r})))"
    )


def main() -> None:
    path = str(list_file())
    print(f"{LINES:,}-line MD5 list: {path}", file=sys.stderr)
    imports = [_in_child("safeset_import", path) for _ in range(3)]
    loads = [_in_child("peer_load", path) for _ in range(3)]
    ours = _in_child("safeset_lookups", path)
    peer = _in_child("peer_lookups", path)
    import statistics

    result = {
        "safeset": {
            "import_seconds": statistics.median(r["seconds"] for r in imports),
            "import_peak_mb": max(r["peak_mb"] for r in imports),
            "scan_load_seconds": ours["load_seconds"],
            "lookups_per_second": ours["lookups_per_second"],
            "found": ours["found"],
        },
        "python_set": {
            "load_seconds": statistics.median(r["seconds"] for r in loads),
            "load_peak_mb": max(r["peak_mb"] for r in loads),
            "lookups_per_second": peer["lookups_per_second"],
            "found": peer["found"],
        },
    }
    s, p = result["safeset"], result["python_set"]
    common.table(
        ["", "load s", "peak MB", "lookups/s", "found"],
        [
            [
                "safeset (bank add; scan load)",
                f"{s['import_seconds']:.1f}; {s['scan_load_seconds']:.4f}",
                s["import_peak_mb"],
                s["lookups_per_second"],
                s["found"],
            ],
            [
                "python set of hex strings",
                f"{p['load_seconds']:.1f}",
                p["load_peak_mb"],
                p["lookups_per_second"],
                p["found"],
            ],
        ],
    )
    print(
        f"safeset imports the list once in {s['import_seconds']:.1f} s within {s['import_peak_mb']:.0f} MB, then every "
        f"scan maps it in {s['scan_load_seconds']:.3f} s; the set takes {p['load_seconds']:.1f} s and "
        f"{p['load_peak_mb']:.0f} MB on every load. Lookups: {s['lookups_per_second'] / 1e6:.1f}M/s against "
        f"{p['lookups_per_second'] / 1e6:.1f}M/s."
    )
    common.save("exact", result)


if __name__ == "__main__":
    main()
