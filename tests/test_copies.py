"""Copies of flagged rows (`pipeline.copies`): a row removed for its own reasons takes the rows
holding its image (the same bytes, or a PDQ within the threshold) with it, in every round."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
from helpers import make_shards, read_json, samples_from, write_lines
from PIL import Image

import safeset
from safeset.demo import Sample, jpeg


@pytest.fixture
def shards(tmp_path, tiles):
    """Two img2dataset shards: tile 0 at a listed URL; the same bytes at another URL, in the other
    shard; a smaller re-encode of it; and unrelated tiles."""
    listed = tiles[0][1]
    original = Sample("https://listed.example.org/a.jpg", "listed", jpeg(listed), size=listed.size)
    same = Sample("https://mirror.example.org/a-copy.jpg", "mirror", original.image, size=listed.size)
    small = listed.resize((listed.width // 2, listed.height // 2), Image.Resampling.LANCZOS)
    resized = Sample("https://thumbs.example.org/a-small.jpg", "thumb", jpeg(small, 75), size=small.size)
    others = samples_from(tiles[1:13])
    data = make_shards(tmp_path / "shards", [[original, *others[:6]], [same, resized, *others[6:]]])
    write_lines(tmp_path / "urls.txt", [original.url])
    return data, tmp_path / "urls.txt"


def by_row(out) -> dict[str, dict]:
    rows = pq.read_table(out / "results").to_pylist()
    return {row["url"]: row for row in rows}


def test_copies_of_a_removed_row_are_held_and_rounds_keep_them(shards, tmp_path, home):
    data, urls = shards
    safeset.BankStore(home).add("hotline", urls, type_name="url")
    out = tmp_path / "out"
    report = safeset.scan(data, out, workers=2, home=str(home))

    rows = by_row(out)
    original = rows["https://listed.example.org/a.jpg"]
    assert original["decision"] == "remove" and original["reasons"] == ["match:hotline:url"]
    for url in ("https://mirror.example.org/a-copy.jpg", "https://thumbs.example.org/a-small.jpg"):
        assert rows[url]["decision"] == "review"
        assert rows[url]["reasons"] == [f"copy_of:{original['row_id']}"]
    assert report["totals"]["review"] == 2 and report["totals"]["remove"] == 1
    assert [r["kind"] for r in report["rounds"]] == ["scan", "audit-wide"]
    assert report["rounds"][-1]["transitions"] == {"keep->review": {f"copy_of:{original['row_id']}": 2}}
    review = {r["url"] for r in pq.read_table(out / "review.parquet").to_pylist()}
    assert review == {"https://mirror.example.org/a-copy.jpg", "https://thumbs.example.org/a-small.jpg"}

    # the same scan again changes nothing: the copies are as its results say
    again = safeset.scan(data, out, workers=2, home=str(home))
    assert len(again["rounds"]) == 2

    # a policy that removes copies; the clean release loses them too
    remove = tmp_path / "remove.toml"
    remove.write_text('name = "copies-go"\n[copies]\naction = "remove"\n')
    decided = safeset.decide(out, policy=remove, home=str(home), workers=2)
    assert decided["totals"]["remove"] == 3 and decided["totals"]["review"] == 0
    kept_urls = set()
    for part in sorted((out / "clean").rglob("*.parquet")):
        kept_urls |= {r["url"] for r in pq.read_table(part).to_pylist() if r.get("status") == "success"}
    assert not kept_urls & {"https://mirror.example.org/a-copy.jpg", "https://thumbs.example.org/a-small.jpg"}

    # "keep" turns the search off; the bank gone, nothing is flagged and no copy remains
    off = tmp_path / "off.toml"
    off.write_text('name = "no-copies"\n[copies]\naction = "keep"\n')
    assert safeset.decide(out, policy=off, home=str(home), workers=2)["totals"]["review"] == 0
    none = safeset.BankStore(home)
    none.add("nothing", write_lines(tmp_path / "none.txt", ["https://nowhere.example.org/x.jpg"]), type_name="url")
    cleared = safeset.decide(out, banks=["nothing"], policy="default", home=str(home), workers=2)
    assert cleared["totals"]["remove"] == 0 and cleared["totals"]["review"] == 0
    assert all(not r["reasons"] for r in by_row(out).values())
    assert read_json(out / "report.json")["conservation"]["holds"]


def test_a_copy_held_for_a_reason_that_keeps_is_no_flag_and_rescans_change_nothing(tmp_path, home):
    """A flat image (its PDQ of low quality, an `unchecked` reason whose action is keep) removed
    by a URL list, and two byte copies of it: with copies removed, a rescan into the same OUT
    must not flip them back (review of issue 13)."""
    flat = Image.new("RGB", (300, 200), (120, 130, 140))
    original = Sample("https://listed.example.org/a.jpg", "a", jpeg(flat), size=flat.size)
    copies = [Sample(f"https://mirror{i}.example.org/a.jpg", f"m{i}", original.image, size=flat.size) for i in (1, 2)]
    data = make_shards(tmp_path / "shards", [[original], copies])
    safeset.BankStore(home).add("hotline", write_lines(tmp_path / "urls.txt", [original.url]), type_name="url")
    policy = tmp_path / "remove.toml"
    policy.write_text('name = "copies-go"\n[copies]\naction = "remove"\n')
    out = tmp_path / "out"
    for _ in range(3):
        report = safeset.scan(data, out, policy=policy, workers=1, home=str(home))
        assert report["totals"]["remove"] == 3
    assert [r["kind"] for r in report["rounds"]] == ["scan", "audit-wide"]
