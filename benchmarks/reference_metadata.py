"""The peer of a metadata-only `safeset scan` in bench_decide: the same audit as a maintainer would
write it in DuckDB. Every row's MD5 of its URL joined against a url_md5 list, its host against a
domain list (a listed domain covers its subdomains), the per-row results (url, url_md5, whether and
why it was removed) and the clean table (the input minus removed rows) written to parquet.

With a keyword list too (bench_keywords, Re-LAION's "research" filter): a row is also removed when
`punsafe > 0.95 AND regexp_matches(lower(TEXT), '\b(term|...)\b')`, the terms as the list gives them.

The lists are loaded into DATABASE beforehand (`prepare`, untimed), as a maintainer keeps them.

Usage: python reference_metadata.py prepare DATABASE URL_MD5_LIST DOMAIN_LIST [KEYWORD_LIST]
       python reference_metadata.py run DATABASE TABLE OUT THREADS   (prints the removed rows)
"""

from __future__ import annotations

import sys
from pathlib import Path

import duckdb


def prepare(database: str, url_md5_list: str, domain_list: str, keyword_list: str | None = None) -> None:
    Path(database).unlink(missing_ok=True)
    with duckdb.connect(database) as db:
        lines = "read_csv(?, header=false, columns={'column0': 'VARCHAR'})"
        db.execute(f"CREATE TABLE url_md5 AS SELECT lower(trim(column0)) AS h FROM {lines}", [url_md5_list])
        db.execute(f"CREATE TABLE domains AS SELECT lower(trim(column0)) AS d FROM {lines}", [domain_list])
        if keyword_list:
            terms = [t.strip().lower() for t in Path(keyword_list).read_text().splitlines() if t.strip()]
            db.execute("CREATE TABLE pattern AS SELECT ? AS p", [r"\b(" + "|".join(terms) + r")\b"])


def run(database: str, table: str, out: str, threads: int) -> int:
    Path(out).mkdir(parents=True, exist_ok=True)
    with duckdb.connect(database, read_only=True) as db:
        db.execute(f"SET threads = {threads}")
        keywords = db.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'pattern'").fetchone()[
            0
        ]
        pattern = db.execute("SELECT p FROM pattern").fetchone()[0] if keywords else None
        # CASE, not AND: in a projection DuckDB evaluates both sides of AND on every row (20x slower)
        scored = 'CASE WHEN punsafe > 0.95 THEN regexp_matches(lower("TEXT"), ?) ELSE false END'
        scored = scored if keywords else "false"
        db.execute(
            f"""
            CREATE TEMP TABLE results AS
            WITH rows AS (
                SELECT row_number() OVER () - 1 AS idx, *, md5("URL") AS url_md5,
                       lower(regexp_extract("URL", '^[a-zA-Z]+://([^/:?#]+)', 1)) AS host
                FROM read_parquet('{table}')
            ),
            by_md5 AS (SELECT DISTINCT idx FROM rows JOIN url_md5 ON rows.url_md5 = url_md5.h),
            by_domain AS (
                SELECT DISTINCT idx FROM rows JOIN domains
                ON rows.host = domains.d OR ends_with(rows.host, '.' || domains.d)
            )
            SELECT rows.*, by_md5.idx IS NOT NULL AS url_listed, by_domain.idx IS NOT NULL AS domain_listed,
                   coalesce({scored}, false) AS rule_fired
            FROM rows LEFT JOIN by_md5 USING (idx) LEFT JOIN by_domain USING (idx)
            """,
            [pattern] if keywords else [],
        )
        db.execute(
            'COPY (SELECT idx, "URL", url_md5, url_listed, domain_listed, rule_fired, '
            "url_listed OR domain_listed OR rule_fired AS removed "
            f"FROM results ORDER BY idx) TO '{out}/results.parquet' (FORMAT parquet)"
        )
        db.execute(
            f"COPY (SELECT * EXCLUDE (idx, url_md5, host, url_listed, domain_listed, rule_fired) FROM results "
            "WHERE NOT (url_listed OR domain_listed OR rule_fired) ORDER BY idx) "
            f"TO '{out}/clean.parquet' (FORMAT parquet)"
        )
        return db.execute("SELECT count(*) FROM results WHERE url_listed OR domain_listed OR rule_fired").fetchone()[0]


if __name__ == "__main__":
    if sys.argv[1] == "prepare":
        prepare(*sys.argv[2:6])
    else:
        print(run(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])))
