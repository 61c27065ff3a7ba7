"""The data model every stage shares: `Item` in, `ItemResult` out (its table schema: `sinks.results`).

Names here are a contract (DESIGN.md, "Data model"): add fields freely, never rename one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    """What happened to an item before matching. Anything but OK means the image was not checked."""

    OK = "ok"
    NO_IMAGE = "no_image"  # the row has no image bytes (failed download, metadata without --fetch, ...)
    FETCH_FAILED = "fetch_failed"
    DECODE_FAILED = "decode_failed"  # bytes present (exact hashes computed) but not decodable pixels
    SKIPPED_OPTOUT = "skipped_optout"


class Decision(StrEnum):
    KEEP = "keep"
    REMOVE = "remove"
    REVIEW = "review"


# The condition an item with a usable PDQ of too low quality is recorded under (policy key, reason).
LOW_QUALITY = "pdq_low_quality"


@dataclass(slots=True)
class Item:
    """One input row. `data` holds the image bytes in memory only, and is dropped after hashing."""

    row_id: str  # "<shard>:<index>", stable across runs and engines
    shard: str
    index: int
    key: str
    url: str | None = None
    caption: str | None = None
    data: bytes | None = None
    status: Status | None = None  # set by a reader that already knows the row has no image
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    embedding: Any = None
    locator: Any = None  # where the row sits in its input, for the reader's clean pass (tar byte ranges)


@dataclass(frozen=True, slots=True)
class FetchedImage:
    """The locator of a downloaded row when kept images are saved (`--save-images`): its bytes, in
    memory only until the row is decided, and written only if it is kept."""

    data: bytes
    url: str
    caption: str | None


@dataclass(frozen=True, slots=True)
class Match:
    bank: str
    signal_type: str
    entry: str  # the listed value that matched (a hash in hex, a URL, a domain)
    distance: int = 0  # Hamming distance for PDQ; 0 for exact signals
    variant: str = ""  # which query-side PDQ variant matched ("" plain, "flip_h", "trim", ...)


@dataclass(slots=True)
class ItemResult:
    """The outcome for one input row. Exactly one per row, whatever happened to it."""

    row_id: str
    shard: str
    index: int
    key: str
    url: str | None
    status: Status
    error: str | None = None
    md5: str | None = None
    sha1: str | None = None
    sha256: str | None = None
    url_md5: str | None = None
    pdq: str | None = None
    pdq_quality: int | None = None
    matches: list[Match] = field(default_factory=list)
    signals: dict[str, float] = field(default_factory=dict)
    decision: Decision = Decision.KEEP
    reasons: list[str] = field(default_factory=list)
    # Transient, never written to the results: query-side PDQ variants (name -> hex), used for
    # matching; and the item's locator, handed back to its reader to copy the row if kept.
    pdq_variants: dict[str, str] = field(default_factory=dict)
    locator: Any = None

    def to_row(self) -> dict[str, Any]:
        return {
            "row_id": self.row_id,
            "shard": self.shard,
            "index": self.index,
            "key": self.key,
            "url": self.url,
            "status": str(self.status),
            "error": self.error,
            "md5": self.md5,
            "sha1": self.sha1,
            "sha256": self.sha256,
            "url_md5": self.url_md5,
            "pdq": self.pdq,
            "pdq_quality": self.pdq_quality,
            "matches": [
                {
                    "bank": m.bank,
                    "signal_type": m.signal_type,
                    "entry": m.entry,
                    "distance": m.distance,
                    "variant": m.variant,
                }
                for m in self.matches
            ],
            "signals": list(self.signals.items()),
            "decision": str(self.decision),
            "reasons": list(self.reasons),
        }

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> ItemResult:
        """The result a results row records (`to_row`'s inverse): a row carried over unchanged
        into a later run of its shard."""
        fields = {k: v for k, v in row.items() if k not in ("status", "matches", "signals", "decision")}
        return cls(
            **fields,
            status=Status(row["status"]),
            matches=[Match(**m) for m in row["matches"]],
            signals=dict(row["signals"]),
            decision=Decision(row["decision"]),
        )
