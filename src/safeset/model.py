"""The data model every stage shares: `Item` in, `ItemResult` out (its table schema: `sinks.results`).

Names here are a contract (DESIGN.md, "Data model"): add fields freely, never rename one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .hashing.video import FrameHash


class Status(StrEnum):
    """What happened to an item before matching. Anything but OK means the image was not checked."""

    OK = "ok"
    NO_IMAGE = "no_image"  # the row has no image bytes (failed download, metadata without --fetch, ...)
    FETCH_FAILED = "fetch_failed"
    DECODE_FAILED = "decode_failed"  # an image (or claims to be one) that could not be decoded in full
    UNSUPPORTED_MEDIA = "unsupported_media"  # bytes that are not an image safeset decodes (archive, audio, ...)
    # a video not wholly hashed: past a limit, broken part way, or one FFmpeg does not decode (the
    # frames it gave are matched all the same); held for review by default, as a player may show the rest
    VIDEO_INCOMPLETE = "video_incomplete"
    UNREADABLE_ROW = "unreadable_row"  # the input row itself could not be parsed (bad CSV record, JSON line)
    SKIPPED_OPTOUT = "skipped_optout"


class Decision(StrEnum):
    KEEP = "keep"
    REMOVE = "remove"
    REVIEW = "review"


# The condition an item with a usable PDQ of too low quality is recorded under (policy key, reason).
LOW_QUALITY = "pdq_low_quality"
# The largest payload held in memory and decoded (`--max-bytes`): a larger download fails
# (`too_large`), a larger local payload gets its exact digests only, computed as it streams past.
DEFAULT_MAX_BYTES = 32 * 2**20


@dataclass(slots=True)
class Payload:
    """One run of bytes a row holds: a tar member, an image cell or list element, a file, a download.
    Every payload that could reach the clean release is hashed and matched first. `data` lives in
    memory only, until hashed; a payload too large to hold was hashed by its reader as it streamed
    past (`digests`), and `error` says why its bytes are not all here ("too_large", "truncated")."""

    name: str  # where in the row: "" for a row's only payload, else a member's extension or a column
    data: bytes | None = None
    digests: dict[str, str] | None = None
    error: str | None = None
    # What the tool that wrote the image says it did to it (img2dataset: its size before resizing,
    # and where the content lies if it padded it): a `hashing.Resized`, for PDQ's variants.
    resized: Any = None
    # With `error`, if it may be an image: the bytes there are of it (the first `max_bytes` of one
    # too large to hold, what arrived of one cut short), decoded for a partial PDQ, never digested
    # as if they were all.
    head: bytes | bytearray | None = None


@dataclass(slots=True)
class Item:
    """One input row and its payloads (in memory only, dropped after hashing). `data` is the first
    payload's bytes, for rows that have one (a fetched image, a file)."""

    row_id: str  # "<shard>:<index>", stable across runs and engines
    shard: str
    index: int
    key: str
    url: str | None = None
    caption: str | None = None
    payloads: list[Payload] = field(default_factory=list)
    status: Status | None = None  # set by a reader that already knows the row has no image
    error: str | None = None
    signals: dict[str, float] = field(default_factory=dict)  # numeric columns asked for (`ReadOptions.signals`)
    locator: Any = None  # where the row sits in its input, for the reader's clean pass (a tar's members)
    fetched: bool = False  # its URL went to the fetcher, which set its bytes or its status

    @property
    def data(self) -> bytes | None:
        return self.payloads[0].data if self.payloads else None

    @data.setter
    def data(self, value: bytes | None) -> None:
        if self.payloads:
            self.payloads[0].data = value
        elif value is not None:
            self.payloads.append(Payload("", value))


@dataclass(frozen=True, slots=True)
class Span:
    """Where a tar member lies in its archive: the offset of its header, the size of its data and
    the MD5 of that data. A kept sample's members are copied by their spans, re-read and checked
    by size and MD5, in the scan and in every later decide round alike."""

    offset: int
    size: int
    md5: str


@dataclass(frozen=True, slots=True)
class FetchedImage:
    """The locator of a downloaded row when kept images are saved (`--save-images`): its bytes, in
    memory only until the row is decided, and written only if it is kept."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Match:
    bank: str
    signal_type: str
    entry: str  # the listed value that matched (a hash in hex, a URL, a domain)
    distance: int = 0  # Hamming distance for PDQ; 0 for exact signals
    # which query-side PDQ variant matched ("" plain, "flip_h", "trim", ...; a video's frame: "video_frame:N")
    variant: str = ""
    payload: str = ""  # which payload of the row matched ("" the row's own; else see `PayloadResult.name`)
    # A vPDQ match (a video against a listed video): the share of the video's frames that match
    # some frame of the listed one, and of the listed one's frames that some frame of it matches
    query_percent: float | None = None
    compared_percent: float | None = None

    def to_row(self) -> dict[str, Any]:
        return {
            "bank": self.bank,
            "signal_type": self.signal_type,
            "entry": self.entry,
            "distance": self.distance,
            "variant": self.variant,
            "payload": printable(self.payload),
            "query_percent": self.query_percent,
            "compared_percent": self.compared_percent,
        }


def printable(text: str | None) -> str | None:
    """Text as it can be written (UTF-8): a name that was not valid UTF-8 (its bytes kept as lone
    surrogates by Python) or a lone surrogate from JSON becomes a backslash escape, not an error."""
    if text is None:
        return None
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


@dataclass(slots=True, kw_only=True)
class Hashes:
    """What hashing one payload found: its status, digests and PDQ."""

    status: Status = Status.OK
    error: str | None = None
    md5: str | None = None
    sha1: str | None = None
    sha256: str | None = None
    pdq: str | None = None
    pdq_quality: int | None = None
    width: int | None = None
    height: int | None = None
    # Query-side PDQ variants (name -> hex), matched besides `pdq`; stored for decide rounds.
    pdq_variants: dict[str, str] = field(default_factory=dict)
    # A video's sampled frames (`hashing.video.FrameHash`), None for anything else: matched against
    # vPDQ lists as a whole and frame by frame against PDQ lists; stored for decide rounds.
    frames: list[FrameHash] | None = None
    # Which statements in the bytes forbid AI training ("xmp", "c2pa": see `signals.optout`);
    # recorded as the row's signals, not a column of its own
    optout: tuple[str, ...] = ()
    # Models' inputs prepared from the image ("nsfw": `signals.nsfw`; "embed": `signals.models`),
    # in memory only until their batch is run
    inputs: dict[str, Any] = field(default_factory=dict)
    # A video's other video streams, hashed as payloads of their own (in memory only: `hash_item`
    # lists them among the row's payloads)
    streams: list[Any] = field(default_factory=list)

    def hash_row(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in HASH_FIELDS}


HASH_FIELDS = ("md5", "sha1", "sha256", "pdq", "pdq_quality", "width", "height")


@dataclass(slots=True, kw_only=True)
class PayloadResult(Hashes):
    """A payload of a row besides its primary one (whose hashes are the row's own fields)."""

    name: str = ""

    def to_row(self) -> dict[str, Any]:
        return {
            "name": printable(self.name),
            "status": str(self.status),
            "error": self.error,
            **self.hash_row(),
            "pdq_variants": _stored_variants(self.pdq_variants),
            "frames": stored_frames(self.frames),
        }


@dataclass(slots=True, kw_only=True)
class ItemResult(Hashes):
    """The outcome for one input row. Exactly one per row, whatever happened to it. Its hash fields
    are its primary payload's (the first image among them); `payloads` the others'."""

    row_id: str = ""
    shard: str = ""
    index: int = 0
    key: str = ""
    url: str | None = None
    caption: str | None = None  # kept so that keyword lists added later match in a decide round
    url_md5: str | None = None
    # MD5 of the URL as python-threatexchange normalises it, where that differs from `url_md5`
    url_md5_threatexchange: str | None = None
    payloads: list[PayloadResult] = field(default_factory=list)
    matches: list[Match] = field(default_factory=list)
    signals: dict[str, float] = field(default_factory=dict)
    embedding: Any = None  # the `--embed-model` embedding (float16), written beside the results
    decision: Decision = Decision.KEEP
    reasons: list[str] = field(default_factory=list)
    # Where the row sits in its input, handed back to its reader's clean writer if the row is kept:
    # a tar's member `Span`s, a folder sample's file names (str), or None (a table row: its index).
    # Stored (see `stored_locator`) so that a decide round copies kept rows without reading them
    # again; a `FetchedImage` (the bytes of a download) is never stored.
    locator: Any = None

    def to_row(self) -> dict[str, Any]:
        return {
            "row_id": printable(self.row_id),
            "shard": printable(self.shard),
            "index": self.index,
            "key": printable(self.key),
            "url": printable(self.url),
            "caption": printable(self.caption),
            "status": str(self.status),
            "error": printable(self.error),
            **self.hash_row(),
            "url_md5": self.url_md5,
            "url_md5_threatexchange": self.url_md5_threatexchange,
            "payloads": [p.to_row() for p in self.payloads],
            "matches": [m.to_row() for m in self.matches],
            "signals": list(self.signals.items()),
            "decision": str(self.decision),
            "reasons": list(self.reasons),
            "pdq_variants": _stored_variants(self.pdq_variants),
            "frames": stored_frames(self.frames),
            "locator": stored_locator(self.locator),
        }

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> ItemResult:
        """The result a results row records (`to_row`'s inverse): a row carried over unchanged
        into a later run of its shard."""
        special = ("status", "matches", "signals", "decision", "payloads", "pdq_variants", "frames", "locator")
        fields = {k: v for k, v in row.items() if k not in special}
        return cls(
            **fields,
            status=Status(row["status"]),
            payloads=[
                PayloadResult(
                    **{
                        **p,
                        "status": Status(p["status"]),
                        "pdq_variants": _read_variants(p["pdq_variants"]),
                        "frames": read_frames(p["frames"]),
                    }
                )
                for p in row["payloads"]
            ],
            matches=[Match(**m) for m in row["matches"]],
            signals=dict(row["signals"]),
            decision=Decision(row["decision"]),
            pdq_variants=_read_variants(row["pdq_variants"]),
            frames=read_frames(row["frames"]),
            locator=read_locator(row["locator"]),
        )


def _stored_variants(variants: dict[str, str]) -> list[dict[str, Any]]:
    return [{"name": name, "pdq": bytes.fromhex(value)} for name, value in variants.items()]


def _read_variants(stored: list[dict[str, Any]] | None) -> dict[str, str]:
    return {v["name"]: v["pdq"].hex() for v in stored or ()}


def stored_frames(frames: list[FrameHash] | None) -> list[dict[str, Any]] | None:
    if frames is None:
        return None
    return [
        {"frame": f.frame, "quality": f.quality, "pdq": bytes.fromhex(f.pdq), "timestamp": f.timestamp} for f in frames
    ]


def read_frames(stored: list[dict[str, Any]] | None) -> list[FrameHash] | None:
    if stored is None:
        return None
    return [FrameHash(f["frame"], f["quality"], f["pdq"].hex(), f["timestamp"]) for f in stored]


def stored_locator(locator: Any) -> list[dict[str, Any]] | None:
    """A locator as the results table stores it (see `ItemResult.locator`): member spans, or file
    names as the bytes the file system holds (a name need not be UTF-8)."""
    if not isinstance(locator, tuple):
        return None
    return [
        {"offset": x.offset, "size": x.size, "md5": x.md5, "name": None}
        if isinstance(x, Span)
        else {"offset": None, "size": None, "md5": None, "name": os.fsencode(x)}
        for x in locator
    ]


def read_locator(stored: list[dict[str, Any]] | None) -> tuple | None:
    """`stored_locator`'s inverse."""
    if stored is None:
        return None
    return tuple(
        os.fsdecode(x["name"]) if x["name"] is not None else Span(x["offset"], x["size"], x["md5"]) for x in stored
    )
