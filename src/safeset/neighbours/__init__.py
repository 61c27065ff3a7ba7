"""Exact nearest neighbours of a few seed vectors among many embeddings, streamed in blocks. Pure.

The Stanford Internet Observatory's method: from confirmed hits, their nearest neighbours in the
dataset's CLIP embeddings are the next candidates for verification. An audit needs the exact
neighbours, from a CPU, straight from the published files, whatever their size: an approximate
index (what clip-retrieval builds) may miss the very rows it is there to find.

Similarity is the cosine of the stored values, computed in float64 (`similarity`); a seed's `k`
best rows are those of the highest similarity, ties going to the lower row number, and a seed's
own row is never its neighbour. `Search` finds them in one pass over the blocks, doing most of
its work in 8-bit integers (`_prune`): every row is quantised, its dot products with the seeds
taken exactly in integers, and only the pairs whose similarity could still reach the seed's
threshold, given a proven bound on the quantisation's error, are scored in float64. A seed's
threshold is its k-th best similarity so far (or, before it has k, the k-th best lower bound), and
never below `floor`: a row under the threshold cannot be among the seed's k best. So the answer
is the float64 brute force's, exactly, at a quarter of float32's arithmetic and none of its
conversions; memory is the block and the pairs of one call, whatever the number of rows.

A row with no direction (all zeros, or an infinity or NaN in it) is nobody's neighbour.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from . import _prune

SIGNAL = "nn_similarity"  # a candidate row's largest similarity to a seed, as policy rules read it
_ROWS = 4  # rows the kernel takes together: room for this many rows of pairs is the least it needs
_PAIRS = 1 << 18  # pairs one kernel call hands back before its survivors are scored


def similarity(rows: np.ndarray, seed: np.ndarray) -> np.ndarray:
    """The cosine similarity of each row of `rows` (n, d) with `seed` (d,), in float64: the one
    definition every search here is exact against. Each row's value depends on that row and the
    seed alone, whatever else is in `rows`. A row with no direction gives NaN."""
    rows = np.asarray(rows, np.float64)
    seed = np.asarray(seed, np.float64)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        dots = np.einsum("ij,j->i", rows, seed)
        norms = np.sqrt(np.einsum("ij,ij->i", rows, rows)) * np.sqrt(seed @ seed)
        found = dots / norms
    found[~np.isfinite(found) | (norms == 0)] = np.nan
    return found


@dataclass
class Seeds:
    """Seed vectors (m, d), each with the row it is in the embeddings (-1: none, e.g. a vector a
    verifier supplied), which is never its own neighbour; quantised for the kernel."""

    vectors: np.ndarray
    rows: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.vectors = np.asarray(self.vectors, np.float64)
        if self.vectors.ndim != 2 or not len(self.vectors) or not self.vectors.shape[1]:
            raise ValueError(f"seeds must be a non-empty (m, d) array, not of shape {self.vectors.shape}")
        m, d = self.vectors.shape
        self.rows = np.full(m, -1, np.int64) if self.rows is None else np.asarray(self.rows, np.int64)
        norms = np.sqrt(np.einsum("ij,ij->i", self.vectors, self.vectors))
        bad = ~np.isfinite(norms) | (norms == 0)
        if bad.any():
            raise ValueError(f"seed {int(np.flatnonzero(bad)[0])} has no direction (zero, infinite or NaN)")
        unit = self.vectors / norms[:, None]
        peak = np.abs(unit).max(axis=1)
        groups, d2 = -(-m // 16), d + d % 2
        self.levels = levels(d)
        padded = np.zeros((groups * 16, d2), np.int16)
        padded[:m, :d] = np.rint(unit * (self.levels / peak)[:, None])
        # the kernel's layout: per group of 16 seeds, per 2 dimensions, the 16 seeds' 2 values
        self.packed = np.ascontiguousarray(padded.reshape(groups, 16, d2 // 2, 2).transpose(0, 2, 1, 3))
        self.scale = _padded(peak / self.levels, groups * 16)
        self.l1 = _padded(np.abs(unit).sum(axis=1), groups * 16)

    def __len__(self) -> int:
        return len(self.vectors)

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]


def levels(d: int) -> int:
    """The quantisation's levels for dimension d: the most whose dot products cannot overflow
    32 bits (d L^2 < 2^31)."""
    return min(32767, math.isqrt((2**31 - 1) // (d + d % 2)))


def _padded(values: np.ndarray, size: int, dtype=np.float32) -> np.ndarray:
    out = np.zeros(size, dtype)
    out[: len(values)] = values
    return out


@dataclass
class TopK:
    """Each seed's best rows so far: `rows`, `scores` (m, k), best first; -1 and -inf fill the
    places of a seed with fewer rows at or above the floor."""

    rows: np.ndarray
    scores: np.ndarray

    @classmethod
    def empty(cls, m: int, k: int) -> TopK:
        return cls(np.full((m, k), -1, np.int64), np.full((m, k), -np.inf))

    @property
    def k(self) -> int:
        return self.rows.shape[1]

    def kth(self) -> np.ndarray:
        """Each seed's k-th best similarity, -inf where it has fewer than k rows."""
        return self.scores[:, -1].copy()

    def add(self, seeds: np.ndarray, rows: np.ndarray, scores: np.ndarray) -> None:
        """Merge scored pairs (each row at most once per seed, and not already held)."""
        held = self.rows >= 0
        seeds = np.concatenate([np.nonzero(held)[0], seeds])
        rows = np.concatenate([self.rows[held], rows])
        scores = np.concatenate([self.scores[held], scores])
        order = np.lexsort((rows, -scores, seeds))
        seeds, rows, scores = seeds[order], rows[order], scores[order]
        starts = np.searchsorted(seeds, np.arange(len(self.rows)))
        rank = np.arange(len(seeds)) - starts[seeds]
        keep = rank < self.k
        self.rows.fill(-1)
        self.scores.fill(-np.inf)
        self.rows[seeds[keep], rank[keep]] = rows[keep]
        self.scores[seeds[keep], rank[keep]] = scores[keep]

    def merge(self, other: TopK) -> None:
        held = other.rows >= 0
        self.add(np.nonzero(held)[0], other.rows[held], other.scores[held])


class Search:
    """The k nearest rows of every seed with similarity >= `floor`, over blocks of rows added in
    any order (each with the number of its first row), exactly (see the module's docstring).
    `floor` may be one per seed: a search split over parts of the rows may start every part at a
    lower bound of each seed's k-th best over all of them (see `primed_floor`)."""

    def __init__(self, seeds: Seeds, k: int, floor: float | np.ndarray = -1.0):
        if k < 1:
            raise ValueError("k must be at least 1")
        self.seeds, self.floor = seeds, np.broadcast_to(np.asarray(floor, np.float64), (len(seeds),)).copy()
        self.top = TopK.empty(len(seeds), k)
        self.pairs_scored = 0  # pairs that passed the kernel: what exactness cost in float64
        room = max(_PAIRS, _ROWS * len(seeds))
        self._out = (np.empty(room, np.int32), np.empty(room, np.int32), np.empty(room, np.float32))
        self._err = np.empty(room, np.float32)

    def add(self, block: np.ndarray, first: int) -> None:
        """Rows `first` .. `first + len(block) - 1`: a (n, d) float16 or float32 array (any other
        dtype is searched as float32: exact for the float32 values, not for float64 ones)."""
        if block.ndim != 2 or block.shape[1] != self.seeds.dim:
            raise ValueError(f"a block of shape {block.shape} for seeds of dimension {self.seeds.dim}")
        if block.dtype not in (np.float16, np.float32):
            block = block.astype(np.float32)
        block = np.ascontiguousarray(block)
        start, n = 0, len(block)
        s = self.seeds
        while start < n:
            tau = self._thresholds()
            start, found = _prune.prune(
                block, block.dtype == np.float16, n, s.dim, s.levels, s.packed, len(s), s.scale, s.l1, tau, start,
                *self._out, self._err,
            )  # fmt: skip
            rows, seeds, est = self._out
            self._score(block, first, rows[:found].astype(np.int64), seeds[:found].astype(np.int64),
                        est[:found].astype(np.float64), self._err[:found].astype(np.float64))  # fmt: skip

    def _thresholds(self) -> np.ndarray:
        """Each seed's threshold for the kernel, in float32 rounded down, padded to its groups."""
        tau = np.maximum(self.top.kth(), self.floor)
        low = tau.astype(np.float32)
        low = np.where(low > tau, np.nextafter(low, np.float32(-np.inf)), low)
        return _padded(low, len(self.seeds.scale))

    def _score(self, block, first: int, rows, seeds, est, err) -> None:
        own = self.seeds.rows[seeds] == rows + first
        rows, seeds, est, err = rows[~own], seeds[~own], est[~own], err[~own]
        if len(rows) > 2 * self.top.k * len(self.seeds):  # before a seed has k rows: bound its k-th
            tau = self._kth_lower(seeds, est - err)
            keep = est + err >= tau[seeds]
            rows, seeds = rows[keep], seeds[keep]
        self.pairs_scored += len(rows)
        order = np.argsort(seeds, kind="stable")
        rows, seeds = rows[order], seeds[order]
        bounds = np.flatnonzero(np.diff(seeds)) + 1
        scores = np.empty(len(rows))
        for part in np.split(np.arange(len(rows)), bounds) if len(rows) else ():
            scores[part] = similarity(block[rows[part]], self.seeds.vectors[seeds[part[0]]])
        keep = scores >= self.floor[seeds]  # NaN (no direction) never is
        self.top.add(seeds[keep], rows[keep] + first, scores[keep])

    def _kth_lower(self, seeds: np.ndarray, lower: np.ndarray) -> np.ndarray:
        """Per seed, the k-th largest of its held similarities and these pairs' lower bounds: at
        least k distinct rows are that similar, so the seed's final k-th best is too."""
        held = self.top.rows >= 0
        seeds = np.concatenate([np.nonzero(held)[0], seeds])
        values = np.concatenate([self.top.scores[held], lower])
        order = np.lexsort((-values, seeds))
        seeds, values = seeds[order], values[order]
        starts = np.searchsorted(seeds, np.arange(len(self.seeds)))
        counts = np.diff(np.append(starts, len(seeds)))
        k = self.top.k
        tau = np.full(len(self.seeds), -np.inf)
        full = counts >= k
        tau[full] = values[starts[full] + k - 1]
        return np.maximum(tau, self.floor)


def primed_floor(sample: Search, floor: float) -> np.ndarray:
    """Each seed's floor for searches of parts of the rows, from a search of a few of them: the
    k-th best similarity found there (k distinct rows are that similar, so the seed's k-th best
    over all rows is too), never below `floor`. Parts then skip their own warm-up; the merged
    lists are those of one search over everything, plus the sample's rows that beat the floor."""
    return np.maximum(sample.top.kth(), floor)


def simd() -> str:
    """The kernel's path on this CPU: "avx512-vnni", "avx2" or "none" (plain C); each finds the
    same neighbours, at 610,000-680,000, 520,000 and 66,000 rows/s per core for 100 seeds of 768-d."""
    return _prune.simd()
