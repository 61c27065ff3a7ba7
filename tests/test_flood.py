"""Flood quarantine (`pipeline.flood`): one list entry that matches too many rows of an audit (a
placeholder image every dead link returns) has its matches held for review, not acted on."""

from __future__ import annotations

import hashlib
import json

import pyarrow.parquet as pq
from helpers import make_shards, run_cli, samples_from, write_lines

import safeset
from safeset.banks.verdicts import entry_tag as tag
from safeset.demo import Sample, jpeg


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
    result = run_cli("decide", str(out), "--flood-limit", "5", "--json", home=home)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["totals"]["review"] == 12
    # or as a share of the audit's rows: 12 of 17 is more than 50%, not more than 75%
    for share, held in (("50%", 12), ("75%", 0)):
        result = run_cli("decide", str(out), "--flood-limit", share, "--json", home=home)
        assert result.exit_code == 0, result.stderr
        assert json.loads(result.stdout)["totals"]["review"] == held, share
    for bad in ("-1", "0%", "101%", "1.5", "nan%", "lots"):
        result = run_cli("decide", str(out), "--flood-limit", bad, home=home)
        assert result.exit_code == 2 and "0.1%" in result.stderr, bad
    shared = write_lines(tmp_path / "share.toml", ['name = "s"', "[flood]", 'limit = "50%"'])
    assert safeset.decide(out, policy=shared, home=str(home), workers=1)["totals"]["review"] == 12
    wrong = write_lines(tmp_path / "wrong.toml", ['name = "w"', "[flood]", 'limit = "half"'])
    result = run_cli("decide", str(out), "--policy", str(wrong), home=home)
    assert result.exit_code == 3 and "wrong.toml" in result.stderr and "0.1%" in result.stderr


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


def test_a_verdict_on_a_listed_entry_releases_it_or_disables_it_for_every_audit(tmp_path, home, tiles):
    """The report names a quarantined entry by bank and tag; a verifier answers by that tag
    (`review import --entry`): confirmed releases it (its matches act), disputed quarantines it
    again; false_positive on an entry, by tag or by its listed value, disables it for every
    audit on the bank home, recorded with who and why, never with the value."""
    placeholder = jpeg(tiles[0][1])
    served = [Sample(f"https://cdn{i}.example.org/missing.jpg", f"p{i}", placeholder) for i in range(8)]
    listed = Sample("https://bad.example.org/x.jpg", "x", jpeg(tiles[1][1]))
    data = make_shards(tmp_path / "shards", [served + [listed] + samples_from(tiles[2:5])])
    entries = [hashlib.md5(placeholder).hexdigest(), hashlib.md5(listed.image).hexdigest()]
    safeset.BankStore(home).add("list", write_lines(tmp_path / "md5.txt", entries), type_name="md5")
    policy = write_lines(tmp_path / "p.toml", ['name = "p"', "[copies]", 'action = "keep"', "[flood]", "limit = 5"])
    out = tmp_path / "out"
    report = safeset.scan(data, out, policy=policy, workers=1, home=str(home))
    flooded = report["quarantined"][0]["entry"]
    assert (report["totals"]["remove"], report["totals"]["review"]) == (1, 8)

    def answer(name, lines, *extra):
        path = write_lines(tmp_path / name, ["bank,entry,verdict", *lines])
        result = run_cli("review", "import", path, "--entry", "--verifier", "list owner", "--json", *extra, home=home)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    assert answer("release.csv", [f"list,{flooded.upper()},confirmed"])["verdicts"] == {"confirmed": 1}
    released = safeset.decide(out, policy=policy, home=str(home), workers=1)
    assert (released["totals"]["remove"], released["totals"]["review"]) == (9, 0) and "quarantined" not in released
    assert released["rounds"][-1]["transitions"] == {"review->remove": {"match:list:md5": 8}}
    answer("again.csv", [f"list,{flooded},disputed"])
    assert safeset.decide(out, policy=policy, home=str(home), workers=1)["totals"]["review"] == 8

    # the other entry was wrongly listed: disabled by its value; a scan of other data keeps it
    done = answer("wrong.csv", [f"list,{entries[1].upper()},false_positive"], "--reference", "ticket 7")
    assert done["imported"] == 1
    log = (home / "verdicts" / "log.jsonl").read_text()
    assert entries[1] not in log and tag(entries[1]) in log and "ticket 7" in log and "list owner" in log
    other = make_shards(tmp_path / "other", [[Sample("https://else.example.org/y.jpg", "y", listed.image)]])
    elsewhere = safeset.scan(other, tmp_path / "out2", workers=1, home=str(home))
    row = pq.read_table(tmp_path / "out2" / "results").to_pylist()[0]
    assert elsewhere["totals"]["keep"] == 1 and row["reasons"] == ["verdict:false_positive"] and row["matches"]

    # the placeholder's entry was wrongly listed too: disabled, it floods nothing and acts on nothing
    answer("placeholder.csv", [f"list,{flooded},false_positive"])
    cleared = safeset.decide(out, policy=policy, home=str(home), workers=1)
    assert (cleared["totals"]["remove"], cleared["totals"]["review"]) == (0, 0) and "quarantined" not in cleared

    # an entry no bank holds, a bank that does not exist: bad lines, by number, never echoed; a
    # file none of whose lines was taken is not recorded, so that its corrected form can come
    path = write_lines(tmp_path / "bad.csv", ["bank,entry,verdict", "list,0123456789ab,confirmed", "nope,x,confirmed"])
    for _ in range(2):
        result = run_cli("review", "import", path, "--entry", "--skip-bad", "--json", home=home)
        done = json.loads(result.stdout)
        assert [b["line"] for b in done["bad_lines"]] == [2, 3] and not done["already_imported"]
    assert "0123456789ab" not in result.stdout
