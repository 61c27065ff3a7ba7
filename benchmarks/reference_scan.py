"""The peer of `safeset scan` in the end-to-end benchmark: the same audit of img2dataset shards
written the straightforward way with the tools people reach for today: Pillow's full decode and
Meta's pdqhash for PDQ, hashlib for the digests, a faiss binary index for PDQ matching, a Python
set for the MD5 list, pyarrow for the tables, tarfile for the clean release.

Per shard: read the tar and its parquet; hash every image (md5, sha1, sha256, PDQ + quality);
match (PDQ within 31 if quality >= 50; MD5 exactly); remove on any match; write a results parquet,
the clean tar (kept samples only) and the filtered parquet. Then a removal manifest.

Usage: python reference_scan.py SHARDS_DIR OUT MD5_LIST PDQ_LIST
"""

from __future__ import annotations

import hashlib
import io
import sys
import tarfile
from pathlib import Path

import faiss
import numpy as np
import pdqhash
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

faiss.omp_set_num_threads(1)


def pdq_of(data: bytes) -> tuple[bytes | None, int]:
    try:
        rgb = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    except Exception:
        return None, 0
    vector, quality = pdqhash.compute(rgb)
    return np.packbits(vector.astype(np.uint8)).tobytes(), quality


def main(shards: Path, out: Path, md5_list: Path, pdq_list: Path) -> None:
    md5s = {line.strip().lower() for line in md5_list.open() if line.strip()}
    listed = np.array([np.frombuffer(bytes.fromhex(line.split()[-1]), np.uint8) for line in pdq_list.open()])
    index = faiss.IndexBinaryFlat(256)
    index.add(listed)
    (out / "results").mkdir(parents=True)
    (out / "clean").mkdir()
    removed = []
    for part, tar_path in enumerate(sorted(shards.glob("*.tar"))):
        side = tar_path.with_suffix(".parquet")
        rows = pq.read_table(side).to_pylist()
        position = {r["key"]: i for i, r in enumerate(rows)}
        records = []
        with tarfile.open(tar_path) as tar:
            for member in tar:
                key, _, ext = member.name.partition(".")
                if ext != "jpg":
                    continue
                data = tar.extractfile(member).read()
                bits, quality = pdq_of(data)
                records.append(
                    {
                        "key": key,
                        "index": position.get(key, -1),
                        "md5": hashlib.md5(data).hexdigest(),
                        "sha1": hashlib.sha1(data).hexdigest(),
                        "sha256": hashlib.sha256(data).hexdigest(),
                        "pdq": bits.hex() if bits else None,
                        "quality": quality,
                    }
                )
        queries = [i for i, r in enumerate(records) if r["pdq"] and r["quality"] >= 50]
        hit = set()
        if queries:
            batch = np.array([np.frombuffer(bytes.fromhex(records[i]["pdq"]), np.uint8) for i in queries])
            limits, _, _ = index.range_search(batch, 32)
            hit = {queries[q] for q in range(len(queries)) if limits[q + 1] > limits[q]}
        for i, r in enumerate(records):
            r["decision"] = "remove" if (i in hit or r["md5"] in md5s) else "keep"
            if r["decision"] == "remove":
                removed.append({"shard": tar_path.name, **r})
        pq.write_table(pa.Table.from_pylist(records), out / "results" / f"part-{part:05d}.parquet")
        drop = {r["key"] for r in records if r["decision"] == "remove"}
        with tarfile.open(tar_path) as tar, tarfile.open(out / "clean" / tar_path.name, "w") as clean:
            for member in tar:
                if member.name.partition(".")[0] not in drop:
                    clean.addfile(member, tar.extractfile(member))
        table = pq.read_table(side)
        keep = pa.array([r["key"] not in drop for r in rows])
        pq.write_table(table.filter(keep), out / "clean" / side.name)
    pq.write_table(pa.Table.from_pylist(removed or [{"shard": "", "key": ""}]), out / "removed.parquet")


if __name__ == "__main__":
    main(*(Path(a) for a in sys.argv[1:5]))
