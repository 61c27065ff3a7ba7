"""The other input kinds, end to end: image parquet, image folders, metadata tables."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import bomb_png, encode, run_cli, write_lines

import safeset
from safeset.demo import jpeg
from safeset.errors import BadInputError
from safeset.hashing import url_md5
from safeset.sources import ReadOptions, detect_kind, plan_shards


def _bank(store, tmp_path, name, lines, type_name=None):
    store.add(name, write_lines(tmp_path / f"{name}.txt", lines), type_name=type_name)


@pytest.mark.parametrize("layout", ["struct", "binary"])
def test_image_parquet(tiles, tmp_path, home, store, layout):
    images = [jpeg(image) for _, image in tiles[:12]]
    images[4] = None  # an empty cell
    listed = images[7]
    if layout == "struct":
        column = pa.array(
            [None if d is None else {"bytes": d, "path": f"img{i}.jpg"} for i, d in enumerate(images)],
            type=pa.struct([("bytes", pa.binary()), ("path", pa.string())]),
        )
    else:
        column = pa.array(images, type=pa.binary())
    table = pa.table({"image": column, "text": [f"caption {i}" for i in range(12)], "label": list(range(12))})
    pq.write_table(table, tmp_path / "train.parquet", row_group_size=5)
    assert detect_kind(tmp_path / "train.parquet", ReadOptions()) == "image_parquet"
    _bank(store, tmp_path, "md5", [hashlib.md5(listed).hexdigest()], "md5")

    report = safeset.scan(tmp_path / "train.parquet", tmp_path / "out", home=str(home), workers=1)
    assert report["totals"] == {"rows": 12, "keep": 11, "remove": 1, "review": 0, "unchecked": 1}
    results = pq.read_table(tmp_path / "out" / "results").to_pylist()
    assert results[7]["decision"] == "remove"
    assert results[4]["status"] == "no_image" and results[4]["error"] == "image cell is empty"
    if layout == "struct":
        assert results[3]["key"] == "img3.jpg"
    clean = pq.read_table(tmp_path / "out" / "clean" / "train.parquet")
    assert clean.schema.equals(table.schema)
    assert clean["label"].to_pylist() == [i for i in range(12) if i != 7]


def test_image_folder_with_bad_files(tiles, coffee, tmp_path, home, store):
    photos = tmp_path / "photos"
    (photos / "nested" / "deeper").mkdir(parents=True)
    listed = encode(coffee, "PNG")
    (photos / "listed.png").write_bytes(listed)
    (photos / "nested" / "ok.jpg").write_bytes(jpeg(tiles[0][1]))
    (photos / "nested" / "deeper" / "renamed.xyz").write_bytes(jpeg(tiles[1][1]))  # an image, odd name
    (photos / "nested" / "page.jpg").write_bytes(b"<html><body>not found</body></html>")
    (photos / "empty.jpg").write_bytes(b"")
    (photos / "cut.jpg").write_bytes(jpeg(tiles[2][1])[:500])
    (photos / "bomb.png").write_bytes(bomb_png())
    (photos / "notes.txt").write_text("hello")
    (photos / ".hidden.jpg").write_bytes(listed)
    _bank(store, tmp_path, "pdq", [f"pdq {safeset.pdq(coffee)}"])

    report = safeset.scan(photos, tmp_path / "out", home=str(home), workers=1)
    results = {r["key"]: r for r in pq.read_table(tmp_path / "out" / "results").to_pylist()}
    assert sorted(results) == sorted(
        [
            "listed.png",
            "nested/ok.jpg",
            "nested/deeper/renamed.xyz",
            "nested/page.jpg",
            "empty.jpg",
            "cut.jpg",
            "bomb.png",
            "notes.txt",
        ]
    )
    status = {k: (r["status"], r["error"]) for k, r in results.items()}
    assert status["nested/deeper/renamed.xyz"] == ("ok", None)
    assert status["nested/page.jpg"] == ("unsupported_media", "html")  # whatever its name says
    assert status["empty.jpg"] == ("no_image", "empty file")
    assert status["cut.jpg"] == ("decode_failed", "truncated")
    assert status["bomb.png"] == ("decode_failed", "too_many_pixels")
    assert status["notes.txt"] == ("unsupported_media", "text")
    assert results["listed.png"]["decision"] == "remove"
    assert report["totals"]["rows"] == 8 and report["totals"]["remove"] == 1 and report["totals"]["review"] == 2
    assert report["unchecked"] == {"decode_failed": 2, "no_image": 1, "unsupported_media": 2}
    assert kept_files(tmp_path / "out" / "clean" / "photos") == sorted(
        k for k, r in results.items() if r["decision"] == "keep"
    )


def kept_files(clean: Path) -> list[str]:
    """Every path the `.kept` lists of a folder's clean release name (NUL-terminated)."""
    listed = b"".join(p.read_bytes() for p in sorted(clean.glob("*.kept")))
    assert listed == b"" or listed.endswith(b"\0")
    return sorted(os.fsdecode(name) for name in listed.split(b"\0")[:-1])


def test_folder_is_chunked_into_shards(tiles, tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(7):
        (folder / f"{i}.jpg").write_bytes(jpeg(tiles[i][1]))
    shards = plan_shards([folder], ReadOptions(folder_chunk=3)).shards
    assert [s.name for s in shards] == ["many/chunk-00000", "many/chunk-00001", "many/chunk-00002"]
    assert [len(s.members) for s in shards] == [3, 3, 1]


LAION_URLS = [f"https://img{i % 3}.example.org/p/{i}.jpg" for i in range(10)]


def _laion_table() -> pa.Table:
    return pa.table(
        {
            "URL": LAION_URLS,
            "TEXT": [f"a photo {i}" for i in range(10)],
            "WIDTH": [640] * 10,
            "HEIGHT": [480] * 10,
            "similarity": [0.3] * 10,
            "punsafe": [0.01] * 10,
            "pwatermark": [0.1] * 10,
            "hash": list(range(1000, 1010)),
        }
    )


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_metadata_table_matches_urls_without_fetching(tmp_path, home, store, fmt):
    table = _laion_table()
    path = tmp_path / f"meta.{fmt}"
    if fmt == "parquet":
        pq.write_table(table, path)
    elif fmt == "csv":
        import pyarrow.csv as pacsv

        pacsv.write_csv(table, path)
    else:
        path.write_text("".join(json.dumps(row) + "\n" for row in table.to_pylist()))
    _bank(store, tmp_path, "urls", ["HTTPS://IMG1.Example.ORG:443/p/1.jpg"], "url")  # host case differs
    _bank(store, tmp_path, "urlmd5", [url_md5(LAION_URLS[4])], "url_md5")
    _bank(store, tmp_path, "domains", ["img2.example.org"], "domain")

    report = safeset.scan(path, tmp_path / "out", home=str(home), workers=1)
    results = pq.read_table(tmp_path / "out" / "results").to_pylist()
    removed = sorted(r["index"] for r in results if r["decision"] == "remove")
    assert removed == sorted({1, 4} | {i for i in range(10) if i % 3 == 2})
    assert all(r["status"] == "no_image" for r in results)
    assert results[1]["reasons"] == ["match:urls:url", "unchecked:no_image"]
    assert report["totals"]["unchecked"] == 10
    clean = tmp_path / "out" / "clean" / path.name
    if fmt == "parquet":
        kept = pq.read_table(clean)
        assert kept.schema.equals(table.schema)
        assert kept["URL"].to_pylist() == [u for i, u in enumerate(LAION_URLS) if i not in removed]
    else:
        lines = clean.read_text().splitlines()
        original = path.read_text().splitlines()
        header = 1 if fmt == "csv" else 0
        assert lines == original[:header] + [line for i, line in enumerate(original[header:]) if i not in removed]


def test_bad_tables_are_recorded_or_refused_by_name(tmp_path, home):
    csv_path = tmp_path / "meta.csv"
    csv_path.write_text(
        "url,caption\nhttps://a.example/1.jpg,one\nhttps://a.example/2.jpg,two,extra\nhttps://a.example/3.jpg,three\n"
    )
    report = safeset.scan(csv_path, tmp_path / "out", home=str(home), workers=1)
    assert report["totals"]["rows"] == 3
    assert report["problems"] == [f"{csv_path}, line 3: 3 fields, header has 2"]

    jsonl = tmp_path / "meta.jsonl"
    jsonl.write_text('{"url": "https://a.example/1.jpg"}\n{broken\n{"url": "https://a.example/3.jpg"}\n')
    report = safeset.scan(jsonl, tmp_path / "out2", home=str(home), workers=1)
    assert report["totals"]["rows"] == 3
    assert report["problems"] == [f"{jsonl}, line 2: invalid JSON"]

    no_url = tmp_path / "nourl.csv"
    no_url.write_text("link,caption\nx,y\n")
    with pytest.raises(BadInputError, match=r"nourl\.csv: no URL column \(columns: link, caption\)"):
        safeset.scan(no_url, tmp_path / "out3", home=str(home))
    result = run_cli("scan", no_url, "--out", tmp_path / "out4", "--url-col", "link", "-q", home=home)
    assert result.exit_code == 0, result.output


def test_columns_a_reader_could_take_for_one_another_are_refused(tiles, tmp_path, home):
    """`url` beside `URL`: checking one while pandas or img2dataset reads the other would check
    the wrong one. Refused unless named exactly; two columns of one name are refused outright."""
    both = tmp_path / "both.csv"
    both.write_text("url,caption,URL\nhttps://a.example/listed.jpg,one,https://a.example/benign.jpg\n")
    result = run_cli("scan", both, "--out", tmp_path / "out", "-q", home=home)
    assert result.exit_code == 3
    assert "both.csv: columns 'url' and 'URL' could each be 'url': name the one to use exactly with --url-col" in (
        result.stderr
    )
    named = run_cli("scan", both, "--out", tmp_path / "out2", "--url-col", "url", "-q", home=home)
    assert named.exit_code == 0, named.output
    (row,) = pq.read_table(tmp_path / "out2" / "results").to_pylist()
    assert row["url"] == "https://a.example/listed.jpg"

    twice = tmp_path / "twice.parquet"
    image = jpeg(tiles[0][1])
    table = pa.Table.from_arrays([pa.array([image]), pa.array([image])], names=["image", "image"])
    pq.write_table(table, twice)
    result = run_cli("scan", twice, "--out", tmp_path / "out3", "-q", home=home)
    assert result.exit_code == 3 and "twice.parquet: more than one column is called 'image'" in result.stderr


@pytest.mark.parametrize("fmt", ["parquet", "parquet-one-group", "csv", "jsonl"])
def test_large_tables_are_split_into_row_range_shards(tmp_path, home, store, fmt):
    rows = [{"URL": f"https://img{i % 7}.example.org/{i}.jpg", "TEXT": f'a "quoted"\nphoto {i}'} for i in range(1003)]
    path = tmp_path / f"meta.{fmt.split('-')[0]}"
    if fmt.startswith("parquet"):
        pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=1003 if fmt.endswith("group") else 150)
    elif fmt == "csv":
        import csv

        with open(path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, ["URL", "TEXT"])
            writer.writeheader()
            for i, row in enumerate(rows):
                writer.writerow(row)
                if i == 500:
                    fh.write("\n")  # a blank line: not a row
    else:
        path.write_text("".join(json.dumps(r) + ("\n\n" if i == 500 else "\n") for i, r in enumerate(rows)))
    shards = plan_shards([path], ReadOptions(table_rows=200)).shards
    assert len(shards) >= 5 and all(s.name.startswith(f"{path.name}/part-") for s in shards)
    _bank(store, tmp_path, "urls", [rows[7]["URL"], rows[640]["URL"], rows[1002]["URL"]], "url")

    report = safeset.scan(path, tmp_path / "out", home=str(home), workers=2, read=ReadOptions(table_rows=200))
    assert report["totals"]["rows"] == 1003 and report["totals"]["remove"] == 3
    assert [f["path"] for f in report["inputs"]] == [str(path)] and "sha256" in report["inputs"][0]
    results = pq.read_table(tmp_path / "out" / "results").to_pylist()
    assert sorted(r["index"] for r in results) == list(range(1003))  # absolute row numbers, each once
    assert all(r["url"] == rows[r["index"]]["URL"] for r in results)
    parts = sorted((tmp_path / "out" / "clean" / path.name).iterdir())
    assert len(parts) == len(shards)
    kept = []
    for part in parts:
        if fmt.startswith("parquet"):
            kept += pq.read_table(part)["URL"].to_pylist()
        elif fmt == "csv":
            import csv

            with part.open(newline="") as fh:
                kept += [r["URL"] for r in csv.DictReader(fh)]
        else:
            kept += [json.loads(line)["URL"] for line in part.read_text().splitlines()]
    assert kept == [r["URL"] for i, r in enumerate(rows) if i not in (7, 640, 1002)]


def test_img2dataset_writer_tars_read_back_as_tarfile_writes_them(tmp_path):
    """The writer builds tar headers itself for speed; they must be the ones `tarfile` writes, for
    short ASCII names as for names that need a PAX header."""
    import tarfile

    from safeset.sinks.img2dataset import Img2datasetWriter, _tarfile_header, member_header

    writer = Img2datasetWriter(tmp_path / "ours", 7)
    samples = [
        (b"\xff\xd8\xff" + bytes(range(256)) * (i + 1) if i != 2 else None, f"http://x/{i}", "é" * i) for i in range(5)
    ]
    for data, url, caption in samples:
        writer.add(data, url, caption)
    ours = writer.close()

    reference = tmp_path / "reference.tar"
    with tarfile.open(ours) as archive, tarfile.open(reference, "w") as out:
        members = [(m, archive.extractfile(m).read()) for m in archive.getmembers()]
        for member, payload in members:
            info = tarfile.TarInfo(member.name)
            info.size, info.mtime = len(payload), member.mtime
            out.addfile(info, io.BytesIO(payload))
    names = [f"00007{i:04d}.{ext}" for i in (0, 1, 3, 4) for ext in ("jpg", "txt", "json")]
    assert [m.name for m, _ in members] == names
    assert members[0][1] == samples[0][0]
    assert ours.read_bytes() == reference.read_bytes()

    long_name = "k" * 120 + ".jpg"
    for name, size in (("a.jpg", 0), (long_name, 5), ("é.jpg", 3), ("0001.json", 123_456)):
        assert member_header(name, size) == _tarfile_header(name, size)
    for mtime, mode in ((0, 0o600), (1_234_567_890, 0o755), (8**11, 0o644), (-5, 0o644)):
        assert member_header("a.jpg", 9, mtime, mode) == _tarfile_header("a.jpg", 9, mtime, mode)


def test_folder_names_and_special_files_cannot_inject_or_hang(tiles, tmp_path, home, store):
    """A file name holding a newline once injected a line into the kept list (a listed `b.jpg`
    appeared kept); FIFOs hung the scan; links to devices and loops crashed it."""
    photos = tmp_path / "photos"
    photos.mkdir()
    listed = jpeg(tiles[7][1])
    (photos / "b.jpg").write_bytes(listed)
    (photos / "a\nb.jpg").write_bytes(jpeg(tiles[8][1]))
    (photos / os.fsdecode(b"caf\xe9.jpg")).write_bytes(jpeg(tiles[9][1]))  # a Latin-1 name, not UTF-8
    (photos / "real.jpg").write_bytes(jpeg(tiles[10][1]))
    os.symlink("real.jpg", photos / "link.jpg")
    os.symlink("gone.jpg", photos / "dangling.jpg")
    os.symlink("loop2.jpg", photos / "loop1.jpg")
    os.symlink("loop1.jpg", photos / "loop2.jpg")
    os.symlink("/dev/zero", photos / "zero.jpg")
    os.mkfifo(photos / "pipe.jpg")
    _bank(store, tmp_path, "md5", [hashlib.md5(listed).hexdigest()], "md5")

    report = safeset.scan(photos, tmp_path / "out", home=str(home), workers=1)
    results = {r["key"]: r for r in pq.read_table(tmp_path / "out" / "results").to_pylist()}
    assert {k: (r["status"], r["error"]) for k, r in results.items() if r["status"] != "ok"} == {
        "dangling.jpg": ("no_image", "dangling.jpg: missing (or a dangling link)"),
        "loop1.jpg": ("no_image", "loop1.jpg: link loop"),
        "loop2.jpg": ("no_image", "loop2.jpg: link loop"),
        "zero.jpg": ("no_image", "zero.jpg: not a regular file (character device)"),
        "pipe.jpg": ("no_image", "pipe.jpg: not a regular file (fifo)"),
    }
    assert results["b.jpg"]["decision"] == "remove" and results["link.jpg"]["md5"] == results["real.jpg"]["md5"]
    assert "caf\\udce9.jpg" in results  # written, escaped, not a crash
    assert report["totals"]["rows"] == 10 and report["totals"]["remove"] == 1
    kept = kept_files(tmp_path / "out" / "clean" / "photos")
    assert "a\nb.jpg" in kept and "b.jpg" not in kept and os.fsdecode(b"caf\xe9.jpg") in kept
    assert not {"dangling.jpg", "loop1.jpg", "pipe.jpg", "zero.jpg"} & set(kept)  # nothing unread is listed


def write_files_layout(root: Path, tiles, failed: int = 2) -> tuple[Path, list[str]]:
    """img2dataset's `output_format=files`: 00000/KEY.jpg, KEY.txt, KEY.json, and 00000.parquet
    listing every input row (failed downloads too), with 00000_stats.json beside."""
    shard = root / "00000"
    shard.mkdir(parents=True)
    rows, urls = [], []
    for i, (name, image) in enumerate(tiles):
        key = f"00000{i:04d}"
        url = f"https://img.example.org/{name}.jpg"
        urls.append(url)
        if i < failed:
            rows.append(
                {"key": key, "url": url, "caption": name, "status": "failed_to_download", "error_message": "404"}
            )
            continue
        (shard / f"{key}.jpg").write_bytes(jpeg(image))
        (shard / f"{key}.txt").write_text(f"caption {name}")
        (shard / f"{key}.json").write_text(json.dumps({"url": url, "key": key, "status": "success"}))
        rows.append({"key": key, "url": url, "caption": name, "status": "success", "error_message": None})
    pq.write_table(pa.Table.from_pylist(rows), root / "00000.parquet")
    (root / "00000_stats.json").write_text(json.dumps({"count": len(rows)}))
    return root, urls


def test_what_a_walk_leaves_out_is_listed_in_the_report(tiles, tmp_path, home):
    """Hidden files and folders are not read, nor links to folders followed: the report and the
    summary say so, rather than an audit of data it never looked at reading "all clear"."""
    root = tmp_path / "photos"
    (root / ".hidden").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    for path in (root / "a.jpg", root / ".b.jpg", root / ".hidden" / "c.jpg", tmp_path / "elsewhere" / "d.jpg"):
        path.write_bytes(jpeg(tiles[0][1]))
    (root / "linked").symlink_to(tmp_path / "elsewhere")
    result = run_cli("scan", root, "--out", tmp_path / "out", "-q", home=home)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["totals"]["rows"] == 1
    assert {(Path(f["path"]).name, f["reason"]) for f in report["ignored_files"]} == {
        (".b.jpg", "hidden: not read"),
        (".hidden", "hidden: not read"),
        ("linked", "a link to a folder: not followed"),
    }
    assert "3 file(s) found beside the data were not read" in result.stdout


def test_img2dataset_files_layout_is_one_row_per_sample(tiles, tmp_path, home, store):
    root, urls = write_files_layout(tmp_path / "ds", tiles[:6])
    _bank(store, tmp_path, "md5", [hashlib.md5(jpeg(tiles[3][1])).hexdigest()], "md5")
    report = safeset.scan(root, tmp_path / "out", home=str(home), workers=1)
    results = pq.read_table(tmp_path / "out" / "results").to_pylist()
    assert report["totals"]["rows"] == 6 and [r["url"] for r in results] == urls
    assert [r["status"] for r in results] == ["no_image"] * 2 + ["ok"] * 4
    assert results[3]["decision"] == "remove" and results[3]["key"] == "00000/000000003.jpg"
    kept = kept_files(tmp_path / "out" / "clean" / "ds")
    assert not [k for k in kept if "000000003" in k]  # the removed sample's sidecars go with it
    assert "00000/000000004.json" in kept and "00000/000000004.txt" in kept
    clean = pq.read_table(tmp_path / "out" / "clean" / "ds" / "00000.parquet")
    assert clean["key"].to_pylist() == ["000000000", "000000001", "000000002", "000000004", "000000005"]


def _image_parquet(path: Path, tiles, rows: int = 4) -> Path:
    table = pa.table({"image": [{"bytes": jpeg(tiles[i][1]), "path": f"{i}.jpg"} for i in range(rows)]})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def test_folders_of_tables_are_recognised_by_their_layout(tiles, tmp_path, home, store):
    """img2dataset's parquet output, a Hugging Face dataset repository and Spark output are folders
    of data files with sidecars beside them: each file is read as what it is, the sidecars are
    listed as not read (they used to make the folder a folder of images: 0 of N listed removed)."""
    listed = jpeg(tiles[2][1])
    _bank(store, tmp_path, "md5", [hashlib.md5(listed).hexdigest()], "md5")
    layouts = {
        "img2dataset": ["00000.parquet", "00001.parquet", "00000_stats.json", "00001_stats.json"],
        "hf": ["data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet", "README.md", ".gitattributes"],
        "spark": ["part-00000-a.snappy.parquet", "part-00001-a.snappy.parquet", "_SUCCESS", ".part-00000-a.crc"],
    }
    for layout, names in layouts.items():
        root = tmp_path / layout
        for name in names:
            if name.endswith(".parquet"):
                _image_parquet(root / name, tiles)
            else:
                (root / name).parent.mkdir(parents=True, exist_ok=True)
                (root / name).write_text("{}")
        report = safeset.scan(root, tmp_path / f"out-{layout}", home=str(home), workers=1)
        assert report["totals"]["rows"] == 8 and report["totals"]["remove"] == 2, layout
        ignored = sorted(Path(f["path"]).name for f in report["ignored_files"])
        assert ignored == sorted(n.rsplit("/", 1)[-1] for n in names if not n.endswith(".parquet"))  # hidden too


def test_a_folder_that_mixes_kinds_is_refused_or_read_as_told(tiles, tmp_path, home, store):
    from helpers import make_shards, samples_from

    mixed = make_shards(tmp_path / "mixed", [samples_from(tiles[:3])])
    loose = jpeg(tiles[5][1])
    (mixed / "loose.jpg").write_bytes(loose)  # beside the tars: once silently never checked
    _bank(store, tmp_path, "md5", [hashlib.md5(loose).hexdigest()], "md5")
    refused = run_cli("scan", mixed, "--out", tmp_path / "out", "-q", home=home)
    assert refused.exit_code == 3
    assert "holds 1 tar(s) and also 1 image file(s)" in refused.stderr and "--input-kind" in refused.stderr

    as_tars = safeset.scan(
        mixed, tmp_path / "out-wds", home=str(home), workers=1, read=ReadOptions(input_kind="webdataset")
    )
    assert as_tars["totals"]["rows"] == 3
    assert [(Path(f["path"]).name, f["reason"]) for f in as_tars["ignored_files"]] == [
        ("loose.jpg", "not read as a webdataset input (--input-kind)"),
    ]
    every_file = safeset.scan(
        mixed, tmp_path / "out-files", home=str(home), workers=1, read=ReadOptions(input_kind="folder")
    )
    rows = pq.read_table(tmp_path / "out-files" / "results").to_pylist()
    by_file = {name: r for r in rows for name in [r["key"], *(p["name"] for p in r["payloads"])]}
    assert (by_file["loose.jpg"]["status"], by_file["loose.jpg"]["decision"]) == ("ok", "remove")
    tar = by_file["00000.tar"]  # grouped with 00000.parquet, which shares its name
    assert (tar["status"], tar["decision"]) == ("unsupported_media", "review") and len(tar["payloads"]) == 1
    assert every_file["totals"]["rows"] == 3  # the shard's tar and parquet, its stats file, the loose image


def test_image_parquet_every_byte_column_and_list_element_is_a_payload(tiles, tmp_path, home, store):
    images = [jpeg(tiles[i][1]) for i in range(4)]
    thumbs = [jpeg(tiles[i][1].resize((64, 64))) for i in range(4)]
    extra = [[jpeg(tiles[10 + i][1]), jpeg(tiles[20 + i][1])] for i in range(4)]
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table(
        {
            "image": pa.array([{"bytes": d, "path": f"{i}.jpg"} for i, d in enumerate(images)], type=image_type),
            "thumbnail": pa.array(thumbs, type=pa.binary()),
            "views": pa.array([[{"bytes": d, "path": None} for d in row] for row in extra], type=pa.list_(image_type)),
            "text": [f"c{i}" for i in range(4)],
        }
    )
    pq.write_table(table, tmp_path / "train.parquet")
    _bank(store, tmp_path, "md5", [hashlib.md5(thumbs[1]).hexdigest(), hashlib.md5(extra[2][1]).hexdigest()], "md5")
    safeset.scan(tmp_path / "train.parquet", tmp_path / "out", home=str(home), workers=1)
    rows = pq.read_table(tmp_path / "out" / "results").to_pylist()
    assert [r["decision"] for r in rows] == ["keep", "remove", "remove", "keep"]
    assert [m["payload"] for m in rows[1]["matches"]] == ["thumbnail"]
    assert [m["payload"] for m in rows[2]["matches"]] == ["views[1]"]
    assert [p["name"] for p in rows[0]["payloads"]] == ["thumbnail", "views[0]", "views[1]"]


def test_image_parquet_with_paths_instead_of_bytes(tiles, tmp_path, home, store):
    """Hugging Face's Image feature may hold only a path: the file is read from there (relative to
    the parquet's folder or the input's), never from outside it unless the path is absolute."""
    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    (root / "data").mkdir()
    listed = jpeg(tiles[4][1])
    (root / "images" / "a.jpg").write_bytes(listed)
    (tmp_path / "outside.jpg").write_bytes(listed)
    (root / "data" / "b.jpg").write_bytes(jpeg(tiles[5][1]))
    paths = ["images/a.jpg", "b.jpg", str(tmp_path / "outside.jpg"), "images/missing.jpg", "../../outside.jpg"]
    table = pa.table({"image": [{"bytes": None, "path": p} for p in paths]})
    pq.write_table(table, root / "data" / "train.parquet")
    _bank(store, tmp_path, "md5", [hashlib.md5(listed).hexdigest()], "md5")
    refused = run_cli("scan", root, "--out", tmp_path / "refused", "-q", home=home)
    assert refused.exit_code == 3 and "holds 2 image file(s), 1 parquet file(s)" in refused.stderr
    report = safeset.scan(
        root, tmp_path / "out", home=str(home), workers=1, read=ReadOptions(input_kind="image_parquet")
    )
    rows = pq.read_table(tmp_path / "out" / "results").to_pylist()
    assert [(r["status"], r["decision"]) for r in rows] == [
        ("ok", "remove"),
        ("ok", "keep"),
        ("ok", "remove"),
        ("no_image", "keep"),
        ("no_image", "keep"),
    ]
    assert rows[3]["error"] == "image file not found: images/missing.jpg"
    assert rows[4]["error"] == "image file not found: ../../outside.jpg"  # outside the dataset: not read
    assert report["totals"]["unchecked"] == 2


def test_a_broken_csv_record_costs_one_row_not_the_rest_of_the_file(tmp_path, home, store):
    """An unterminated quote used to swallow every following line into one caption: the listed URL
    after it was never matched, and the row was copied into the clean table as no_image."""
    long_caption = "x" * 200_000  # over the csv module's default field limit
    rows = [
        "url,caption",
        "https://a.example/1.jpg,one",
        'https://a.example/2.jpg,"never closed',
        "https://a.example/3.jpg,three",
        "https://listed.example/4.jpg,four",
        f"https://a.example/5.jpg,{long_caption}",
    ]
    meta = tmp_path / "meta.csv"
    meta.write_bytes("\n".join(rows).encode() + b"\nhttps://a.example/6.jpg,caf\xe9\nhttps://a.example/7.jpg,seven\n")
    _bank(store, tmp_path, "urls", ["https://listed.example/4.jpg"], "url")
    report = safeset.scan(meta, tmp_path / "out", home=str(home), workers=1, read=ReadOptions(table_rows=3))
    results = pq.read_table(tmp_path / "out" / "results").to_pylist()
    assert [(r["url"], r["status"], r["decision"]) for r in results] == [
        ("https://a.example/1.jpg", "no_image", "keep"),
        (None, "unreadable_row", "review"),
        ("https://a.example/3.jpg", "no_image", "keep"),
        ("https://listed.example/4.jpg", "no_image", "remove"),
        ("https://a.example/5.jpg", "no_image", "keep"),
        (None, "unreadable_row", "review"),  # a byte that is not UTF-8
        ("https://a.example/7.jpg", "no_image", "keep"),
    ]
    assert results[1]["error"] == "unreadable CSV record (line 3)"
    assert report["totals"]["rows"] == 7
    clean = b"".join(p.read_bytes() for p in sorted((tmp_path / "out" / "clean" / "meta.csv").iterdir()))
    kept = [line for line in meta.read_bytes().splitlines(keepends=True)[1:] if b"/1.jpg" in line or b"/3.jpg" in line]
    assert clean.count(b"url,caption") == 3 and b"never closed" not in clean and b"listed" not in clean
    assert all(line in clean for line in kept) and long_caption.encode() in clean


def test_odd_json_lines_are_unreadable_rows(tmp_path, home):
    meta = tmp_path / "meta.jsonl"
    meta.write_bytes(
        b'{"url": "https://a.example/1.jpg"}\n'
        + b"[" * 100_000
        + b"]" * 100_000
        + b'\n["not", "an", "object"]\n{"url": "https://a.example/\xff.jpg"}\n{"url": "https://a.example/5.jpg"}\n'
    )
    report = safeset.scan(meta, tmp_path / "out", home=str(home), workers=1)
    results = pq.read_table(tmp_path / "out" / "results").to_pylist()
    assert [r["status"] for r in results] == [
        "no_image",
        "unreadable_row",
        "unreadable_row",
        "unreadable_row",
        "no_image",
    ]
    assert [r["error"] for r in results[1:4]] == [
        "invalid JSON (line 2)",
        "a JSON line must be an object (line 3)",
        "not UTF-8 text (line 4)",
    ]
    assert report["totals"]["review"] == 3


@pytest.mark.parametrize("rows_per_part", [1, 100])
def test_json_lines_are_counted_as_they_are_read(tmp_path, home, rows_per_part):
    """Lines end at "\\n" only and are blank only if ASCII white space, whether the plan counts them
    (in bytes) or a worker reads them (as text): a lone CR, a no-break space or a file separator
    on a line make an unreadable row, never a shard whose rows in != out."""
    meta = tmp_path / "meta.jsonl"
    meta.write_bytes(
        b"\xef\xbb\xbf \r\n"  # a BOM, then a blank line
        + b'{"url": "https://a.example/1.jpg"}\n'
        + b'{"url": "https://a.example/2.jpg"}\r{"url": "https://a.example/3.jpg"}\n'
        + "\u00a0\n".encode()
        + b"\x1c\n\t\x0b\x0c\n"
        + b'{"url": "https://a.example/4.jpg"}'  # no newline at the end
    )
    options = ("--table-rows", str(rows_per_part), "--workers", "1", "-q")
    result = run_cli("scan", meta, "--out", tmp_path / "out", *options, home=home)
    assert result.exit_code == 0, result.output
    results = pq.read_table(tmp_path / "out" / "results").to_pylist()
    assert [r["status"] for r in results] == ["no_image"] + ["unreadable_row"] * 3 + ["no_image"]
    assert [r["error"] for r in results[1:4]] == [f"invalid JSON (line {n})" for n in (3, 4, 5)]
    assert [r["url"] for r in results[::4]] == ["https://a.example/1.jpg", "https://a.example/4.jpg"]


def test_json_lines_spell_their_keys_as_they_please_but_once(tmp_path, home, store):
    """A JSON-lines table's columns come from its first line; a later line may spell them in
    another case (read all the same), but a line with `url` and `URL` (or `url` twice) is
    unreadable, as the same columns in a CSV are refused."""
    _bank(store, tmp_path, "urls", ["https://a.example/listed.jpg"], "url")
    meta = tmp_path / "meta.jsonl"
    meta.write_text(
        '{"url": "https://a.example/1.jpg"}\n'
        '{"URL": "https://a.example/listed.jpg"}\n'
        '{"url": "https://a.example/2.jpg", "URL": "https://a.example/listed.jpg"}\n'
        '{"url": "https://a.example/listed.jpg", "url": "https://a.example/3.jpg"}\n'
    )
    safeset.scan(meta, tmp_path / "out", home=str(home), workers=1)
    rows = pq.read_table(tmp_path / "out" / "results").to_pylist()
    assert [(r["url"], r["status"], r["decision"]) for r in rows] == [
        ("https://a.example/1.jpg", "no_image", "keep"),
        ("https://a.example/listed.jpg", "no_image", "remove"),
        (None, "unreadable_row", "review"),
        (None, "unreadable_row", "review"),
    ]
    assert rows[2]["error"] == "keys 'url' and 'URL' name one column (line 3)"


def test_a_kept_row_that_cannot_be_copied_fails_the_shard(tmp_path, home):
    """A parquet table whose last row group is corrupt: its rows are unreadable; a policy that keeps
    unreadable rows cannot have them copied, and the clean table is never silently cut short."""
    path = tmp_path / "meta.parquet"
    pq.write_table(pa.table({"url": [f"https://a.example/{i}.jpg" for i in range(200)]}), path, row_group_size=100)
    data = bytearray(path.read_bytes())
    chunk = pq.ParquetFile(path).metadata.row_group(1).column(0)
    end = (chunk.dictionary_page_offset or chunk.data_page_offset) + chunk.total_compressed_size
    data[chunk.data_page_offset + 16 : end - 4] = b"\xff" * (end - 4 - chunk.data_page_offset - 16)  # its data page
    path.write_bytes(bytes(data))
    policy = tmp_path / "keep.toml"
    policy.write_text('[unchecked]\nunreadable_row = "keep"\n')
    result = run_cli("scan", path, "--out", tmp_path / "out", "--policy", policy, "-q", home=home)
    assert (
        result.exit_code == 3 and "meta.parquet, row 100: 100 kept row(s) from here on cannot be read" in result.stderr
    )
    default = run_cli("scan", path, "--out", tmp_path / "out2", "-q", home=home)
    assert default.exit_code == 0, default.output
    assert pq.read_table(tmp_path / "out2" / "clean" / "meta.parquet").num_rows == 100


def test_a_sidecar_parquet_whose_keys_are_bytes_is_read(tiles, tmp_path, home):
    """A writer that stored the keys as bytes: they are still the tar's keys (and, being bytes that
    reach the clean release, checked too)."""
    root, _ = write_files_layout(tmp_path / "ds", tiles[:3], failed=0)
    table = pq.read_table(root / "00000.parquet")
    keys = pa.array([k.encode() for k in table["key"].to_pylist()], pa.binary())
    pq.write_table(table.set_column(table.schema.get_field_index("key"), "key", keys), root / "00000.parquet")
    report = safeset.scan(root, tmp_path / "out", home=str(home), workers=1)
    rows = pq.read_table(tmp_path / "out" / "results").to_pylist()
    assert report["totals"]["rows"] == 3 and report["problems"] == []
    assert [r["key"] for r in rows] == [f"00000/00000000{i}.jpg" for i in range(3)]


def _ppm_text(image) -> bytes:
    """An image as plain (ASCII) PPM, `P3`: text by every test of text, and an image all the same."""
    rgb = image.convert("RGB")
    values = " ".join(map(str, rgb.tobytes()))
    return f"P3\n{rgb.width} {rgb.height}\n255\n{values}\n".encode()


def test_sidecars_that_hold_images_are_checked(tiles, tmp_path, home, store):
    """A `.txt` or `.json` is read as metadata only if it is text no image decoder takes: a plain
    PPM is ASCII, and a sidecar too large to hold in memory is hashed as it streams."""
    listed_ppm, listed_big = tiles[20][1], encode(tiles[21][1].resize((1200, 1200)), "BMP")  # 4.3 MB
    _bank(store, tmp_path, "pdq", [f"pdq {safeset.pdq(listed_ppm)}"])
    _bank(store, tmp_path, "md5", [hashlib.md5(listed_big).hexdigest()], "md5")
    folder = tmp_path / "folder"
    folder.mkdir()
    for name, sidecar, data in (("a", "a.txt", _ppm_text(listed_ppm)), ("b", "b.txt", listed_big)):
        (folder / f"{name}.jpg").write_bytes(jpeg(tiles[0][1]))
        (folder / sidecar).write_bytes(data)
    (folder / "c.jpg").write_bytes(jpeg(tiles[1][1]))
    (folder / "c.TXT").write_bytes(b"a caption in upper case")
    (folder / "d.jpg").write_bytes(jpeg(tiles[2][1]))
    (folder / "d.txt").write_bytes(b"P6 Pro camera review")  # starts as a PPM would: a caption all the same
    (folder / "e.jpg").write_bytes(jpeg(tiles[3][1]))
    (folder / "e.txt").write_bytes(encode(tiles[3][1].convert("1"), "XBM"))  # text, and an image viewers show
    options = ("--max-bytes", str(len(listed_big) - 1), "--workers", "1", "-q")
    assert run_cli("scan", folder, "--out", tmp_path / "out", *options, home=home).exit_code == 0
    rows = {r["key"]: r for r in pq.read_table(tmp_path / "out" / "results").to_pylist()}
    decided = {k: (r["status"], r["decision"]) for k, r in rows.items()}
    assert decided == {
        "a.jpg": ("ok", "remove"),
        "b.jpg": ("decode_failed", "remove"),  # its .txt, too large to decode, is matched by its MD5
        "c.jpg": ("ok", "keep"),
        "d.jpg": ("ok", "keep"),
        "e.jpg": ("unsupported_media", "review"),  # an image safeset does not decode: held
    }
    assert kept_files(tmp_path / "out" / "clean" / "folder") == ["c.TXT", "c.jpg", "d.jpg", "d.txt"]

    tar = tmp_path / "wds" / "00000.tar"
    tar.parent.mkdir()
    with tarfile.open(tar, "w") as out:
        for name, data in (("a.jpg", jpeg(tiles[0][1])), ("a.json", _ppm_text(listed_ppm))):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))
    assert run_cli("scan", tar.parent, "--out", tmp_path / "out2", "--workers", "1", "-q", home=home).exit_code == 0
    (row,) = pq.read_table(tmp_path / "out2" / "results").to_pylist()
    assert row["decision"] == "remove" and row["matches"][0]["payload"] == "json"


@pytest.mark.parametrize("layout", ["tar", "files"])
def test_img2dataset_parquet_beside_a_shard_is_checked_too(tiles, tmp_path, home, store, layout):
    """Whatever reaches the clean release is checked: a byte column in the parquet beside a shard
    (img2dataset writes none, another tool might), and the stats file, written again as JSON."""
    root, _ = write_files_layout(tmp_path / "ds", tiles[:4], failed=1)
    listed = encode(tiles[22][1], "PNG")
    table = pq.read_table(root / "00000.parquet")
    thumbs = [None, None, listed, None]
    pq.write_table(table.append_column("thumbnail", pa.array(thumbs, pa.binary())), root / "00000.parquet")
    (root / "00000_stats.json").write_bytes(listed)  # not JSON: left out of the release
    if layout == "tar":
        with tarfile.open(root / "00000.tar", "w") as tar:
            for path in sorted((root / "00000").iterdir()):
                tar.add(path, path.name)
        for path in (root / "00000").iterdir():
            path.unlink()
        (root / "00000").rmdir()
    else:  # a file below the shard's folder, named as a row's key is: its own row, not that row's
        (root / "00000" / "deeper").mkdir()
        (root / "00000" / "deeper" / "000000003.jpg").write_bytes(encode(tiles[23][1], "PNG"))
        _bank(store, tmp_path, "deep", [hashlib.md5(encode(tiles[23][1], "PNG")).hexdigest()], "md5")
    _bank(store, tmp_path, "md5", [hashlib.md5(listed).hexdigest()], "md5")
    report = safeset.scan(root, tmp_path / "out", home=str(home), workers=1)
    rows = pq.read_table(tmp_path / "out" / "results").to_pylist()
    assert report["totals"]["rows"] == (4 if layout == "tar" else 5)
    assert [r["decision"] for r in rows[:4]] == ["keep", "keep", "remove", "keep"]
    assert [p["name"] for p in rows[2]["payloads"]][-1] == "00000.parquet:thumbnail"
    clean = tmp_path / "out" / "clean" / "ds"
    assert listed not in (clean / "00000.parquet").read_bytes() and not (clean / "00000_stats.json").exists()
    if layout == "files":
        assert rows[4]["key"] == "00000/deeper/000000003.jpg" and rows[4]["decision"] == "remove"
        assert "00000/000000003.jpg" in kept_files(clean) and "00000/deeper/000000003.jpg" not in kept_files(clean)
    else:  # stats that are JSON are written again, no larger: deep nesting indented would multiply
        deep: list = [1]
        for _ in range(40):
            deep = [deep]
        nested = {"counts": [deep] * 200}
        (root / "00000_stats.json").write_text(json.dumps(nested))
        safeset.scan(root, tmp_path / "out2", home=str(home), workers=1)
        stats = tmp_path / "out2" / "clean" / "ds" / "00000_stats.json"
        assert json.loads(stats.read_bytes()) == nested
        assert stats.stat().st_size <= (root / "00000_stats.json").stat().st_size


@pytest.mark.parametrize("keys", [None, "int", "text"])
def test_parquet_tables_read_as_columns_give_what_rows_give(tmp_path, keys):
    """A metadata parquet is read a column at a time for a scan that does not fetch; every row it
    gives (index, key, URL, caption, signals, unreadable) is what reading it row by row gives,
    corrupt row groups, empty and missing URLs and captions, missing keys, missing and non-finite
    scores, and parts of a large table included."""
    from safeset.sources.base import ShardLog
    from safeset.sources.tables import TableReader, _parquet_row_tables

    n = 250
    columns = {"URL": [None if i % 17 == 0 else "" if i % 13 == 0 else f"https://a.example/{i}.jpg" for i in range(n)]}
    columns["TEXT"] = [None if i % 7 == 0 else "" if i % 5 == 0 else f"Caption {i} naïve" for i in range(n)]
    scores = [None, float("nan"), float("inf"), 0.25]
    columns["PUNSAFE"] = pa.array([scores[i % 4] if i % 3 == 0 else i / n for i in range(n)], pa.float32())
    columns["pwatermark"] = pa.array([i % 4 for i in range(n)], pa.int16())
    columns["nsfw_flag"] = pa.array([i % 2 == 0 for i in range(n)])  # a boolean is no score
    columns["similarity"] = pa.array([Decimal(i) / 100 for i in range(n)], pa.decimal128(6, 2))  # nor a decimal
    columns["hash"] = pa.array([(1 << 62) + i for i in range(n)], pa.int64())  # rounds, as float() rounds it
    columns["huge"] = pa.array([1e39 if i % 2 else -0.5 for i in range(n)])  # beyond float32: left out
    if keys == "int":
        columns["key"] = [None if i % 11 == 0 else 1000 + i for i in range(n)]
    elif keys == "text":
        columns["key"] = [None if i % 11 == 0 else f"k{i:05d}" for i in range(n)]
    path = tmp_path / "meta.parquet"
    pq.write_table(pa.table(columns), path, row_group_size=50)
    data = bytearray(path.read_bytes())  # the third row group's URL page made unreadable
    chunk = pq.ParquetFile(path).metadata.row_group(2).column(0)
    end = (chunk.dictionary_page_offset or chunk.data_page_offset) + chunk.total_compressed_size
    data[chunk.data_page_offset + 16 : end - 4] = b"\xff" * (end - 4 - chunk.data_page_offset - 16)
    path.write_bytes(bytes(data))
    reader = TableReader()
    for rows_per_part in (70, 20):  # the corrupt group within one part, and cut across three
        reported: list[tuple[int, int]] = []
        read = ReadOptions(
            table_rows=rows_per_part, signals=("punsafe", "PWATERMARK", "nsfw_flag", "similarity", "hash", "huge")
        )
        for shard in plan_shards([path], read).shards:
            by_columns, by_rows = ShardLog(), ShardLog()
            tables = _parquet_row_tables(shard, by_columns, 1 << 16)
            got = pa.concat_tables(list(tables)).to_pylist()
            wanted = [
                {
                    "index": item.index,
                    "key": item.key,
                    "url": item.url,
                    "caption": item.caption,
                    "error": item.error,
                    "signals": [(name, pytest.approx(value)) for name, value in item.signals.items()],
                }
                for item in reader.items(shard, by_rows)
            ]
            assert got == wanted
            assert (by_columns.rows, by_columns.problems) == (by_rows.rows, by_rows.problems)
            for problem in by_columns.problems:  # each part names its own rows of the corrupt group
                first, last = map(int, re.search(r"rows (\d+) to (\d+)", problem).groups())
                assert shard.part.start <= first <= last < shard.part.stop
                reported.append((first, last))
        covered = [row for first, last in sorted(reported) for row in range(first, last + 1)]
        assert covered == list(range(100, 150))  # the third group's rows, each once
