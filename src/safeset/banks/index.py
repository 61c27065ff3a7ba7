"""Indexes over listed values: one small base class, one implementation per kind of comparison.

Every index answers a batch of queries with three parallel arrays (query index, entry index,
distance), so matching a shard is a handful of vectorised calls, not a loop over items.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np

Hits = tuple[np.ndarray, np.ndarray, np.ndarray]


def _hits(q: Sequence[int] | np.ndarray, e: Sequence[int] | np.ndarray, d: Sequence[int] | np.ndarray) -> Hits:
    return np.asarray(q, dtype=np.int64), np.asarray(e, dtype=np.int64), np.asarray(d, dtype=np.int64)


class SignalIndex(ABC):
    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def search(self, queries, radius: int = 0) -> Hits:
        """(query index, entry index, distance) for every listed entry within `radius` of a query."""

    @abstractmethod
    def entry(self, i: int) -> str:
        """The listed value at entry index `i`, in its canonical text form."""


class ExactBytesIndex(SignalIndex):
    """Fixed-width binary hashes (MD5, SHA1, SHA256, URL-MD5), sorted for binary search.

    `presorted=True` skips the sort for entries already in byte order (the bank store keeps them so),
    which lets a memory-mapped list be searched without copying it.
    """

    def __init__(self, entries: np.ndarray, presorted: bool = False):
        entries = np.ascontiguousarray(entries, dtype=np.uint8)
        self.width = entries.shape[1]
        self._void = np.dtype((np.void, self.width))
        keys = entries.view(self._void).ravel()
        self._sorted = keys if presorted else np.sort(keys)

    def __len__(self) -> int:
        return len(self._sorted)

    def search(self, queries: np.ndarray, radius: int = 0) -> Hits:
        """Exact lookup of (M, width) uint8 queries; `radius` is ignored (always 0)."""
        if len(self._sorted) == 0 or len(queries) == 0:
            return _hits([], [], [])
        keys = np.ascontiguousarray(queries, dtype=np.uint8).view(self._void).ravel()
        pos = np.searchsorted(self._sorted, keys)
        pos_clipped = np.minimum(pos, len(self._sorted) - 1)
        found = self._sorted[pos_clipped] == keys
        q = np.flatnonzero(found)
        return _hits(q, pos_clipped[q], np.zeros(len(q)))

    def entry(self, i: int) -> str:
        return self._sorted[i].tobytes().hex()


class TextIndex(SignalIndex):
    """Exact string values (normalised URLs, domains)."""

    def __init__(self, entries: Sequence[str]):
        self._entries = list(entries)
        self._pos = {v: i for i, v in enumerate(self._entries)}

    def __len__(self) -> int:
        return len(self._entries)

    def search(self, queries: Sequence[str], radius: int = 0) -> Hits:
        q, e = [], []
        for i, value in enumerate(queries):
            pos = self._pos.get(value)
            if pos is not None:
                q.append(i)
                e.append(pos)
        return _hits(q, e, np.zeros(len(q)))

    def entry(self, i: int) -> str:
        return self._entries[i]


class PdqIndex(SignalIndex):
    """Exact Hamming-radius search over PDQ hashes given as (N, 32) uint8.

    This version compares every query with every entry in vectorised blocks: simple and exact, fine
    for lists up to about a million hashes. `PdqIndex(h).search(q, radius=31)` is the public API.
    """

    _BLOCK = 1 << 22  # query x entry pairs compared per numpy step (bounds temporary memory)

    def __init__(self, hashes: np.ndarray):
        hashes = np.ascontiguousarray(hashes, dtype=np.uint8)
        if hashes.ndim != 2 or hashes.shape[1] != 32:
            raise ValueError("PDQ hashes must be an (N, 32) uint8 array")
        self._hashes = hashes
        self._words = hashes.view(">u8")  # (N, 4) big-endian words; bit order is irrelevant to distance

    def __len__(self) -> int:
        return len(self._hashes)

    def search(self, queries: np.ndarray, radius: int = 31) -> Hits:
        queries = np.ascontiguousarray(queries, dtype=np.uint8)
        if queries.ndim != 2 or queries.shape[1] != 32:
            raise ValueError("PDQ queries must be an (M, 32) uint8 array")
        n = len(self._words)
        if n == 0 or len(queries) == 0:
            return _hits([], [], [])
        qwords = queries.view(">u8")
        step = max(1, self._BLOCK // n)
        qs, es, ds = [], [], []
        for start in range(0, len(qwords), step):
            block = qwords[start : start + step]
            dist = np.bitwise_count(block[:, None, :] ^ self._words[None, :, :]).sum(axis=2, dtype=np.int64)
            qi, ei = np.nonzero(dist <= radius)
            qs.append(qi + start)
            es.append(ei)
            ds.append(dist[qi, ei])
        return _hits(np.concatenate(qs), np.concatenate(es), np.concatenate(ds))

    def entry(self, i: int) -> str:
        return self._hashes[i].tobytes().hex()
