"""Webdataset tars as hostile or unusual writers make them: every payload of a sample is hashed and
matched, sparse members are copied by their stored bytes, huge and truncated members are streamed,
odd sidecars and names are recorded rather than crashing."""

from __future__ import annotations

import hashlib
import io
import json
import random
import subprocess
import tarfile
import tracemalloc
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from helpers import encode, run_cli, write_lines
from PIL import Image

import safeset
from safeset.demo import jpeg
from safeset.sources import Shard, reader_for
from safeset.sources.base import ShardLog


def write_tar(path: Path, members: list[tuple[str, bytes]], **options) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w", **options) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    return path


def md5_bank(home: Path, tmp_path: Path, *payloads: bytes, name: str = "md5") -> None:
    write_lines(tmp_path / f"{name}.txt", [hashlib.md5(p).hexdigest() for p in payloads])
    assert run_cli("bank", "add", name, tmp_path / f"{name}.txt", "--type", "md5", home=home).exit_code == 0


def scan(target: Path, out: Path, home: Path, *options: str):
    result = run_cli("scan", target, "--out", out, "--workers", "1", "-q", *options, home=home)
    assert result.exit_code == 0, result.output
    return {r["key"]: r for r in pq.read_table(out / "results").to_pylist()}


def members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def test_every_payload_of_a_sample_is_hashed_and_matched(tiles, tmp_path, home):
    """Listed bytes hidden beside a sample's first image, under another extension, inside a
    member whose name says it is not an image, or in a nested tar: each decides its row."""
    listed = {name: jpeg(tiles[i][1]) for name, i in (("png", 30), ("seg", 31), ("bin", 32))}
    nested = write_tar(tmp_path / "inner.tar", [("x.jpg", jpeg(tiles[33][1]))]).read_bytes()
    plain = [jpeg(image) for _, image in tiles[:6]]
    shard = write_tar(
        tmp_path / "shards" / "00000.tar",
        [
            ("a.jpg", plain[0]),
            ("a.png", encode(Image.open(io.BytesIO(listed["png"])), "PNG")),  # a second image: PDQ-listed
            ("a.txt", b"caption"),
            ("b.jpg", plain[1]),
            ("b.seg.png", listed["seg"]),  # listed by MD5
            ("c.jpg", plain[2]),
            ("c.bin", listed["bin"]),  # a JPEG under another name: sniffed, decoded, PDQ-listed
            ("d.jpg", plain[3]),
            ("d.tar", nested),  # a nested archive: not looked into, but its own hash is listed
            ("e.heic", b"\x00\x00\x00\x18ftypheic" + bytes(200)),  # not decodable here
            ("f.jpg", plain[4]),
            ("f.txt", jpeg(tiles[5][1])),  # "metadata" that is no text: a payload all the same
        ],
    )
    md5_bank(home, tmp_path, listed["seg"], nested)
    write_lines(tmp_path / "pdq.txt", [f"pdq {safeset.pdq(tiles[30][1])}", f"pdq {safeset.pdq(tiles[32][1])}"])
    assert run_cli("bank", "add", "pdq", tmp_path / "pdq.txt", home=home).exit_code == 0
    rows = scan(shard.parent, tmp_path / "out", home)

    assert {k: r["decision"] for k, r in rows.items()} == {
        "a": "remove",
        "b": "remove",
        "c": "remove",
        "d": "remove",
        "e": "review",
        "f": "keep",
    }
    assert [(m["bank"], m["payload"]) for m in rows["a"]["matches"]] == [("pdq", "png")]
    assert [(m["bank"], m["payload"]) for m in rows["b"]["matches"]] == [("md5", "seg.png")]
    assert [(m["bank"], m["payload"]) for m in rows["c"]["matches"]] == [("pdq", "bin")]
    assert [(m["bank"], m["payload"]) for m in rows["d"]["matches"]] == [("md5", "tar")]
    assert rows["a"]["md5"] == hashlib.md5(plain[0]).hexdigest()  # the row's own: its first image
    assert (rows["d"]["status"], rows["d"]["error"]) == ("unsupported_media", "tar: tar")
    assert (rows["e"]["status"], rows["e"]["error"]) == ("unsupported_media", "heif")
    assert rows["e"]["md5"] == hashlib.md5(b"\x00\x00\x00\x18ftypheic" + bytes(200)).hexdigest()
    assert [p["name"] for p in rows["f"]["payloads"]] == ["txt"] and rows["f"]["payloads"][0]["pdq"]
    # the evidence for a hotline names the hashes of the payload that matched, not the row's first
    evidence = [json.loads(line) for line in (tmp_path / "out" / "evidence.jsonl").read_text().splitlines()]
    seg = next(e for e in evidence if e["payload"] == "seg.png")
    assert seg["md5"] == hashlib.md5(listed["seg"]).hexdigest()
    clean = members(tmp_path / "out" / "clean" / "shards" / "00000.tar")
    assert sorted(clean) == ["f.jpg", "f.txt"]


@pytest.mark.parametrize("options", [["--format=gnu"], ["--format=pax", "--sparse-version=0.1"], ["--format=pax"]])
def test_sparse_members_are_copied_by_their_stored_bytes(tiles, tmp_path, home, options):
    """GNU tar stores a sparse file's data and a map of its holes: a member far smaller in the
    archive than its size. Copying `size` bytes from its data would carry the next (removed)
    sample's bytes into the clean tar and corrupt the kept ones."""
    files = tmp_path / "files"
    files.mkdir()
    kept, listed = jpeg(tiles[40][1]), jpeg(tiles[41][1])
    (files / "a.jpg").write_bytes(kept)
    black = encode(Image.new("RGB", (1200, 1000)), "BMP")  # 3.6 MB, all zero bytes after its header
    with open(files / "b.bmp", "wb") as sparse:  # a sparse file on disk: its header, then a hole
        sparse.write(black[:54])
        sparse.truncate(len(black))
    (files / "c.jpg").write_bytes(listed)
    (files / "d.bin").write_bytes(random.Random(7).randbytes(len(black)))  # enough archive after c
    shard = tmp_path / "shards" / "00000.tar"
    shard.parent.mkdir()
    names = ["a.jpg", "b.bmp", "c.jpg", "d.bin"]
    subprocess.run(["tar", "-S", *options, "-cf", str(shard), *names], cwd=files, check=True)
    assert shard.stat().st_size < 1.5 * len(black)  # b is stored sparse
    md5_bank(home, tmp_path, listed)
    rows = scan(shard.parent, tmp_path / "out", home)
    assert rows["b"]["md5"] == hashlib.md5(black).hexdigest()  # its content, holes expanded
    assert {k: r["decision"] for k, r in rows.items()} == {"a": "keep", "b": "keep", "c": "remove", "d": "review"}

    clean = tmp_path / "out" / "clean" / "shards" / "00000.tar"
    assert members(clean) == {"a.jpg": kept, "b.bmp": black}
    assert listed[len(listed) // 2 : len(listed) // 2 + 64] not in clean.read_bytes()  # its entropy-coded data
    listing = subprocess.run(["tar", "-tf", str(clean)], capture_output=True, check=True, text=True)
    assert listing.stdout.split() == ["a.jpg", "b.bmp"]  # GNU tar reads it back too


def test_members_larger_than_max_bytes_are_streamed_and_still_matched(tmp_path, home):
    big = bytes(range(256)) * 8192  # 2 MiB
    shard = write_tar(tmp_path / "shards" / "00000.tar", [("a.bin", big), ("b.bin", big[:-1])])
    md5_bank(home, tmp_path, big)
    rows = scan(shard.parent, tmp_path / "out", home, "--max-bytes", str(2**20))
    assert (rows["a"]["status"], rows["a"]["error"], rows["a"]["decision"]) == ("decode_failed", "too_large", "remove")
    assert rows["b"]["sha256"] == hashlib.sha256(big[:-1]).hexdigest() and rows["b"]["decision"] == "keep"


def test_a_huge_member_is_read_in_bounded_memory(tmp_path):
    """A gzipped tar a few MB on disk holding a 512 MiB member (zeros) is hashed as it streams."""
    shard = tmp_path / "00000.tar.gz"
    with tarfile.open(shard, "w:gz", compresslevel=1) as tar:
        info = tarfile.TarInfo("a.bin")
        info.size = 512 * 2**20
        tar.addfile(info, _Zeros(info.size))
    assert shard.stat().st_size < 8 * 2**20
    tracemalloc.start()
    try:
        items = list(reader_for("webdataset").items(Shard("webdataset", "s", str(shard), (str(shard),)), ShardLog()))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    (payload,) = items[0].payloads
    assert payload.error == "too_large" and payload.data is None
    assert payload.digests["md5"] == _zeros_md5(512 * 2**20)
    assert peak < 64 * 2**20


def test_a_truncated_tar_declaring_a_64_gib_member_is_recorded_as_truncated(tiles, tmp_path, home):
    head = write_tar(tmp_path / "head.tar", [("a.jpg", jpeg(tiles[0][1]))]).read_bytes()
    info = tarfile.TarInfo("b.jpg")
    info.size = 64 * 2**30
    body = head[: -2 * tarfile.BLOCKSIZE].rstrip(b"\0")
    body += bytes(-len(body) % tarfile.BLOCKSIZE) + info.tobuf(tarfile.GNU_FORMAT) + jpeg(tiles[1][1])[:5000]
    shard = tmp_path / "shards" / "00000.tar"
    shard.parent.mkdir()
    shard.write_bytes(body)
    rows = scan(shard.parent, tmp_path / "out", home)
    assert (rows["a"]["status"], rows["b"]["status"], rows["b"]["error"]) == ("ok", "decode_failed", "truncated")
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert any("tar ends inside a member" in p for p in report["problems"])
    assert members(tmp_path / "out" / "clean" / "shards" / "00000.tar") == {"a.jpg": jpeg(tiles[0][1])}


def test_odd_sidecars_and_names_are_recorded_not_fatal(tiles, tmp_path, home):
    deep = b"[" * 200_000 + b"]" * 200_000  # nested past what a JSON parser follows
    names = ["a", "b", "c", "\udcff\udcfename"]  # the last: bytes that are not UTF-8
    shard = write_tar(
        tmp_path / "shards" / "00000.tar",
        [
            ("a.jpg", jpeg(tiles[0][1])),
            ("a.json", b"[1, 2]"),
            ("b.jpg", jpeg(tiles[1][1])),
            ("b.json", b'"just a string"'),
            ("c.jpg", jpeg(tiles[2][1])),
            ("c.json", deep),
            ("\udcff\udcfename.jpg", jpeg(tiles[3][1])),
            ("\udcff\udcfename.json", json.dumps({"url": "https://x.example/\ud800.jpg"}).encode()),
        ],
        encoding="utf-8",
        errors="surrogateescape",
    )
    rows = scan(shard.parent, tmp_path / "out", home)
    assert sorted(rows) == sorted(["a", "b", "c", "\\udcff\\udcfename"])
    assert all(r["status"] == "ok" for r in rows.values())
    assert rows["\\udcff\\udcfename"]["url"] == "https://x.example/\\ud800.jpg"
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert sorted(p.rsplit(": ", 1)[1] for p in report["problems"]) == [
        "a.json is not a JSON object",
        "b.json is not a JSON object",
        "c.json is not valid JSON",
    ]
    clean = tmp_path / "out" / "clean" / "shards" / "00000.tar"
    with tarfile.open(clean, encoding="utf-8", errors="surrogateescape") as tar:
        assert len(tar.getnames()) == len(names) * 2 and names[3] + ".jpg" in tar.getnames()


class _Zeros(io.RawIOBase):
    """`size` zero bytes, read in pieces, never held whole."""

    def __init__(self, size: int):
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self.left)
        buffer[:n] = bytes(n)
        self.left -= n
        return n


def _zeros_md5(size: int) -> str:
    digest, block = hashlib.md5(), bytes(1 << 20)
    for _ in range(size >> 20):
        digest.update(block)
    return digest.hexdigest()


def _block(data: bytes) -> bytes:
    return data + bytes(-len(data) % tarfile.BLOCKSIZE)


def _member(name: str, data: bytes, fmt: int = tarfile.USTAR_FORMAT, **pax: str) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.pax_headers = len(data), pax
    return info.tobuf(fmt) + _block(data)


def test_crafted_headers_cannot_carry_bytes_into_the_clean_tar(tiles, tmp_path, home):
    """Headers that tarfile and GNU tar read differently, or that carry bytes of their own: the
    clean tar is written afresh from what was hashed, so none of it reaches the release."""
    listed = encode(tiles[50][1], "PNG")
    kept = [jpeg(tiles[i][1]) for i in range(4)]
    hidden = _member("b.png", listed)  # a sample tarfile never sees: the sparse member below swallows it
    stored = _block(f"1\n0\n{len(kept[0])}\n".encode()) + kept[0]
    sparse = _member(
        "GNUSparseFile.0/a.jpg",
        stored,
        tarfile.PAX_FORMAT,
        **{
            "size": str(len(stored)),
            "GNU.sparse.major": "1",
            "GNU.sparse.minor": "0",
            "GNU.sparse.name": "a.jpg",
            "GNU.sparse.realsize": str(len(_block(kept[0])) + len(hidden)),
        },
    )
    terabyte = _member(  # 10 stored bytes declaring a 1 TiB file
        "GNUSparseFile.0/c.bin",
        b"x" * 10,
        tarfile.PAX_FORMAT,
        **{"GNU.sparse.size": str(1 << 40), "GNU.sparse.numblocks": "1", "GNU.sparse.map": "0,10"},
    )
    longname = tarfile.TarInfo("././@LongLink")  # a GNU long name whose data runs on past its NUL
    longname.type, longname.size = tarfile.GNUTYPE_LONGNAME, len(b"d.jpg\0" + listed)
    shard = tmp_path / "shards" / "00000.tar"
    shard.parent.mkdir()
    shard.write_bytes(
        sparse
        + hidden
        + terabyte
        + longname.tobuf(tarfile.GNU_FORMAT)
        + _block(b"d.jpg\0" + listed)
        + _member("d.jpg", kept[1], tarfile.GNU_FORMAT)
        + _member("e.jpg", kept[2], tarfile.PAX_FORMAT, comment=listed.decode("latin-1"))  # in a PAX record
        + bytes(2 * tarfile.BLOCKSIZE)
    )
    md5_bank(home, tmp_path, listed)
    rows = scan(shard.parent, tmp_path / "out", home, "--max-bytes", str(2**20))
    assert (rows["c"]["status"], rows["c"]["error"]) == ("decode_failed", "too_large")  # not expanded
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert any("'GNUSparseFile.0/c.bin' is sparse and larger than --max-bytes" in p for p in report["problems"])
    clean = tmp_path / "out" / "clean" / "shards" / "00000.tar"
    raw = clean.read_bytes()
    assert listed[100:164] not in raw and listed.decode("latin-1").encode()[100:164] not in raw
    assert members(clean)["d.jpg"] == kept[1] and members(clean)["e.jpg"] == kept[2]
    listing = subprocess.run(["tar", "-tf", str(clean)], capture_output=True, check=True, text=True)
    assert sorted(listing.stdout.split()) == sorted(members(clean))  # both readers agree on it


def test_what_an_image_holds_past_its_first_frame_or_its_end_is_matched(tiles, coffee, tmp_path, home):
    """The ways a listed picture passed unchecked: as an animation's second frame, as a JPEG cut
    short, as a JPEG padded past --max-bytes, in the alpha channel of black pixels."""
    plain = [jpeg(tiles[i][1]) for i in range(4)]
    listed = coffee.convert("RGB")
    animated = encode(tiles[0][1].resize(listed.size), "GIF", save_all=True, append_images=[listed])
    whole = encode(listed, "JPEG")
    hidden = Image.new("RGBA", listed.size, (0, 0, 0, 255))
    hidden.putalpha(listed.convert("L"))
    shard = write_tar(
        tmp_path / "shards" / "00000.tar",
        [
            ("a.gif", animated),
            ("b.jpg", whole[: len(whole) * 99 // 100]),
            ("c.jpg", whole + bytes(4 * 2**20)),
            ("d.png", encode(hidden, "PNG")),
            ("e.jpg", plain[1]),
        ],
    )
    write_lines(tmp_path / "pdq.txt", [f"pdq {safeset.pdq(listed)}"])
    assert run_cli("bank", "add", "pdq", tmp_path / "pdq.txt", home=home).exit_code == 0
    rows = scan(shard.parent, tmp_path / "out", home, "--max-bytes", str(3 * 2**20))
    decided = {
        k: (r["status"], r["error"], r["decision"], r["matches"][0]["variant"] if r["matches"] else None)
        for k, r in rows.items()
    }
    assert decided == {
        "a": ("ok", None, "remove", "frame2"),
        "b": ("decode_failed", "truncated", "remove", "partial"),
        "c": ("decode_failed", "too_large", "remove", "partial"),
        "d": ("ok", None, "remove", "alpha"),
        "e": ("ok", None, "keep", None),
    }
    assert rows["b"]["pdq"] is None and rows["c"]["pdq"] is None  # no PDQ stands for a part of an image
    assert members(tmp_path / "out" / "clean" / "shards" / "00000.tar") == {"e.jpg": plain[1]}


def test_a_member_that_changes_between_the_passes_fails_the_shard_and_leaves_nothing(tmp_path, home, monkeypatch):
    """The clean tar's data is read again after the rows are decided: bytes that changed since
    they were hashed (here, another process rewriting a member larger than --max-bytes, which is
    copied as it streams) fail the shard, and no file of its clean release is left, the partial
    one it was copying into included."""
    from helpers import shard_tasks

    from safeset.pipeline.worker import run_shard
    from safeset.sinks.clean.tar import TarCopy

    big = bytes(range(256)) * 8192  # 2 MiB
    shard = write_tar(tmp_path / "shards" / "00000.tar", [("a.bin", big), ("b.bin", b"small")])
    offset = shard.read_bytes().index(big) + 2**20  # past what a reader has buffered
    real_keep = TarCopy.keep

    def keep_after_a_rewrite(self, result):
        with open(shard, "r+b") as fh:  # the input changes under the scan, after it was hashed
            fh.seek(offset)
            fh.write(b"\xff" * 1024)
        real_keep(self, result)

    monkeypatch.setattr(TarCopy, "keep", keep_after_a_rewrite)
    (task,) = shard_tasks(home, [shard.parent], tmp_path / "out", max_bytes=2**20)
    with pytest.raises(safeset.errors.BadInputError, match="a.bin' is not what the scan read"):
        run_shard(task)
    assert [p.name for p in (tmp_path / "out" / "clean").rglob("*") if p.is_file()] == []
