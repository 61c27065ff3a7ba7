"""Keyword lists matched against captions: how terms and captions are normalised alike, and one
multi-pattern scan (Hyperscan) over a whole column of captions at once.

Normal form (terms and captions alike): Unicode compatibility forms folded (NFKC: `ｃｈｉｌｄ` is
`child`), diacritics removed (`chíld` is `child`), case folded, and every run of characters that
are not letters, digits or marks one space. A term matches where it stands as whole words of the
caption (`child` in `child-care`, not in `childish`); a term in a script written without spaces
between words (Han, kana, Thai, Lao, Khmer, Myanmar) matches anywhere as a substring.

Whole words are matched as literals: each normal caption is held as " words ", so a term's pattern
" term " can only start and end at word boundaries. Captions lie back to back in one buffer; two
neighbours meet in two spaces, which no pattern holds, so no match can span them.

The terms are confidential (child-protection organisations' lists): a match is recorded by the
term's place in its file (`line:N`), never by the term.
"""

from __future__ import annotations

import functools
import re
import sys
import unicodedata
from bisect import bisect_right
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..hashing.columns import whole
from . import _words
from .index import Hits, SignalIndex, _hits

# Scripts written without spaces between words: a term holding any of these matches as a substring.
_UNSPACED = re.compile(
    "[\u0e00-\u0eff"  # Thai, Lao
    "\u1000-\u109f\ua9e0-\ua9ff\uaa60-\uaa7f"  # Myanmar
    "\u1780-\u17ff\u19e0-\u19ff"  # Khmer
    "\u2e80-\u2fdf\u3005\u3007\u3021-\u3029\u3038-\u303b"  # CJK radicals, ideographic marks
    "\u3040-\u30ff\u31f0-\u31ff"  # Hiragana, Katakana
    "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"  # Han
    "\U00020000-\U0003134f]"
)


@functools.cache
def _patterns(astral: bool) -> tuple[re.Pattern, re.Pattern]:
    """(diacritics, separators), built on first use: they take a walk over every code point.
    Diacritics are the combining marks of class 10 and up; viramas, nuktas and kana voicing marks
    (classes below 10) are parts of letters, and every mark stays part of its word. Python's
    `re` tests a character class of the Basic Multilingual Plane in one step but ranges beyond it
    one by one (six times slower), so text with no character beyond it gets the patterns without."""
    top = sys.maxunicode if astral else 0xFFFF
    diacritics = _ranges(c for c in range(top + 1) if unicodedata.combining(chr(c)) >= 10)
    marks = _ranges(c for c in range(top + 1) if unicodedata.category(chr(c))[0] == "M")
    return re.compile(f"[{diacritics}]+"), re.compile(f"[^\\w{marks}]+|_+")


def _ranges(points) -> str:
    """A regular expression's character class body for ascending code points, as ranges."""
    spans: list[list[int]] = []
    for point in points:
        if spans and spans[-1][1] == point - 1:
            spans[-1][1] = point
        else:
            spans.append([point, point])
    return "".join(re.escape(chr(a)) + (f"-{re.escape(chr(b))}" if b > a else "") for a, b in spans)


def normal_text(text: str) -> str:
    """The normal form of a term or a caption (see the module), without surrounding spaces."""
    if text.isascii():
        return " ".join(_ASCII_WORDS.findall(text.lower()))
    decomposed = unicodedata.normalize("NFKD", text)
    diacritics, separators = _patterns(max(decomposed) > "\uffff")
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", diacritics.sub("", decomposed)).casefold())
    return separators.sub(" ", folded).strip()


_ASCII_WORDS = re.compile(r"[a-z0-9]+")

# ASCII bytes to their normal form: letters lower-cased, digits kept, the rest a space. Bytes of
# other characters (only in captions `normal_text` has normalised already) are kept.
_BYTES = np.arange(256, dtype=np.uint8)
_BYTES[:128] = ord(" ")
_BYTES[ord("0") : ord("9") + 1] = np.arange(ord("0"), ord("9") + 1)
_BYTES[ord("a") : ord("z") + 1] = np.arange(ord("a"), ord("z") + 1)
_BYTES[ord("A") : ord("Z") + 1] = np.arange(ord("a"), ord("z") + 1)
_TABLE = _BYTES.tobytes()


def normal_captions(column: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, pa.Array]:
    """(positions, captions in normal form, each held as " words ") of the captions of a column
    that hold a letter or digit. Captions of other characters than ASCII go through `normal_text`
    one by one; then every caption (most of a web crawl is ASCII) is mapped byte by byte and its
    runs of spaces made one, in one pass (`_words.c`)."""
    column = whole(column).cast(pa.string())
    ascii_rows = pc.fill_null(pc.string_is_ascii(column), True).to_numpy(zero_copy_only=False)
    if not ascii_rows.all():
        others = column.filter(pa.array(~ascii_rows))
        done = pa.array([normal_text(t) for t in others.to_pylist()], pa.string())
        column = pc.replace_with_mask(column, pa.array(~ascii_rows), done)
    column = pc.fill_null(column, "")
    n = len(column)
    offsets = np.frombuffer(column.buffers()[1], np.int32)[column.offset : column.offset + n + 1].astype(np.int64)
    data = column.buffers()[2]
    text, ends = _words.padded_words(b"" if data is None else data, offsets, _TABLE)
    present = np.diff(np.frombuffer(ends, np.int32)) > 1  # more than the space alone
    normal = pa.StringArray.from_buffers(n, pa.py_buffer(ends), pa.py_buffer(text))
    return np.flatnonzero(present), normal.filter(pa.array(present))


def is_unspaced(term: str) -> bool:
    """Whether a term is written in a script without spaces between words (matched as a substring)."""
    return _UNSPACED.search(term) is not None


class KeywordIndex(SignalIndex):
    """A keyword list: entries "TERM\\tREF" (the term in normal form, and where it was listed, the
    `line:N` recorded on a match). Compiled into one Hyperscan database of literals when loaded."""

    def __init__(self, entries: Sequence[str]):
        import hyperscan

        pairs = [entry.split("\t", 1) for entry in entries]
        self._refs = [ref for _, ref in pairs]
        patterns = [(term if is_unspaced(term) else f" {term} ").encode() for term, _ in pairs]
        self._lengths = np.array([len(p) for p in patterns], np.int64)
        self._database = None
        if patterns:
            self._database = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
            self._database.compile(
                expressions=patterns, ids=list(range(len(patterns))), elements=len(patterns), literal=True
            )
            self._scratch = hyperscan.Scratch(self._database)

    def __len__(self) -> int:
        return len(self._refs)

    def search(self, queries, radius: int = 0) -> Hits:
        """`queries`: captions in normal form, as `normal_captions` holds them. Each (caption,
        term) pair is reported once, however often the term occurs in the caption."""
        queries = whole(queries)
        if self._database is None or len(queries) == 0:
            return _hits([], [], [])
        offsets = np.frombuffer(queries.buffers()[1], np.int32)[queries.offset : queries.offset + len(queries) + 1]
        data = queries.buffers()[2]
        text = data.to_pybytes()[offsets[0] : offsets[-1]] if data is not None else b""
        starts = (offsets - offsets[0]).tolist()
        # (caption, term) pairs as they are found, so that a caption repeating a phrase thousands
        # of times costs one entry, not one per occurrence
        found: set[tuple[int, int]] = set()
        self._database.scan(
            text, match_event_handler=lambda term, _s, end, _f, _c: found.add((bisect_right(starts, end - 1) - 1, term))
        )
        if not found:
            return _hits([], [], [])
        pairs = np.array(sorted(found), np.int64)
        return _hits(pairs[:, 0], pairs[:, 1], np.zeros(len(pairs)))

    def entry(self, i: int) -> str:
        return self._refs[i]
