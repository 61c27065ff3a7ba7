"""Hex digests as numpy arrays, so that lists of tens of millions of hashes stay small and fast.

Two layouts:
- rows: (N, width) uint8, the digest's bytes in order. Sorting rows as `width`-byte strings sorts
  them like the hex text. PDQ hashes are kept as rows (the radius search reads whole rows).
- words: (W, N) native uint64, word k holding bytes 8k..8k+7 read big-endian (zero-padded), sorted
  the same way. Word 0 is one contiguous sorted column, so `np.searchsorted` runs on the memory-
  mapped file directly: an exact list costs its own size in memory and nothing to load.
"""

from __future__ import annotations

import numpy as np

_HEX_VALUE = np.full(256, 255, dtype=np.uint8)
for _i, _c in enumerate(b"0123456789abcdef"):
    _HEX_VALUE[_c] = _i
for _i, _c in enumerate(b"ABCDEF"):
    _HEX_VALUE[_c] = 10 + _i
# Two hex characters read as one little-endian uint16 -> the byte they spell, or 256 if they spell
# none: one table look-up per byte, not two and a shift.
_FIRST, _SECOND = _HEX_VALUE[np.arange(65536) & 255].astype(np.uint16), _HEX_VALUE[np.arange(65536) >> 8]
_PAIR_VALUE = np.where((_FIRST < 16) & (_SECOND < 16), (_FIRST << 4) | _SECOND, 256).astype(np.uint16)


class RowBuffer:
    """A growable (n, width) uint8 array; reserve the expected size up front to never copy."""

    def __init__(self, width: int, capacity: int = 1024):
        self.width = width
        self._array = np.empty((max(1, capacity), width), dtype=np.uint8)
        self._n = 0
        self._pending = bytearray()

    def append(self, rows: np.ndarray) -> None:
        self._flush()
        self._append(rows)

    def append_hex(self, text: str) -> None:
        """One value already validated as `2 * width` hex chars."""
        self._pending += bytes.fromhex(text)
        if len(self._pending) >= 1 << 16:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            pending, self._pending = self._pending, bytearray()
            self._append(np.frombuffer(bytes(pending), dtype=np.uint8).reshape(-1, self.width))

    def _append(self, rows: np.ndarray) -> None:
        end = self._n + len(rows)
        if end > len(self._array):
            grown = np.empty((max(end, 2 * len(self._array)), self.width), dtype=np.uint8)
            grown[: self._n] = self._array[: self._n]
            self._array = grown
        self._array[self._n : end] = rows
        self._n = end

    @property
    def rows(self) -> np.ndarray:
        self._flush()
        return self._array[: self._n]

    def __len__(self) -> int:
        return self._n + len(self._pending) // self.width


def parse_hex_rows(chars: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(k, 2w) ASCII hex chars (either case) -> ((k', w) uint8 rows, bool mask of the k valid ones)."""
    values = _PAIR_VALUE[np.ascontiguousarray(chars, np.uint8).view("<u2")]
    valid = (values < 256).all(axis=1)
    return values[valid].astype(np.uint8), valid


def sort_unique(rows: np.ndarray) -> int:
    """Sort (n, width) rows in place as byte strings, move the distinct ones to the front, and
    return how many there are. Memory: nothing beyond the rows (compaction runs in blocks)."""
    n = len(rows)
    if n == 0:
        return 0
    keys = np.ascontiguousarray(rows).view(np.dtype((np.void, rows.shape[1]))).ravel()
    keys.sort()
    write = 1
    block = 1 << 20
    for start in range(1, n, block):
        stop = min(n, start + block)
        fresh = np.flatnonzero(keys[start:stop] != keys[start - 1 : stop - 1]) + start
        keys[write : write + len(fresh)] = keys[fresh]
        write += len(fresh)
    return write


def word_count(width: int) -> int:
    return (width + 7) // 8


def rows_to_words(rows: np.ndarray) -> np.ndarray:
    """(n, width) uint8 rows -> (W, n) native uint64 words."""
    n, width = rows.shape
    padded = np.zeros((n, word_count(width) * 8), dtype=np.uint8)
    padded[:, :width] = rows
    return padded.view(">u8").astype(np.uint64).T.copy()


def words_to_rows(words: np.ndarray, width: int) -> np.ndarray:
    """(W, n) words -> (n, width) uint8 rows."""
    return np.ascontiguousarray(words.T).astype(">u8").view(np.uint8).reshape(words.shape[1], -1)[:, :width]


def write_words(fh, rows: np.ndarray, block: int = 1 << 20) -> None:
    """Write sorted rows as a words-layout .npy, one column block at a time (no full copy)."""
    n, width = rows.shape
    count = word_count(width)
    np.lib.format.write_array_header_1_0(fh, {"descr": "<u8", "fortran_order": False, "shape": (count, n)})
    for k in range(count):
        for start in range(0, n, block):
            chunk = rows[start : start + block, 8 * k : 8 * k + 8]
            if chunk.shape[1] < 8:
                chunk = np.concatenate([chunk, np.zeros((len(chunk), 8 - chunk.shape[1]), np.uint8)], axis=1)
            fh.write(np.ascontiguousarray(chunk).view(">u8").astype("<u8").tobytes())


def write_rows(fh, rows: np.ndarray) -> None:
    np.lib.format.write_array_header_1_0(fh, {"descr": "|u1", "fortran_order": False, "shape": rows.shape})
    fh.write(np.ascontiguousarray(rows).tobytes())
