"""Service mode (issue 15): `safeset serve` under load, against the same checks done in-process.

- in-process (the peer): `safeset.Auditor.check_bytes` on the corpus's 512 px JPEGs in as many
  processes as the server has workers: the rate the machine can hash, match and decide.
- /v1/check: a load generator in its own process (raw HTTP/1.1 on asyncio streams, every request
  built before the clock starts, so that it takes little of the 2 cores) against `safeset serve
  --workers 2` on loopback; first closed loop (16 requests in flight) for the highest rate, then
  open loop at 50% and 90% of the in-process rate for the latency (p50, p99), and at 90% of the
  server's own closed-loop rate (90% of the in-process rate may be past it).
- /v1/lookup: PDQ hashes in requests of 100 (a tenth of them listed) against a bank of
  SAFESET_BENCH_SERVE_BANK random PDQs (default 1,000,000; the issue's figure is at 10,000,000):
  hashes a second in a closed loop, and the latency of a request (p50, p99) at 5,000 hashes a
  second (50 requests a second, open loop).

- GET /m/lookup, HMA's route, one PDQ a request (HMA has no batch lookup), closed loop: safeset
  serve, and with SAFESET_BENCH_HMA_SRC set, Meta's Hasher-Matcher-Actioner itself on the same
  bank and queries (`hma.sh`: its source from a ThreatExchange clone, Postgres from Debian, its
  dependencies from PyPI; gunicorn with as many workers, matcher role only, faiss on one thread
  each). Both are exact within distance 31, so they must match the same queries. Memory: the PSS
  of the server's processes (a page shared between workers counted once).

The load generator shares the machine's 2 cores with the server, as a client on the same host
would. HMA's published goals: 1,000 lookups/s scaled out, 10M PDQ hashes on one box.

Run: python benchmarks/bench_serve.py        (SAFESET_BENCH_SERVE_SECONDS per phase, default 10)
     SAFESET_BENCH_HMA_SRC=~/ThreatExchange/hasher-matcher-actioner python benchmarks/bench_serve.py
"""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import common
import corpus
import numpy as np

ROOT = corpus.ROOT / "serve"
WORKERS = 2
SECONDS = float(os.environ.get("SAFESET_BENCH_SERVE_SECONDS", "10"))
BANK = int(os.environ.get("SAFESET_BENCH_SERVE_BANK", "1000000"))
HMA_SRC = os.environ.get("SAFESET_BENCH_HMA_SRC")


def paths() -> list[Path]:
    return sorted((corpus.build() / "jpeg-512").glob("*.jpg"))


def images() -> list[bytes]:
    return [p.read_bytes() for p in paths()]


def listed_pdqs() -> list[str]:
    """The PDQs of every eighth corpus image, as the server's hashing takes them."""
    import safeset

    return [safeset.hash_file(p)["pdq"] for p in paths()[::8]]


def home() -> Path:
    """A bank home with BANK random PDQs plus those of every eighth corpus image."""
    where = ROOT / f"home-{BANK}"
    if (where / ".complete").is_file():
        return where
    import safeset

    rng = np.random.default_rng(5)
    listed = ROOT / f"pdq-{BANK}.txt"
    ROOT.mkdir(parents=True, exist_ok=True)
    with open(listed, "w") as fh:
        for start in range(0, BANK, 1_000_000):
            rows = rng.integers(0, 256, (min(1_000_000, BANK - start), 32), np.uint8)
            fh.write("".join(f"pdq {row.tobytes().hex()}\n" for row in rows))
        fh.write("".join(f"pdq {pdq}\n" for pdq in listed_pdqs()))
    safeset.BankStore(where).add("bench", listed)
    listed.unlink()
    (where / ".complete").touch()
    return where


def _in_process(args) -> int:
    bank_home, deadline = args
    import safeset

    auditor = safeset.Auditor(bank_home)
    corpus_images, done = images(), 0
    while time.time() < deadline:
        auditor.check_bytes(corpus_images[done % len(corpus_images)])
        done += 1
    return done


def in_process_rate(bank_home: Path) -> float:
    with multiprocessing.get_context("spawn").Pool(WORKERS) as pool:
        pool.map(_in_process, [(bank_home, time.time() + 2)] * WORKERS)  # warm: banks mapped, code paged in
        started = time.time()
        done = sum(pool.map(_in_process, [(bank_home, started + SECONDS)] * WORKERS))
    return done / (time.time() - started)


_LOAD = r"""
import asyncio, json, sys, time
from pathlib import Path
from urllib.parse import urlsplit

url, mode, rate, seconds, corpus_dir, hashes_file = sys.argv[1:7]
rate, seconds = float(rate), float(seconds)
where = urlsplit(url)


def request(path, content_type, body):
    head = f"POST {path} HTTP/1.1\r\nHost: {where.netloc}\r\nContent-Type: {content_type}\r\n"
    return head.encode() + f"Content-Length: {len(body)}\r\n\r\n".encode() + body


# Every request is built before the clock starts, and sent and read as raw HTTP/1.1 on kept-alive
# connections: the load generator shares the server's 2 cores, so it must cost little of them.
if mode == "lookup":
    hashes = json.loads(Path(hashes_file).read_text())
    batches = [hashes[i:][:100] or hashes[:100] for i in range(0, len(hashes), 100)]
    requests = [(request("/v1/lookup", "application/json", json.dumps({"pdq": b}).encode()), len(b)) for b in batches]
elif mode == "hma":  # HMA's route, one hash a request: HMA has no batch lookup
    hashes = json.loads(Path(hashes_file).read_text())
    get = "GET /m/lookup?signal_type=pdq&signal={} HTTP/1.1\r\nHost: " + where.netloc + "\r\n\r\n"
    requests = [(get.format(h).encode(), 1) for h in hashes]
else:
    requests = [(request("/v1/check", "image/jpeg", p.read_bytes()), 1) for p in sorted(Path(corpus_dir).glob("*.jpg"))]
idle = []


async def one(i, latencies, counted):
    raw, items = requests[i % len(requests)]
    started = time.perf_counter()
    reader, writer = idle.pop() if idle else await asyncio.open_connection(where.hostname, where.port)
    writer.write(raw)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lines = head.lower().split(b"\r\n")
    length = next(int(line.split(b":")[1]) for line in lines if line.startswith(b"content-length:"))
    body = await reader.readexactly(length)
    if b"connection: close" in head.lower():  # gunicorn's sync workers answer one request a connection
        writer.close()
    else:
        idle.append((reader, writer))
    ok = status == 200 or (mode == "check" and status == 422)
    counted[0] += items if ok else 0
    counted[1] += 0 if ok else 1
    counted[2] += mode == "hma" and ok and body.strip() != b"{}"  # a hash that matched
    latencies.append(time.perf_counter() - started)


async def main():
    latencies, counted = [], [0, 0, 0]
    started = time.perf_counter()
    if rate <= 0:  # closed loop: 16 in flight
        i = 0

        async def worker():
            nonlocal i
            while time.perf_counter() - started < seconds:
                i += 1
                await one(i, latencies, counted)

        await asyncio.gather(*(worker() for _ in range(16)))
    else:  # open loop: requests sent at `rate` a second, whatever the answers' pace
        tasks, n = [], 0
        while (now := time.perf_counter() - started) < seconds:
            due = n / rate
            if due > now:
                await asyncio.sleep(due - now)
            tasks.append(asyncio.create_task(one(n, latencies, counted)))
            n += 1
        await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - started
    latencies.sort()
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else float("nan")
    print(json.dumps({"rate": counted[0] / elapsed, "failed": counted[1], "matched": counted[2],
                      "requests": len(latencies), "p50_ms": pick(0.5) * 1000, "p99_ms": pick(0.99) * 1000}))

asyncio.run(main())
"""


def load(url: str, mode: str, rate: float, hashes_file: str = "-") -> dict:
    return common.child(_LOAD, url, mode, str(rate), str(SECONDS), str(corpus.build() / "jpeg-512"), hashes_file)


def main() -> None:
    bank_home = home()
    reference = in_process_rate(bank_home)
    print(f"\nin-process check_bytes, {WORKERS} processes: {reference:,.0f} images/s (512 px JPEGs)")
    proc = subprocess.Popen(
        [common.SAFESET, "--home", str(bank_home), "serve", "--port", "0", "--workers", str(WORKERS)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        url = json.loads(proc.stdout.readline())["serving"]["url"]
        load(url, "check", 0)  # warm
        results = {"in_process_images_per_s": reference}
        closed = load(url, "check", 0)
        results["check_closed_loop"] = closed
        rows = [["closed loop (16 in flight)", closed["rate"], f"{closed['rate'] / reference:.2f}x", closed["p50_ms"],
                 closed["p99_ms"], closed["failed"]]]  # fmt: skip
        loads = [
            ("50% of in-process", "check_at_50pct", reference * 0.5),
            ("90% of in-process", "check_at_90pct", reference * 0.9),
            ("90% of the closed loop", "check_at_90pct_of_closed", closed["rate"] * 0.9),  # the server's own
        ]
        for name, key, rate in loads:
            opened = load(url, "check", rate)
            results[key] = opened
            rows.append([f"open loop at {name}", opened["rate"], f"{opened['rate'] / reference:.2f}x",
                         opened["p50_ms"], opened["p99_ms"], opened["failed"]])  # fmt: skip
        print(f"\n/v1/check, {WORKERS} workers")
        common.table(["load", "images/s", "of in-process", "p50 ms", "p99 ms", "failed"], rows)

        rng = np.random.default_rng(9)
        listed = listed_pdqs()
        queries = [rng.integers(0, 256, 32, np.uint8).tobytes().hex() for _ in range(9000)] + listed * 10
        rng.shuffle(queries)
        hashes_file = ROOT / "queries.json"
        hashes_file.write_text(json.dumps(queries))
        looked = load(url, "lookup", 0, str(hashes_file))
        steady = load(url, "lookup", 50, str(hashes_file))  # 5,000 hashes a second, the goal
        results["lookup"] = {**looked, "bank": BANK}
        results["lookup_at_5000_per_s"] = steady
        print(f"\n/v1/lookup against {BANK:,} PDQs, 100 hashes a request")
        common.table(
            ["load", "hashes/s", "p50 ms", "p99 ms", "failed"],
            [
                ["closed loop (16 in flight)", looked["rate"], looked["p50_ms"], looked["p99_ms"], looked["failed"]],
                ["open loop, 50 requests/s", steady["rate"], steady["p50_ms"], steady["p99_ms"], steady["failed"]],
            ],
        )
        results["m_lookup"] = {**load(url, "hma", 0, str(hashes_file)), "memory_mb": pss_mb(proc.pid)}
        results["m_lookup"]["matched_first"] = matched(url, queries[:AGREE])
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    peers = [("safeset serve", results["m_lookup"])]
    if HMA_SRC:
        results["hma_m_lookup"] = hma_lookup(bank_home, hashes_file)
        peers.append(("HMA (gunicorn, matcher only)", results["hma_m_lookup"]))
    print(f"\nGET /m/lookup (HMA's route), one PDQ a request, 16 in flight, {BANK:,} listed, {WORKERS} workers")
    common.table(
        ["server", "hashes/s", "p50 ms", "p99 ms", "matched", "failed", "memory MB (PSS)"],
        [[name, r["rate"], r["p50_ms"], r["p99_ms"], r["matched"], r["failed"], r["memory_mb"]] for name, r in peers],
    )
    if not HMA_SRC:
        print("(HMA not run: set SAFESET_BENCH_HMA_SRC to a ThreatExchange clone's hasher-matcher-actioner folder)")
    else:
        ratio = results["m_lookup"]["rate"] / results["hma_m_lookup"]["rate"]
        print(f"safeset is {ratio:.1f}x HMA; HMA's index built in {results['hma_m_lookup']['index_s']:.1f} s")
        mine, theirs = results["m_lookup"]["matched_first"], results["hma_m_lookup"]["matched_first"]
        same = "the same" if mine == theirs else f"DIFFERENT ones ({len(set(mine) ^ set(theirs))} differ)"
        print(f"of the first {AGREE:,} queries, both matched {same}: {len(mine)} for safeset, {len(theirs)} for HMA")
    common.save("serve", results)


AGREE = 2000  # queries asked of both servers one by one, their matches compared


def matched(url: str, hashes: list[str]) -> list[int]:
    """Which of `hashes` a server's GET /m/lookup matches, asked one at a time."""
    import urllib.request

    found = []
    for i, pdq in enumerate(hashes):
        with urllib.request.urlopen(f"{url}/m/lookup?signal_type=pdq&signal={pdq}", timeout=30) as answer:
            found += [i] if json.loads(answer.read()) else []
    return found


def pss_mb(pid: int) -> float:
    """The memory of a server's processes, each shared page counted once (the sum of their PSS)."""
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    total_kb = 0
    for each in [str(pid), *children]:
        with open(f"/proc/{each}/smaps_rollup") as fh:
            total_kb += next(int(line.split()[1]) for line in fh if line.startswith("Pss:"))
    return total_kb / 1024


def hma_lookup(bank_home: Path, hashes_file: Path) -> dict:
    """HMA with the bench bank's PDQs, its index built, serving on WORKERS gunicorn workers: the
    same GET /m/lookup load as safeset's. Set up from its source by hma.sh (Postgres from Debian)."""
    import safeset

    script = str(Path(__file__).with_name("hma.sh"))
    subprocess.run([script, "setup", HMA_SRC], check=True, stdout=subprocess.DEVNULL)
    listed = ROOT / f"hma-{BANK}.txt"
    rows = np.asarray(safeset.BankStore(bank_home).load("bench", "pdq"))
    with open(listed, "w") as fh:
        for start in range(0, len(rows), 1_000_000):
            text = rows[start : start + 1_000_000].tobytes().hex()
            fh.write("".join(text[i : i + 64] + "\n" for i in range(0, len(text), 64)))
    try:
        started = time.perf_counter()
        subprocess.run([script, "load", HMA_SRC, "BENCH", str(listed)], check=True, stdout=subprocess.DEVNULL)
        index_s = time.perf_counter() - started
    finally:
        listed.unlink()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    try:  # stopped whatever happens, a start that timed out too
        started = time.perf_counter()
        argv = [script, "start", HMA_SRC, str(port), str(WORKERS)]
        pid = subprocess.run(argv, check=True, capture_output=True, text=True)
        start_s = time.perf_counter() - started
        result = load(f"http://127.0.0.1:{port}", "hma", 0, str(hashes_file))
        result["matched_first"] = matched(f"http://127.0.0.1:{port}", json.loads(hashes_file.read_text())[:AGREE])
        return {**result, "memory_mb": pss_mb(int(pid.stdout.split()[-1])), "index_s": index_s, "start_s": start_s}
    finally:
        subprocess.run([script, "stop"], check=True, stdout=subprocess.DEVNULL)


if __name__ == "__main__":
    sys.exit(main())
