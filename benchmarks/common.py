"""Helpers every benchmark shares: one core, medians of several runs, memory, a results file.

Import this first: it pins numeric libraries to one thread, so rates are per core.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

RESULTS = Path(__file__).resolve().parent.parent / "build" / "bench" / "results"
RUNS = int(os.environ.get("SAFESET_BENCH_RUNS", "5"))


def median_rate(work: Callable[[], int], runs: int = RUNS) -> tuple[float, list[float]]:
    """Run `work` (which returns how many things it did) `runs` times; median things per second."""
    rates = []
    for _ in range(runs):
        started = time.perf_counter()
        count = work()
        rates.append(count / (time.perf_counter() - started))
    return statistics.median(rates), rates


def median_seconds(work: Callable[[], object], runs: int = RUNS) -> tuple[float, list[float]]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times), times


def rss_mb() -> float:
    """Resident memory of this process now (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(code: str, *args: str, env: dict | None = None) -> dict:
    """Run Python `code` in a fresh process (its memory is its own); it prints one JSON line last."""
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env={**os.environ, **(env or {})}
    )
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark child failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


_TIMED = """
import json, resource, subprocess, sys, time
started = time.perf_counter()
proc = subprocess.run(sys.argv[1:], capture_output=True, text=True)
if proc.returncode:
    sys.exit(proc.stderr[-3000:])
print(json.dumps({"seconds": time.perf_counter() - started,
                  "peak_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def timed(*argv: str, env: dict | None = None) -> dict:
    """Wall time ("seconds") and the peak memory of the largest process ("peak_mb") of a command."""
    return child(_TIMED, *argv, env=env)


# The `safeset` command of the environment running the benchmark.
SAFESET = str(Path(sys.executable).with_name("safeset"))


def safeset(home: Path, *args: str, env: dict | None = None) -> dict:
    """`safeset --home HOME ARGS...`, `timed`."""
    return timed(SAFESET, "--home", str(home), *args, env=env)


def save(name: str, result: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count()}, **result}
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nresults: {RESULTS / f'{name}.json'}")


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[str(c) for c in headers]] + [[f"{c:,.1f}" if isinstance(c, float) else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for n, row in enumerate(cells):
        print("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))
        if n == 0:
            print("  ".join("-" * w for w in widths))
