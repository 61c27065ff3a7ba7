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
    """(diacritics, separators), built on first use from `_marks`. Diacritics are the combining
    marks of class 10 and up; viramas, nuktas and kana voicing marks (classes below 10) are parts
    of letters, and every mark stays part of its word. Python's `re` tests a character class of
    the Basic Multilingual Plane in one step but ranges beyond it one by one (six times slower),
    so text with no character beyond it gets the patterns without."""
    top = sys.maxunicode if astral else 0xFFFF
    diacritics, marks = (points[points <= top].tolist() for points in _marks())
    return re.compile(f"[{_ranges(diacritics)}]+"), re.compile(f"(?:[^\\w{_ranges(marks)}]|_)+")


# The planes that hold marks: the Basic and Supplementary Multilingual ones, and the
# Supplementary Special-purpose one (variation selectors). The others hold ideographs, private
# use or nothing yet (a test walks them all)
MARK_PLANES = (range(0x20000), range(0xE0000, 0xF0000))


@functools.cache
def _marks() -> tuple[np.ndarray, np.ndarray]:
    """(diacritics, marks): the code points of combining class 10 and up, and of category M. One
    walk over the planes that hold them (0.05 s), on first use."""
    points = [chr(c) for plane in MARK_PLANES for c in plane]
    diacritics = [ord(p) for p in points if unicodedata.combining(p) >= 10]
    marks = [ord(p) for p in points if unicodedata.category(p)[0] == "M"]
    return np.array(diacritics, np.int64), np.array(marks, np.int64)


@functools.cache
def _word_points() -> bytes:
    """A bit per code point, set where it is part of a word: a letter or digit as Python's `\\w`
    has them (`str.isalnum`) or a mark; what `_patterns`' separators leave. For `_words.c`."""
    kept = np.strings.isalnum(np.arange(sys.maxunicode + 1, dtype=np.uint32).view("U1"))
    kept[_marks()[1]] = True
    return np.packbits(kept, bitorder="little").tobytes()


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
    that hold a letter or digit. Captions of other characters than ASCII are folded (`_folded`)
    all at once; then every caption (most of a web crawl is ASCII) is mapped character by
    character, with separators made spaces and runs of spaces made one, in one pass (`_words.c`)."""
    column = whole(column).cast(pa.string())
    ascii_rows = pc.fill_null(pc.string_is_ascii(column), True).to_numpy(zero_copy_only=False)
    words = b""
    if not ascii_rows.all():
        others = pc.replace_substring(column.filter(pa.array(~ascii_rows)), _APART, " ")
        done = pa.array(_folded(others.to_pylist()), pa.string())
        column = pc.replace_with_mask(column, pa.array(~ascii_rows), done)
        words = _word_points()
    column = pc.fill_null(column, "")
    n = len(column)
    offsets = np.frombuffer(column.buffers()[1], np.int32)[column.offset : column.offset + n + 1].astype(np.int64)
    data = column.buffers()[2]
    text, ends = _words.padded_words(b"" if data is None else data, offsets, _TABLE, words)
    present = np.diff(np.frombuffer(ends, np.int32)) > 1  # more than the space alone
    normal = pa.StringArray.from_buffers(n, pa.py_buffer(ends), pa.py_buffer(text))
    return np.flatnonzero(present), normal.filter(pa.array(present))


# Between captions folded together: a separator (a space in every caption's normal form), which
# no normal form or case folding makes or takes apart
_APART = "\x00"


def _folded(texts: list[str]) -> list[str]:
    """`normal_text` of each text but for its separators (`_words.c` makes those spaces): the
    texts folded as one string, which costs a third of folding them one by one. Each normal
    form and the case folding map a character, or a character and the marks after it, and
    `_APART` starts no composition, so the texts come apart as they went in."""
    decomposed = unicodedata.normalize("NFKD", _APART.join(t or "" for t in texts))
    diacritics, _ = _patterns(max(decomposed, default="") > "\uffff")
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", diacritics.sub("", decomposed)).casefold())
    return folded.split(_APART)


def is_unspaced(term: str) -> bool:
    """Whether a term is written in a script without spaces between words (matched as a substring)."""
    return _UNSPACED.search(term) is not None


class KeywordIndex(SignalIndex):
    """A keyword list: entries "TERM\\tREF" (the term in normal form, and where it was listed, the
    `line:N` recorded on a match). Compiled into one Hyperscan database of literals when loaded."""

    def __init__(self, entries: Sequence[str]):
        import hyperscan

        # a bank stored before a run of separators holding "_" made one space kept two there:
        # the normal form's words, single-spaced, are what it means
        pairs = [(" ".join(term.split()), ref) for term, ref in (entry.split("\t", 1) for entry in entries)]
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
