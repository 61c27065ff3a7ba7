"""`safeset expand`: from the rows a scan removed, their neighbours in the dataset's embeddings
become candidates, and a decide round applies the policy to them; on real files, end to end."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import read_json, run_cli, write_lines
from test_neighbours import laion_layout

import safeset

ROWS, DIM = 1200, 48
SEEDS = (10, 700)  # rows whose URLs a bank lists
COPIES = {10: (11, 12, 900), 700: (701,)}  # rows whose vectors are near a seed's


@pytest.fixture
def audit(tmp_path, home):
    """A LAION-like metadata table scanned against a URL list (two rows removed), and its
    embeddings in LAION's layout, two files, the seeds' near copies planted, one row of the
    embeddings not in the table and one row of the table without an embedding."""
    urls = [f"https://img.example.org/{i}.jpg" for i in range(ROWS)]
    table = tmp_path / "laion.parquet"
    pq.write_table(pa.table({"URL": urls, "TEXT": [f"caption {i}" for i in range(ROWS)]}), table)
    store = safeset.BankStore(home)
    store.add("hotline", write_lines(tmp_path / "urls.txt", [urls[s] for s in SEEDS]), type_name="url")
    out = tmp_path / "out"
    safeset.scan(table, out, workers=1, home=str(home))

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(ROWS, DIM)).astype(np.float32)
    for seed, copies in COPIES.items():
        for copy in copies:
            vectors[copy] = vectors[seed] + rng.normal(size=DIM) * 0.1
    embedded = [*urls[:-1], "https://elsewhere.example.org/not-in-the-audit.jpg"]
    emb = laion_layout(tmp_path / "emb", [vectors[:500].astype(np.float16), vectors[500:].astype(np.float16)],
                       [embedded[:500], embedded[500:]])  # fmt: skip
    return out, emb


def candidates(out, round_=1) -> list[dict]:
    return pq.read_table(out / "expansion" / f"round-{round_:03d}" / "candidates.parquet").to_pylist()


def test_neighbours_of_removed_rows_go_to_review_and_rounds_add_up(audit, home, tmp_path):
    out, emb = audit
    result = run_cli("expand", str(out), "--embeddings", str(emb), "--k", "5", "-q", home=home)
    code, stdout, stderr = result.exit_code, result.stdout, result.stderr
    assert code == 0, stderr
    assert "2 seed(s) searched of 2" in stdout and "4 candidate row(s)" in stdout

    found = candidates(out)
    assert {(c["row_id"], c["seed"]) for c in found} == {
        (f"laion.parquet:{copy}", f"laion.parquet:{seed}") for seed, copies in COPIES.items() for copy in copies
    }
    assert all(c["similarity"] >= 0.85 and c["url"].endswith(c["row_id"].split(":")[1] + ".jpg") for c in found)
    assert sorted(c["rank"] for c in found if c["seed"].endswith(":10")) == [1, 2, 3]

    report = read_json(out / "report.json")
    assert report["totals"] == {"rows": ROWS, "keep": ROWS - 6, "remove": 2, "review": 4, "unchecked": ROWS}
    assert report["rounds"][-1]["kind"] == "expand"
    assert report["rounds"][-1]["transitions"]["keep->review"]["expand:1"] == 4
    [summary] = report["expansion"]
    assert summary["seeds"] == {
        "chosen": "removed",
        "given": 2,
        "searched": 2,
        "without_embedding": 0,
        "lines_naming_no_row": 0,
    }
    assert summary["embedding_rows"] == ROWS and summary["join"] == "url"
    assert summary["embedding_rows_without_audit_row"] == 1 and summary["audit_rows_without_embedding"] == 1
    assert summary["candidates"]["rows"] == 4 and summary["candidates"]["per_seed"]["max"] == 3
    review = pq.read_table(out / "review.parquet").to_pylist()
    assert {r["row_id"] for r in review} == {c["row_id"] for c in found}
    assert all("expand:1" in r["reasons"] for r in review)

    # the clean release lacks the removed rows only; held rows are not in it either
    clean = pq.read_table(out / "clean" / "laion.parquet")
    assert clean.num_rows == ROWS - 6

    # a plain decide round keeps what the expansion found: the candidates are part of OUT
    again = safeset.decide(out, home=str(home), workers=1)
    assert again["totals"]["review"] == 4 and again["rounds"][-1]["transitions"] == {}

    # a rule on the similarity removes the nearest; the rest stay held for review
    policy = tmp_path / "strict.toml"
    policy.write_text(
        'name = "strict"\n[[rules]]\nname = "near"\naction = "remove"\nall = ["nn_similarity >= 0.995"]\n'
    )
    strict = safeset.decide(out, policy=policy, home=str(home), workers=1)
    near = {c["row_id"] for c in found if c["similarity"] >= 0.995}
    assert near and strict["totals"]["remove"] == 2 + len(near)
    removed = {r["row_id"]: r["reasons"] for r in pq.read_table(out / "removed.parquet").to_pylist()}
    assert all({"rule:near", "expand:1"} <= set(removed[row]) for row in near)

    # a second round from a file of seeds adds its candidates; the first round's stay
    write_lines(tmp_path / "seeds.txt", ["https://img.example.org/11.jpg"])
    result = run_cli(
        "expand",
        str(out),
        "--embeddings",
        str(emb),
        "--seeds",
        str(tmp_path / "seeds.txt"),
        "--k",
        "3",
        "-q",
        home=home,
    )
    assert code == 0, stderr
    second = candidates(out, 2)
    assert {c["seed"] for c in second} == {"laion.parquet:11"}
    rows = {c["row_id"] for c in second}
    assert "laion.parquet:10" in rows  # the seed of round 1 is its nearest: a seed of this round is not
    assert [s["round"] for s in read_json(out / "report.json")["expansion"]] == [1, 2]


def test_vectors_from_a_verifier_and_a_join_by_key(audit, home, tmp_path):
    out, emb = audit
    vectors = np.concatenate([np.load(emb / "img_emb" / f"img_emb_{i:04d}.npy") for i in range(2)])
    np.save(tmp_path / "verified.npy", vectors[[700]])
    report = safeset.expand(out, emb, seeds=tmp_path / "verified.npy", k=4, home=str(home), workers=1)
    found = candidates(out)
    assert {c["row_id"] for c in found} == {"laion.parquet:700", "laion.parquet:701"}
    assert {c["seed"] for c in found} == {"vector:0"}
    assert report["expansion"][-1]["seeds"]["given"] == 1

    # the same embeddings as one parquet with a vector column (how Hugging Face datasets hold them)
    urls = [f"https://img.example.org/{i}.jpg" for i in range(ROWS)]
    listed = tmp_path / "vectors.parquet"
    pq.write_table(pa.table({"url": urls, "embedding": list(vectors)}), listed)
    safeset.expand(out, listed, k=5, home=str(home), workers=1)
    assert {c["row_id"] for c in candidates(out, 2)} == {
        "laion.parquet:11",
        "laion.parquet:12",
        "laion.parquet:900",
        "laion.parquet:701",
    }


def test_expand_refuses_what_it_cannot_do(audit, home, tmp_path):
    out, emb = audit
    result = run_cli("expand", str(out), "--embeddings", str(tmp_path / "nowhere"), "-q", home=home)
    code, stderr = result.exit_code, result.stderr
    assert code == 3 and "nowhere" in stderr
    write_lines(tmp_path / "seeds.txt", ["not a row"])
    result = run_cli(
        "expand", str(out), "--embeddings", str(emb), "--seeds", str(tmp_path / "seeds.txt"), "-q", home=home
    )
    code, stderr = result.exit_code, result.stderr
    assert code == 3 and "names no row of the audit" in stderr
    result = run_cli("expand", str(tmp_path / "empty"), "--embeddings", str(emb), "-q", home=home)
    code, stderr = result.exit_code, result.stderr
    assert code == 2 and "holds no scan" in stderr
    result = run_cli("expand", str(out), "--embeddings", str(emb), "--bank", "nosuch", "-q", home=home)
    assert result.exit_code == 2 and "nosuch" in result.stderr  # before the search, not after it
    assert not (out / "expansion").exists()  # nothing was committed by the refusals


def test_a_decide_round_reads_the_candidates_as_they_are(audit, home):
    """Candidates a reviewer struck out of the file before the next round are not held again."""
    out, emb = audit
    safeset.expand(out, emb, k=5, home=str(home), workers=1)
    path = out / "expansion" / "round-001" / "candidates.parquet"
    pq.write_table(pq.read_table(path).slice(0, 1), path)
    report = safeset.decide(out, home=str(home), workers=1)
    assert report["totals"]["review"] == 1
    assert report["rounds"][-1]["transitions"] == {"review->keep": {"expand:1": 3, "unchecked:no_image": 3}}


def test_seed_files_as_editors_write_them(audit, home, tmp_path):
    """A BOM and CRLF are no part of a seed; lines naming no row are counted; a .npy of seeds
    with a row that has no direction is refused by its row (review of issue 13)."""
    out, emb = audit
    (tmp_path / "bom.txt").write_bytes(
        "\ufeffhttps://img.example.org/10.jpg\r\nhttps://img.example.org/700.jpg\r\nnothing\r\n".encode()
    )
    report = safeset.expand(out, emb, seeds=tmp_path / "bom.txt", k=3, home=str(home), workers=1)
    assert report["expansion"][-1]["seeds"]["given"] == 2
    assert report["expansion"][-1]["seeds"]["lines_naming_no_row"] == 1
    np.save(tmp_path / "bad.npy", np.stack([np.ones(DIM), np.zeros(DIM)]))
    with pytest.raises(safeset.BadInputError, match="seed 1 has no direction"):
        safeset.expand(out, emb, seeds=tmp_path / "bad.npy", home=str(home), workers=1)
    write_lines(tmp_path / "none.txt", ["https://img.example.org/1199.jpg"])  # the row without an embedding
    with pytest.raises(safeset.UsageError, match="no seed to expand from"):
        safeset.expand(out, emb, seeds=tmp_path / "none.txt", home=str(home), workers=1)
