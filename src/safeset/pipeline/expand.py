"""Neighbour expansion (`safeset expand`): from the rows an audit flagged, their nearest neighbours
in the dataset's published CLIP embeddings, as candidates for the policy and for verification.

This is how the Stanford Internet Observatory found what hash lists missed in LAION-2B-multi: 27
PhotoDNA hits, their neighbours in LAION's embeddings, 2,773 candidates, 88 more hits once a
hotline had verified them. A round here:

1. the seeds: rows a bank match removed (default), rows held for review, rows the bank of
   verified hashes matched (`confirmed`), or those a file names (row ids, keys or URLs, one a
   line), or vectors a verifier supplied (a .npy);
2. the audit's rows joined to the embeddings' rows, by the MD5 of the URL (the audit's `url_md5`)
   or, where the embeddings have no URL, by key; what has no partner either side is counted;
3. an exact search (`safeset.neighbours`) of each embedding file, one task per file on the engine;
   the per-file best rows merged, those at or above `--min-similarity` kept;
4. `OUT/expansion/round-NNN/candidates.parquet` (row_id, url, seed, similarity, rank) and
   `summary.json` written, then a decide round over every shard: a candidate row gains the signal
   `nn_similarity` (its largest over all rounds' seeds) for the policy's rules, and the reason
   `expand:N` (N the first round it was a candidate in) with the policy's `[expand]` action, review
   by default: similarity alone removes nothing unless a rule says so.

The candidates are committed with the round's other outputs, or not at all.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..banks.columns import prefixed
from ..banks.verdicts import CONFIRMED_BANK
from ..errors import BadInputError, UsageError
from ..model import Decision
from ..neighbours import Search, Seeds, TopK, primed_floor
from ..sinks import OutLayout, read_json, write_json
from ..sources.base import Shard
from ..sources.embeddings import EmbeddingFile, blocks, embedding_files, join_keys, take_rows
from .task import ShardTask

CANDIDATES = "candidates.parquet"
CANDIDATES_SCHEMA = pa.schema(
    [
        ("row_id", pa.string()),
        ("url", pa.string()),
        ("seed", pa.string()),  # the seed's row id, or "vector:I" for the I-th vector of a .npy
        ("similarity", pa.float64()),
        ("rank", pa.int32()),  # 1: the seed's nearest row
    ]
)
AUDIT_KEYS = {"row_id": "row_id", "url": "url_md5", "key": "key"}  # the audit's column for each join


@dataclass(frozen=True)
class SearchJob:
    """One embedding file searched for the seeds' neighbours (a task for either engine)."""

    file: EmbeddingFile
    seeds: np.ndarray  # (m, d) float64
    seed_rows: np.ndarray  # (m,) each seed's row among the embeddings, -1 for none
    k: int
    floor: np.ndarray  # per seed: --min-similarity, or above it where a sample showed k rows are


def search_file(job: SearchJob, progress=None) -> dict:
    """The seeds' best rows in one file: what a worker hands back for the merge."""
    started = time.perf_counter()
    search = Search(Seeds(job.seeds, job.seed_rows), job.k, job.floor)
    for first, block in blocks(job.file):
        search.add(block, first)
        if progress is not None:
            progress({"items": len(block)})
    return {
        "rows": search.top.rows,
        "scores": search.top.scores,
        "pairs_scored": search.pairs_scored,
        "seconds": round(time.perf_counter() - started, 3),
    }


@dataclass(frozen=True)
class ExpandConfig:
    out: str
    embeddings: str
    seeds: str = "removed"
    k: int = 100
    min_similarity: float = 0.85
    embedding_col: str | None = None
    url_col: str | None = None
    decide: Any = None  # the DecideConfig of the round that follows (engine, workers, banks, policy)


def expansion_files(layout: OutLayout, staged: Path | None = None) -> tuple[tuple[str, str], ...]:
    """(OUT-relative path, SHA-256) of every round's candidates, in round order (those of a round
    not yet committed from `staged`): what a decide round's shards read, and decide with."""
    found = {}
    for root in (layout.root, staged):
        folder = root / "expansion" if root else None
        if folder is not None and folder.is_dir():
            for path in folder.glob(f"round-*/{CANDIDATES}"):
                found[path.relative_to(root).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return tuple(sorted(found.items()))


def expansion_summaries(layout: OutLayout) -> list[dict]:
    folder = layout.root / "expansion"
    return [read_json(p) for p in sorted(folder.glob("round-*/summary.json"))] if folder.is_dir() else []


def round_number(reason_path: str) -> int:
    return int(Path(reason_path).parent.name.removeprefix("round-"))


def candidates_of(task: ShardTask, row_ids: pa.Array) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The candidates among a shard's rows, from every round's candidates file: (positions in
    `row_ids`, largest similarity, reason `expand:N` of the first round naming the row)."""
    best: dict[int, float] = {}
    first: dict[int, int] = {}
    for rel, sha256 in task.spec.expansions:
        staged = Path(task.round) / rel if task.round else None
        path = staged if staged is not None and staged.is_file() else Path(task.out) / rel
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise BadInputError(path, f"cannot read this expansion's candidates ({exc.strerror})") from None
        if hashlib.sha256(data).hexdigest() != sha256:
            raise BadInputError(path, "changed while the round ran: run the command again")
        table = pq.read_table(pa.BufferReader(data), columns=["row_id", "similarity"])
        at = pc.fill_null(pc.index_in(table["row_id"], value_set=row_ids), -1).to_numpy(zero_copy_only=False)
        present = at >= 0
        number = round_number(rel)
        scores = table["similarity"].to_numpy()[present].tolist()
        for position, score in zip(at[present].tolist(), scores, strict=True):
            best[position] = max(score, best.get(position, -np.inf))
            first.setdefault(position, number)
    rows = np.array(sorted(best), np.int64)
    return rows, np.array([best[r] for r in rows.tolist()]), [f"expand:{first[r]}" for r in rows.tolist()]


def _audit(layout: OutLayout) -> pa.Table:
    from .decide import check_format

    parts = sorted(layout.results.glob("part-*.parquet"))
    columns = ["row_id", "url", "url_md5", "key", "decision", "reasons"]
    return pa.concat_tables(check_format(p).read(columns=columns) for p in parts).combine_chunks()


def _seed_rows(audit: pa.Table, seeds: str) -> tuple[np.ndarray, int]:
    """Positions in `audit` of the rows a --seeds value names (see `ExpandConfig.seeds`), and how
    many lines of a seeds file named no row."""
    decision = audit["decision"]
    if seeds == "removed":  # removed, and for a bank match: not for a rule on scores alone
        by_match = np.zeros(audit.num_rows, bool)
        by_match[prefixed(audit["reasons"], ("match:",))[0]] = True
        return np.flatnonzero(by_match & pc.equal(decision, str(Decision.REMOVE)).to_numpy(zero_copy_only=False)), 0
    if seeds == "review":
        return np.flatnonzero(pc.equal(decision, str(Decision.REVIEW)).to_numpy(zero_copy_only=False)), 0
    if seeds == "confirmed":  # rows the bank of verified hashes matches (`safeset review import`)
        return np.unique(prefixed(audit["reasons"], (f"match:{CONFIRMED_BANK}:",))[0]), 0
    path = Path(seeds)
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()  # a BOM is no part of the first seed
    except OSError as exc:
        raise BadInputError(path, f"cannot read the seeds ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise BadInputError(path, "is neither UTF-8 text (row ids, keys or URLs, one a line) nor a .npy") from None
    wanted = pa.array(sorted({line.strip() for line in lines if line.strip()}), pa.string())
    hit, named = np.zeros(audit.num_rows, bool), np.zeros(len(wanted), bool)
    for column in ("row_id", "key", "url"):
        hit |= pc.fill_null(pc.is_in(audit[column], value_set=wanted), False).to_numpy(zero_copy_only=False)
        named |= pc.fill_null(pc.is_in(wanted, value_set=audit[column]), False).to_numpy(zero_copy_only=False)
    if not hit.any():
        raise BadInputError(path, "names no row of the audit (by row id, key or URL)")
    return np.flatnonzero(hit), int((~named).sum())


def _seed_vectors(path: str, dim: int) -> np.ndarray:
    try:
        vectors = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise BadInputError(path, f"not a readable .npy of seed vectors ({exc})") from None
    if vectors.ndim != 2 or vectors.shape[1] != dim or not np.issubdtype(vectors.dtype, np.floating):
        raise BadInputError(path, f"holds a {vectors.dtype} array of shape {vectors.shape}, not (seeds, {dim}) floats")
    vectors = vectors.astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        norms = np.linalg.norm(vectors, axis=1)
    bad = np.flatnonzero(~np.isfinite(norms) | (norms == 0))
    if len(bad):
        raise BadInputError(path, f"seed {int(bad[0])} has no direction (zero, infinite, NaN, or too large)")
    return vectors


@dataclass
class _Join:
    """The embeddings' rows joined to the audit's: each file's join keys, and the counts."""

    by: str
    keys: list[pa.Array]
    matched: int = 0  # embedding rows with an audit row
    audit_found: np.ndarray | None = None  # audit rows with an embedding


def _join(files: Sequence[EmbeddingFile], audit: pa.Table) -> _Join:
    by = "row_id" if all(f.id_col for f in files) else "url" if all(f.url_col for f in files) else "key"
    audit_keys = audit[AUDIT_KEYS[by]]
    join = _Join(by, [], audit_found=np.zeros(audit.num_rows, bool))
    for file in files:
        keys = join_keys(file, by)
        join.keys.append(keys)
        join.matched += int(pc.sum(pc.is_in(keys, value_set=audit_keys)).as_py() or 0)
        join.audit_found |= pc.fill_null(pc.is_in(audit_keys, value_set=keys), False).to_numpy(zero_copy_only=False)
    return join


def _locate(join: _Join, files: Sequence[EmbeddingFile], wanted: pa.Array) -> np.ndarray:
    """Each wanted key's first row among the embeddings, -1 where it has none."""
    rows = np.full(len(wanted), -1, np.int64)
    for file, keys in zip(files, join.keys, strict=True):
        at = pc.fill_null(pc.index_in(wanted, value_set=keys), -1).to_numpy(zero_copy_only=False)
        new = (rows < 0) & (at >= 0)
        rows[new] = at[new] + file.first
    return rows


def run_expand(config: ExpandConfig) -> dict[str, Any]:
    """One expansion round and the decide round it ends with (see the module)."""
    from ..banks import BankStore
    from ..storage import is_remote
    from .decide import finish_pending_round
    from .scan import decide_locked

    started = time.perf_counter()
    if config.k < 1:
        raise UsageError("--k must be at least 1")
    if not -1.0 <= config.min_similarity <= 1.0:
        raise UsageError("--min-similarity is a cosine similarity, in -1..1")
    if is_remote(config.out):
        raise UsageError(f"{config.out}: expanding on object storage is not supported yet")
    layout = OutLayout(config.out)
    if not layout.run_spec.is_file():
        raise UsageError(f"{config.out} holds no scan: run `safeset scan ... --out {config.out}` first")
    decide = config.decide
    store = BankStore(decide.home)  # what the round after the search decides with, checked before it
    if decide.banks:
        store.resolve(decide.banks)
    if decide.policy is not None:
        decide.policy.check_banks(store.names())
    with layout.locked():
        finish_pending_round(layout)
        files = embedding_files(config.embeddings, config.embedding_col, config.url_col)
        audit = _audit(layout)
        join = _join(files, audit)
        dim = files[0].dim
        if config.seeds.endswith(".npy"):
            vectors = _seed_vectors(config.seeds, dim)
            names = [f"vector:{i}" for i in range(len(vectors))]
            seed_rows = np.full(len(vectors), -1, np.int64)
            seed_positions = np.zeros(0, np.int64)
            given, unmatched = len(vectors), 0
        else:
            seed_positions, unmatched = _seed_rows(audit, config.seeds)
            given = len(seed_positions)
            wanted = audit[AUDIT_KEYS[join.by]].take(pa.array(seed_positions))
            located = _locate(join, files, wanted)
            have = located >= 0
            seed_positions, seed_rows = seed_positions[have], located[have]
            names = audit["row_id"].take(pa.array(seed_positions)).to_pylist()
            vectors = np.zeros((len(seed_rows), dim))
            for file in files:
                inside = (seed_rows >= file.first) & (seed_rows < file.first + file.rows)
                if inside.any():
                    vectors[inside] = take_rows(file, seed_rows[inside])
            usable = np.isfinite(vectors).all(axis=1) & (np.abs(vectors).sum(axis=1) > 0)
            vectors, seed_rows, seed_positions = vectors[usable], seed_rows[usable], seed_positions[usable]
            names = [name for name, ok in zip(names, usable.tolist(), strict=True) if ok]
        if not len(vectors):
            raise UsageError(
                f"no seed to expand from: {given} row(s) chosen by --seeds {config.seeds}, none with a usable "
                f"embedding in {config.embeddings}"
                if given
                else f"no seed to expand from: --seeds {config.seeds} chose no row"
                + (
                    " (verdicts imported since the last round apply once `safeset decide OUT` has run)"
                    if config.seeds == "confirmed"
                    else ""
                )
            )
        number = len(expansion_summaries(layout)) + 1
        summary: dict[str, Any] = {
            "round": number,
            "embeddings": config.embeddings,
            "files": len(files),
            "embedding_rows": sum(f.rows for f in files),
            "dim": dim,
            "join": join.by,
            "embedding_rows_without_audit_row": sum(f.rows for f in files) - join.matched,
            "audit_rows_without_embedding": int((~join.audit_found).sum()),
            "seeds": {"chosen": config.seeds if not Path(config.seeds).exists() else Path(config.seeds).name,
                      "given": given, "searched": len(vectors), "without_embedding": given - len(vectors),
                      "lines_naming_no_row": unmatched},
            "k": config.k,
            "min_similarity": config.min_similarity,
        }  # fmt: skip
        candidates, searched = _search(files, vectors, seed_rows, names, config, decide, join, audit, seed_positions)
        summary.update(searched)
        summary["candidates"] = _candidate_counts(candidates, names, config.min_similarity)
        summary["seconds"] = round(time.perf_counter() - started, 3)
        rel = f"expansion/round-{number:03d}"
        sink = pa.BufferOutputStream()
        pq.write_table(candidates, sink)
        payload = sink.getvalue().to_pybytes()

        def prepare(staged: OutLayout) -> None:
            folder = staged.root / rel
            folder.mkdir(parents=True, exist_ok=True)
            (folder / CANDIDATES).write_bytes(payload)
            write_json(folder / "summary.json", summary)

        pending = ((f"{rel}/{CANDIDATES}", hashlib.sha256(payload).hexdigest()),)
        return decide_locked(decide, layout, kind="expand", pending=pending, prepare=prepare)


def _search(files, vectors, seed_rows, names, config, decide, join, audit, seed_positions) -> tuple[pa.Table, dict]:
    """The seeds' neighbours over every file, on the engine; as candidate rows of the audit."""
    from ..engines import engine_for
    from .progress import ScanProgress

    if not len(vectors):
        return CANDIDATES_SCHEMA.empty_table(), {"pairs_scored": 0}
    engine = engine_for(decide.engine, decide.workers, decide.retries, decide.ray_address)
    with ScanProgress(len(files), 0, enabled=decide.progress, fetching=False) as progress:
        top, pairs = neighbours(files, vectors, seed_rows, config.k, config.min_similarity, engine, progress)
    seeds, ranks = np.nonzero(top.rows >= 0)
    found = pa.table(
        {
            "key": pa.chunked_array(join.keys).take(pa.array(top.rows[seeds, ranks])),
            "seed": pa.array([names[s] for s in seeds.tolist()], pa.string()),
            "similarity": pa.array(top.scores[seeds, ranks]),
            "rank": pa.array(ranks + 1, pa.int32()),
        }
    )
    audit_keys = audit[AUDIT_KEYS[join.by]]
    rows = pa.table({"key": audit_keys, "row_id": audit["row_id"], "url": audit["url"]})
    if len(seed_positions):  # a flagged row is a seed, not a candidate
        seeded = audit["row_id"].take(pa.array(seed_positions))
        rows = rows.filter(pc.invert(pc.is_in(rows["row_id"], value_set=seeded)))
    joined = found.join(rows, "key", join_type="inner").drop(["key"])
    candidates = joined.select(CANDIDATES_SCHEMA.names).cast(CANDIDATES_SCHEMA)
    candidates = candidates.sort_by([("seed", "ascending"), ("rank", "ascending"), ("row_id", "ascending")])
    return candidates, {
        "pairs_scored": pairs,
        "neighbours": int(len(seeds)),
        "neighbours_outside_audit": len(seeds) - int(pc.sum(pc.is_in(found["key"], value_set=audit_keys)).as_py() or 0),
    }


SAMPLE_ROWS = 65536  # rows searched first, in this process, to give every file's search its floor


def neighbours(files, vectors, seed_rows, k: int, floor: float, engine, progress=None) -> tuple[TopK, int]:
    """Each seed's k nearest rows over every file at or above `floor`, exactly: the first rows
    searched here for each seed's floor (`neighbours.primed_floor`), then one task per file on the
    `engine`, their lists merged. Also the pairs scored in float64, all told."""
    from ..engines import Progress
    from .scan import fail_if_any

    sample = Search(Seeds(vectors, seed_rows), k, floor)
    for first, block in blocks(files[0], rows=SAMPLE_ROWS):
        sample.add(block, first)
        break
    floors = primed_floor(sample, floor)
    tasks = [
        ShardTask(i, Shard("embeddings", f.vectors, f.vectors, (f.vectors,)), "", None,
                  expand=SearchJob(f, vectors, seed_rows, k, floors))
        for i, f in enumerate(files)
    ]  # fmt: skip
    callbacks = Progress(counts=progress.counts, shard_done=progress.shard_done) if progress else Progress()
    outcomes = engine.run(tasks, callbacks)
    fail_if_any(outcomes, None)
    top = TopK.empty(len(vectors), k)
    for outcome in outcomes:
        top.merge(TopK(outcome.summary["rows"], outcome.summary["scores"]))
    return top, sample.pairs_scored + sum(int(o.summary["pairs_scored"]) for o in outcomes)


def _candidate_counts(candidates: pa.Table, names: Sequence[str], floor: float) -> dict[str, Any]:
    """What the report says of a round's candidates: rows, per seed, and how similar."""
    per_seed = pc.value_counts(candidates["seed"]).to_pylist() if candidates.num_rows else []
    counts = np.array([0] * (len(names) - len(per_seed)) + [c["counts"] for c in per_seed])
    scores = candidates["similarity"].to_numpy()
    edges = np.linspace(max(floor, -1.0), 1.0, 6)
    histogram, _ = np.histogram(scores, bins=edges)
    return {
        "rows": int(pc.count_distinct(candidates["row_id"]).as_py()) if candidates.num_rows else 0,
        "pairs": candidates.num_rows,
        "per_seed": {
            "min": int(counts.min()) if len(counts) else 0,
            "median": float(np.median(counts)) if len(counts) else 0.0,
            "max": int(counts.max()) if len(counts) else 0,
            "seeds_with_none": int((counts == 0).sum()),
        },
        "similarity": [
            {"from": round(float(lo), 4), "to": round(float(hi), 4), "pairs": int(n)}
            for lo, hi, n in zip(edges[:-1], edges[1:], histogram, strict=True)
        ],
    }
