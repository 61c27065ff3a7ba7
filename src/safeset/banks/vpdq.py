"""vPDQ: listed videos as bags of frame PDQs, and the rule by which a video matches one of them.

The rule is python-threatexchange's (`extensions/vpdq/vpdq_brute_matcher.py`, the `vpdq` signal
type), which the exchanges' clients apply:

- each side's frames are deduplicated by hash, then those of quality under 50 are dropped;
- a frame matches when some frame of the other side is within distance 31 (inclusive);
- query % = the query's frames that match some frame of the listed video, over the query's frames;
  compared % = the listed video's frames that some query frame matches, over the listed video's;
- the video matches when query % >= 80 and compared % >= 0 (both configurable).

(vpdq's own README gives the two thresholds the other way round, and its C++ matcher compares
with `<` and does not deduplicate: the Python rule above is the one the exchanges' code runs.)

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
    try:
        items = json.loads(text)
    except ValueError:
        items = None
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise InvalidEntry('not a vPDQ signal (a JSON array of "pdq,quality,timestamp")')
    return [_frame(*_fields(item, 3)) for item in items]


def frames_of_hash_file(lines: Iterable[str]) -> list[tuple[str, int]]:
    """(pdq, quality) of each line `frame,quality,pdq,timestamp` of a vpdq hash file."""
    frames = []
    for line in lines:
        if line.strip():
            _, quality, pdq, timestamp = _fields(line, 4)
            frames.append(_frame(pdq, quality, timestamp))
    return frames


def _fields(text: str, count: int) -> list[str]:
    fields = text.strip().split(",")
    if len(fields) != count:
        raise InvalidEntry(f"a frame has {len(fields)} fields, expected {count}")
    return fields


def _frame(pdq: str, quality: str, timestamp: str) -> tuple[str, int]:
    """A frame's (pdq, quality), checked as python-threatexchange checks them."""
    try:
        level, seconds = int(quality), float(timestamp)
    except ValueError:
        raise InvalidEntry("a frame's quality or timestamp is not a number") from None
    if not 0 <= level <= 100 or not seconds >= 0:
        raise InvalidEntry("a frame's quality is not in 0..100, or its timestamp is negative")
    hex_pdq = pdq.strip().lower()
    if not _PDQ_HEX.fullmatch(hex_pdq):  # a blank frame's all-zero hash is allowed: its quality drops it
        raise InvalidEntry("a frame's PDQ is not 64 hex digits")
    return hex_pdq, level


def _prepared(frames: Sequence[tuple[str, int]], quality: int) -> np.ndarray:
    """The distinct hashes (first seen kept) of quality >= `quality`, as (N, 32) bytes: dedupe, then
    filter, in the brute matcher's order."""
    seen: dict[str, int] = {}
    for pdq, q in frames:
        seen.setdefault(pdq, q)
    kept = [pdq for pdq, q in seen.items() if q >= quality]
    return np.frombuffer(bytes.fromhex("".join(kept)), np.uint8).reshape(-1, 32)


class VpdqIndex:
    """Listed videos, each a bag of frame hashes; `match` gives every listed video a query video
    matches under the vPDQ rule. All listed frames share one PDQ index: a query's frames are looked
    up once, then counted per listed video."""

    def __init__(self, videos: Sequence[Sequence[tuple[str, int]]], quality: int = QUALITY):
        prepared = [_prepared(frames, quality) for frames in videos]
        self.quality = quality
        self.sizes = np.array([len(p) for p in prepared], np.int64)  # a video of no usable frame never matches
        self.owner = np.repeat(np.arange(len(prepared)), self.sizes)
        self._frames = PdqIndex(np.concatenate(prepared) if prepared else np.zeros((0, 32), np.uint8))

    def __len__(self) -> int:
        return len(self.sizes)

    def match(
        self,
        frames: Sequence[tuple[str, int]],
        distance: int = DISTANCE,
        query_percent: float = QUERY_PERCENT,
        compared_percent: float = COMPARED_PERCENT,
    ) -> list[VideoMatch]:
        """The listed videos `frames` (a query video's (pdq, quality)) matches, with both percentages."""
        query = _prepared(frames, self.quality)
        if not len(query):
            return []
        q, e, _ = self._frames.search(query, distance)
        if not len(q):
            return []
        video = self.owner[e]
        query_hits = np.unique(video * len(query) + q)  # (video, query frame) pairs
        listed_hits = np.unique(e)  # listed frames hit: each belongs to one video
        per_video_query = np.bincount(query_hits // len(query), minlength=len(self))
        per_video_listed = np.bincount(self.owner[listed_hits], minlength=len(self))
        found = []
        for v in np.flatnonzero(per_video_query):
            q_pct = per_video_query[v] * 100 / len(query)
            c_pct = per_video_listed[v] * 100 / self.sizes[v]
            if q_pct >= query_percent and c_pct >= compared_percent:
                found.append(VideoMatch(int(v), float(q_pct), float(c_pct)))
        return found
