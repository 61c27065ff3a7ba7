"""Files written by the tools safeset's users use, read as those tools wrote them: hash lists made by
python-threatexchange's own command line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
from helpers import make_shards, run_cli, samples_from, write_lines

THREATEXCHANGE = Path(sys.executable).with_name("threatexchange")


def threatexchange_hash(tmp_path: Path, *args: str) -> list[str]:
    """`threatexchange hash ...` as a user runs it; its lines are `<signal type> <hash>`."""
    env = {**os.environ, "HOME": str(tmp_path / "tx-home")}  # it keeps its settings under HOME
    proc = subprocess.run([THREATEXCHANGE, "hash", *args], env=env, capture_output=True, text=True, check=True)
    return proc.stdout.splitlines()


def test_lists_written_by_python_threatexchange_match(tiles, tmp_path, home):
    """python-threatexchange hashes a URL after normalising it (lower case, no scheme), so its
    url_md5 lists never matched the MD5 of the URL as a dataset holds it. Both forms are matched
    now, and its video_md5 / video_sha256 lines are read as digests of a file's bytes."""
    samples = samples_from(tiles[:8], domain="Img.Example.ORG")
    shards = make_shards(tmp_path / "shards", [samples])
    (tmp_path / "photo.jpg").write_bytes(samples[5].image)
    (tmp_path / "video.bin").write_bytes(samples[6].image)  # a file's bytes, as pytx hashes videos
    lines = threatexchange_hash(tmp_path, "url", "--", samples[2].url)
    lines += threatexchange_hash(tmp_path, "photo", str(tmp_path / "photo.jpg"))
    lines += threatexchange_hash(tmp_path, "video", str(tmp_path / "video.bin"))
    assert sorted(line.split()[0] for line in lines) == ["pdq", "url_md5", "video_md5", "video_sha256"]
    write_lines(tmp_path / "pytx.txt", lines)
    added = run_cli("bank", "add", "pytx", tmp_path / "pytx.txt", home=home)
    assert added.exit_code == 0 and "bad line" not in added.stderr, added.output

    assert run_cli("scan", shards, "--out", tmp_path / "out", "-q", home=home).exit_code == 0
    rows = {r["url"]: r for r in pq.read_table(tmp_path / "out" / "results").to_pylist()}
    matched = {
        url: sorted((m["signal_type"], m["variant"]) for m in row["matches"])
        for url, row in rows.items()
        if row["matches"]
    }
    assert matched == {
        samples[2].url: [("url_md5", "threatexchange")],
        samples[5].url: [("pdq", "")],
        samples[6].url: [("md5", ""), ("sha256", "")],
    }
