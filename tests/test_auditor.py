"""`safeset.Auditor`, the in-process façade: the same hashing, matching and policy as a scan, one
image or one set of hashes at a time, with no state but what it was built with."""

from __future__ import annotations

import hashlib
import tarfile

import pyarrow.parquet as pq
import pytest
from helpers import listed_tile_shards, write_lines

import safeset


def test_an_image_checked_in_process_gets_the_row_a_scan_writes(tiles, tmp_path, home):
    data, listed = listed_tile_shards(tmp_path, tiles, 12, shards=1, every=4)
    store = safeset.BankStore(home)
    store.add("pdq", listed, type_name="pdq")
    write_lines(tmp_path / "urls.txt", ["https://img.example.org/listed.jpg"])
    store.add("urls", tmp_path / "urls.txt", type_name="url")
    safeset.scan(data, tmp_path / "out", home=str(home), workers=1)
    scanned = {row["md5"]: row for row in pq.read_table(tmp_path / "out" / "results").to_pylist()}

    auditor = safeset.Auditor(home)
    with tarfile.open(data / "00000.tar") as tar:
        images = [tar.extractfile(m).read() for m in tar if m.name.endswith(".jpg")]
    assert len(images) == 12
    for image in images:
        row = auditor.check_bytes(image)
        wanted = scanned[hashlib.md5(image).hexdigest()]
        for name in ("status", "md5", "sha1", "sha256", "pdq", "pdq_quality", "decision", "reasons"):
            assert row[name] == wanted[name], name
    assert sum(auditor.check_bytes(image)["decision"] == "remove" for image in images) == 3

    # what is known of an image, without it: its digests, its PDQ, its URL
    removed = next(row for row in scanned.values() if row["decision"] == "remove")
    by_pdq = auditor.check_hashes(pdq=removed["pdq"].upper(), pdq_quality=removed["pdq_quality"])
    assert by_pdq["decision"] == "remove" and by_pdq["matches"][0]["bank"] == "pdq"
    flat = auditor.check_hashes(pdq=removed["pdq"], pdq_quality=10)  # below the gate: not matched by it
    assert flat["matches"] == [] and "unchecked:pdq_low_quality" in flat["reasons"]
    by_url = auditor.check_hashes(md5="00" * 16, url="https://IMG.example.org/listed.jpg")
    assert by_url["decision"] == "remove" and by_url["matches"][0]["signal_type"] == "url"

    # banks and policy are its own: another auditor beside it decides by another
    watching = safeset.Auditor(home, banks=["urls"], policy="review-only")
    assert watching.check_bytes(images[0])["matches"] == []
    assert watching.check_hashes(url="https://img.example.org/listed.jpg")["decision"] == "review"
    assert auditor.check_bytes(images[0]) == auditor.check_bytes(images[0])
    assert watching.banks == ["urls"] and safeset.Auditor(home, banks="urls").banks == ["urls"]

    # what it is given is checked, as a list's lines are
    url_only = auditor.check_hashes(url="https://img.example.org/other.jpg")
    assert url_only["status"] == "no_image" and url_only["decision"] == "keep"
    for bad in ({"md5": "zz" * 16}, {"md5": "ab"}, {"pdq": "0" * 64}, {"sha1": 7}, {"pdq_quality": 101}):
        with pytest.raises(safeset.UsageError):
            auditor.check_hashes(**bad)
    with pytest.raises(TypeError, match="takes bytes"):
        auditor.check_bytes("not bytes")
