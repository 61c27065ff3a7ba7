"""How well a PDQ-compatible hash list still matches edited copies of its images, per matching scheme.

Method (after Thorn's perception benchmarks): every distinct image of a folder is put on a list as
plain PDQ (Meta's reference when installed, else ours); each image then goes through every transform
of `transforms.TRANSFORMS`; each scheme hashes the edited copy its own way (plain, with the dihedral
variants, with border trimming, with the quality gate) and takes its smallest distance to the
image's own list entry (a hit, at threshold t, if <= t) and to every other entry (a false positive).
The threshold of a scheme is the largest one whose image-level false-positive rate, over all queries
against all other images, stays at or below the target; recall is reported at that threshold, and
at the scan's default threshold of 31 for comparison.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..hashing import PDQ_MIN_QUALITY, DecodeError, pdq_bytes
from ..hashing.image import decode_rgb
from .transforms import TRANSFORMS, apply

NO_MATCH = 10_000  # distance recorded when a scheme cannot or will not hash a query


@dataclass(frozen=True)
class Scheme:
    name: str
    description: str
    dihedral: bool = False
    trim: bool = False
    gate: bool = False
    reference: bool = False

    def query(self, data: bytes) -> tuple[list[bytes], int]:
        """The hashes this scheme tries for one image, and the image's quality."""
        if self.reference:
            from ..hashing.reference import reference_pdq_pixels

            h = reference_pdq_pixels(decode_rgb(data))
            return [h.bits], h.quality
        variants = pdq_bytes(data, dihedral=self.dihedral, trim=self.trim)
        return [h.bits for h in variants.values()], variants[""].quality


SCHEMES: tuple[Scheme, ...] = (
    Scheme("reference", "Meta's pdqhash on the full decode, plain PDQ", reference=True),
    Scheme("pdq", "safeset's PDQ, plain"),
    Scheme("gated", "plain; queries of PDQ quality < 50 are not matched", gate=True),
    Scheme("dihedral", "gated, plus the 8 flips and quarter turns", dihedral=True, gate=True),
    Scheme(
        "trim",
        "dihedral, plus border trimming and small images upscaled: the scan's default",
        dihedral=True,
        trim=True,
        gate=True,
    ),
)


def available_schemes() -> list[Scheme]:
    try:
        import pdqhash  # noqa: F401
    except ImportError:
        return [s for s in SCHEMES if not s.reference]
    return list(SCHEMES)


def _list_hash(data: bytes, use_reference: bool) -> tuple[bytes, int]:
    scheme = Scheme("list", "", reference=use_reference)
    bits, quality = scheme.query(data)
    return bits[0], quality


def _queries(args: tuple[int, bytes, bool, Sequence[Scheme]]) -> dict[str, dict[str, tuple[list[bytes], int]]]:
    """For one original: the original and (if it is listed) every transform's edited copy, hashed by
    every scheme."""
    seed, data, listed, schemes = args
    original = Image.open(io.BytesIO(data)).convert("RGB") if listed else None
    out: dict[str, dict[str, tuple[list[bytes], int]]] = {}
    for transform in ("original", *(TRANSFORMS if listed else ())):
        edited = data if transform == "original" else apply(transform, original, seed)
        out[transform] = {}
        for scheme in schemes:
            try:
                out[transform][scheme.name] = scheme.query(edited)
            except DecodeError:
                out[transform][scheme.name] = ([], 0)
    return out


def _distances(queries: list[bytes], quality: int, gate: bool, listed: np.ndarray, own: int) -> np.ndarray:
    """[own entry, any other entry] x [plain hash, best variant]: the smallest distances (2 x 2)."""
    out = np.full((2, 2), NO_MATCH)
    if not queries or (gate and quality < PDQ_MIN_QUALITY):
        return out
    words = np.frombuffer(b"".join(queries), dtype="<u8").reshape(len(queries), 4)
    distances = np.bitwise_count(words[:, None, :] ^ listed[None, :, :]).sum(axis=2)
    for column, rows in ((0, distances[:1]), (1, distances[1:])):
        if len(rows) == 0:
            continue
        per_entry = rows.min(axis=0)
        if own >= 0:
            out[0, column] = per_entry[own]
            per_entry[own] = NO_MATCH
        out[1, column] = per_entry.min()
    return out


def evaluate(
    images: Sequence[tuple[str, bytes]],
    max_fpr: float = 0.001,
    schemes: Sequence[Scheme] | None = None,
    workers: int = 1,
    progress: Callable[[int], None] | None = None,
) -> dict:
    """Run the benchmark on distinct images; returns per scheme the thresholds at `max_fpr`, recall
    per transform there and at 31, and the false-positive rate per threshold.

    Images whose list hash has quality < 50 are not listed (Meta's guidance), but still serve as
    distinct images a query must not match."""
    schemes = list(schemes or available_schemes())
    use_reference = any(s.reference for s in schemes)
    decodable, listed_bits, listed_index = [], [], []
    for name, data in images:
        try:
            bits, quality = _list_hash(data, use_reference)
        except DecodeError:
            continue
        if quality >= PDQ_MIN_QUALITY:
            listed_index.append(len(decodable))
            listed_bits.append(bits)
        decodable.append((name, data))
    if len(listed_bits) < 2:
        raise ValueError(
            f"need at least 2 distinct images of PDQ quality >= {PDQ_MIN_QUALITY}, found {len(listed_bits)}"
        )
    listed = np.frombuffer(b"".join(listed_bits), dtype="<u8").reshape(len(listed_bits), 4)
    entry_of = {image: entry for entry, image in enumerate(listed_index)}

    transforms = ("original", *TRANSFORMS)
    # distances[scheme][transform, image, own|other, plain|variant]
    distances = {s.name: np.full((len(transforms), len(decodable), 2, 2), NO_MATCH) for s in schemes}
    tasks = [(i, data, i in entry_of, schemes) for i, (_, data) in enumerate(decodable)]
    with ProcessPoolExecutor(max(1, workers)) as pool:
        for i, per_transform in enumerate(pool.map(_queries, tasks, chunksize=4)):
            for t, transform in enumerate(transforms):
                for scheme in schemes:
                    if transform in per_transform:
                        hashes, quality = per_transform[transform][scheme.name]
                        found = _distances(hashes, quality, scheme.gate, listed, entry_of.get(i, -1))
                        distances[scheme.name][t, i] = found
            if progress is not None:
                progress(1)

    listed_rows = np.array(listed_index)
    results = {s.name: _summarise(s, distances[s.name], listed_rows, max_fpr) for s in schemes}
    return {
        "images": len(images),
        "decodable": len(decodable),
        "listed": len(listed_bits),
        "list_hasher": "reference (pdqhash)" if use_reference else "safeset pdq",
        "max_fpr": max_fpr,
        "transforms": list(TRANSFORMS),
        "schemes": results,
    }


def _summarise(scheme: Scheme, distances: np.ndarray, listed: np.ndarray, max_fpr: float) -> dict:
    """Thresholds from the distinct set: every image, unedited and hashed the scheme's way, against
    every other listed image. A scheme with variants gets two thresholds, one for the plain hash
    and a tighter one for the variants, chosen together for the best mean recall at `max_fpr`.
    Recall is over the listed images' edited copies."""
    thresholds = np.arange(0, 129)
    distinct = distances[0, :, 1]  # (images, plain|variant): distances to other images' entries
    edited = distances[1:, listed, 0]  # (transforms, listed, plain|variant): to their own entries
    has_variants = scheme.dihedral or scheme.trim

    def false_rate(tp: int, tv: int) -> float:
        return float(((distinct[:, 0] <= tp) | (distinct[:, 1] <= tv)).mean())

    def recall(tp: int, tv: int) -> np.ndarray:
        return ((edited[..., 0] <= tp) | (edited[..., 1] <= tv)).mean(axis=1)

    best = (-1.0, -1, -1)
    for tp in thresholds:
        for tv in thresholds[: tp + 1] if has_variants else [-1]:
            if false_rate(tp, tv) <= max_fpr:
                mean = float(recall(tp, tv).mean())
                best = max(best, (mean, int(tp), int(tv)))
    _, tp, tv = best
    single = max((t for t in thresholds if false_rate(t, t if has_variants else -1) <= max_fpr), default=-1)
    as_dict = lambda values: {name: round(float(v), 4) for name, v in zip(TRANSFORMS, values, strict=True)}  # noqa: E731
    at_best, at_31 = recall(tp, tv), recall(31, 31 if has_variants else -1)
    return {
        "description": scheme.description,
        "threshold": tp,
        "variant_threshold": tv if has_variants else None,
        "fpr_at_threshold": round(false_rate(tp, tv), 5),
        "mean_recall": round(float(at_best.mean()), 4),
        "recall": as_dict(at_best),
        "single_threshold": int(single),
        "mean_recall_single_threshold": round(float(recall(single, single if has_variants else -1).mean()), 4),
        "fpr_at_31": round(false_rate(31, 31 if has_variants else -1), 5),
        "mean_recall_at_31": round(float(at_31.mean()), 4),
        "recall_at_31": as_dict(at_31),
        "fpr_by_threshold": {int(t): round(false_rate(t, t if has_variants else -1), 5) for t in thresholds[::4]},
    }
