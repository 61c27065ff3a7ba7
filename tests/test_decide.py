"""Decide rounds: a scan's stored observations matched and decided again without reading an image.

The contract is equivalence: a scan with banks X then a decide with banks X and Y writes what a scan
with X and Y writes (clean release, results, manifests, evidence, report counts); so does a decide
with another policy, and a rescan into the same OUT with other banks. Only the report's `rounds`
history (and times) differ. Every input kind is in the one scan, every bank type in the banks."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import make_shards, read_json, run_cli, samples_from, shard_tasks, snapshot, write_lines
from PIL import Image

import safeset
from safeset.demo import Sample, jpeg
from safeset.policy import Policy
from safeset.sinks import OutLayout

# bank name -> (type, what it lists); filled in by the `data` fixture
BANKS = ("b-md5", "b-sha1", "b-sha256", "b-pdq", "b-url", "b-urlmd5", "b-domain")
FIRST = ("b-md5", "b-url")  # what the first scan uses; the rest are "added later"


@pytest.fixture(scope="module")
def data(tmp_path_factory, tiles):
    """Every input kind at once (img2dataset shards, a metadata CSV, a folder of images, a Hugging
    Face image parquet), and a list of every bank type, each listing something in them."""
    root = tmp_path_factory.mktemp("decide-data")
    pool = samples_from(tiles[10:40])
    listed = {name: tiles[i][1] for name, i in (("md5", 1), ("sha1", 2), ("sha256", 3), ("pdq", 4), ("flip", 5))}
    copies = {
        name: Sample(f"https://ok.example.org/{name}.jpg", name, jpeg(image), size=image.size)
        for name, image in listed.items()
    }
    resized = listed["pdq"].resize((150, 150), Image.Resampling.LANCZOS)
    copies["pdq"] = Sample("https://ok.example.org/pdq.jpg", "pdq", jpeg(resized, 80), size=resized.size)
    flipped = listed["flip"].transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    copies["flip"] = Sample("https://ok.example.org/flip.jpg", "flip", jpeg(flipped), size=flipped.size)
    failed = Sample("https://gone.example.org/x.jpg", "gone", None)
    odd = Sample("https://odd.example.org/x.xyz", "odd", b"not an image at all", ext="xyz")
    on_domain = Sample("https://cdn.listed-domain.net/a.jpg", "domain", pool[0].image)
    shard0 = pool[1:12] + [copies["md5"], copies["sha1"], failed, on_domain]
    shard1 = pool[12:25] + [copies["sha256"], copies["pdq"], copies["flip"], odd]
    inputs = root / "inputs"
    make_shards(inputs / "shards", [shard0, shard1])

    urls = [s.url for s in pool[:8]] + ["https://www.listed-domain.net/b.jpg", "not a url", ""]
    (inputs / "meta.csv").write_text("url,caption\n" + "".join(f"{u},row {i}\n" for i, u in enumerate(urls)))

    folder = inputs / "photos"
    folder.mkdir()
    for i, (name, image) in enumerate(tiles[40:46]):
        (folder / f"{i:03d}_{name}.jpg").write_bytes(jpeg(image))
    (folder / "zz_md5.jpg").write_bytes(copies["md5"].image)

    cells = [{"bytes": jpeg(image), "path": f"{name}.jpg"} for name, image in tiles[46:52]]
    cells.append({"bytes": copies["sha1"].image, "path": "sha1.jpg"})
    table = pa.table({"image": cells, "text": [f"t{i}" for i in range(len(cells))]})
    pq.write_table(table, inputs / "images.parquet")

    lists = root / "lists"
    lists.mkdir()
    digest = lambda kind, sample: hashlib.new(kind, sample.image).hexdigest()  # noqa: E731
    write_lines(lists / "b-md5", [digest("md5", copies["md5"])])
    write_lines(lists / "b-sha1", [digest("sha1", copies["sha1"])])
    write_lines(lists / "b-sha256", [digest("sha256", copies["sha256"])])
    write_lines(lists / "b-pdq", [str(safeset.pdq(listed["pdq"])), str(safeset.pdq(listed["flip"]))])
    write_lines(lists / "b-url", [pool[3].url, pool[20].url])
    write_lines(lists / "b-urlmd5", [hashlib.md5(pool[5].url.encode()).hexdigest()])
    write_lines(lists / "b-domain", ["listed-domain.net"])
    inputs_list = [inputs / "shards", inputs / "meta.csv", folder, inputs / "images.parquet"]
    return {"inputs": inputs_list, "lists": lists, "root": inputs}


def add_banks(home: Path, lists: Path, names=BANKS) -> None:
    types = {"b-md5": "md5", "b-sha1": "sha1", "b-sha256": "sha256", "b-pdq": "pdq", "b-url": "url"}
    types |= {"b-urlmd5": "url_md5", "b-domain": "domain"}
    for name in names:
        result = run_cli("bank", "add", name, lists / name, "--type", types[name], home=home)
        assert result.exit_code == 0, result.output


def scan(data, out: Path, home: Path, *args: str) -> None:
    result = run_cli("scan", *data["inputs"], "--out", out, "-q", *args, home=home)
    assert result.exit_code == 0, result.output


def decide(out: Path, home: Path, *args: str):
    result = run_cli("decide", out, "-q", *args, home=home)
    assert result.exit_code == 0, result.output
    return result


def same_outputs(a: Path, b: Path) -> None:
    """Everything two OUTs hold is the same, but the rounds history and the times."""
    first, second = snapshot(a), snapshot(b)
    for files in (first, second):
        files["report.json"].pop("rounds")
        for rel in [r for r in files if r.startswith("_state/rounds/")]:  # the rows each round changed
            files.pop(rel)
        for rel in [r for r in files if r.endswith(".done.json")]:
            files[rel].pop("transitions", None)
    assert first.keys() == second.keys()
    for rel in first:
        assert first[rel] == second[rel], rel


def bank_args(names) -> list[str]:
    return [arg for name in names for arg in ("--bank", name)]


def test_banks_added_later_then_decide_equals_a_scan_with_every_bank(data, tmp_path, home):
    add_banks(home, data["lists"])
    scan(data, tmp_path / "grown", home, *bank_args(FIRST))
    before = read_json(tmp_path / "grown" / "report.json")["totals"]
    result = decide(tmp_path / "grown", home, *bank_args(BANKS))
    scan(data, tmp_path / "whole", home, *bank_args(BANKS))
    same_outputs(tmp_path / "grown", tmp_path / "whole")

    report = read_json(tmp_path / "grown" / "report.json")
    assert report["totals"]["remove"] > before["remove"]
    matched = {
        m["signal_type"]
        for r in pq.read_table(tmp_path / "grown" / "removed.parquet").to_pylist()
        for m in r["matches"]
    }
    assert matched == {"md5", "sha1", "sha256", "pdq", "url", "url_md5", "domain"}
    variants = {m["variant"] for r in pq.read_table(tmp_path / "grown" / "results").to_pylist() for m in r["matches"]}
    assert any("flip" in v for v in variants)  # the flipped copy, matched by a stored variant
    first, second = report["rounds"]
    assert first["kind"] == "scan" and [b["name"] for b in first["banks"]] == sorted(FIRST)
    assert second["kind"] == "decide" and second["round"] == 2 and len(second["banks"]) == len(BANKS)
    added = second["transitions"]["keep->remove"]
    assert sum(added.values()) >= report["totals"]["remove"] - before["remove"]
    assert "match:b-sha256:sha256" in added and "keep->remove" in result.output
    assert not (tmp_path / "grown" / "_state" / "round").exists()


def test_another_policy_then_decide_equals_a_scan_with_it(data, tmp_path, home):
    add_banks(home, data["lists"])
    policy = tmp_path / "strict.toml"
    policy.write_text(
        'name = "strict"\n[match.banks]\nb-pdq = "review"\nb-url = "keep"\n'
        '[unchecked]\nno_image = "remove"\nunsupported_media = "remove"\n'
    )
    scan(data, tmp_path / "redecided", home)
    decide(tmp_path / "redecided", home, "--policy", policy)
    scan(data, tmp_path / "straight", home, "--policy", policy)
    same_outputs(tmp_path / "redecided", tmp_path / "straight")
    changes = read_json(tmp_path / "redecided" / "report.json")["rounds"][-1]["transitions"]
    assert {"remove->review", "remove->keep", "keep->remove"} <= changes.keys()

    # and back: the default policy again gives what the first scan gave
    scan(data, tmp_path / "default", home)
    decide(tmp_path / "redecided", home, "--preset", "default")
    same_outputs(tmp_path / "redecided", tmp_path / "default")
    assert len(read_json(tmp_path / "redecided" / "report.json")["rounds"]) == 3


def test_a_rescan_with_other_banks_is_a_decide_round(data, tmp_path, home):
    add_banks(home, data["lists"])
    out = tmp_path / "out"
    scan(data, out, home, *bank_args(FIRST))
    scan(data, out, home)  # every enabled bank: decided again, nothing read again
    report = read_json(out / "report.json")
    assert [r["kind"] for r in report["rounds"]] == ["scan", "scan"]
    assert report["timings"]["shards_run"] == 0 and report["timings"]["rows_decided"] == report["totals"]["rows"]
    scan(data, tmp_path / "straight", home)
    same_outputs(out, tmp_path / "straight")
    scan(data, out, home)  # the same again: nothing to decide, no round
    assert len(read_json(out / "report.json")["rounds"]) == 2

    # a bank updated in place (a new version) is another bank to decide with
    listed = data["lists"] / "b-md5"
    extra = tmp_path / "md5-more"
    shutil.copy(listed, extra)
    photo = sorted((data["root"] / "photos").iterdir())[0]
    with extra.open("a") as fh:
        fh.write(hashlib.md5(photo.read_bytes()).hexdigest() + "\n")
    assert run_cli("bank", "add", "b-md5", extra, "--type", "md5", home=home).exit_code == 0
    decide(out, home)  # OUT's banks, their current versions
    last = read_json(out / "report.json")
    assert last["rounds"][-1]["banks"] != report["rounds"][-1]["banks"]
    assert last["rounds"][-1]["transitions"] == {"keep->remove": {"match:b-md5:md5": 1}}


def test_decide_refuses_what_it_cannot_do_right(data, tmp_path, home):
    add_banks(home, data["lists"], FIRST)
    missing = run_cli("decide", tmp_path / "nothing", home=home)
    assert missing.exit_code == 2 and "holds no scan" in missing.stderr

    copied = tmp_path / "inputs"
    shutil.copytree(data["root"], copied)
    inputs = [copied / p.relative_to(data["root"]) for p in data["inputs"]]
    out = tmp_path / "out"
    assert run_cli("scan", *inputs, "--out", out, "-q", home=home).exit_code == 0
    before = snapshot(out)
    # a round that changes every shard's decisions (a round that changes none copies nothing)
    keep_all = tmp_path / "keep-all.toml"
    keep_all.write_text(
        'name = "keep-all"\n[match]\ndefault = "keep"\n'
        '[unchecked]\nunsupported_media = "keep"\nunreadable_row = "keep"\nskipped_optout = "keep"\n'
    )

    def edited(path: Path, offset: int) -> None:
        """One byte of `path` changed, its size and times kept (what `touch -r` restores)."""
        times = (path.stat().st_atime_ns, path.stat().st_mtime_ns)
        data = bytearray(path.read_bytes())
        data[offset] ^= 0x01
        path.write_bytes(bytes(data))
        os.utime(path, ns=times)

    # a table's row is copied by its index: the table is checked whole, by the scan's checksum
    table = copied / "meta.csv"
    where = table.read_bytes().index(b"row 1") + 4
    edited(table, where)
    changed = run_cli("decide", out, "--policy", keep_all, home=home)
    assert changed.exit_code == 3 and str(table) in changed.stderr and "SHA-256 differs" in changed.stderr
    assert "not committed" in changed.stderr and snapshot(out) == before
    edited(table, where)  # back as it was

    # a tar's kept member is copied by its place: checked by size and MD5 as it is copied
    tar = copied / "shards" / "00001.tar"
    with tarfile.open(tar) as archive:
        member = next(m for m in archive if m.name.endswith(".jpg"))
    edited(tar, member.offset_data + 100)
    changed = run_cli("decide", out, "--policy", keep_all, home=home)
    assert changed.exit_code == 3 and member.name in changed.stderr and "MD5 differs" in changed.stderr
    assert snapshot(out) == before
    edited(tar, member.offset_data + 100)

    # times alone are not a change: a copy made without them is decided as the original
    os.utime(tar, ns=(tar.stat().st_atime_ns, tar.stat().st_mtime_ns + 10**9))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    moved = subprocess.run(
        [sys.executable, "-m", "safeset", "--home", str(home), "decide", str(out), "--policy", str(keep_all), "-q"],
        cwd=elsewhere,
        capture_output=True,
        text=True,
    )
    assert moved.returncode == 0, moved.stderr  # and from another folder: the inputs are kept absolute
    os.utime(tar, ns=(tar.stat().st_atime_ns, tar.stat().st_mtime_ns - 10**9))  # as the scan saw it

    # what a round's commit record names must be OUT's own outputs
    victim = tmp_path / "victim.txt"
    victim.write_text("not OUT's")
    record = out / "_state" / "round.commit.json"
    record.write_text(json.dumps({"moves": [], "deletes": [f"../../{victim.name}"]}))
    forged = run_cli("decide", out, home=home)
    assert forged.exit_code == 3 and "not an output of OUT" in forged.stderr and victim.is_file()
    record.unlink()

    # a damaged results part is named, not a traceback
    part = out / "results" / "part-00002.parquet"
    saved = part.read_bytes()
    part.write_bytes(saved[:100])
    damaged = run_cli("decide", out, home=home)
    assert damaged.exit_code == 3 and str(part) in damaged.stderr
    part.write_bytes(saved)

    # an unfinished scan: decided once it is finished
    (out / "_state" / "part-00001.done.json").unlink()
    unfinished = run_cli("decide", out, home=home)
    assert unfinished.exit_code == 2 and "not complete" in unfinished.stderr

    # results an older safeset wrote hold no variants nor places: refused, not misread
    part = out / "results" / "part-00000.parquet"
    table = pq.read_table(part)
    pq.write_table(table.replace_schema_metadata({}), part)
    recorded = (out / "_state" / "run.json").read_bytes()
    older = run_cli("scan", *inputs, "--out", out, "-q", home=home)  # decided otherwise: a round
    assert older.exit_code == 2 and "format 1" in older.stderr
    assert (out / "_state" / "run.json").read_bytes() == recorded  # what OUT was decided with, still
    older = run_cli("decide", out, "--preset", "default", "--pdq-threshold", "20", home=home)
    assert older.exit_code == 2 and "format 1" in older.stderr


def test_every_part_of_a_table_is_checked_before_rows_are_copied_from_it(tmp_path, home):
    """A table read in parts is hashed by its first part; a round that writes a later part checks
    the file against that checksum too."""
    table = tmp_path / "meta.parquet"
    urls = [f"https://a.example/{i:04d}.jpg" for i in range(250)]
    pq.write_table(pa.table({"url": urls}), table, row_group_size=50)
    write_lines(tmp_path / "urls.txt", [urls[10]])
    assert run_cli("bank", "add", "urls", tmp_path / "urls.txt", "--type", "url", home=home).exit_code == 0
    out = tmp_path / "out"
    assert run_cli("scan", table, "--out", out, "--table-rows", "100", "-q", home=home).exit_code == 0
    times = (table.stat().st_atime_ns, table.stat().st_mtime_ns)
    changed = urls[:]
    changed[200] = urls[10]  # the listed URL, in the third part now, the file the same size
    pq.write_table(pa.table({"url": changed}), table, row_group_size=50)
    os.utime(table, ns=times)
    keep_all = tmp_path / "keep.toml"
    keep_all.write_text('[match]\ndefault = "keep"\n')
    before = snapshot(out)
    refused = run_cli("decide", out, "--policy", keep_all, home=home)
    assert refused.exit_code == 3 and "SHA-256 differs" in refused.stderr and str(table) in refused.stderr
    assert snapshot(out) == before


def test_a_decide_killed_at_any_moment_leaves_old_or_new_outputs_and_a_rerun_completes(data, tmp_path, home):
    add_banks(home, data["lists"])
    scan(data, tmp_path / "old", home, *bank_args(FIRST))
    scan(data, tmp_path / "new", home)
    old, new = snapshot(tmp_path / "old"), tmp_path / "new"
    env = {**os.environ, "SAFESET_HOME": str(home)}
    rng = random.Random(11)
    landed = set()
    for attempt in range(8):
        out = tmp_path / f"out{attempt}"
        shutil.copytree(tmp_path / "old", out)
        argv = [sys.executable, "-m", "safeset", "decide", str(out), "-q", *bank_args(BANKS), "--workers", "1"]
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if attempt % 2:  # at a random moment
            time.sleep(rng.uniform(0.2, 1.5))
        else:  # once the round has begun
            deadline = time.monotonic() + 60
            while not (out / "_state" / "round").exists() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.002)
            time.sleep(rng.uniform(0, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        time.sleep(0.3)  # its workers die with it
        committed = (out / "_state" / "round.commit.json").is_file()
        if not committed and not (out / "_state" / "round").exists():
            try:
                same_outputs_snapshot(snapshot(out), old)
                landed.add("before")
            except AssertionError:
                same_outputs(out, new)  # it finished before the kill
                landed.add("after")
        elif committed:
            landed.add("committed")
        else:  # killed while the round was being written: OUT's own outputs untouched
            files = {k: v for k, v in snapshot(out).items() if not k.startswith("_state/round/")}
            same_outputs_snapshot(files, old)
            landed.add("staged")
        decide(out, home, *bank_args(BANKS))
        same_outputs(out, new)
        assert not list(out.rglob("*.partial"))
    assert landed & {"staged", "committed", "before"}, landed


def same_outputs_snapshot(files: dict, expected: dict) -> None:
    assert files == expected


def test_a_round_committed_but_cut_short_is_completed_by_the_next_command(data, tmp_path, home, monkeypatch):
    """The window between a round's commit and its last move: killed there, OUT holds the commit
    record, some files moved and some not; the next command completes the moves."""
    from safeset.pipeline import decide as rounds

    add_banks(home, data["lists"])
    scan(data, tmp_path / "new", home)
    for cut in (0, 5, 12, 18):  # of some 25 moves
        out = tmp_path / f"out{cut}"
        scan(data, out, home, *bank_args(FIRST))
        real, moved = os.replace, []

        def dying(source, target, real=real, moved=moved, cut=cut):
            if len(moved) == cut:
                raise KeyboardInterrupt  # as a kill would stop it: mid-way
            moved.append(target)
            real(source, target)

        monkeypatch.setattr(rounds, "os", SimpleNamespace(replace=dying))  # the round's moves only
        with pytest.raises(KeyboardInterrupt):
            safeset.decide(out, banks=list(BANKS), home=str(home))
        monkeypatch.setattr(rounds, "os", os)
        assert (out / "_state" / "round.commit.json").is_file()
        run_cli("report", out)  # a command that does not decide leaves the round as it is
        safeset.decide(out, banks=list(BANKS), home=str(home))  # completes it, then decides (to the same)
        same_outputs(out, tmp_path / "new")
        assert len(read_json(out / "report.json")["rounds"]) == 3


def test_a_shard_is_decided_without_reading_an_image(data, tmp_path, home, monkeypatch):
    """The shard worker of a round, run here with every way to decode an image refused. Decided
    as before, a shard's files are OUT's own, linked; decided otherwise (another policy), its kept
    rows are copied by their stored places, into what a scan with that policy writes."""
    from safeset.pipeline.decide import decide_shard

    add_banks(home, data["lists"])
    strict = Policy.preset("strict")
    scan(data, tmp_path / "default", home)  # every bank: what `shard_tasks` plans with
    scan(data, tmp_path / "strict", home, "--preset", "strict")

    def refuse(*args, **kwargs):
        raise AssertionError("an image was decoded in a decide round")

    monkeypatch.setattr(Image, "open", refuse)
    monkeypatch.setattr(Image.Image, "load", refuse)
    for policy, expected, staged in ((None, "default", "same"), (strict, "strict", "other")):
        staged = tmp_path / staged
        for task in shard_tasks(home, data["inputs"], tmp_path / "default"):
            spec = replace(task.spec, policy=policy or task.spec.policy)
            decide_shard(replace(task, spec=spec, round=str(staged)))  # an attempt whose worker then died ...
            summary = decide_shard(replace(task, spec=spec, round=str(staged)))  # ... leaves the retry its files
            assert policy is not None or summary["transitions"] == {}
            for rel in summary["clean"]:
                written, wanted = staged / "clean" / rel, tmp_path / expected / "clean" / rel
                assert written.read_bytes() == wanted.read_bytes(), rel
                # a shard decided as before is linked, not written again
                assert written.samefile(tmp_path / "default" / "clean" / rel) == (not summary["transitions"])
            new, old = (OutLayout(root).part(task.part) for root in (staged, tmp_path / expected))
            assert new.read_bytes() == old.read_bytes()


def test_the_python_api_decides_too(data, tmp_path, home):
    add_banks(home, data["lists"])
    out = tmp_path / "out"
    safeset.scan(data["inputs"], out, banks=list(FIRST), home=str(home))
    report = safeset.decide(out, banks=list(BANKS), policy="default", home=str(home))
    assert report["rounds"][-1]["kind"] == "decide"
    assert OutLayout(out).removed.is_file()
    assert json.loads((out / "_state" / "run.json").read_text())["banks"][0][0] == "b-domain"
