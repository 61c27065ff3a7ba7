"""End to end on real webdataset shards: what is removed, what the clean release holds, conservation,
identical output whatever the worker count, resume after SIGKILL, and zero view."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from helpers import make_shards, read_json, run_cli, samples_from, snapshot, write_lines
from PIL import Image

import safeset
from safeset.demo import Sample, jpeg

LISTED_EXACT = 3  # tile indexes used as "known bad" stand-ins
LISTED_RESIZED = 11


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, tiles):
    """Two img2dataset shards of benign tiles, with an exact copy of one listed tile, a resized copy
    of another, a URL-listed row, a failed download, and a sample with no image member."""
    root = tmp_path_factory.mktemp("dataset")
    pool = samples_from(tiles[20:60])
    exact_name, exact_image = tiles[LISTED_EXACT]
    resized_name, resized_image = tiles[LISTED_RESIZED]
    exact = Sample("https://bad.example.org/exact.jpg", "exact copy", jpeg(exact_image), size=exact_image.size)
    small = resized_image.resize((144, 144), Image.Resampling.LANCZOS)
    resized = Sample("https://mirror.example.net/resized.jpg", "resized copy", jpeg(small, 75), size=small.size)
    failed = Sample("https://gone.example.org/x.jpg", "gone", None, error="HTTP Error 404: Not Found")
    odd = Sample("https://odd.example.org/x.xyz", "odd", b"not an image at all", ext="xyz")
    shard0 = pool[:20] + [exact, failed]
    shard1 = pool[20:] + [resized, odd]
    shards = make_shards(root / "shards", [shard0, shard1])
    lists = root / "lists"
    lists.mkdir()
    write_lines(lists / "md5.txt", [hashlib.md5(exact.image).hexdigest()])
    write_lines(lists / "pdq.txt", [f"pdq {safeset.pdq(exact_image)}", f"pdq {safeset.pdq(resized_image)}"])
    write_lines(lists / "urls.csv", ["url", pool[5].url])
    return {
        "shards": shards,
        "lists": lists,
        "exact": exact,
        "resized": resized,
        "url_listed": pool[5],
        "rows": len(shard0) + len(shard1),
    }


def add_banks(home: Path, lists: Path) -> None:
    for args in (("md5", lists / "md5.txt", "--type", "md5"), ("pdq", lists / "pdq.txt"), ("urls", lists / "urls.csv")):
        result = run_cli("bank", "add", *args, home=home)
        assert result.exit_code == 0, result.output


def tar_members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


def test_scan_removes_listed_images_and_writes_a_clean_release(dataset, tmp_path, home):
    add_banks(home, dataset["lists"])
    out = tmp_path / "out"
    result = run_cli("scan", dataset["shards"], "--out", out, "--workers", "2", "-q", home=home)
    assert result.exit_code == 0, result.output
    assert "report:" in result.stdout

    report = read_json(out / "report.json")
    totals = report["totals"]
    assert totals["rows"] == dataset["rows"]
    assert totals["rows"] == totals["keep"] + totals["remove"] + totals["review"]
    assert report["conservation"]["holds"] is True
    assert totals["remove"] == 3 and totals["review"] == 1  # the sample whose only member is not an image
    assert report["statuses"] == {"no_image": 1, "ok": dataset["rows"] - 2, "unsupported_media": 1}
    assert report["unchecked"]["no_image"] == report["unchecked"]["unsupported_media"] == 1
    assert {b["name"]: b["items_matched"] for b in report["banks"]} == {"md5": 1, "pdq": 2, "urls": 1}
    assert [Path(f["path"]).name for f in report["inputs"]] == [
        "00000.parquet",
        "00000.tar",
        "00000_stats.json",
        "00001.parquet",
        "00001.tar",
        "00001_stats.json",
    ]
    tar0 = report["inputs"][1]
    assert tar0["sha256"] == hashlib.sha256(Path(tar0["path"]).read_bytes()).hexdigest()

    results = pq.read_table(out / "results").to_pylist()
    assert len(results) == dataset["rows"]
    by_url = {r["url"]: r for r in results}
    exact = by_url[dataset["exact"].url]
    assert exact["decision"] == "remove"
    assert [(m["bank"], m["signal_type"], m["variant"]) for m in exact["matches"]] == [
        ("md5", "md5", ""),
        ("pdq", "pdq", ""),
    ]
    # the list holds the PDQ of the pixels; the scan hashed the JPEG's bytes: a few bits apart at most
    assert exact["matches"][0]["distance"] == 0 and exact["matches"][1]["distance"] <= 4
    resized = by_url[dataset["resized"].url]
    assert resized["decision"] == "remove" and resized["md5"] != exact["md5"]
    assert [(m["bank"], m["signal_type"]) for m in resized["matches"]] == [("pdq", "pdq")]
    assert 0 < resized["matches"][0]["distance"] <= 31
    assert by_url[dataset["url_listed"].url]["reasons"] == ["match:urls:url"]
    assert (
        by_url["https://gone.example.org/x.jpg"]["error"] == "img2dataset failed_to_download: HTTP Error 404: Not Found"
    )
    odd = by_url["https://odd.example.org/x.xyz"]
    assert (odd["status"], odd["error"], odd["decision"]) == ("unsupported_media", "text", "review")
    assert odd["md5"] == hashlib.md5(b"not an image at all").hexdigest()  # hashed all the same

    removed = pq.read_table(out / "removed.parquet").to_pylist()
    assert sorted(r["url"] for r in removed) == sorted(
        [dataset["exact"].url, dataset["resized"].url, dataset["url_listed"].url]
    )
    assert pq.read_table(out / "review.parquet").to_pylist()[0]["url"] == "https://odd.example.org/x.xyz"
    evidence = [json.loads(line) for line in (out / "evidence.jsonl").read_text().splitlines()]
    assert {(e["url"], e["bank"]) for e in evidence} == {
        (dataset["exact"].url, "md5"),
        (dataset["exact"].url, "pdq"),
        (dataset["resized"].url, "pdq"),
        (dataset["url_listed"].url, "urls"),
    }
    assert all(set(e) >= {"url", "md5", "sha1", "pdq", "bank", "entry", "time"} for e in evidence)

    # The clean release: same layout, kept samples byte-identical, removed and held ones absent.
    removed_keys = {r["key"] for r in removed} | {r["key"] for r in results if r["decision"] == "review"}
    for shard in ("00000", "00001"):
        original = tar_members(dataset["shards"] / f"{shard}.tar")
        clean = tar_members(out / "clean" / "shards" / f"{shard}.tar")
        expected = {name: data for name, data in original.items() if name.split(".")[0] not in removed_keys}
        assert clean == expected
        rows = pq.read_table(dataset["shards"] / f"{shard}.parquet").to_pylist()
        clean_rows = pq.read_table(out / "clean" / "shards" / f"{shard}.parquet").to_pylist()
        assert clean_rows == [r for r in rows if r["key"] not in removed_keys]

    assert (out / "report.html").read_text().count("<table") >= 5


def test_output_is_identical_whatever_the_worker_count(dataset, tmp_path, home):
    add_banks(home, dataset["lists"])
    one = safeset.scan(dataset["shards"], tmp_path / "one", workers=1, home=str(home))
    two = safeset.scan(dataset["shards"], tmp_path / "two", workers=2, home=str(home))
    assert one["totals"] == two["totals"]
    assert snapshot(tmp_path / "one") == snapshot(tmp_path / "two")


def test_a_rerun_resumes_and_a_different_scan_is_refused(dataset, tmp_path, home):
    add_banks(home, dataset["lists"])
    out = tmp_path / "out"
    first = safeset.scan(dataset["shards"], out, workers=1, home=str(home))
    again = safeset.scan(dataset["shards"], out, workers=1, home=str(home))
    assert again["timings"]["shards_resumed"] == 2 and again["timings"]["shards_run"] == 0
    assert again["totals"] == first["totals"]
    refused = run_cli("scan", dataset["shards"], "--out", out, "--pdq-variants", "none", "-q", home=home)
    assert refused.exit_code == 2 and "different settings" in refused.stderr
    # a threshold of matching only: decided again from what the scan stored (see test_decide.py)
    tighter = run_cli("scan", dataset["shards"], "--out", out, "--pdq-threshold", "0", "-q", home=home)
    assert tighter.exit_code == 0, tighter.output
    assert read_json(out / "report.json")["rounds"][-1]["match"]["pdq_threshold"] == 0


def _cli(*args: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "safeset", *args], env=env, stdout=subprocess.DEVNULL)


def _finish(proc: subprocess.Popen) -> int:
    proc.wait()
    return proc.returncode


def test_resume_after_sigkill_gives_the_same_outputs(tiles, tmp_path, home):
    samples = samples_from(tiles)
    shards = make_shards(tmp_path / "shards", [samples[i::16] for i in range(16)])
    listed = tmp_path / "pdq.txt"
    write_lines(listed, [f"pdq {safeset.pdq(image)}" for _, image in tiles[::25]])
    assert run_cli("bank", "add", "pdq", listed, home=home).exit_code == 0
    env = {**os.environ, "SAFESET_HOME": str(home)}

    killed = tmp_path / "killed"
    proc = _cli("scan", str(shards), "--out", str(killed), "--workers", "1", "-q", env=env)
    deadline = time.monotonic() + 120
    while not list((killed / "_state").glob("part-*.done.json")) and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_at_kill = len(list((killed / "_state").glob("part-*.done.json")))
    assert 1 <= done_at_kill < 16, "the kill must land mid-run"
    time.sleep(0.5)  # the worker dies with its parent (PR_SET_PDEATHSIG); give it a moment
    assert len(list((killed / "_state").glob("part-*.done.json"))) < 16

    rerun = _cli("scan", str(shards), "--out", str(killed), "--workers", "2", "-q", env=env)
    assert _finish(rerun) == 0
    report = read_json(killed / "report.json")
    assert report["timings"]["shards_resumed"] >= done_at_kill
    assert not list(killed.rglob("*.partial"))

    clean_run = tmp_path / "clean_run"
    straight = _cli("scan", str(shards), "--out", str(clean_run), "--workers", "2", "-q", env=env)
    assert _finish(straight) == 0
    assert snapshot(killed) == snapshot(clean_run)


def test_zero_view_flagged_bytes_are_nowhere(tiles, tmp_path, home):
    """Plant listed images, scan in a subprocess with its own TMPDIR, then search every file it
    could have written, and its output, for their bytes."""
    planted_images = [tiles[40][1], tiles[90][1]]
    planted = [jpeg(image, 93) for image in planted_images]
    kept_sample = samples_from(tiles[100:101])[0]
    samples = samples_from(tiles[101:120]) + [kept_sample]
    samples += [Sample(f"https://bad.example.org/{i}.jpg", "x", data) for i, data in enumerate(planted)]
    shards = make_shards(tmp_path / "shards", [samples[:11], samples[11:]])
    write_lines(tmp_path / "md5.txt", [hashlib.md5(planted[0]).hexdigest()])
    write_lines(tmp_path / "pdq.txt", [f"pdq {safeset.pdq(planted_images[1])}"])
    assert run_cli("bank", "add", "md5", tmp_path / "md5.txt", "--type", "md5", home=home).exit_code == 0
    assert run_cli("bank", "add", "pdq", tmp_path / "pdq.txt", home=home).exit_code == 0

    scratch = tmp_path / "tmpdir"
    scratch.mkdir()
    out = tmp_path / "out"
    env = {**os.environ, "SAFESET_HOME": str(home), "TMPDIR": str(scratch)}
    proc = subprocess.run(
        [sys.executable, "-m", "safeset", "scan", str(shards), "--out", str(out), "--workers", "2"],
        env=env,
        capture_output=True,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert read_json(out / "report.json")["totals"]["remove"] == 2

    def windows(data: bytes) -> list[bytes]:
        # the whole file, and 64-byte windows from the start, middle and end of its entropy-coded data
        return [data] + [data[i : i + 64] for i in (len(data) // 3, len(data) // 2, len(data) - 80)]

    written = [p for p in [*out.rglob("*"), *scratch.rglob("*"), *home.rglob("*")] if p.is_file()]
    blobs = [(str(p), p.read_bytes()) for p in written] + [("stdout", proc.stdout), ("stderr", proc.stderr)]
    for data in planted:
        for needle in windows(data):
            assert not [name for name, blob in blobs if needle in blob]
    # the search does find bytes that were meant to be written: a kept image sits in the clean tar
    clean = b"".join(blob for name, blob in blobs if "/clean/" in name)
    assert all(needle in clean for needle in windows(kept_sample.image))


def test_truncated_and_unreadable_shards(dataset, tmp_path, home):
    add_banks(home, dataset["lists"])
    broken = tmp_path / "broken"
    broken.mkdir()
    whole = (dataset["shards"] / "00000.tar").read_bytes()
    (broken / "00000.tar").write_bytes(whole[: len(whole) // 2])
    (broken / "00000.parquet").write_bytes((dataset["shards"] / "00000.parquet").read_bytes())
    out = tmp_path / "out"
    result = run_cli("scan", broken, "--out", out, "-q", home=home)
    assert result.exit_code == 0, result.output
    report = read_json(out / "report.json")
    rows = pq.read_table(dataset["shards"] / "00000.parquet").num_rows
    assert report["totals"]["rows"] == rows  # every parquet row is accounted for
    assert report["statuses"]["ok"] > 0 and report["statuses"]["no_image"] > 1
    assert any("00000.tar: tar ends inside a member after" in p for p in report["problems"])
    cut = [r for r in pq.read_table(out / "results").to_pylist() if r["status"] == "decode_failed"]
    assert [r["error"] for r in cut] == ["truncated"]  # the member the archive ends in, recorded as such
    with tarfile.open(out / "clean" / "broken" / "00000.tar") as clean:  # whole members only
        assert all(len(clean.extractfile(m).read()) == m.size for m in clean.getmembers())
    assert "1 input problem(s) recorded" in result.stdout

    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(b"this is not a tar archive" * 100)
    bad = run_cli("scan", garbage, "--out", tmp_path / "out2", "-q", home=home)
    assert bad.exit_code == 3
    assert f"{garbage}: not a readable tar archive" in bad.stderr

    not_parquet = tmp_path / "table.parquet"
    not_parquet.write_bytes(b"PAR1 nonsense")
    bad = run_cli("scan", not_parquet, "--out", tmp_path / "out3", "-q", home=home)
    assert bad.exit_code == 3 and f"{not_parquet}: not a readable parquet file" in bad.stderr

    unknown = tmp_path / "notes.docx"
    unknown.write_bytes(b"x")
    bad = run_cli("scan", unknown, "--out", tmp_path / "out4", "-q", home=home)
    assert bad.exit_code == 3 and "cannot tell what kind of input" in bad.stderr


def test_tar_without_parquet_is_read_alone(tiles, tmp_path, home):
    make_shards(tmp_path / "s", [samples_from(tiles[:6])])
    (tmp_path / "s" / "00000.parquet").unlink()
    report = safeset.scan(tmp_path / "s", tmp_path / "out", home=str(home), workers=1)
    assert report["totals"]["rows"] == 6 and report["statuses"] == {"ok": 6}
    results = pq.read_table(tmp_path / "out" / "results").to_pylist()
    assert [r["key"] for r in results] == [f"00000{i:04d}" for i in range(6)]
    assert results[0]["url"] == f"https://img.example.org/{tiles[0][0]}.jpg"  # from KEY.json


def test_variants_catch_flipped_and_padded_copies(tiles, tmp_path, home):
    listed = tiles[33][1]
    flipped = listed.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    padded = Image.new("RGB", (listed.width + 60, listed.height + 60), (0, 0, 0))
    padded.paste(listed, (30, 30))
    samples = samples_from(tiles[60:66]) + [
        Sample("https://a.example/flipped.jpg", "flipped", jpeg(flipped)),
        Sample("https://a.example/padded.jpg", "padded", jpeg(padded)),
    ]
    make_shards(tmp_path / "shards", [samples])
    write_lines(tmp_path / "pdq.txt", [f"pdq {safeset.pdq(listed)}"])
    assert run_cli("bank", "add", "pdq", tmp_path / "pdq.txt", home=home).exit_code == 0

    def removed(*options: str) -> dict[str, str]:
        out = tmp_path / ("out" + "".join(options).replace("-", "_"))
        assert run_cli("scan", tmp_path / "shards", "--out", out, "-q", *options, home=home).exit_code == 0
        rows = pq.read_table(out / "removed.parquet").to_pylist()
        return {r["url"].rsplit("/", 1)[1]: r["matches"][0]["variant"] for r in rows}

    # the 192-px tiles are small: their upscale ("up") is nearer the listed original than they are
    assert removed() == {"flipped.jpg": "up+flip_h", "padded.jpg": "trim"}
    assert removed("--pdq-variants", "dihedral") == {"flipped.jpg": "flip_h"}
    assert removed("--pdq-variants", "none") == {}
    # variants held to distance 0: the flipped copy (a few bits off) no longer matches
    assert "flipped.jpg" not in removed("--pdq-variant-threshold", "0")


def test_clean_tar_holds_the_kept_members_whole(dataset, tmp_path, home):
    add_banks(home, dataset["lists"])
    out = tmp_path / "out"
    safeset.scan(dataset["shards"], out, workers=1, home=str(home))
    removed = {r["key"] for r in pq.read_table(out / "removed.parquet").to_pylist()}
    assert removed

    def members(path: Path) -> list[tuple]:
        with tarfile.open(path) as tar:
            return [(m.name, m.mode, m.mtime, tar.extractfile(m).read()) for m in tar.getmembers()]

    kept = [m for m in members(dataset["shards"] / "00000.tar") if m[0].split(".")[0] not in removed]
    clean = out / "clean" / "shards" / "00000.tar"
    assert members(clean) == kept
    # GNU tar reads the same members, and the archive ends as tar writes one: zeros to a whole record
    listing = subprocess.run(["tar", "-tf", clean], capture_output=True, text=True, check=True).stdout
    assert listing.split() == [m[0] for m in kept]
    assert clean.stat().st_size % tarfile.RECORDSIZE == 0


def test_gzipped_tar_shards(tiles, tmp_path, home):
    make_shards(tmp_path / "plain", [samples_from(tiles[:5])])
    (tmp_path / "gz").mkdir()
    with open(tmp_path / "plain" / "00000.tar", "rb") as src, gzip.open(tmp_path / "gz" / "00000.tar.gz", "wb") as dst:
        dst.write(src.read())
    (tmp_path / "gz" / "00000.parquet").write_bytes((tmp_path / "plain" / "00000.parquet").read_bytes())
    write_lines(tmp_path / "md5.txt", [hashlib.md5(jpeg(tiles[2][1])).hexdigest()])
    assert run_cli("bank", "add", "md5", tmp_path / "md5.txt", "--type", "md5", home=home).exit_code == 0
    report = safeset.scan(tmp_path / "gz", tmp_path / "out", workers=1, home=str(home))
    assert report["totals"]["rows"] == 5 and report["totals"]["remove"] == 1
    with tarfile.open(tmp_path / "out" / "clean" / "gz" / "00000.tar.gz") as tar:
        assert len({m.name.split(".")[0] for m in tar.getmembers()}) == 4


def test_outputs_do_not_depend_on_the_order_banks_are_named_in(dataset, tmp_path, home):
    add_banks(home, dataset["lists"])
    one = tmp_path / "one"
    two = tmp_path / "two"
    assert (
        run_cli(
            "scan", dataset["shards"], "--out", one, "--bank", "urls", "--bank", "md5", "--bank", "pdq", "-q", home=home
        ).exit_code
        == 0
    )
    assert (
        run_cli(
            "scan", dataset["shards"], "--out", two, "--bank", "pdq", "--bank", "md5", "--bank", "urls", "-q", home=home
        ).exit_code
        == 0
    )
    assert snapshot(one) == snapshot(two)


def test_a_scan_of_a_folder_and_a_table_together(tiles, tmp_path, home):
    """An image folder beside a metadata table whose shard is all kept: every run of this crashed in
    the manifest writer (KeyError: 'Field "shard"'), and no report was ever written."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        (photos / f"{i}.jpg").write_bytes(jpeg(tiles[i][1]))
    write_lines(tmp_path / "meta.csv", ["url,caption", "https://a.example/1.jpg,one"])
    report = safeset.scan([photos, tmp_path / "meta.csv"], tmp_path / "out", home=str(home), workers=1)
    assert report["totals"]["rows"] == 4 and report["totals"]["keep"] == 4


def test_conservation_can_fail_and_then_says_so(dataset, tmp_path, home):
    """Conservation is computed from figures that could disagree (rows the inputs declare, rows the
    results files hold, the decisions in them), not asserted: a results part that lost a row
    behind a done-marker's back makes the rerun write a report that says FAILS, and exit 1."""
    add_banks(home, dataset["lists"])
    out = tmp_path / "out"
    assert run_cli("scan", dataset["shards"], "--out", out, "-q", home=home).exit_code == 0
    assert read_json(out / "report.json")["conservation"]["holds"] is True
    part = out / "results" / "part-00001.parquet"
    table = pq.read_table(part)
    pq.write_table(table.slice(0, table.num_rows - 1), part)
    rerun = run_cli("scan", dataset["shards"], "--out", out, "-q", home=home)
    assert rerun.exit_code == 1 and "rows in != keep + remove + review" in rerun.stderr
    conservation = read_json(out / "report.json")["conservation"]
    assert conservation["holds"] is False and conservation["rows_in"] == dataset["rows"]
    assert conservation["failures"] == [{"shard": "shards/00001.tar", "declared": 22, "results": 21, "decided": 22}]
    assert "Conservation FAILS" in (out / "report.html").read_text()


def test_out_is_never_someone_elses_folder(dataset, tmp_path, home):
    """A scan writes into, and deletes from, only what it made: --out naming a file, a folder of
    other files, or a read-only place is a usage error; a rerun deletes only its own leftovers."""
    add_banks(home, dataset["lists"])
    a_file = tmp_path / "out.txt"
    a_file.write_text("mine")
    assert run_cli("scan", dataset["shards"], "--out", a_file, "-q", home=home).exit_code == 2
    theirs = tmp_path / "theirs"
    (theirs / "work").mkdir(parents=True)
    (theirs / "work" / "draft.partial").write_text("an unfinished file of the user's")
    refused = run_cli("scan", dataset["shards"], "--out", theirs, "-q", home=home)
    assert refused.exit_code == 2 and "not a safeset scan's" in refused.stderr
    assert (theirs / "work" / "draft.partial").read_text() == "an unfinished file of the user's"
    (theirs / "work").rename(theirs / "clean")  # a folder of theirs called as a scan's is not one
    refused = run_cli("scan", dataset["shards"], "--out", theirs, "-q", home=home)
    assert refused.exit_code == 2 and "not a safeset scan's" in refused.stderr
    assert (theirs / "clean" / "draft.partial").is_file()

    # OUT inside an input, or an input inside OUT: a scan would read its own outputs
    inside = run_cli("scan", dataset["shards"], "--out", dataset["shards"] / "out", "-q", home=home)
    assert inside.exit_code == 2 and "is inside the input" in inside.stderr
    assert not (dataset["shards"] / "out").exists()
    around = run_cli("scan", dataset["shards"], "--out", dataset["shards"].parent, "-q", home=home)
    assert around.exit_code == 2 and "is inside --out" in around.stderr

    out = tmp_path / "out"
    assert run_cli("scan", dataset["shards"], "--out", out, "-q", home=home).exit_code == 0
    (out / "notes").mkdir()
    (out / "notes" / "draft.partial").write_text("the user's, inside OUT")
    (out / "results" / "part-00000.parquet.partial").write_bytes(b"left by a killed run")
    assert run_cli("scan", dataset["shards"], "--out", out, "-q", home=home).exit_code == 0
    assert (out / "notes" / "draft.partial").is_file() and not (out / "results" / "part-00000.parquet.partial").exists()


def test_the_demo_replaces_only_a_demo(tmp_path):
    from safeset.demo import build_demo_dataset
    from safeset.errors import UsageError

    precious = tmp_path / "photos"
    precious.mkdir()
    (precious / "holiday.jpg").write_bytes(b"not to be deleted")
    with pytest.raises(UsageError, match="not a safeset demo"):
        build_demo_dataset(precious)
    assert (precious / "holiday.jpg").read_bytes() == b"not to be deleted"
    demo = tmp_path / "demo"
    build_demo_dataset(demo)
    (demo / "lists" / "old.txt").write_text("replaced with the rest")
    build_demo_dataset(demo)  # a demo folder is the demo's to replace
    assert not (demo / "lists" / "old.txt").exists() and (demo / "lists" / "demo-md5.txt").is_file()


@pytest.fixture
def small_filesystem(tmp_path):
    """A 2 MiB tmpfs mounted for the test (root only), to fill up or to make read-only."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def test_a_full_disk_is_a_clear_error_and_the_rerun_resumes(tiles, tmp_path, home, small_filesystem):
    samples = samples_from(tiles)
    shards = make_shards(tmp_path / "shards", [samples[i::8] for i in range(8)])  # ~2.5 MB of clean tars
    write_lines(tmp_path / "md5.txt", ["0" * 32])
    assert run_cli("bank", "add", "md5", tmp_path / "md5.txt", "--type", "md5", home=home).exit_code == 0
    out = small_filesystem / "out"
    env = {**os.environ, "SAFESET_HOME": str(home)}
    full = subprocess.run(
        [sys.executable, "-m", "safeset", "scan", str(shards), "--out", str(out), "--workers", "1", "-q"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert full.returncode == 1 and "No space left on device" in full.stderr and "Traceback" not in full.stderr
    done = len(list((out / "_state").glob("part-*.done.json")))
    assert 0 < done < 8
    subprocess.run(["mount", "-o", "remount,size=16m", str(small_filesystem)], check=True)
    again = subprocess.run(
        [sys.executable, "-m", "safeset", "scan", str(shards), "--out", str(out), "-q"], env=env, capture_output=True
    )
    assert again.returncode == 0 and read_json(out / "report.json")["timings"]["shards_resumed"] == done


def test_a_read_only_out_is_a_usage_error(dataset, tmp_path, home, small_filesystem):
    add_banks(home, dataset["lists"])
    subprocess.run(["mount", "-o", "remount,ro", str(small_filesystem)], check=True)
    result = run_cli("scan", dataset["shards"], "--out", small_filesystem / "out", "-q", home=home)
    assert result.exit_code == 2 and "cannot write there (Read-only file system)" in result.stderr


def test_a_shards_clean_files_appear_together_or_not_at_all(tmp_path):
    """A shard's clean files are committed only once every check of the shard has passed: a check
    that fails after a file was finished leaves neither the file nor its partial behind."""
    from safeset.atomic import atomic_writer, commit_together

    with pytest.raises(RuntimeError), commit_together():
        for name in ("a.tar", "a.parquet"):
            with atomic_writer(tmp_path / name) as fh:
                fh.write(b"data")
        assert not list(tmp_path.iterdir()) or all(p.name.endswith(".partial") for p in tmp_path.iterdir())
        raise RuntimeError("rows in != out")
    assert list(tmp_path.iterdir()) == []
    with commit_together():
        with atomic_writer(tmp_path / "a.tar") as fh:
            fh.write(b"data")
    assert [p.name for p in tmp_path.iterdir()] == ["a.tar"]
