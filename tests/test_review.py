"""The verification round trip on benign stand-ins: scan -> export -> a hotline's verdicts ->
import -> decide -> diff of the round -> expansion from the confirmed image -> a copy of the old
release synced to the new, and the confirmed image's copy removed in the next scan of another
dataset."""

from __future__ import annotations

import csv
import json
import stat

import numpy as np
import pyarrow.parquet as pq
import pytest
from helpers import make_shards, read_json, run_cli, samples_from, write_lines
from PIL import Image
from test_neighbours import laion_layout

import safeset
from safeset.demo import Sample, jpeg


@pytest.fixture
def audit(tmp_path, home, tiles):
    """A dataset where a URL list removes tile 0, a PDQ list removes tile 1 (wrongly, as the
    verifier will say) and a watchlist holds tile 2 for review."""
    a, b, c = (Sample(f"https://site{i}.example.org/{i}.jpg", f"t{i}", jpeg(tiles[i][1])) for i in range(3))
    data = make_shards(tmp_path / "one", [[a, b, *samples_from(tiles[3:7])], [c, *samples_from(tiles[7:11])]])
    store = safeset.BankStore(home)
    store.add("hotline", write_lines(tmp_path / "urls.txt", [a.url]), type_name="url")
    store.add("watch", write_lines(tmp_path / "pdq.txt", [f"pdq {safeset.pdq(tiles[1][1])}"]))
    store.add("watchlist", write_lines(tmp_path / "md5.txt", [f"md5 {__import__('hashlib').md5(c.image).hexdigest()}"]))
    policy = tmp_path / "p.toml"
    policy.write_text('name = "p"\n[match.banks]\nwatchlist = "review"\n')
    out = tmp_path / "out"
    report = safeset.scan(data, out, policy=policy, workers=2, home=str(home))
    assert (report["totals"]["remove"], report["totals"]["review"]) == (2, 1)
    return out, (a, b, c), policy, data


def rows(out) -> dict[str, dict]:
    return {r["url"]: r for r in pq.read_table(out / "results").to_pylist()}


def test_the_whole_loop(audit, tmp_path, home, tiles):
    out, (a, b, c), policy, data = audit
    result = run_cli("review", "export", str(out), "--to", str(tmp_path / "cases"), home=home)
    assert result.exit_code == 0, result.stderr
    with open(tmp_path / "cases" / "cases.csv") as fh:
        cases = {row["url"]: row for row in csv.DictReader(fh)}
    assert set(cases) == {a.url, b.url, c.url}
    for path in (tmp_path / "cases").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    listed = (tmp_path / "cases" / "hashes.txt").read_text().splitlines()
    assert f"md5 {rows(out)[a.url]['md5']}" in listed and f"url {a.url}" in listed
    exported = (tmp_path / "cases" / "cases.csv").read_text()
    assert "caption" not in exported and "t0" not in exported  # no captions go out

    # the hotline's answer, by case id, as it would send it back
    verdicts = tmp_path / "verdicts.csv"
    with open(verdicts, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["case_id", "verdict"])
        writer.writerows([[cases[a.url]["case_id"], "confirmed"], [cases[b.url]["case_id"], "false_positive"]])
        writer.writerow([cases[c.url]["case_id"], "disputed"])
    result = run_cli("review", "import", str(verdicts), "--out", str(out), "--verifier", "hotline", "--json", home=home)
    assert result.exit_code == 0, result.stderr
    done = json.loads(result.stdout)
    assert done["verdicts"] == {"confirmed": 1, "disputed": 1, "false_positive": 1} and done["confirmed_hashes"] >= 3
    again = run_cli("review", "import", str(verdicts), "--out", str(out), "--json", home=home)
    assert json.loads(again.stdout)["already_imported"]

    report = safeset.decide(out, home=str(home), workers=2)
    now = rows(out)
    assert now[a.url]["decision"] == "remove" and "match:confirmed:md5" in now[a.url]["reasons"]
    assert now[b.url]["decision"] == "keep" and now[b.url]["reasons"] == ["verdict:false_positive"]
    assert now[c.url]["decision"] == "review" and "verdict:disputed" in now[c.url]["reasons"]
    assert report["rounds"][-1]["transitions"]["remove->keep"] == {"match:watch:pdq": 1}

    # what the verdicts changed, as `safeset diff` tells it: exactly the false positive's release
    result = run_cli("diff", str(out), "--to", str(tmp_path / "changes"), "--json", home=home)
    assert result.exit_code == 0, result.stderr
    changed = json.loads(result.stdout)
    assert changed["transitions"] == {"remove->keep": {"match:watch:pdq": 1}}
    [row] = pq.read_table(tmp_path / "changes" / "changed.parquet").to_pylist()
    assert row["url"] == b.url and (row["decision_a"], row["decision_b"]) == ("remove", "keep")

    # the confirmed image seeds neighbour expansion: its nearest row in the embeddings is a candidate
    urls = [r["url"] for r in pq.read_table(out / "results", columns=["url"]).to_pylist()]
    vectors = np.random.default_rng(3).normal(size=(len(urls), 16)).astype(np.float32)
    near = next(u for u in urls if u not in (a.url, b.url, c.url))
    vectors[urls.index(near)] = vectors[urls.index(a.url)] * 2 + 0.01
    emb = laion_layout(tmp_path / "emb", [vectors], [urls])
    expanded = safeset.expand(out, emb, seeds="confirmed", home=str(home), workers=1)
    assert expanded["expansion"][-1]["seeds"]["searched"] == 1 and rows(out)[near]["decision"] == "review"

    # "clean my copy": the dataset as first released, synced against the clean release of this
    # audit, keeps exactly the rows the clean release has
    result = run_cli("sync", str(data), "--release", str(out / "clean"), "--out", str(tmp_path / "mine"), "--json")
    assert result.exit_code == 0, result.stderr
    release = {r["url"] for p in (out / "clean").rglob("*.parquet") for r in pq.read_table(p).to_pylist()}
    mine = {r["url"] for p in (tmp_path / "mine").glob("*.parquet") for r in pq.read_table(p).to_pylist()}
    assert mine == release and a.url not in mine and b.url in mine and near not in mine

    # another dataset: the confirmed image resized (a copy no URL list knows), and the false
    # positive's very bytes, which the PDQ list still lists: the one removed, the other kept
    small = tiles[0][1].resize((tiles[0][1].width // 2, tiles[0][1].height // 2), Image.Resampling.LANCZOS)
    copy = Sample("https://elsewhere.example.org/small.jpg", "small", jpeg(small, 80))
    twin = Sample("https://elsewhere.example.org/twin.jpg", "twin", b.image)
    other = make_shards(tmp_path / "two", [[copy, twin, *samples_from(tiles[20:24])]])
    second = safeset.scan(other, tmp_path / "out2", workers=1, home=str(home))
    found = rows(tmp_path / "out2")
    assert found[copy.url]["decision"] == "remove" and "match:confirmed:pdq" in found[copy.url]["reasons"]
    assert found[twin.url]["decision"] == "keep" and found[twin.url]["reasons"] == ["verdict:false_positive"]
    assert second["totals"]["remove"] == 1
    assert read_json(tmp_path / "out2" / "report.json")["conservation"]["holds"]


def test_bad_verdict_lines_are_named_by_number_and_never_quoted(audit, tmp_path, home):
    out, (a, _, _), _, _ = audit
    secret = "https://never-echo.example.org/x.jpg"
    lines = ["url,md5,verdict", f"{a.url},,confirmed", f"{secret},,maybe", ",0123,confirmed"]
    path = write_lines(tmp_path / "v.csv", lines)
    result = run_cli("review", "import", str(path), home=home)
    assert result.exit_code == 3 and "line 3" in result.stderr and secret not in result.stderr
    assert not (home / "verdicts").exists() or not (home / "verdicts" / "log.jsonl").exists()
    result = run_cli("review", "import", str(path), "--skip-bad", "--json", home=home)
    assert result.exit_code == 0, result.stderr
    done = json.loads(result.stdout)
    assert done["imported"] == 1 and [b["line"] for b in done["bad_lines"]] == [3, 4]
    by_case = write_lines(tmp_path / "c.csv", ["case_id,verdict", "abc,confirmed"])
    result = run_cli("review", "import", str(by_case), home=home)
    assert result.exit_code == 3 and "--out" in result.stderr


def test_verdicts_stand_when_sent_again_and_unknown_changes_nothing(audit, tmp_path, home):
    """A false positive re-sent (the matches it refuted are still recorded) stays one; an
    `unknown` verdict after it changes nothing; a stray quote costs its own line only."""
    out, (a, b, c), _, _ = audit
    first = write_lines(tmp_path / "fp.csv", ["url,verdict", f"{b.url},false_positive"])
    assert run_cli("review", "import", str(first), "--out", str(out), home=home).exit_code == 0
    safeset.decide(out, home=str(home), workers=1)
    again = tmp_path / "fp-again.csv"
    again.write_bytes(first.read_bytes().replace(b"\n", b"\r\n"))  # the same verdict, as another tool writes it
    assert run_cli("review", "import", str(again), "--out", str(out), home=home).exit_code == 0
    unknown = write_lines(
        tmp_path / "u.csv", ["url,verdict", f"{b.url},unknown", '"broken,confirmed', f"{c.url},disputed"]
    )
    result = run_cli("review", "import", str(unknown), "--out", str(out), "--skip-bad", "--json", home=home)
    assert [bad["line"] for bad in json.loads(result.stdout)["bad_lines"]] == [3]
    safeset.decide(out, home=str(home), workers=1)
    now = rows(out)
    assert now[b.url]["decision"] == "keep" and now[b.url]["matches"]  # refuted, still recorded
    assert "verdict:disputed" in now[c.url]["reasons"]
