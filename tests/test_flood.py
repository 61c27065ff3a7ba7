"""Flood quarantine (`pipeline.flood`): one list entry that matches too many rows of an audit (a
placeholder image every dead link returns) has its matches held for review, not acted on."""

from __future__ import annotations

import hashlib
import json

import pyarrow.parquet as pq
from helpers import make_shards, samples_from, write_lines

import safeset
from safeset.demo import Sample, jpeg
from safeset.pipeline.flood import tag


def test_an_entry_that_floods_the_audit_is_quarantined_and_named_by_tag(tmp_path, home, tiles):
    placeholder = jpeg(tiles[0][1])
    served = [Sample(f"https://cdn{i}.example.org/missing.jpg", f"p{i}", placeholder) for i in range(12)]
    listed = Sample("https://bad.example.org/x.jpg", "x", jpeg(tiles[1][1]))
    data = make_shards(tmp_path / "shards", [served[:6] + [listed], served[6:] + samples_from(tiles[2:6])])
    entries = [hashlib.md5(placeholder).hexdigest(), hashlib.md5(listed.image).hexdigest()]
    safeset.BankStore(home).add("list", write_lines(tmp_path / "md5.txt", entries), type_name="md5")
    policy = tmp_path / "p.toml"
    policy.write_text('name = "p"\n[copies]\naction = "keep"\n[flood]\nlimit = 5\n')
    out = tmp_path / "out"
    report = safeset.scan(data, out, policy=policy, workers=2, home=str(home))

    assert (report["totals"]["remove"], report["totals"]["review"]) == (1, 12)
    assert report["quarantined"] == [{"bank": "list", "entry": tag(entries[0]), "rows": 12}]
    assert [r["kind"] for r in report["rounds"]] == ["scan", "audit-wide"]
    rows = pq.read_table(out / "results").to_pylist()
    held = [r for r in rows if r["decision"] == "review"]
    assert all(r["reasons"] == [f"flood:list:{tag(entries[0])}"] and r["matches"] for r in held)
    assert entries[0] not in json.dumps(report) and entries[0] not in (out / "report.html").read_text()

    again = safeset.scan(data, out, policy=policy, workers=2, home=str(home))  # nothing new to decide
    assert len(again["rounds"]) == 2
    off = tmp_path / "off.toml"
    off.write_text('name = "off"\n[copies]\naction = "keep"\n[flood]\nlimit = 0\n')
    decided = safeset.decide(out, policy=off, home=str(home), workers=2)
    assert decided["totals"]["remove"] == 13 and "quarantined" not in decided
    assert decided["rounds"][-1]["transitions"]["review->remove"] == {"match:list:md5": 12}
    # --flood-limit overrides the policy's limit, for a round as for a scan
    from helpers import run_cli

    result = run_cli("decide", str(out), "--flood-limit", "5", "--json", home=home)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["totals"]["review"] == 12


def test_copies_of_a_placeholder_are_held_as_a_flood_not_removed(tmp_path, home, tiles):
    """One row showing the placeholder is removed for its URL: with copies removed, the other
    rows showing it would all go as its copies; a flood holds them instead (review of issue 14)."""
    placeholder = jpeg(tiles[0][1])
    served = [Sample(f"https://cdn{i}.example.org/missing.jpg", f"p{i}", placeholder) for i in range(8)]
    data = make_shards(
        tmp_path / "shards", [served[:4] + samples_from(tiles[2:4]), served[4:] + samples_from(tiles[4:6])]
    )
    safeset.BankStore(home).add("urls", write_lines(tmp_path / "u.txt", [served[3].url]), type_name="url")
    policy = tmp_path / "p.toml"
    policy.write_text('name = "p"\n[copies]\naction = "remove"\n[flood]\nlimit = 5\n')
    report = safeset.scan(data, tmp_path / "out", policy=policy, workers=1, home=str(home))
    assert (report["totals"]["remove"], report["totals"]["review"]) == (1, 7)
    held = [r for r in pq.read_table(tmp_path / "out" / "results").to_pylist() if r["decision"] == "review"]
    assert all(len(r["reasons"]) == 1 and r["reasons"][0].startswith("flood:copies:") for r in held)
