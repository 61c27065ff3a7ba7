"""The local engine under the faults of real machines: a worker killed mid-shard (as the OOM killer
does), Ctrl-C, the scan itself killed at any moment; and what every worker process is."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from helpers import make_shards, processes, read_json, samples_from, shard_tasks, write_lines
from PIL import Image

import safeset
from safeset.demo import Sample, jpeg
from safeset.engines import LocalEngine, Progress


def _children(parent: int) -> list[int]:
    return processes("stat", lambda stat: int(stat.rsplit(b")", 1)[1].split()[1]) == parent)


def _holding(pid: int, name: str) -> bool:
    try:
        return any(os.readlink(fd).endswith(name) for fd in Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False


def _with_marker(marker: str) -> list[int]:
    """Processes whose environment carries the marker: a scan's and every worker it started."""
    return processes("environ", lambda environ: marker.encode() in environ)


def _big(tiles, i: int) -> Sample:
    return Sample(
        f"https://p.example/{i}.jpg", "big", jpeg(tiles[i % len(tiles)][1].resize((1400, 1400), Image.BILINEAR))
    )


@pytest.fixture
def poison_and_nine(tiles, tmp_path, home):
    """Ten webdataset shards; the one named `poison.tar` is large enough to be caught in the act."""
    shards = make_shards(tmp_path / "shards", [samples_from(tiles[i * 4 : i * 4 + 4]) for i in range(9)])
    big = [_big(tiles, i) for i in range(120)]
    make_shards(tmp_path / "poison", [big])
    (tmp_path / "poison" / "00000.tar").rename(shards / "poison.tar")
    (tmp_path / "poison" / "00000.parquet").rename(shards / "poison.parquet")
    write_lines(tmp_path / "md5.txt", ["0" * 32])
    safeset.BankStore(home).add("md5", tmp_path / "md5.txt", type_name="md5")
    return shards


def test_a_worker_that_dies_costs_only_its_own_shard(poison_and_nine, tmp_path, home):
    """The OOM killer takes the worker reading one shard, every time it runs: that shard alone is
    charged its attempts and fails; the nine others finish, none charged more than once (a broken
    pool used to charge an attempt to every shard pending in it)."""
    tasks = shard_tasks(home, [poison_and_nine], tmp_path / "out")
    kills: set[int] = set()
    stop = threading.Event()

    def oom_killer() -> None:  # kills whichever worker has the poison open
        while not stop.is_set():
            for pid in _children(os.getpid()):
                if pid not in kills and _holding(pid, "poison.tar"):
                    os.kill(pid, signal.SIGKILL)
                    kills.add(pid)
            time.sleep(0.005)

    killer = threading.Thread(target=oom_killer, daemon=True)
    killer.start()
    try:
        outcomes = LocalEngine(workers=2, retries=2).run(tasks, Progress())
    finally:
        stop.set()
        killer.join()
    by_name = {o.task.shard.name: o for o in outcomes}
    seen = {name: (o.attempts, o.error) for name, o in by_name.items()}  # in the messages of failures
    poison = by_name.pop("shards/poison.tar")
    assert (poison.attempts, poison.error) == (3, "the worker process died (signal 9)"), seen
    assert len(kills) == 3, (kills, seen)
    assert {name: (o.error, o.attempts) for name, o in by_name.items()} == {name: (None, 1) for name in by_name}
    assert len(list((tmp_path / "out" / "_state").glob("part-*.done.json"))) == 9


def _scan(shards: Path, out: Path, home: Path, marker: str, *options: str) -> subprocess.Popen:
    env = {**os.environ, "SAFESET_HOME": str(home), "SAFESET_TEST_MARKER": marker}
    command = [sys.executable, "-m", "safeset", "scan", str(shards), "--out", str(out), "-q", *options]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _gone(marker: str, seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while _with_marker(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not _with_marker(marker)


def test_ctrl_c_stops_at_once_and_the_rerun_resumes(tiles, tmp_path, home):
    samples = [_big(tiles, i) for i in range(240)]  # 24 shards, a second or so each
    shards = make_shards(tmp_path / "shards", [samples[i::24] for i in range(24)])
    write_lines(tmp_path / "md5.txt", ["0" * 32])
    safeset.BankStore(home).add("md5", tmp_path / "md5.txt", type_name="md5")
    out = tmp_path / "out"
    marker = uuid.uuid4().hex
    proc = _scan(shards, out, home, marker, "--workers", "2")
    deadline = time.monotonic() + 120
    while not list((out / "_state").glob("part-*.done.json")) and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130 and b"interrupted" in stderr
    done = len(list((out / "_state").glob("part-*.done.json")))
    assert 1 <= done < 24, "stopped mid-run, not after every shard"
    assert _gone(marker), "no worker outlives the scan"
    assert not (out / "removed.parquet").exists() and not list(out.glob("*.partial"))
    rerun = _scan(shards, out, home, uuid.uuid4().hex)
    rerun.communicate(timeout=120)
    assert rerun.returncode == 0
    report = read_json(out / "report.json")
    assert report["timings"]["shards_resumed"] >= done and report["totals"]["rows"] == len(samples)


@pytest.mark.parametrize("delay", [0.15, 0.4, 0.8, 1.5, 3.0])
def test_no_worker_outlives_a_killed_scan(tiles, tmp_path, home, delay):
    """SIGKILL of the scan at moments from start-up (workers still importing) to mid-run: every
    worker dies with it (8 of 26 kills left one running before)."""
    samples = samples_from(tiles)
    shards = make_shards(tmp_path / "shards", [samples[i::12] for i in range(12)])
    marker = uuid.uuid4().hex
    proc = _scan(shards, tmp_path / "out", home, marker, "--workers", "2")
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert _gone(marker), f"workers left running: {_with_marker(marker)}"


def test_workers_dump_no_core_and_are_not_dumpable(poison_and_nine, tmp_path, home):
    """A core dump of a worker would write its memory, flagged images included, to disk."""
    marker = uuid.uuid4().hex
    proc = _scan(poison_and_nine, tmp_path / "out", home, marker, "--workers", "1")
    deadline = time.monotonic() + 60
    worker = None
    while worker is None and time.monotonic() < deadline:
        worker = next((pid for pid in _with_marker(marker) if _holding(pid, ".tar")), None)
        time.sleep(0.01)
    assert worker is not None
    limits = Path(f"/proc/{worker}/limits").read_text()
    assert [line.split()[4:6] for line in limits.splitlines() if line.startswith("Max core file size")] == [["0", "0"]]
    proc.communicate(timeout=120)
    assert proc.returncode == 0

    probe = "from safeset.engines.base import harden_process; import ctypes; harden_process(); "
    probe += "print(ctypes.CDLL(None).prctl(3, 0, 0, 0, 0))"  # PR_GET_DUMPABLE
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip() == "0"
