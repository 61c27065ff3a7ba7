"""`safeset diff`: decisions that changed between two audits; rows between two releases."""

from __future__ import annotations

import csv
import io
import json
import shutil
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import make_shards, run_cli, samples_from, write_lines

import safeset


def test_two_audits_differ_by_the_rows_a_new_list_removes(tmp_path, home, tiles):
    samples = samples_from(tiles[:10])
    data = make_shards(tmp_path / "shards", [samples[:5], samples[5:]])
    store = safeset.BankStore(home)
    store.add("old", write_lines(tmp_path / "a.txt", [samples[0].url]), type_name="url")
    store.add("new", write_lines(tmp_path / "b.txt", [samples[0].url, samples[7].url]), type_name="url")
    safeset.scan(data, tmp_path / "before", banks=["old"], workers=1, home=str(home))
    safeset.scan(data, tmp_path / "after", banks=["new"], workers=1, home=str(home))
    result = run_cli("diff", str(tmp_path / "before"), str(tmp_path / "after"), "--to", str(tmp_path / "d"), "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["changed"] == 1 and summary["only_in_a"] == summary["only_in_b"] == 0
    assert summary["transitions"] == {"keep->remove": {"match:new:url": 1}}
    [changed] = pq.read_table(tmp_path / "d" / "changed.parquet").to_pylist()
    assert changed["url"] == samples[7].url and (changed["decision_a"], changed["decision_b"]) == ("keep", "remove")


def test_two_releases_differ_by_url_and_caption_or_a_key(tmp_path):
    old = tmp_path / "old.parquet"
    rows = [(f"https://x.org/{i}.jpg", f"caption {i}", i) for i in range(5000)]
    pq.write_table(
        pa.table({"URL": [r[0] for r in rows], "TEXT": [r[1] for r in rows], "id": [r[2] for r in rows]}), old
    )
    new = tmp_path / "new.csv"
    with open(new, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["url", "caption", "id"])
        for url, caption, i in rows:
            if i % 500:  # ten rows gone
                writer.writerow([url, "edited" if i == 7 else caption, i])
        writer.writerow(["https://x.org/new.jpg", "new", 9999])
    result = run_cli("diff", str(old), str(new), "--to", str(tmp_path / "d"), "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["only_in_a"], summary["only_in_b"]) == (11, 2)
    gone = pq.read_table(tmp_path / "d" / "only_in_a.parquet")["id"].to_pylist()
    assert gone == [0, 7, 500, 1000, 1500, 2000, 2500, 3000, 3500, 4000, 4500]
    by_key = run_cli("diff", str(old), str(new), "--key", "id", "--json")
    assert (json.loads(by_key.stdout)["only_in_a"], json.loads(by_key.stdout)["only_in_b"]) == (10, 1)
    result = run_cli("diff", str(old), str(tmp_path / "nowhere.txt"))
    assert result.exit_code == 3


def test_sync_against_a_release_safeset_wrote(tmp_path, home, tiles):
    """The new release is the clean table of a safeset audit of the old metadata: a copy of the
    old release, synced against it, loses the rows the audit removed."""
    samples = samples_from(tiles[:10])
    copy = make_shards(tmp_path / "copy", [samples[:5], samples[5:]])
    metadata = tmp_path / "release.parquet"
    pq.write_table(pa.table({"url": [s.url for s in samples], "caption": [s.caption for s in samples]}), metadata)
    safeset.BankStore(home).add(
        "urls", write_lines(tmp_path / "u.txt", [samples[2].url, samples[8].url]), type_name="url"
    )
    safeset.scan(metadata, tmp_path / "audit", workers=1, home=str(home))
    [release] = sorted((tmp_path / "audit" / "clean").rglob("*.parquet"))
    result = run_cli("sync", str(copy), "--release", str(release), "--out", str(tmp_path / "clean"), "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["kept"] == 8
    kept = {r["url"] for p in (tmp_path / "clean").glob("*.parquet") for r in pq.read_table(p).to_pylist()}
    assert kept == {s.url for s in samples} - {samples[2].url, samples[8].url}

    result = run_cli("sync", str(copy), "--release", str(release), "--out", str(tmp_path / "clean"))
    assert result.exit_code == 2 and "not empty" in result.stderr
    (tmp_path / "lonely").mkdir()
    pq.write_table(pa.table({"url": ["x"]}), tmp_path / "lonely" / "00000.parquet")
    result = run_cli("sync", str(tmp_path / "lonely"), "--release", str(release), "--out", str(tmp_path / "c2"))
    assert result.exit_code == 3 and "00000.tar" in result.stderr


def test_sync_of_shards_that_differ_in_their_columns(tmp_path, tiles):
    """A shard without a caption column: every shard and the release compare by URL alone, so
    none of its rows is lost (review of issue 14); a tar without its parquet is refused."""
    samples = samples_from(tiles[:6])
    copy = make_shards(tmp_path / "copy", [samples[:3], samples[3:]])
    second = pq.read_table(copy / "00001.parquet")
    pq.write_table(second.drop(["caption"]), copy / "00001.parquet")
    release = tmp_path / "release.parquet"
    pq.write_table(pa.table({"url": [s.url for s in samples], "caption": [s.caption for s in samples]}), release)
    result = run_cli("sync", str(copy), "--release", str(release), "--out", str(tmp_path / "clean"), "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["kept"] == 6
    scanned = run_cli("scan", str(tmp_path / "clean"), "--out", str(tmp_path / "audit"), "-q")
    assert scanned.exit_code == 0, scanned.stderr  # the stats file beside the shards is no data
    (copy / "00001.parquet").unlink()
    result = run_cli("sync", str(copy), "--release", str(release), "--out", str(tmp_path / "clean2"))
    assert result.exit_code == 3 and "00001.tar" in result.stderr


def test_rounds_of_one_audit_compose_and_a_row_changed_back_is_no_change(tmp_path, home, tiles):
    """Each decide round keeps the rows it changed: `diff OUT` is what the last round did,
    `--rounds 1..3` the rounds between composed (a row removed, then kept again, is no change)."""
    samples = samples_from(tiles[:10])
    data = make_shards(tmp_path / "shards", [samples[:5], samples[5:]])
    store = safeset.BankStore(home)
    store.add("old", write_lines(tmp_path / "a.txt", [samples[0].url]), type_name="url")
    store.add("new", write_lines(tmp_path / "b.txt", [samples[7].url, samples[2].url]), type_name="url")
    out = tmp_path / "out"
    safeset.scan(data, out, banks=["old"], workers=1, home=str(home))
    safeset.decide(out, banks=["old", "new"], workers=1, home=str(home))  # round 2: two more removed
    store.add("newer", write_lines(tmp_path / "c.txt", [samples[7].url]), type_name="url")
    safeset.decide(out, banks=["old", "newer"], workers=1, home=str(home))  # round 3: one kept again

    def summary(*args):
        result = run_cli("diff", str(out), *args, "--json", home=home)
        assert result.exit_code == 0, result.stderr
        return json.loads(result.stdout)

    assert summary()["transitions"] == {"remove->keep": {"match:new:url": 1}}
    assert summary("--rounds", "2")["transitions"] == {"keep->remove": {"match:new:url": 2}}
    whole = summary("--rounds", "1..", "--to", str(tmp_path / "d"))
    assert (whole["from_round"], whole["to_round"], whole["changed"]) == (1, 3, 1)
    assert whole["transitions"] == {"keep->remove": {"match:newer:url": 1}}
    [row] = pq.read_table(tmp_path / "d" / "changed.parquet").to_pylist()
    assert row["url"] == samples[7].url and row["reasons_a"] == [] and row["reasons_b"] == ["match:newer:url"]
    assert summary("--rounds", "2..2")["changed"] == 0

    assert summary("--rounds", "1")["changed"] == 0  # the scan's round changed nothing
    assert summary("--rounds", "2")["rows_by_transition"] == {"keep->remove": 2}
    result = run_cli("diff", str(out), "--to", str(tmp_path / "d"), home=home)  # not over an earlier diff
    assert result.exit_code == 2 and "not an empty folder" in result.stderr
    for bad in ("4", "3..2", "x"):
        result = run_cli("diff", str(out), "--rounds", bad, home=home)
        assert result.exit_code == 2 and ("rounds 1 to 3" in result.stderr or "FIRST..LAST" in result.stderr)
    shutil.rmtree(out / "_state" / "rounds" / "round-002")  # as an older safeset left it
    result = run_cli("diff", str(out), "--rounds", "1..3", home=home)
    assert result.exit_code == 2 and "round 2" in result.stderr and "kept no record" in result.stderr


@pytest.mark.parametrize("tar_format", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT])
def test_sync_reads_tars_in_every_format_and_refuses_broken_ones(tmp_path, tiles, tar_format):
    """Sync parses tar headers itself (tarfile is too slow for 30,000 members a shard): long and
    non-ASCII names by GNU and PAX headers, ustar prefixes, directories and links passed over;
    a member cut short, a header cut short or a wrong checksum refuses the shard, naming it."""
    samples = samples_from(tiles[:4])
    long_key = "k" * 90 + "é" * 30  # past ustar's 100 bytes: a GNU or PAX name, or a ustar prefix
    keys = ["0000", long_key if tar_format != tarfile.USTAR_FORMAT else "p" * 120, "0002", "0003"]
    copy = tmp_path / "copy"
    copy.mkdir()
    with tarfile.open(copy / "00000.tar", "w", format=tar_format) as tar:
        folder = tarfile.TarInfo("a-folder")
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder)
        link = tarfile.TarInfo("0000.lnk")
        link.type, link.linkname = tarfile.SYMTYPE, "elsewhere"
        tar.addfile(link)
        for key, sample in zip(keys, samples, strict=True):
            name = key if tar_format != tarfile.USTAR_FORMAT or len(key) <= 100 else f"{key[:60]}/{key[60:]}"
            for ext, data in (("jpg", sample.image), ("txt", sample.caption.encode())):
                info = tarfile.TarInfo(f"{name}.{ext}")
                info.size, info.mtime = len(data), 1_600_000_000
                tar.addfile(info, io.BytesIO(data))
    member_keys = [k if tar_format != tarfile.USTAR_FORMAT or len(k) <= 100 else f"{k[:60]}/{k[60:]}" for k in keys]
    pq.write_table(
        pa.table({"url": [s.url for s in samples], "caption": [s.caption for s in samples], "key": member_keys,
                  "status": ["success"] * 4}),
        copy / "00000.parquet",
    )  # fmt: skip
    release = tmp_path / "release.csv"
    write_lines(release, ["url,caption", *(f"{s.url},{s.caption}" for s in samples[1:3])])
    result = run_cli("sync", str(copy), "--release", str(release), "--out", str(tmp_path / "clean"), "--json")
    assert result.exit_code == 0, result.stderr
    with tarfile.open(tmp_path / "clean" / "00000.tar") as tar:
        kept = {m.name: tar.extractfile(m).read() for m in tar}
    expected = {f"{member_keys[i]}.{ext}" for i in (1, 2) for ext in ("jpg", "txt")}
    assert set(kept) == expected and kept[f"{member_keys[1]}.jpg"] == samples[1].image

    whole = (copy / "00000.tar").read_bytes()
    broken = {
        "cut": whole[: len(whole) // 2],
        "header": whole[:700],
        "checksum": whole[:148] + b"0000000\0" + whole[156:],
    }
    for why, data in broken.items():
        (copy / "00000.tar").write_bytes(data)
        result = run_cli("sync", str(copy), "--release", str(release), "--out", str(tmp_path / f"x-{why}"))
        assert result.exit_code == 3 and "00000.tar" in result.stderr, (why, result.stderr)
        assert not list((tmp_path / f"x-{why}").glob("*.tar*")), why


def test_sync_refuses_what_would_keep_every_row_or_lose_an_image(tmp_path, home, tiles):
    """An audit's OUT given as the release (its results list removed rows too), a release folder
    that holds the copy, a JSON-lines release that is not UTF-8, a row img2dataset downloaded
    whose image is gone (its caption and JSON left): each refused, naming what to give instead."""
    samples = samples_from(tiles[:6])
    copy = make_shards(tmp_path / "work" / "copy", [samples])
    safeset.BankStore(home).add("urls", write_lines(tmp_path / "u.txt", [samples[1].url]), type_name="url")
    safeset.scan(copy, tmp_path / "audit", workers=1, home=str(home))

    def sync(release, out="clean"):
        return run_cli("sync", str(copy), "--release", str(release), "--out", str(tmp_path / out))

    result = sync(tmp_path / "audit")
    assert result.exit_code == 2 and "clean" in result.stderr
    pq.write_table(pa.table({"url": [s.url for s in samples[2:]]}), tmp_path / "work" / "new.parquet")
    result = sync(tmp_path / "work")
    assert result.exit_code == 2 and "overlap" in result.stderr
    lines = [json.dumps({"url": s.url, "caption": s.caption + " café"}, ensure_ascii=False) for s in samples]
    (tmp_path / "latin.jsonl").write_bytes("\n".join(lines).encode("latin-1"))
    result = sync(tmp_path / "latin.jsonl")
    assert result.exit_code == 3 and "latin.jsonl" in result.stderr and "UTF-8" in result.stderr

    hidden = tmp_path / ".releases" / "new"  # a release under a hidden folder is still a release
    hidden.mkdir(parents=True)
    pq.write_table(pa.table({"url": [s.url for s in samples[2:]]}), hidden / "part-0.parquet")
    assert json.loads(run_cli("sync", str(copy), "--release", str(hidden), "--out", str(tmp_path / "c1"),
                              "--json").stdout)["kept"] == 4  # fmt: skip

    with tarfile.open(copy / "00000.tar") as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar if m.isfile()]
    with tarfile.open(copy / "00000.tar", "w") as tar:  # the third row's image gone, its .txt and .json kept
        for member, data in members:
            if not (
                member.name.endswith(".jpg")
                and member.name.startswith(pq.read_table(copy / "00000.parquet")["key"][2].as_py())
            ):
                tar.addfile(member, io.BytesIO(data))
    result = sync(hidden, "c2")
    assert result.exit_code == 3 and "00000.tar" in result.stderr and "image of 1" in result.stderr
    assert not (tmp_path / "c2" / "00000.tar").exists()
