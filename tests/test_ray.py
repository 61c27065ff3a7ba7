"""The Ray engine on a real local Ray cluster (2 CPUs, started by these tests): the same outputs as
the local engine, banks loaded once per worker process, a killed worker's shard retried, a shard
that fails every retry reported with the others complete, and a clear message without the extra."""

from __future__ import annotations

import hashlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import listed_tile_shards, processes, read_json, same_release, shard_tasks, snapshot, tree, write_lines
from http_server import HOSTS, FaultyServer
from pyarrow import fs

import safeset
from safeset.demo import jpeg
from safeset.fetch import FetchOptions
from safeset.sinks import OutLayout

RAY = Path(sys.executable).with_name("ray")
RAY_ENV = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A one-node Ray cluster with 2 CPUs, as `ray start` makes it, with token authentication (as
    a real cluster should have; the drivers get the token the same way); yields its address."""
    token = tmp_path_factory.mktemp("ray-auth") / "token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    RAY_ENV.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token))
    port = _free_port()
    subprocess.run(
        [RAY, "start", "--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false"]
        + ["--disable-usage-stats"],
        check=True,
        env=RAY_ENV,
        capture_output=True,
        timeout=180,
    )
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([RAY, "stop", "--force"], env=RAY_ENV, capture_output=True, timeout=120)


def scan_on_ray(address: str, home: Path, *args) -> subprocess.Popen:
    command = [sys.executable, "-m", "safeset", "--home", str(home), "scan", *map(str, args)]
    command += ["--engine", "ray", "--ray-address", address, "-q"]
    return subprocess.Popen(command, env=RAY_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    _, stderr = proc.communicate(timeout=timeout)
    return proc.returncode, stderr


@pytest.fixture(scope="module")
def shards(tiles, tmp_path_factory):
    """Six img2dataset shards of benign tiles; every 9th tile is on a PDQ test list."""
    return listed_tile_shards(tmp_path_factory.mktemp("ray-data"), tiles, 60, shards=6, every=9)


def add_bank(home: Path, listed: Path) -> None:
    store = safeset.BankStore(home)
    store.add("pdq", listed, type_name="pdq")


def test_same_outputs_as_the_local_engine_and_banks_loaded_once_per_process(cluster, shards, tmp_path, home):
    data, listed = shards
    add_bank(home, listed)
    local = safeset.scan(data, tmp_path / "local", workers=2, home=str(home))
    assert local["totals"]["remove"] >= 5  # the listed tiles of good quality

    code, stderr = finish(scan_on_ray(cluster, home, data, "--out", tmp_path / "ray"))
    assert code == 0, stderr
    assert snapshot(tmp_path / "ray") == snapshot(tmp_path / "local")
    report = read_json(tmp_path / "ray" / "report.json")
    assert report["timings"]["engine"] == "ray" and report["timings"]["shards_run"] == 6

    # Ray reuses worker processes: six shards on two CPUs ran in fewer processes, and each of them
    # loaded the banks once, however many shards it ran.
    workers = [read_json(p)["worker"] for p in sorted((tmp_path / "ray" / "_state").glob("part-*.done.json"))]
    pids = {w["pid"] for w in workers}
    assert len(pids) < 6
    assert {w["bank_loads"] for w in workers} == {1}
    assert os.getpid() not in pids  # the shards ran in Ray's workers, not in this process


def test_a_decide_round_on_ray_writes_what_the_local_engine_writes(cluster, shards, tmp_path, home):
    """Decide rounds run their shards on the engine too: the same round on Ray and on this
    machine's cores gives the same outputs."""
    data, listed = shards
    add_bank(home, listed)
    store = safeset.BankStore(home)
    store.add("none", write_lines(tmp_path / "none.txt", ["0" * 32]), type_name="md5")
    for name in ("local", "ray"):
        safeset.scan(data, tmp_path / name, banks=["none"], workers=2, home=str(home))
    local = safeset.decide(tmp_path / "local", banks=["pdq"], workers=2, home=str(home))
    command = [sys.executable, "-m", "safeset", "--home", str(home), "decide", str(tmp_path / "ray"), "--bank", "pdq"]
    proc = subprocess.run(
        [*command, "--engine", "ray", "--ray-address", cluster, "-q"], env=RAY_ENV, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert local["rounds"][-1]["transitions"]["keep->remove"] == {"match:pdq:pdq": local["totals"]["remove"]}
    ray_files, local_files = snapshot(tmp_path / "ray"), snapshot(tmp_path / "local")
    for files in (ray_files, local_files):
        files["report.json"].pop("rounds")
    assert ray_files == local_files
    assert read_json(tmp_path / "ray" / "report.json")["timings"]["engine"] == "ray"


def test_progress_counts_and_summaries_reach_the_driver(cluster, shards, tmp_path, home, monkeypatch):
    """The engine itself, joined from this process: shard workers' progress counts travel through
    a Ray actor to the driver's callbacks, as the progress bars need them."""
    from safeset.engines import Progress, RayEngine

    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.setenv(name, RAY_ENV[name])
    data, listed = shards
    add_bank(home, listed)
    tasks = shard_tasks(home, [data], tmp_path / "out")
    counts, finished = [], []
    outcomes = RayEngine(workers=2, address=cluster).run(
        tasks, Progress(counts=counts.append, shard_done=finished.append)
    )

    assert [o.error for o in outcomes] == [None] * len(tasks)
    assert sorted(o.task.part for o in finished) == list(range(len(tasks)))
    rows = sum(o.summary["rows"] for o in outcomes)
    assert rows == 60 and sum(c.get("items", 0) for c in counts) == rows


def test_ray_workers_read_and_write_object_storage_uris(cluster, shards, tmp_path, home):
    """Workers on the cluster download their shard and upload their outputs (`file://` standing in
    for a store here; tests/test_storage.py runs the same against an S3 API)."""
    data, listed = shards
    add_bank(home, listed)
    safeset.scan(data, tmp_path / "local", workers=2, home=str(home))
    code, stderr = finish(scan_on_ray(cluster, home, f"file://{data}", "--out", f"file://{tmp_path}/remote"))
    assert code == 0, stderr
    same_release(tree(fs.LocalFileSystem(), f"{tmp_path}/remote"), tmp_path / "local")


def _task_processes() -> list[int]:
    """Ray workers busy with a shard: Ray titles a worker process after the task it runs."""
    return processes("cmdline", lambda title: title.startswith(b"ray::_run_remote"))


def test_a_worker_killed_mid_shard_is_retried_and_the_output_is_the_same(cluster, tiles, tmp_path, home):
    images = {f"{name}.jpg": jpeg(image) for name, image in tiles[:24]}
    names = sorted(images)
    table = tmp_path / "meta.csv"
    # /slow/ answers after 0.3 s, at 2 requests/s per host: each shard of 6 rows takes a while
    fetch = ("--fetch", "--allow-network", "127.0.0.0/8", "--table-rows", "6", "--per-domain-rate", "2")
    write_lines(tmp_path / "md5.txt", [hashlib.md5(images[names[3]]).hexdigest()])
    safeset.BankStore(home).add("md5", tmp_path / "md5.txt", type_name="md5")
    with FaultyServer(images) as server:
        urls = [server.url(f"/slow/{name}", HOSTS[i % len(HOSTS)]) for i, name in enumerate(names)]
        table.write_text("url,caption\n" + "".join(f"{u},caption {i}\n" for i, u in enumerate(urls)))

        proc = scan_on_ray(cluster, home, table, "--out", tmp_path / "killed", *fetch)
        deadline = time.monotonic() + 120
        while not server.log.requests and time.monotonic() < deadline:
            time.sleep(0.01)
        busy = []
        while not busy and time.monotonic() < deadline:
            busy = _task_processes()
        assert busy, "no Ray worker was running a shard"
        os.kill(busy[0], signal.SIGKILL)
        done_at_kill = len(list((tmp_path / "killed" / "_state").glob("part-*.done.json")))
        code, stderr = finish(proc)
        assert code == 0, stderr
        assert done_at_kill < 4, "the kill must land mid-run"

        reference = safeset.scan(
            [table],
            tmp_path / "local",
            workers=2,
            home=str(home),
            fetch=FetchOptions(allowed_networks=("127.0.0.0/8",), per_domain_rate=2),
            read=safeset.ReadOptions(table_rows=6),
        )
    assert reference["totals"]["remove"] == 1
    assert read_json(tmp_path / "killed" / "report.json")["timings"]["shard_retries"] >= 1
    assert not list((tmp_path / "killed").rglob("*.partial"))
    assert snapshot(tmp_path / "killed") == snapshot(tmp_path / "local")


def test_a_shard_failing_every_retry_fails_the_run_and_the_rest_resumes(cluster, shards, tmp_path, home):
    data, listed = shards
    add_bank(home, listed)
    out = tmp_path / "out"
    blocker = out / "results" / "part-00002.parquet"
    blocker.mkdir(parents=True)  # shard 2 cannot commit its results: every attempt fails
    (out / "_state").mkdir()  # in an OUT a scan has begun (one without holds nothing but empty folders)

    code, stderr = finish(scan_on_ray(cluster, home, data, "--out", out, "--retries", "1"))
    assert code == 1, stderr
    assert "1 shard(s) failed" in stderr and "00002" in stderr and "IsADirectoryError" in stderr
    done = sorted(p.name for p in (out / "_state").glob("part-*.done.json"))
    assert done == [f"part-{i:05d}.done.json" for i in (0, 1, 3, 4, 5)]
    assert not (out / "report.json").exists()

    blocker.rmdir()
    code, stderr = finish(scan_on_ray(cluster, home, data, "--out", out))
    assert code == 0, stderr
    timings = read_json(out / "report.json")["timings"]
    assert timings["shards_resumed"] == 5 and timings["shards_run"] == 1
    assert snapshot(out)["results/part-00002.parquet"]


def test_without_the_extra_the_ray_engine_names_it(shards, tmp_path, home):
    """No silent fallback to the local engine: `ray` failing to import is a usage error."""
    data, _ = shards
    fake = tmp_path / "no-ray"
    (fake / "ray").mkdir(parents=True)
    (fake / "ray" / "__init__.py").write_text("raise ImportError('No module named ray')\n")
    proc = subprocess.run(
        [sys.executable, "-m", "safeset", "--home", str(home), "scan", str(data), "--out", str(tmp_path / "o")]
        + ["--engine", "ray", "-q"],
        env={**os.environ, "PYTHONPATH": str(fake)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "pip install 'safeset[ray]'" in proc.stderr
    assert not list(tmp_path.rglob("part-*.done.json"))


def test_an_expansion_on_ray_finds_what_the_local_engine_finds(cluster, shards, tmp_path, home):
    """The expansion's searches, one per embedding file, run as Ray tasks: the same candidates
    and the same decisions as on this machine's cores."""
    import numpy as np
    import pyarrow.parquet as pq
    from test_neighbours import laion_layout

    data, listed = shards
    add_bank(home, listed)
    for name in ("local", "ray"):
        safeset.scan(data, tmp_path / name, workers=2, home=str(home))
    results = pq.read_table(tmp_path / "local" / "results", columns=["url", "decision"]).to_pylist()
    rng = np.random.default_rng(2)
    vectors = rng.normal(size=(len(results), 32)).astype(np.float32)
    removed = [i for i, row in enumerate(results) if row["decision"] == "remove"]
    for seed in removed:  # a near copy of each removed row, in the next row
        vectors[(seed + 1) % len(results)] = vectors[seed] + rng.normal(size=32) * 0.05
    urls = [row["url"] for row in results]
    half = len(urls) // 2
    emb = laion_layout(tmp_path / "emb", [vectors[:half], vectors[half:]], [urls[:half], urls[half:]])

    local = safeset.expand(tmp_path / "local", emb, k=3, workers=2, home=str(home))
    command = [sys.executable, "-m", "safeset", "--home", str(home), "expand", str(tmp_path / "ray")]
    command += ["--embeddings", str(emb), "--k", "3", "--engine", "ray", "--ray-address", cluster, "-q"]
    proc = subprocess.run(command, env=RAY_ENV, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert local["expansion"][0]["candidates"]["rows"] >= 1
    found = [OutLayout(tmp_path / n).expansion / "round-001" / "candidates.parquet" for n in ("local", "ray")]
    assert found[0].read_bytes() == found[1].read_bytes()
    ray_report = read_json(tmp_path / "ray" / "report.json")
    assert ray_report["totals"] == local["totals"] and ray_report["timings"]["engine"] == "ray"
