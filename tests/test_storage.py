"""Inputs and outputs on object storage, through pyarrow's filesystems: a real S3 API (moto's
server, on loopback) and `file://` URIs, compared with the same scan on local paths."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import listed_tile_shards, read_json, same_release, tree
from pyarrow import fs

import safeset

S3_ENV = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def s3():
    """An S3-compatible server on 127.0.0.1; yields (pyarrow filesystem, URI query naming it)."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    saved = {k: os.environ.get(k) for k in S3_ENV}
    os.environ.update(S3_ENV)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    query = f"?endpoint_override={host}:{port}&scheme=http&region=us-east-1"
    filesystem, _ = fs.FileSystem.from_uri("s3://audit" + query + "&allow_bucket_creation=true")
    filesystem.create_dir("audit")
    try:
        yield filesystem, query
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def shards(tiles, tmp_path_factory):
    return listed_tile_shards(tmp_path_factory.mktemp("storage-data"), tiles, 30, shards=3, every=7)


def scan_cli(home: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return cli(home, "scan", *args, "-q", env=env)


def cli(home: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "safeset", "--home", str(home), *map(str, args)],
        env={**os.environ, **S3_ENV, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_scan_reads_and_writes_s3(s3, shards, tmp_path, home):
    filesystem, query = s3
    data, listed = shards
    safeset.BankStore(home).add("pdq", listed, type_name="pdq")
    local = safeset.scan(data, tmp_path / "local", workers=2, home=str(home))
    assert local["totals"]["remove"] >= 3

    fs.copy_files(str(data), "audit/in/shards", destination_filesystem=filesystem)
    source, out = f"s3://audit/in/shards{query}", f"s3://audit/out{query}"
    done = scan_cli(home, source, "--out", out, "--workers", "2")
    assert done.returncode == 0, done.stderr

    remote = tree(filesystem, "audit/out")
    same_release(remote, tmp_path / "local")
    assert not [rel for rel in remote if rel.endswith(".partial")]
    report = read_json(tmp_path / "local" / "report.json")
    remote_report = json.loads(remote["report.json"])
    assert remote_report["totals"] == report["totals"] and remote_report["reasons"] == report["reasons"]
    named = {f["path"] for f in remote_report["inputs"]}
    assert named and all(p.startswith("s3://audit/in/shards/") for p in named), named
    assert pq.read_table(filesystem.open_input_file("audit/out/removed.parquet")).num_rows == local["totals"]["remove"]

    # resume works from the store's own state: nothing is run again
    again = scan_cli(home, source, "--out", out)
    assert again.returncode == 0, again.stderr
    timings = json.loads(tree(filesystem, "audit/out")["report.json"])["timings"]
    assert timings["shards_resumed"] == 3 and timings["shards_run"] == 0

    # the page is re-rendered from the store's report.json, as for a local OUT
    page = tree(filesystem, "audit/out")["report.html"]
    filesystem.delete_file("audit/out/report.html")
    rendered = cli(home, "report", out)
    assert rendered.returncode == 0, rendered.stderr
    assert tree(filesystem, "audit/out")["report.html"] == page
    nothing = cli(home, "report", f"s3://audit/nothing-here{query}")
    assert nothing.returncode == 2 and "holds no report.json" in nothing.stderr


def test_file_uris_and_bad_locations(shards, tmp_path, home):
    data, listed = shards
    safeset.BankStore(home).add("pdq", listed, type_name="pdq")
    safeset.scan(data, tmp_path / "local", workers=1, home=str(home))
    done = scan_cli(home, f"file://{data}", "--out", f"file://{tmp_path}/uri-out", "--workers", "1")
    assert done.returncode == 0, done.stderr
    local_files = tree(fs.LocalFileSystem(), f"{tmp_path}/uri-out")
    same_release(local_files, tmp_path / "local")

    unknown = scan_cli(home, str(data), "--out", "nosuchstore://bucket/out")
    assert unknown.returncode == 2 and "cannot open nosuchstore://bucket/out" in unknown.stderr

    images = tmp_path / "loose"
    images.mkdir()
    (images / "a.jpg").write_bytes(b"\xff\xd8\xff")
    loose = scan_cli(home, f"file://{images}", "--out", tmp_path / "o")
    assert loose.returncode == 3 and "a.jpg" in loose.stderr and "pack loose images" in loose.stderr


def test_remote_input_shards_are_held_in_memory_not_on_disk(shards, tmp_path, home):
    """A downloaded input shard may hold flagged images: it goes to a RAM-backed directory
    (/dev/shm, or SAFESET_STAGING, checked to be a tmpfs), never to the temporary directory on
    disk; a staging directory on a disk is refused before anything is downloaded."""
    from safeset.storage import scratch

    with scratch("probe-", in_memory=True) as held:
        assert str(held).startswith("/dev/shm/")
    data, listed = shards
    safeset.BankStore(home).add("pdq", listed, type_name="pdq")
    on_disk = tmp_path / "staging"
    on_disk.mkdir()
    disk_tmp = tmp_path / "disk-tmp"
    disk_tmp.mkdir()
    env = {**os.environ, "SAFESET_STAGING": str(on_disk), "TMPDIR": str(disk_tmp)}
    command = [sys.executable, "-m", "safeset", "--home", str(home), "scan", f"file://{data}", "-q"]
    refused = subprocess.run([*command, "--out", str(tmp_path / "a")], env=env, capture_output=True, text=True)
    assert refused.returncode == 2 and f"{on_disk} is on ext4, not in memory" in refused.stderr.replace("\n", " ")
    assert not (tmp_path / "a" / "_state").exists()

    allowed = {**env, "SAFESET_STAGING_ALLOW_DISK": "1", "SAFESET_STAGING": str(tmp_path / "a-file")}
    (tmp_path / "a-file").write_text("a file, where the staging directory should be")
    failed = subprocess.run(
        [*command, "--out", str(tmp_path / "b"), "--retries", "0"], env=allowed, capture_output=True
    )
    assert failed.returncode == 1 and b"NotADirectoryError" in failed.stderr  # it was to go there
    allowed["SAFESET_STAGING"] = str(on_disk)
    done = subprocess.run([*command, "--out", str(tmp_path / "c")], env=allowed, capture_output=True)
    assert done.returncode == 0, done.stderr
    assert not list(on_disk.iterdir()) and not list(disk_tmp.rglob("*.tar"))


def test_a_staged_copy_left_by_a_killed_worker_is_removed_by_the_next_run(shards, tmp_path, home):
    """A worker killed while it holds a shard in memory leaves it in /dev/shm; the next run's
    staging removes what dead processes of this machine left."""
    probe = (
        "from safeset.storage import scratch\nimport os, sys\nwith scratch('safeset-input-', in_memory=True) as held:\n"
    )
    probe += (
        "    (held / '00000.tar').write_bytes(b'staged')\n    print(held, flush=True)\n    os.kill(os.getpid(), 9)\n"
    )
    killed = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    left = Path(killed.stdout.strip())
    assert killed.returncode == -9 and (left / "00000.tar").is_file()
    data, listed = shards
    safeset.BankStore(home).add("pdq", listed, type_name="pdq")
    assert scan_cli(home, f"file://{data}", "--out", tmp_path / "out").returncode == 0
    assert not left.exists()


def test_large_parquet_table_on_s3_is_cut_into_parts_read_in_place(s3, tmp_path, home):
    """LAION's metadata files are gigabytes: a remote parquet table is planned from its footer and
    each part reads only its own row groups from the store. Nothing is staged: with staging made
    impossible the scan still runs, and its outputs are the local scan's, byte for byte."""
    filesystem, query = s3
    rows = [{"URL": f"https://img{i % 5}.example.org/{i}.jpg", "TEXT": f"photo {i}"} for i in range(230)]
    meta = tmp_path / "laion-part-00000.parquet"
    pq.write_table(pa.Table.from_pylist(rows), meta, row_group_size=40)
    listed = tmp_path / "urls.txt"
    listed.write_text("".join(rows[i]["URL"] + "\n" for i in (3, 81, 229)))
    safeset.BankStore(home).add("urls", listed, type_name="url")
    local = safeset.scan(meta, tmp_path / "local", workers=2, home=str(home), read=safeset.ReadOptions(table_rows=80))
    assert local["totals"]["rows"] == 230 and local["totals"]["remove"] == 3

    fs.copy_files(str(meta), "audit/meta/laion-part-00000.parquet", destination_filesystem=filesystem)
    source, out = f"s3://audit/meta/laion-part-00000.parquet{query}", f"s3://audit/meta-out{query}"
    not_a_dir = tmp_path / "staging"
    not_a_dir.write_text("staging here would fail")
    done = scan_cli(home, source, "--out", out, "--table-rows", "80", env={"SAFESET_STAGING": str(not_a_dir)})
    assert done.returncode == 0, done.stderr

    remote = tree(filesystem, "audit/meta-out")
    same_release(remote, tmp_path / "local")
    parts = sorted(rel for rel in remote if rel.startswith("clean/"))
    assert parts == [f"clean/laion-part-00000.parquet/part-0000{k}.parquet" for k in range(3)]
    report = json.loads(remote["report.json"])
    assert report["totals"] == local["totals"]
    (named,) = report["inputs"]
    assert named["path"].startswith("s3://audit/meta/laion-part-00000.parquet")
    assert named["sha256"] == local["inputs"][0]["sha256"]  # hashed once, streamed from the store


def test_one_scan_at_a_time_per_remote_out(s3, shards, tmp_path, home):
    """A store has no locks: a scan holds a lease object in OUT while it runs. A live lease of a
    scan elsewhere refuses a second scan; a lapsed one, or one left by a dead process of this
    machine, is taken over; a finished scan leaves none behind."""
    import socket
    import time

    filesystem, query = s3
    data, listed = shards
    safeset.BankStore(home).add("pdq", listed, type_name="pdq")
    fs.copy_files(str(data), "audit/lease-in", destination_filesystem=filesystem)
    source, out = f"s3://audit/lease-in{query}", f"s3://audit/lease-out{query}"

    def lease(host: str, pid: int, renewed: float) -> None:
        body = {"token": "theirs", "host": host, "pid": pid, "started": renewed - 60, "renewed": renewed}
        with filesystem.open_output_stream("audit/lease-out/_state/lease.json") as fh:
            fh.write(json.dumps(body).encode())

    lease("scanner-7.example.org", 4242, time.time())  # a scan running on another machine
    refused = scan_cli(home, source, "--out", out)
    assert refused.returncode == 2
    assert "another scan is writing to s3://audit/lease-out" in refused.stderr and "scanner-7" in refused.stderr
    assert "results/part-00000.parquet" not in tree(filesystem, "audit/lease-out")

    lease("scanner-7.example.org", 4242, time.time() - 3600)  # it died an hour ago: lapsed
    assert scan_cli(home, source, "--out", out).returncode == 0
    assert "_state/lease.json" not in tree(filesystem, "audit/lease-out")

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lease(socket.gethostname(), int(dead.stdout), time.time())  # killed on this machine a moment ago
    rerun = scan_cli(home, source, "--out", out)
    assert rerun.returncode == 0, rerun.stderr
    assert "_state/lease.json" not in tree(filesystem, "audit/lease-out")


def test_a_download_that_fails_fails_the_shard_rather_than_passing_for_a_truncated_tar(shards, tmp_path):
    """A shard's tar is read while it downloads; if the download breaks off, the reader must not
    take the end of what arrived for the end of a truncated tar (its rows recorded as missing):
    the shard fails as a worker does, and is run again."""
    from safeset.sources import Shard, reader_for
    from safeset.sources.base import ShardLog
    from safeset.storage import StagingError, arriving

    data, _ = shards
    held = tmp_path / "held" / "00000.tar"
    with arriving({f"file://{data}/vanished.tar": held}):
        log = ShardLog()
        with pytest.raises(StagingError, match="vanished.tar: download failed"):
            list(reader_for("webdataset").items(Shard("webdataset", "x", str(held), (str(held),)), log))
        assert log.problems == []

    with arriving({f"file://{data}/00000.tar": held}):  # one that arrives: the same samples as the file
        streamed = list(reader_for("webdataset").items(Shard("webdataset", "x", str(held), (str(held),)), ShardLog()))
    local = list(reader_for("webdataset").items(Shard("webdataset", "x", str(data / "00000.tar"), ()), ShardLog()))
    assert [(i.key, i.data) for i in streamed] == [(i.key, i.data) for i in local] and len(local) == 10


def test_credentials_in_uris_appear_nowhere(s3, shards, tmp_path, home):
    """A store's credentials may come inside the URI: they reach the store, and nothing else: not
    report.json, the run state, done-markers, error messages or what the scan prints."""
    filesystem, query = s3
    data, listed = shards
    safeset.BankStore(home).add("pdq", listed, type_name="pdq")
    fs.copy_files(str(data), "audit/creds/shards", destination_filesystem=filesystem)
    secret = "SECRETVALUE123"
    source = f"s3://test:{secret}@audit/creds/shards{query}"
    out = f"s3://test:{secret}@audit/creds-out{query}"
    done = scan_cli(home, source, "--out", out, "--workers", "2")
    assert done.returncode == 0, done.stderr
    again = scan_cli(home, source, "--out", out)  # a rerun compares the run state: it resumes
    assert again.returncode == 0, again.stderr
    written = tree(filesystem, "audit/creds-out")
    assert "_state/run.json" in written and "report.json" in written
    assert [rel for rel, data in written.items() if secret.encode() in data] == []
    report = json.loads(written["report.json"])
    assert report["inputs"][0]["path"].startswith("s3://***@audit/creds/shards/")
    for output in (done.stdout, done.stderr, again.stdout, again.stderr):
        assert secret not in output

    bad = scan_cli(home, f"s3://audit/creds/shards{query}&secret_key={secret}", "--out", str(tmp_path / "o"))
    assert bad.returncode == 2 and "secret_key=***" in bad.stderr and secret not in bad.stderr + bad.stdout


def test_embeddings_are_read_from_s3_as_from_a_folder(s3, tmp_path):
    """`safeset expand --embeddings s3://...`: LAION's .npy files streamed in blocks, DataComp's
    .npz read by ranges, the same vectors and join keys as from local files."""
    import numpy as np
    from test_neighbours import laion_layout

    from safeset.sources.embeddings import blocks, embedding_files, join_keys

    filesystem, query = s3
    rng = np.random.default_rng(3)
    parts = [rng.normal(size=(n, 6)).astype(np.float16) for n in (7, 5)]
    laion_layout(
        tmp_path / "laion", parts, [[f"https://x.org/{i}/{j}" for j in range(len(p))] for i, p in enumerate(parts)]
    )
    datacomp = tmp_path / "datacomp"
    datacomp.mkdir()
    np.savez(datacomp / "0000.npz", l14_img=parts[0])
    pq.write_table(
        pa.table({"uid": [f"u{j}" for j in range(7)], "url": [f"https://y.org/{j}" for j in range(7)]}),
        datacomp / "0000.parquet",
    )
    for name in ("laion", "datacomp"):
        fs.copy_files(str(tmp_path / name), f"audit/emb/{name}", destination_filesystem=filesystem)
        local, remote = embedding_files(str(tmp_path / name)), embedding_files(f"s3://audit/emb/{name}{query}")
        assert [(f.rows, f.dim, f.first) for f in remote] == [(f.rows, f.dim, f.first) for f in local]
        for near, far in zip(local, remote, strict=True):
            np.testing.assert_array_equal(
                np.concatenate([b.copy() for _, b in blocks(far, 3)]),
                np.concatenate([b.copy() for _, b in blocks(near, 3)]),
            )
            assert join_keys(far, "url").equals(join_keys(near, "url"))


def test_sync_reads_a_copy_on_s3_as_from_a_folder(s3, tiles, tmp_path):
    """`safeset sync s3://...`: an img2dataset copy on object storage (a webdataset shard streamed,
    a parquet-output shard read by ranges) pruned to the same rows, the same bytes, as from a
    folder; the URI's credentials appear nowhere."""
    from helpers import samples_from

    from safeset.demo import write_img2dataset_shard

    filesystem, query = s3
    samples = samples_from(tiles[:9])
    copy = tmp_path / "copy"
    write_img2dataset_shard(copy, 0, samples[:5])
    pq.write_table(
        pa.table(
            {
                "url": [s.url for s in samples[5:]],
                "caption": [s.caption for s in samples[5:]],
                "key": [f"00001{i:04d}" for i in range(4)],
                "status": ["success"] * 4,
                "jpg": pa.array([s.image for s in samples[5:]], pa.binary()),
            }
        ),
        copy / "00001.parquet",
        row_group_size=2,
    )
    keep = [s for i, s in enumerate(samples) if i not in (1, 6)]
    pq.write_table(
        pa.table({"url": [s.url for s in keep], "caption": [s.caption for s in keep]}), tmp_path / "new.parquet"
    )
    fs.copy_files(str(copy), "audit/copies/mine", destination_filesystem=filesystem)

    secret = "SECRETVALUE456"
    remote = cli(
        Path(tmp_path / "home"),
        "sync",
        f"s3://test:{secret}@audit/copies/mine{query}",
        "--release",
        tmp_path / "new.parquet",
        "--out",
        tmp_path / "from-s3",
        "--json",
    )
    assert remote.returncode == 0, remote.stderr
    local = cli(
        Path(tmp_path / "home"),
        "sync",
        copy,
        "--release",
        tmp_path / "new.parquet",
        "--out",
        tmp_path / "from-folder",
        "--json",
    )
    assert local.returncode == 0, local.stderr
    assert json.loads(remote.stdout) == json.loads(local.stdout)
    assert json.loads(remote.stdout)["kept"] == 7
    for name in ("00000.tar", "00000.parquet", "00001.parquet", "sync_stats.json"):
        assert (tmp_path / "from-s3" / name).read_bytes() == (tmp_path / "from-folder" / name).read_bytes(), name
    kept = pq.read_table(tmp_path / "from-s3" / "00001.parquet").to_pylist()
    assert [r["jpg"] for r in kept] == [s.image for s in samples[5:] if s is not samples[6]]

    missing = cli(
        Path(tmp_path / "home"),
        "sync",
        f"s3://test:{secret}@audit/copies/none{query}",
        "--release",
        tmp_path / "new.parquet",
        "--out",
        tmp_path / "x",
    )
    assert missing.returncode == 3 and "s3://***@audit/copies/none" in missing.stderr
    assert not [out for out in (remote.stdout, remote.stderr, missing.stdout, missing.stderr) if secret in out]
