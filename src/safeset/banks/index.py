"""Indexes over listed values: one small base class, one implementation per kind of comparison.

Every index answers a batch of queries with three parallel arrays (query index, entry index,
distance), so matching a shard is a handful of vectorised calls, not a loop over items.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from math import comb

import numpy as np

from . import _mih
from .hexarray import rows_to_words, sort_unique, word_count, words_to_rows

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


class ExactHashIndex(SignalIndex):
    """Exact digests (MD5, SHA1, SHA256, URL-MD5) in the words layout of `hexarray`: binary search
    on the sorted first word, which is the memory-mapped store file itself, then the other words.

    Queries are sorted before searching, so consecutive searches walk the column in one direction
    and stay in cache: about ten million lookups a second against 16 million listed MD5s.
    """

    def __init__(self, words: np.ndarray, width: int):
        if words.ndim != 2 or words.shape[0] != word_count(width):
            raise ValueError(f"expected ({word_count(width)}, N) words for {width}-byte digests")
        self._words = words
        self.width = width

    @classmethod
    def from_rows(cls, rows: np.ndarray) -> ExactHashIndex:
        """From (N, width) uint8 digests in any order, duplicates allowed."""
        rows = np.array(rows, dtype=np.uint8, copy=True)
        distinct = sort_unique(rows)
        return cls(rows_to_words(rows[:distinct]), rows.shape[1])

    def __len__(self) -> int:
        return self._words.shape[1]

    def search(self, queries: np.ndarray, radius: int = 0) -> Hits:
        """Exact lookup of (M, width) uint8 queries; `radius` is ignored (always 0)."""
        n = len(self)
        if n == 0 or len(queries) == 0:
            return _hits([], [], [])
        wanted = rows_to_words(np.ascontiguousarray(queries, dtype=np.uint8))
        order = np.argsort(wanted[0], kind="stable")
        wanted = wanted[:, order]
        first = self._words[0]
        position = np.searchsorted(first, wanted[0])
        found_q, found_e = [], []
        pending = np.arange(len(order))
        while len(pending):  # a run of equal first words is rare: 64 bits of a digest
            p = position[pending]
            inside = p < n
            pending, p = pending[inside], p[inside]
            same_first = first[p] == wanted[0, pending]
            pending, p = pending[same_first], p[same_first]
            equal = np.ones(len(pending), dtype=bool)
            for w in range(1, self._words.shape[0]):
                equal &= self._words[w][p] == wanted[w, pending]
            found_q.append(order[pending[equal]])
            found_e.append(p[equal])
            pending = pending[~equal]
            position[pending] += 1
        q, e = np.concatenate(found_q), np.concatenate(found_e)
        return _hits(q, e, np.zeros(len(q)))

    def entry(self, i: int) -> str:
        return words_to_rows(np.asarray(self._words[:, i : i + 1]), self.width).tobytes().hex()


class TextIndex(SignalIndex):
    """Exact string values (normalised URLs, domains)."""

    def __init__(self, entries: Sequence[str]):
        import pyarrow as pa

        self._entries = pa.array(list(entries), pa.string())
        self._positions: dict[str, int] | None = None  # for a few strings at a time, built on first use

    def __len__(self) -> int:
        return len(self._entries)

    def search(self, queries, radius: int = 0) -> Hits:
        """`queries`: an Arrow string array (a column of results: one hash-table pass in Arrow;
        if dictionary-encoded, one lookup per distinct value), or a few strings (a URL's host
        suffixes as it is fetched: a dict lookup each, where an Arrow call would cost more)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        if not isinstance(queries, (pa.Array, pa.ChunkedArray)):
            if self._positions is None:
                self._positions = {v: i for i, v in enumerate(self._entries.to_pylist())}
            found_at = [(i, self._positions.get(v)) for i, v in enumerate(queries)]
            pairs = [(i, e) for i, e in found_at if e is not None]
            return _hits([i for i, _ in pairs], [e for _, e in pairs], np.zeros(len(pairs)))
        if isinstance(queries, pa.DictionaryArray):  # each distinct value looked up once
            q, e, _ = self.search(queries.dictionary)
            entry_of = np.full(len(queries.dictionary) + 1, -1, np.int64)  # the last: a null query's
            entry_of[q] = e
            nulls_last = pc.fill_null(queries.indices, len(queries.dictionary))
            per_query = entry_of[nulls_last.to_numpy(zero_copy_only=False)]
            q = np.flatnonzero(per_query >= 0)
            return _hits(q, per_query[q], np.zeros(len(q)))
        found = pc.index_in(queries, value_set=self._entries)
        q = np.flatnonzero(found.is_valid().to_numpy(zero_copy_only=False))
        e = pc.fill_null(found, 0).to_numpy(zero_copy_only=False)[q]
        return _hits(q, e, np.zeros(len(q)))

    def entry(self, i: int) -> str:
        return self._entries[i].as_py()


def slots_for(n: int, radius: int = 31) -> int:
    """How many slots to cut the hashes of an n-hash list into: the count with the fewest expected
    memory reads per radius-`radius` query over random hashes (a probe's bucket offsets, then each
    entry found), among those whose offsets tables stay within about twice the list's entries.
    16 slots up to about 3M hashes, then 12, then 11 from about 8M."""
    best, best_cost = 16, None
    for slots in range(11, 17):
        widths = _mih.layout(slots)
        if max(widths) > 16 and 2 ** max(widths) > 2 * n:
            continue
        r = radius // slots
        cost = sum(sum(comb(w, k) for k in range(r + 1)) * (1.5 + n / 2**w) for w in widths)
        if best_cost is None or cost < best_cost:
            best, best_cost = slots, cost
    return best


def build_tables(hashes: np.ndarray, slots: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Multi-index hashing tables of (N, 32) uint8 hashes cut into `slots` (default: `slots_for(N)`):
    per slot, the entries sorted by that slot's bits (orders, slots x N uint32) and where each value
    starts (starts, 2**width + 1 per slot)."""
    hashes = np.ascontiguousarray(hashes, dtype=np.uint8)
    orders, starts = _mih.build(hashes, slots or slots_for(len(hashes)))
    return np.frombuffer(orders, dtype=np.uint32), np.frombuffer(starts, dtype=np.uint32)


def tables_slots(tables: tuple[np.ndarray, np.ndarray], n: int) -> int | None:
    """The slot count whose tables for n hashes have these sizes; None if none has (tables
    written halfway, or for other hashes)."""
    orders, starts = tables
    slots = orders.size // n if n else 0
    fits = 11 <= slots <= 16 and orders.size == slots * n and starts.size == sum(2**w + 1 for w in _mih.layout(slots))
    return slots if fits else None


class PdqIndex(SignalIndex):
    """Exact Hamming-radius search over PDQ hashes given as (N, 32) uint8.

    Multi-index hashing in C (`_mih.c`), over 16 slots of 16 bits or, for lists of millions, 11 or
    12 wider slots (`slots_for`): a radius-31 query probes the values within 1 or 2 bits of its
    own in each slot and checks only the entries found there, instead of all N. Every match within
    the radius is returned, none beyond it. Small lists are scanned linearly, which is faster than
    probing, and so are radii of 5 bits per slot and more, where probing stops paying. Memory: the
    hashes (32 bytes each) plus 4 bytes per hash and slot and the slots' offsets (4 MB for 16
    slots; 448 MB, 45 bytes per hash, for a 10M list's 11), all memory-mapped from the bank store
    when loaded from it.
    """

    MIH_MIN_ENTRIES = 4096

    def __init__(self, hashes: np.ndarray, tables: tuple[np.ndarray, np.ndarray] | None = None):
        """`tables`: the (orders, starts) of `build_tables(hashes)`, if they were kept (the bank
        store keeps them, memory-mapped, so that a machine's workers share one copy)."""
        hashes = np.ascontiguousarray(hashes, dtype=np.uint8)
        if hashes.ndim != 2 or hashes.shape[1] != 32:
            raise ValueError("PDQ hashes must be an (N, 32) uint8 array")
        self._hashes = hashes
        self._orders = self._starts = None
        if len(hashes) >= self.MIH_MIN_ENTRIES:
            fits = tables is not None and tables_slots(tables, len(hashes)) is not None
            self._orders, self._starts = tables if fits else build_tables(hashes)

    def __len__(self) -> int:
        return len(self._hashes)

    def search(self, queries: np.ndarray, radius: int = 31) -> Hits:
        queries = np.ascontiguousarray(queries, dtype=np.uint8)
        if queries.ndim != 2 or queries.shape[1] != 32:
            raise ValueError("PDQ queries must be an (M, 32) uint8 array")
        if len(self._hashes) == 0 or len(queries) == 0:
            return _hits([], [], [])
        raw = _mih.search(self._hashes, self._orders, self._starts, queries, int(radius))
        triplets = np.frombuffer(raw, dtype=np.int64).reshape(-1, 3)
        return triplets[:, 0], triplets[:, 1], triplets[:, 2]

    def entry(self, i: int) -> str:
        return self._hashes[i].tobytes().hex()
