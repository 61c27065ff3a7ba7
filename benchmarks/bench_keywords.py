"""Keyword lists over captions (issue 12): megabytes of captions per second per core that
safeset's matcher (normal forms in Arrow + one Hyperscan scan, `banks.keywords`) looks through
for every term of a list, against DuckDB's `regexp_matches(lower(TEXT), '\\b(t1|t2|...)\\b')` over
the same captions (a sample of them: DuckDB slows with the number of terms), at 1,000 and 10,000
terms. The goal is >= 50 MB/s with 10,000 terms.

Then the metadata-only audit with `--preset relaion-research` (issue 12's speed goal: >= 10x DuckDB,
under 3x a failure): a LAION-like parquet (URL, TEXT, punsafe) against a 5,000-term keyword bank and
a url_md5 bank of a million entries, results, clean table and report written, against DuckDB doing
the same filter and writes (`reference_metadata.py` with a keyword list), at 1 and 2 workers.

Captions are LAION-like: 3-20 words of English with a tenth of them in other scripts (accents,
Cyrillic, Han), SAFESET_BENCH_ROWS of them (default 300,000). Terms are random words; one caption
in a hundred holds one. Medians of SAFESET_BENCH_RUNS runs (at most 3).

Run: python benchmarks/bench_keywords.py
"""

from __future__ import annotations

import os
import shutil

import bench_decide
import common
import corpus
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from safeset.banks.keywords import KeywordIndex, normal_captions, normal_text

ROWS = int(os.environ.get("SAFESET_BENCH_ROWS", "300000"))
ROOT = corpus.ROOT / "keywords"
WORDS = "a photo of the on in with and for red blue small large vintage dress table house garden".split()
FOREIGN = ["café crème", "Москва зимой", "北京的公园", "naïve résumé", "Ελλάδα θάλασσα"]


def corpus_of(terms: int, rng: np.random.Generator) -> tuple[list[str], list[str]]:
    listed = ["".join(rng.choice(list("bcdfghjklmnpqrstvwxz"), 7)) for _ in range(terms)]
    captions = []
    for i in range(ROWS):
        words = list(rng.choice(WORDS, rng.integers(3, 20)))
        if i % 10 == 0:
            words.append(FOREIGN[i % len(FOREIGN)])
        if i % 100 == 0:
            words.insert(1, listed[i % terms].upper())
        captions.append(" ".join(words))
    return listed, captions


def main() -> None:
    runs = min(common.RUNS, 3)
    rng = np.random.default_rng(5)
    rows, found = [], {}
    for terms in (1_000, 10_000):
        listed, captions = corpus_of(terms, rng)
        column = pa.array(captions)
        megabytes = column.nbytes / 1e6
        index = KeywordIndex([f"{normal_text(t)}\tline:{i + 1}" for i, t in enumerate(listed)])

        def ours(column=column, index=index) -> int:
            positions, padded = normal_captions(column)
            return len(index.search(padded)[0])

        hits = ours()
        ours_s, _ = common.median_seconds(ours, runs)
        # DuckDB's regular expression slows with the number of terms (0.1 MB/s at 10,000): it
        # reads a sample, and its rate is per megabyte of that sample
        sample = captions[: max(len(captions) * 1_000 // terms, 1)]
        peer_s, peer_hits = duckdb_seconds(sample, listed, runs)
        peer_mb = pa.array(sample).nbytes / 1e6
        found[terms] = {
            "mb": megabytes,
            "safeset_mb_per_s": megabytes / ours_s,
            "duckdb_mb_per_s": peer_mb / peer_s if peer_s else None,
            "hits": {"safeset": hits, "duckdb": peer_hits, "duckdb_sample_rows": len(sample)},
        }
        rows.append(
            [
                f"{terms:,}",
                f"{megabytes:.1f}",
                f"{megabytes / ours_s:.1f}",
                f"{peer_mb / peer_s:.1f}" if peer_s else "n/a",
                f"{(megabytes / ours_s) / (peer_mb / peer_s):.1f}x" if peer_s else "n/a",
                f"{hits} / {peer_hits} of {len(sample):,}",
            ]
        )
    print(f"\nkeyword matching over {ROWS:,} captions, one core, medians of {runs} runs")
    common.table(
        ["terms", "MB", "safeset MB/s", "DuckDB MB/s", "safeset vs DuckDB", "hits (ours / DuckDB of sample rows)"], rows
    )
    print("goal: >= 50 MB/s of captions per core with 10,000 terms")
    found["relaion_research_audit"] = audit(runs)
    common.save("keywords", found)


def audit(runs: int) -> dict:
    """`safeset scan TABLE --preset relaion-research` against DuckDB's same filter, 1 and 2 workers."""
    rng = np.random.default_rng(9)
    listed, captions = corpus_of(5_000, rng)
    root = ROOT / f"audit-{ROWS}"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    table, terms, urls, domains = (root / n for n in ("laion.parquet", "terms.txt", "url_md5.txt", "domains.txt"))
    punsafe = rng.random(ROWS).astype(np.float32)
    url = [f"https://img{i % 5000}.example.org/{i:09d}.jpg" for i in range(ROWS)]
    pq.write_table(pa.table({"URL": url, "TEXT": captions, "punsafe": punsafe}), table, row_group_size=100_000)
    terms.write_text("".join(f"{t}\n" for t in listed))
    import hashlib

    random_md5 = (row.tobytes().hex() for row in rng.integers(0, 256, (1_000_000, 16), dtype=np.uint8))
    planted = (hashlib.md5(u.encode()).hexdigest() for u in url[::10_000])
    urls.write_text("".join(f"{h}\n" for h in random_md5) + "".join(f"{h}\n" for h in planted))
    domains.write_text("unlisted.example.net\n")
    from safeset.banks import BankStore

    home = root / "home"
    BankStore(home).add("urls", urls, type_name="url_md5")
    BankStore(home).add("kw", terms, type_name="keyword")
    return bench_decide.against_duckdb(
        home,
        table,
        [urls, domains, terms],
        ["--preset", "relaion-research"],
        root,
        ROWS,
        runs,
        "with --preset relaion-research (5,000 terms, 1M url_md5s)",
        ">= 10x DuckDB at equal threads (under 3x: a failure)",
    )


def duckdb_seconds(captions: list[str], listed: list[str], runs: int) -> tuple[float | None, int | None]:
    """DuckDB, one thread: rows whose lower-cased caption holds a listed term as a word."""
    try:
        import duckdb
    except ImportError:
        return None, None
    connection = duckdb.connect()
    connection.execute("SET threads TO 1")
    connection.register("captions", pa.table({"TEXT": captions}))
    pattern = r"\b(" + "|".join(listed) + r")\b"
    query = "SELECT count(*) FROM captions WHERE regexp_matches(lower(TEXT), ?)"
    count = connection.execute(query, [pattern]).fetchone()[0]
    seconds, _ = common.median_seconds(lambda: connection.execute(query, [pattern]).fetchone(), runs)
    return seconds, count


if __name__ == "__main__":
    main()
