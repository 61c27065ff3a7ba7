"""Files written by the tools safeset's users use, read as those tools wrote them: hash lists made by
python-threatexchange's own command line (its vPDQ signals too), datasets downloaded by img2dataset
(from a loopback server)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import make_shards, run_cli, samples_from, write_lines
from http_server import FaultyServer
from PIL import Image

import safeset
from safeset.demo import PHOTOS, jpeg, load_photo

THREATEXCHANGE = Path(sys.executable).with_name("threatexchange")
IMG2DATASET = Path(sys.executable).with_name("img2dataset")


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


def test_vpdq_signals_python_threatexchange_writes_match_the_videos_of_a_dataset(tiles, tmp_path, home):
    """python-threatexchange's own `hash video`, its vPDQ extension enabled (it runs Meta's `vpdq`,
    which `make test` builds), writes video_md5, video_sha256 and vpdq lines; a scan matches a
    re-encoded copy of the video by vPDQ, and the very file by all three."""
    import importlib

    from safeset.demo import Sample, slideshow, write_img2dataset_shard

    if not os.environ.get("CI"):
        pytest.importorskip("vpdq")
    importlib.import_module("vpdq")
    photos = [image.resize((480, 240)) for _, image in tiles[:4]]
    clip, copy = slideshow(photos, 4), slideshow(photos, 4, options={"crf": "35"})
    (tmp_path / "clip.mp4").write_bytes(clip)
    env = {**os.environ, "HOME": str(tmp_path / "tx-home")}
    extension = [THREATEXCHANGE, "config", "extensions", "add", "threatexchange.extensions.vpdq.manifest"]
    subprocess.run(extension, env=env, capture_output=True, check=True)
    lines = threatexchange_hash(tmp_path, "video", str(tmp_path / "clip.mp4"))
    assert sorted(line.split()[0] for line in lines) == ["video_md5", "video_sha256", "vpdq"]
    write_lines(tmp_path / "pytx.txt", lines)
    added = run_cli("bank", "add", "pytx", tmp_path / "pytx.txt", home=home)
    assert added.exit_code == 0 and "bad line" not in added.stderr, added.output

    samples = [Sample(f"https://v.example.org/{n}.mp4", n, data, ext="mp4") for n, data in (("a", clip), ("b", copy))]
    write_img2dataset_shard(tmp_path / "shards", 0, samples)
    assert run_cli("scan", tmp_path / "shards", "--out", tmp_path / "out", "-q", home=home).exit_code == 0
    rows = {r["caption"]: r for r in pq.read_table(tmp_path / "out" / "results").to_pylist()}
    assert sorted(m["signal_type"] for m in rows["a"]["matches"]) == ["md5", "sha256", "vpdq"]
    ((kind, entry, share),) = [(m["signal_type"], m["entry"], m["query_percent"]) for m in rows["b"]["matches"]]
    line = next(n for n, text in enumerate(lines, 1) if text.startswith("vpdq "))
    assert (kind, entry, share) == ("vpdq", f"pytx.txt:{line}", 100) and rows["b"]["decision"] == "remove"


def _photo_originals(count: int) -> dict[str, bytes]:
    """`count` benign photos shaped as web images are: landscape, portrait, wide, tall; a third of
    them on a white background (a product shot), a third letterboxed in black."""
    photos = [load_photo(name) for name in PHOTOS]
    aspects = (4 / 3, 3 / 4, 16 / 9, 9 / 16, 2.0, 0.5, 3 / 2, 1.0)
    rng = random.Random(5)
    found = {}
    for i in range(count):
        photo, aspect = photos[i % len(photos)], aspects[i % len(aspects)]
        width = min(photo.width, int(photo.height * aspect))
        height = int(width / aspect)
        x, y = rng.randint(0, photo.width - width), rng.randint(0, photo.height - height)
        image = photo.crop((x, y, x + width, y + height))
        image = image.resize((int(width * 0.9), int(height * 0.9)))
        if i % 3 == 1:
            canvas = Image.new("RGB", (image.width + 120, image.height + 60), (255, 255, 255))
            canvas.paste(image, (60, 30))
            image = canvas
        elif i % 3 == 2:
            canvas = Image.new("RGB", (image.width, image.height + image.height // 3), (0, 0, 0))
            canvas.paste(image, (0, image.height // 6))
            image = canvas
        found[f"o{i:03d}.jpg"] = jpeg(image, 92)
    return found


def test_img2dataset_border_output_is_matched_as_well_as_keep_ratio_output(tmp_path, home):
    """img2dataset's default resizing pads each image to a white 256-pixel square: the listed
    original is then a small part of a small image. Its row says what was done (original size,
    and so where the content lies), and PDQ hashes that content as the original was hashed: 60
    of 60 listed photos are matched in both the border and the keep_ratio output (34 and 55 of
    60 before)."""
    originals = _photo_originals(60)
    write_lines(tmp_path / "pdq.txt", [f"pdq {safeset.pdq(data)}" for data in originals.values()])
    assert run_cli("bank", "add", "listed", tmp_path / "pdq.txt", home=home).exit_code == 0
    recall = {}
    with FaultyServer(originals) as server:
        write_lines(tmp_path / "urls.txt", [server.url(f"/img/{name}") for name in originals])
        for mode in ("border", "keep_ratio"):
            downloaded = tmp_path / mode
            subprocess.run(
                [IMG2DATASET, "--url_list", str(tmp_path / "urls.txt"), "--output_folder", str(downloaded)]
                + ["--output_format", "webdataset", "--resize_mode", mode, "--processes_count", "1"]
                + ["--thread_count", "8", "--image_size", "256"],
                check=True,
                capture_output=True,
                env={**os.environ, "no_proxy": "*"},
            )
            out = tmp_path / f"out-{mode}"
            assert run_cli("scan", downloaded, "--out", out, "-q", home=home).exit_code == 0
            rows = pq.read_table(out / "results").to_pylist()
            assert len(rows) == 60 and {r["status"] for r in rows} == {"ok"}
            recall[mode] = sum(r["decision"] == "remove" for r in rows)
    assert recall == {"border": 60, "keep_ratio": 60}


@pytest.mark.parametrize("output_format", ["webdataset", "files", "parquet"])
def test_sync_prunes_a_copy_img2dataset_made_to_the_new_release(tmp_path, tiles, output_format):
    """ "Clean my copy": img2dataset downloads a release (from a loopback server) into two shards
    of each of its output formats; the new release, a CSV written by hand, lacks three of its rows
    and has one the copy never had. `safeset sync` keeps exactly the rows both have, their images
    as they were: tar members and files byte for byte, parquet values unchanged."""
    import csv
    import tarfile

    images = {f"t{i:02d}.jpg": jpeg(image) for i, (_, image) in enumerate(tiles[:12])}
    with FaultyServer(images) as server:
        urls = [server.url(f"/img/{name}") for name in images]
        captions = [f"a photo, number {i}" for i in range(len(urls))]
        pq.write_table(pa.table({"url": urls, "caption": captions}), tmp_path / "old.parquet")
        subprocess.run(
            [IMG2DATASET, "--url_list", str(tmp_path / "old.parquet"), "--input_format", "parquet"]
            + ["--url_col", "url", "--caption_col", "caption", "--output_folder", str(tmp_path / "copy")]
            + ["--output_format", output_format, "--processes_count", "1", "--thread_count", "4"]
            + ["--number_sample_per_shard", "6", "--image_size", "64"],
            check=True,
            capture_output=True,
            env={**os.environ, "no_proxy": "*"},
        )
    gone = {urls[1], urls[6], urls[11]}
    with open(tmp_path / "new.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["URL", "TEXT"])
        writer.writerows([u, c] for u, c in zip(urls, captions, strict=True) if u not in gone)
        writer.writerow(["https://never-downloaded.example.org/x.jpg", "new"])

    clean = tmp_path / "clean"
    result = run_cli("sync", tmp_path / "copy", "--release", tmp_path / "new.csv", "--out", clean, "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["copy_rows"], summary["kept"], summary["dropped_not_in_release"]) == (12, 9, 3)
    assert {s["format"] for s in summary["shards"]} == {output_format}
    kept = pa.concat_tables(pq.read_table(p, columns=["url", "key"]) for p in sorted(clean.glob("*.parquet")))
    assert set(kept["url"].to_pylist()) == set(urls) - gone
    keys = set(kept["key"].to_pylist())

    def images_of(shard: Path) -> dict[str, bytes]:
        if output_format == "webdataset":
            with tarfile.open(shard.with_suffix(".tar")) as tar:
                return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}
        if output_format == "files":
            return {p.name: p.read_bytes() for p in shard.with_suffix("").iterdir()}
        return {f"{r['key']}.jpg": r["jpg"] for r in pq.read_table(shard).to_pylist() if r["jpg"] is not None}

    for shard in sorted((tmp_path / "copy").glob("*.parquet")):
        old, new = images_of(shard), images_of(clean / shard.name)
        assert new and all(old[name] == data for name, data in new.items())  # as they were
        assert {name.split(".")[0] for name in new} == {name.split(".")[0] for name in old} & keys
        assert pq.read_schema(clean / shard.name) == pq.read_schema(shard)
