"""Neighbour expansion (issue 13): 100 seeds' exact top-100 over LAION-layout embeddings, against
a plain numpy streamed brute force and faiss's IndexFlatIP, at equal threads (2), each in a fresh
process (wall time and the peak memory of its largest process).

- safeset: `pipeline.expand`'s search tasks (one per embedding file) on the local engine with 2
  workers, as `safeset expand` runs them, the per-file lists merged; start-up of the workers
  included. "safeset-avx2": the same on the kernel's AVX2 path (a CPU without AVX-512 VNNI).
- numpy: blocks of 65,536 rows read from the .npy files, converted to float32, one matrix product
  per block (OpenBLAS, 2 threads), argpartition, merge.
- faiss: each file loaded, converted to float32, added to an IndexFlatIP, searched (2 OpenMP
  threads), the per-file lists merged.

The corpus: SAFESET_BENCH_EMB_ROWS unit vectors (default 2,000,000 x 768, float16, 8 files with
their metadata parquet), drawn at random: the hardest case for safeset's pruning, since random
vectors' similarities crowd together (CLIP's spread wider). The seeds are 100 of its rows (each
its own nearest, left out). SAFESET_BENCH_EMB_SIZES="1000000,2000000" runs several sizes.
Every method's top-100 is checked (`exactness`): safeset's against the float64 cosine of every
row any method listed; the peers' lists hold rows that are not in the exact top-100 where their
float32 inner products reorder near-ties (within 1e-6) at the 100th place, and no worse.

Then the copies pass (`pipeline.copies.find_copies`, what every round runs unless the policy
keeps copies): results parts of SAFESET_BENCH_COPY_ROWS rows (default 1,000,000, in parts of
100,000) with random digests and PDQs, 10,000 of them flagged (removed by a match) and 1,000
copies planted (half the same MD5, half a PDQ a few bits off); rows per second on one core.

Run: python benchmarks/bench_expand.py        (medians of SAFESET_BENCH_RUNS runs, 3 by default)
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

import common
import corpus
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = corpus.ROOT / "expand"
DIM, SEEDS, K, FILES, THREADS = 768, 100, 100, 8, 2
RUNS = int(os.environ.get("SAFESET_BENCH_RUNS", "3"))


def build(rows: int) -> Path:
    root = ROOT / f"laion-{rows}"
    if (root / "seeds.npy").is_file():
        return root
    (root / "img_emb").mkdir(parents=True, exist_ok=True)
    (root / "metadata").mkdir(exist_ok=True)
    rng = np.random.default_rng(13)
    per = -(-rows // FILES)
    for i in range(FILES):
        n = min(per, rows - i * per)
        block = rng.standard_normal((n, DIM), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        np.save(root / "img_emb" / f"img_emb_{i:04d}.npy", block.astype(np.float16))
        urls = pa.array([f"https://img{j % 97}.example.org/{i}/{j}.jpg" for j in range(n)])
        pq.write_table(pa.table({"url": urls}), root / "metadata" / f"metadata_{i:04d}.parquet")
    np.save(root / "seeds.npy", np.sort(rng.choice(rows, SEEDS, replace=False)))
    return root


def _files(root: Path) -> list[Path]:
    return sorted((root / "img_emb").glob("*.npy"))


def _seed_vectors(root: Path, seed_rows: np.ndarray) -> np.ndarray:
    out, first = np.zeros((len(seed_rows), DIM)), 0
    for path in _files(root):
        data = np.load(path, mmap_mode="r")
        inside = (seed_rows >= first) & (seed_rows < first + len(data))
        out[inside] = data[seed_rows[inside] - first]
        first += len(data)
    return out


def _merge(best_rows, best_scores, rows, scores):
    """Each seed's K best of two lists (rows -1 / scores -inf fill the gaps)."""
    rows, scores = np.concatenate([best_rows, rows], 1), np.concatenate([best_scores, scores], 1)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :K]
    return np.take_along_axis(rows, order, 1), np.take_along_axis(scores, order, 1)


def run_safeset(root: Path):
    from safeset.engines.local import LocalEngine
    from safeset.pipeline.expand import neighbours
    from safeset.sources.embeddings import embedding_files

    seed_rows = np.load(root / "seeds.npy")
    vectors = _seed_vectors(root, seed_rows)
    top, pairs = neighbours(embedding_files(str(root)), vectors, seed_rows, K, -1.0, LocalEngine(workers=THREADS))
    return top.rows, top.scores, {"pairs_scored": pairs}


def _float32_start(root: Path):
    """What both float32 peers start from: the seeds' rows, their unit vectors in float32, and
    empty best lists."""
    seed_rows = np.load(root / "seeds.npy")
    seeds = _seed_vectors(root, seed_rows).astype(np.float32)
    seeds /= np.linalg.norm(seeds, axis=1, keepdims=True)
    return seed_rows, seeds, np.full((SEEDS, K), -1), np.full((SEEDS, K), -np.inf, np.float32)


def run_numpy(root: Path):
    seed_rows, seeds, best_rows, best_scores = _float32_start(root)
    first = 0
    for path in _files(root):
        data = np.load(path, mmap_mode="r")
        for start in range(0, len(data), 65536):
            block = np.asarray(data[start : start + 65536], np.float32)
            scores = seeds @ block.T  # (seeds, rows)
            own = (seed_rows >= first + start) & (seed_rows < first + start + len(block))
            scores[own, seed_rows[own] - first - start] = -np.inf
            take = min(K, scores.shape[1])
            part = np.argpartition(-scores, take - 1, axis=1)[:, :take]
            part_scores = np.take_along_axis(scores, part, 1)
            best_rows, best_scores = _merge(best_rows, best_scores, part + first + start, part_scores)
        first += len(data)
    return best_rows, best_scores, {}


def run_faiss(root: Path):
    import faiss

    faiss.omp_set_num_threads(THREADS)
    seed_rows, seeds, best_rows, best_scores = _float32_start(root)
    first = 0
    for path in _files(root):
        data = np.load(path).astype(np.float32)
        index = faiss.IndexFlatIP(DIM)
        index.add(data)
        scores, rows = index.search(seeds, K + 1)
        rows = rows + first
        scores[rows == seed_rows[:, None]] = -np.inf  # a seed's own row
        best_rows, best_scores = _merge(best_rows, best_scores, rows, scores)
        first += len(data)
        del index, data
    return best_rows, best_scores, {}


def run_safeset_avx2(root: Path):
    """safeset as a CPU without AVX-512 VNNI runs it (its AVX2 path)."""
    os.environ["SAFESET_SIMD"] = "avx2"  # read when the kernel is first used, here and in the workers
    return run_safeset(root)


METHODS = {"safeset": run_safeset, "safeset-avx2": run_safeset_avx2, "numpy": run_numpy, "faiss": run_faiss}


def child_main(method: str, root: str, answer: str) -> None:
    import resource

    started = time.perf_counter()
    rows, scores, extra = METHODS[method](Path(root))
    seconds = time.perf_counter() - started
    np.savez(answer, rows=rows, scores=scores)
    peak = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    print(json.dumps({"seconds": seconds, "peak_mb": peak / 1024, **extra}))


def exactness(root: Path, answers: dict) -> dict[str, int]:
    """Per method, the seeds whose list is not the exact one: safeset's list is checked against the
    float64 cosine of every row any method listed (its scores must be those, and no row another
    method listed may beat its last); the peers' lists against safeset's, as sets, where they
    differ beyond a row whose cosine ties within 1e-6 (their float32 inner products of float16
    unit vectors reorder such near-ties)."""
    from safeset.neighbours import similarity

    seed_rows = np.load(root / "seeds.npy")
    seeds = _seed_vectors(root, seed_rows)
    data = np.concatenate([np.load(p, mmap_mode="r") for p in _files(root)])
    wrong = {m: 0 for m in answers}
    for j in range(SEEDS):
        ours = answers["safeset"]["rows"][j]
        exact = similarity(data[ours], seeds[j])
        listed = np.unique(np.concatenate([a["rows"][j] for a in answers.values()]))
        others = listed[~np.isin(listed, ours)]
        beaten = len(others) and similarity(data[others], seeds[j]).max() > exact[-1]
        if beaten or not np.array_equal(exact, answers["safeset"]["scores"][j]):
            wrong["safeset"] += 1
        for method, answer in answers.items():
            if method != "safeset":
                missing = ~np.isin(answer["rows"][j], ours)
                if missing.any() and (similarity(data[answer["rows"][j][missing]], seeds[j]) < exact[-1] - 1e-6).any():
                    wrong[method] += 1
    return wrong


def main() -> None:
    sizes = [
        int(s)
        for s in os.environ.get("SAFESET_BENCH_EMB_SIZES", os.environ.get("SAFESET_BENCH_EMB_ROWS", "2000000")).split(
            ","
        )
    ]
    env = {"OPENBLAS_NUM_THREADS": str(THREADS), "OMP_NUM_THREADS": str(THREADS)}
    results = {}
    for rows in sizes:
        root = ROOT / f"laion-{rows}"
        common.child(_BUILD, str(rows))  # apart: this process stays small, as its children's peaks are theirs
        print(f"\n{rows:,} x {DIM} float16 embeddings in {FILES} files; {SEEDS} seeds, top-{K}, {THREADS} threads")
        measured, answers = {}, {}
        for method in METHODS:
            runs = []
            for run in range(RUNS):
                answer = ROOT / f"answer-{method}.npz"
                runs.append(common.child(_CHILD, method, str(root), str(answer), env=env))
                if run == 0:
                    answers[method] = dict(np.load(answer))
            measured[method] = {
                "seconds": statistics.median(r["seconds"] for r in runs),
                "runs": [round(r["seconds"], 2) for r in runs],
                "peak_mb": max(r["peak_mb"] for r in runs),
                **{k: v for k, v in runs[0].items() if k not in ("seconds", "peak_mb")},
            }
        ours = measured["safeset"]["seconds"]
        common.table(
            ["method", "seconds", "vectors/s", "peak MB", "safeset is x faster", "runs"],
            [
                [m, r["seconds"], rows / r["seconds"], r["peak_mb"], r["seconds"] / ours, " ".join(map(str, r["runs"]))]
                for m, r in measured.items()
            ],
        )
        wrong = exactness(root, answers)
        print(f"seeds whose top-{K} is not the exact one: " + ", ".join(f"{m} {n}" for m, n in wrong.items()))
        print(f"pairs scored in float64: {measured['safeset']['pairs_scored']:,} of {rows * SEEDS:,}")
        results[rows] = {**measured, "not_exact": wrong}
    copies = copies_pass(int(os.environ.get("SAFESET_BENCH_COPY_ROWS", "1000000")))
    common.save("expand", {"threads": THREADS, "seeds": SEEDS, "k": K, "sizes": results, "copies": copies})


def copies_pass(rows: int, flagged: int = 10_000, planted: int = 1_000) -> dict:
    from safeset.pipeline.copies import find_copies
    from safeset.policy import Policy
    from safeset.sinks.results import FORMAT_VERSION

    folder = ROOT / f"copies-{rows}"
    parts = {}
    rng = np.random.default_rng(21)
    digests = rng.integers(0, 256, (rows, 16), np.uint8)
    pdqs = rng.integers(0, 256, (rows, 32), np.uint8)
    flagged_rows = rng.choice(rows, flagged, replace=False)
    copies = rng.choice(np.setdiff1d(np.arange(rows), flagged_rows), planted, replace=False)
    originals = rng.choice(flagged_rows, planted)
    digests[copies[: planted // 2]] = digests[originals[: planted // 2]]
    pdqs[copies[planted // 2 :]] = pdqs[originals[planted // 2 :]] ^ np.eye(32, dtype=np.uint8)[:3].sum(0)
    decision = np.full(rows, "keep", object)
    decision[flagged_rows] = "remove"
    reasons = [["match:hotline:md5"] if d == "remove" else [] for d in decision]
    step = 100_000
    for i, first in enumerate(range(0, rows, step)):
        end = min(rows, first + step)
        table = pa.table(
            {
                "row_id": [f"shard:{j}" for j in range(first, end)],
                "decision": decision[first:end].tolist(),
                "reasons": reasons[first:end],
                "md5": [d.tobytes().hex() for d in digests[first:end]],
                "sha256": pa.nulls(end - first, pa.string()),
                "pdq": [p.tobytes().hex() for p in pdqs[first:end]],
                "pdq_quality": pa.array(np.full(end - first, 100), pa.int32()),
            }
        ).replace_schema_metadata({b"safeset.format_version": FORMAT_VERSION.encode()})
        parts[i] = folder / f"part-{i:05d}.parquet"
        parts[i].parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, parts[i])
    found: dict = {}

    def run() -> int:
        found.update(find_copies(parts, Policy(), 31, 50))
        return rows

    rate, rates = common.median_rate(run, RUNS)
    count = sum(len(v) for v in found.values())
    print(
        f"\ncopies pass: {rows:,} rows, {flagged:,} flagged: {rate:,.0f} rows/s on one core "
        f"({' '.join(f'{r:,.0f}' for r in rates)}); {count:,} copies found of {planted:,} planted"
    )
    return {"rows": rows, "flagged": flagged, "rows_per_second": rate, "runs": rates, "found": count}


_BUILD = f"""
import sys, json
sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
import bench_expand
bench_expand.build(int(sys.argv[1]))
print(json.dumps({{}}))
"""

_CHILD = f"""
import sys
sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
import bench_expand
bench_expand.child_main(*sys.argv[1:])
"""

if __name__ == "__main__":
    if len(sys.argv) > 1:
        child_main(*sys.argv[1:])
    else:
        main()
