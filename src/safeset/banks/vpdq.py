"""vPDQ: listed videos as bags of frame PDQs, and the rule by which a video matches one of them.

The rule is python-threatexchange's brute matcher (`extensions/vpdq/vpdq_brute_matcher.py`, what
its `vpdq` signal type's `compare_hash` runs):

- each side's frames are deduplicated by hash (the first seen kept), then those of quality under
  50 are dropped (its FAISS index, `VPDQIndex`, drops first and deduplicates after: the two differ
  only where a hash repeats with its first copy under the gate, which a video's own frames almost
  never do);
- a frame matches when some frame of the other side is within distance 31 (inclusive);
- query % = the query's frames that match some frame of the listed video, over the query's frames;
  compared % = the listed video's frames that some query frame matches, over the listed video's;
- the video matches when query % >= 80 and compared % >= 0 (both configurable), and (here, not
  in the brute matcher, which with both at 0 matches every listed video) shares some frame with it.

(vpdq's own README gives the two thresholds the other way round, and its C++ matcher compares
with `<` and does not deduplicate: the rule above is python-threatexchange's.)

Listed videos come as python-threatexchange writes a vPDQ signal, a JSON array of
"pdq,quality,timestamp" strings (a line `vpdq [...]` of its local-file lists), or as vpdq's hash
files, a line `frame,quality,pdq,timestamp` per frame (one video a file).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from ..hashing.video import FrameHash
from .index import PdqIndex
from .signal_types import InvalidEntry

_PDQ_HEX = re.compile(r"[0-9a-f]{64}")
QUALITY = 50
DISTANCE = 31
QUERY_PERCENT = 80.0
COMPARED_PERCENT = 0.0


@dataclass(frozen=True)
class VideoMatch:
    video: int  # the listed video's position in the index
    query_percent: float
    compared_percent: float


def signal_of(frames: Iterable[FrameHash]) -> str:
    """A video's frame hashes as python-threatexchange serialises a vPDQ signal (`vpdq_to_json`):
    a JSON array of "pdq,quality,timestamp", the timestamp to 3 significant digits as it writes it."""
    return json.dumps([f"{frame.pdq},{frame.quality},{frame.timestamp:.3}" for frame in frames])


def frames_of_signal(text: str) -> list[tuple[str, int]]:
    """(pdq, quality) of each frame of a vPDQ signal as python-threatexchange serialises it: a JSON
    array of "pdq,quality,timestamp" strings. InvalidEntry with the reason (never the value)."""
    return [(pdq, quality) for pdq, quality, _ in _signal_frames(text)]


def canonical_signal(text: str) -> str:
    """A vPDQ signal as a bank stores it: python-threatexchange's JSON array, hashes in lower case.
    InvalidEntry (the reason only) for one that is not a signal or holds no frame."""
    return _canonical(_signal_frames(text))


def signal_of_hash_file(lines: Iterable[str]) -> str:
    """A vpdq hash file (one video) as a bank stores its signal (`canonical_signal`)."""
    return _canonical(_hash_file_frames(lines))


def _canonical(frames: list[tuple[str, int, float]]) -> str:
    if not frames:
        raise InvalidEntry("a video with no frame")
    return json.dumps([f"{pdq},{quality},{timestamp!r}" for pdq, quality, timestamp in frames])


# A listed video as a bank stores it: "LABEL<TAB>SIGNAL". The label names the video in matches
# (the list's own id, its hash file's path, or `FILE:LINE`); the signal is its frames.
_LABEL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
MAX_LABEL = 200


def safe_label(label: str) -> str:
    """A listed video's label (an id, a file's name) as it may be stored and shown: one line, no
    tab or other control character, at most `MAX_LABEL` characters."""
    return _LABEL_CHARS.sub(" ", label).strip()[:MAX_LABEL] or "-"


def listed_video(label: str, signal: str) -> str:
    """A listed video's stored entry: its label (`safe_label`) and its canonical signal."""
    return f"{safe_label(label)}\t{signal}"


def _signal_frames(text: str) -> list[tuple[str, int, float]]:
    try:
        items = json.loads(text)
    except (ValueError, RecursionError):  # a hostile list may nest arrays thousands deep
        items = None
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise InvalidEntry('not a vPDQ signal (a JSON array of "pdq,quality,timestamp")')
    return [_frame(*_fields(item, 3)) for item in items]


def _hash_file_frames(lines: Iterable[str]) -> list[tuple[str, int, float]]:
    """The frames of a hash file's lines (`#` lines are comments); InvalidEntry names the line."""
    frames = []
    for number, line in enumerate(lines, start=1):
        if line.strip() and not line.lstrip().startswith("#"):
            try:
                _, quality, pdq, timestamp = _fields(line, 4)
                frames.append(_frame(pdq, quality, timestamp))
            except InvalidEntry as exc:
                raise InvalidEntry(f"line {number}: {exc}") from None
    return frames


def _fields(text: str, count: int) -> list[str]:
    fields = text.strip().split(",")
    if len(fields) != count:
        raise InvalidEntry(f"a frame has {len(fields)} fields, expected {count}")
    return fields


def _frame(pdq: str, quality: str, timestamp: str) -> tuple[str, int, float]:
    """A frame's (pdq, quality, timestamp), checked as python-threatexchange checks them."""
    try:
        level, seconds = int(quality), float(timestamp)
    except ValueError:
        raise InvalidEntry("a frame's quality or timestamp is not a number") from None
    if not 0 <= level <= 100 or not 0 <= seconds < float("inf"):
        raise InvalidEntry("a frame's quality is not in 0..100, or its timestamp is negative")
    hex_pdq = pdq.strip().lower()
    if not _PDQ_HEX.fullmatch(hex_pdq):  # a blank frame's all-zero hash is allowed: its quality drops it
        raise InvalidEntry("a frame's PDQ is not 64 hex digits")
    return hex_pdq, level, seconds


def _prepared(frames: Sequence[tuple[str, int]], quality: int) -> np.ndarray:
    """One video's frames that take part in matching (`prepared_groups`), as (N, 32) bytes."""
    pdqs = np.frombuffer(bytes.fromhex("".join(pdq for pdq, _ in frames)), np.uint8).reshape(-1, 32)
    qualities = np.array([q for _, q in frames], np.int64)
    return pdqs[prepared_groups(np.zeros(len(frames), np.int64), pdqs, qualities, quality)]


def prepared_groups(groups: np.ndarray, pdqs: np.ndarray, qualities: np.ndarray, quality: int) -> np.ndarray:
    """Which frames of many videos at once (`groups`: each frame's video; `pdqs` (N, 32) bytes)
    take part in matching: each video's distinct hashes, the first seen kept, of quality >=
    `quality` (`_prepared`'s rule). A boolean mask."""
    if not len(groups):
        return np.zeros(0, bool)
    keys = np.empty((len(groups), 40), np.uint8)
    keys[:, :8] = np.asarray(groups, ">i8").view(np.uint8).reshape(-1, 8)
    keys[:, 8:] = pdqs
    _, first = np.unique(keys.view("V40").ravel(), return_index=True)
    kept = np.zeros(len(groups), bool)
    kept[first] = True
    return kept & (np.asarray(qualities) >= quality)


class VpdqIndex:
    """Listed videos, each a bag of frame hashes; `match` gives every listed video a query video
    matches under the vPDQ rule. All listed frames share one PDQ index: a query's frames are looked
    up once, then counted per listed video."""

    def __init__(self, videos: Sequence[Sequence[tuple[str, int]]], quality: int = QUALITY, labels=None):
        prepared = [_prepared(frames, quality) for frames in videos]
        self.quality = quality
        self.labels = list(labels) if labels is not None else [str(i) for i in range(len(prepared))]
        self.sizes = np.array([len(p) for p in prepared], np.int64)  # a video of no usable frame never matches
        self.owner = np.repeat(np.arange(len(prepared)), self.sizes)
        self._frames = PdqIndex(np.concatenate(prepared) if prepared else np.zeros((0, 32), np.uint8))

    @classmethod
    def from_entries(cls, entries: Sequence[str], quality: int = QUALITY) -> VpdqIndex:
        """From a bank's stored entries (`listed_video`)."""
        pairs = [entry.split("\t", 1) for entry in entries]
        return cls([frames_of_signal(signal) for _, signal in pairs], quality, [label for label, _ in pairs])

    def __len__(self) -> int:
        return len(self.sizes)

    def entry(self, video: int) -> str:
        """What a match records of the listed video: its label."""
        return self.labels[video]

    def match(
        self,
        frames: Sequence[tuple[str, int]],
        distance: int = DISTANCE,
        query_percent: float = QUERY_PERCENT,
        compared_percent: float = COMPARED_PERCENT,
    ) -> list[VideoMatch]:
        """The listed videos `frames` (a query video's (pdq, quality)) matches, with both percentages."""
        query = _prepared(frames, self.quality)
        found = self.match_groups(np.zeros(len(query), np.int64), query, distance, query_percent, compared_percent)
        return [VideoMatch(int(v), float(qp), float(cp)) for _, v, qp, cp in zip(*found, strict=True)]

    def match_groups(
        self,
        groups: np.ndarray,
        frames: np.ndarray,
        distance: int = DISTANCE,
        query_percent: float = QUERY_PERCENT,
        compared_percent: float = COMPARED_PERCENT,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Many query videos at once: `frames` (N, 32) bytes, each video's frames already prepared
        (`prepared_groups`), `groups` each frame's video. Returns (group, listed video, query %,
        compared %) of every pair that matches, in group then video order."""
        groups = np.asarray(groups, np.int64)
        empty = np.zeros(0, np.int64)
        if not len(frames) or not len(self.owner):
            return empty, empty, np.zeros(0), np.zeros(0)
        q, e, _ = self._frames.search(frames, distance)
        if not len(q):
            return empty, empty, np.zeros(0), np.zeros(0)
        videos = np.int64(len(self))
        # (query video, listed video) of each query frame that hits the listed video, counted once
        hit = np.unique(self.owner[e] * len(frames) + q)
        pairs, query_hits = np.unique(groups[hit % len(frames)] * videos + hit // len(frames), return_counts=True)
        # and of each listed frame some frame of the query video hits, counted once
        listed = np.unique(groups[q] * len(self.owner) + e)
        listed_pairs = listed // len(self.owner) * videos + self.owner[listed % len(self.owner)]
        counted, listed_hits = np.unique(listed_pairs, return_counts=True)
        group, video = pairs // videos, pairs % videos
        per_group = np.bincount(groups)
        q_pct = query_hits * 100 / per_group[group]
        c_pct = listed_hits[np.searchsorted(counted, pairs)] * 100 / self.sizes[video]
        keep = (q_pct >= query_percent) & (c_pct >= compared_percent)
        return group[keep], video[keep], q_pct[keep], c_pct[keep]
