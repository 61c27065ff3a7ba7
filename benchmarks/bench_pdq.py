"""Decode + PDQ per core: safeset against Pillow's full decode + Meta's pdqhash (the peer), on
1500x1000 and 512x512 photos, and how far safeset's hashes land from the peer's.

Goals (issue 3): >= 8x the peer on 1500 px JPEGs and >= 3x on 512 px; against pdqhash on the fully
decoded image, median Hamming distance <= 4 and 99th percentile <= 16. Also: `--pdq-exact` (every
image from its full decode), its rate and its largest distance to the peer (0: the same bits).

Run: python benchmarks/bench_pdq.py
"""

from __future__ import annotations

import common  # noqa: F401  (one thread per process, first)
import corpus
import numpy as np

import safeset
from safeset.hashing import pdq_bytes
from safeset.hashing.reference import reference_pdq


def _exact(data: bytes) -> safeset.PdqHash:
    """`--pdq-exact`: every image from its full decode."""
    return pdq_bytes(data, exact=True)[""]


def main() -> None:
    root = corpus.build()
    results = {}
    rows = []
    for name in ("jpeg-1500", "jpeg-512"):
        images = [p.read_bytes() for p in sorted((root / name).glob("*.jpg"))]
        peer, peer_runs = common.median_rate(lambda images=images: sum(1 for d in images if reference_pdq(d)))
        ours, ours_runs = common.median_rate(lambda images=images: sum(1 for d in images if safeset.pdq(d)))
        exact, exact_runs = common.median_rate(lambda images=images: sum(1 for d in images if _exact(d)))
        refs = [reference_pdq(d) for d in images]
        mine = [safeset.pdq(d) for d in images]
        distance = np.array([a - b for a, b in zip(mine, refs, strict=True)])
        good = np.array([r.quality >= 50 for r in refs])
        compat = {
            "median": float(np.median(distance)),
            "p99": float(np.percentile(distance, 99)),
            "max": int(distance.max()),
            "median_quality_ge_50": float(np.median(distance[good])) if good.any() else None,
            "p99_quality_ge_50": float(np.percentile(distance[good], 99)) if good.any() else None,
            "images_quality_ge_50": int(good.sum()),
        }
        results[name] = {
            "images": len(images),
            "peer_per_s": peer,
            "safeset_per_s": ours,
            "ratio": ours / peer,
            "peer_runs": peer_runs,
            "safeset_runs": ours_runs,
            "hamming_to_reference": compat,
            "exact_per_s": exact,
            "exact_runs": exact_runs,
            "exact_max_hamming": max(_exact(d) - r for d, r in zip(images, refs, strict=True)),
        }
        rows.append(
            [
                name,
                len(images),
                peer,
                ours,
                f"{ours / peer:.1f}x",
                compat["median"],
                compat["p99"],
                compat["median_quality_ge_50"],
                compat["p99_quality_ge_50"],
                exact,
                results[name]["exact_max_hamming"],
            ]
        )
    print("decode + PDQ, one core, median of", common.RUNS, "runs (images/s)")
    common.table(
        [
            "set",
            "images",
            "peer",
            "safeset",
            "ratio",
            "dist median",
            "dist p99",
            "median q>=50",
            "p99 q>=50",
            "--pdq-exact",
            "its max dist",
        ],
        rows,
    )
    common.save("pdq", results)


if __name__ == "__main__":
    main()
