"""The training-and-mining statements of a C2PA manifest store, read from an image's bytes.

C2PA (the Content Credentials of Adobe, camera makers and news agencies) embeds a manifest store
as JUMBF boxes (ISO 19566-5): in JPEG's APP11 segments (split across segments, reassembled here),
PNG's `caBX` chunk, and WebP's `C2PA` chunk; BMFF/HEIF and other formats keep the store whole, and
a contiguous store (a superbox labelled "c2pa") found by its box type is read too. The store
holds manifests, each an assertion store whose `c2pa.training-mining` (C2PA 1.x) or
`cawg.training-mining` (the Creator Assertions Working Group's successor) assertion is CBOR (or
JSON, which C2PA's SDK writes when asked): `{"entries": {"c2pa.ai_training": {"use": "notAllowed"}, ...}}`.

This is a reader of our own rather than `c2pa-python` (which the tests use to write real signed
files): it does no validation, no network and no hashing of the asset, and it is a few
microseconds where a file has no store. Whatever the bytes claim, it reads each of them a bounded
number of times and never raises: a store that lies about itself says nothing. Signatures are
not checked because an opt-out only ever removes a row: whoever could forge one could as well
take the image down.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator

# The assertion's label; "__N" may follow for a second instance
_LABELS = (b"c2pa.training-mining", b"cawg.training-mining")
_NEEDLE = b"training-mining"
_MAX_DEPTH = 8  # store > manifest > assertion store > assertion > content, with room to spare
_MAX_CBOR_DEPTH = 16


class Unreadable(ValueError):
    """Bytes that claim a structure they do not hold."""


def training_mining_uses(data: bytes, end: int | None = None) -> list[tuple[str, str]]:
    """(entry, use) of every training-mining assertion of every manifest in the bytes, e.g.
    ("c2pa.ai_training", "notAllowed"); [] where there is none or it cannot be read. `end`: how
    far a store can lie (see `optout.metadata_end`)."""
    try:
        stores = list(_stores(data, len(data) if end is None else end))
    except _LIES:
        return []
    # most stores, and most files (no store), hold no such assertion: nothing parsed
    return [use for store in stores if _NEEDLE in store for use in _uses(store)]


# What reading bytes that lie about their own structure raises: they say nothing
_LIES = (Unreadable, struct.error, IndexError, RecursionError, TypeError, ValueError)


def _uses(store: bytes) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    try:
        for kind, payload in _assertions(store, 0, len(store), 0):
            entries = _content(kind, payload).get("entries")
            if isinstance(entries, dict):
                found += [
                    (str(name), str(entry.get("use"))) for name, entry in entries.items() if isinstance(entry, dict)
                ]
    except _LIES:
        return []
    return found


def _stores(data: bytes, end: int) -> Iterator[bytes]:
    """Each JUMBF manifest store of the bytes (before `end`), whole, by the container's own
    framing: a JPEG's APP11 segments reassembled first, so that a label split between two of
    them is found."""
    if data[:2] == b"\xff\xd8":
        yield from _jpeg_stores(data)
    elif data.find(_NEEDLE, 0, end) < 0:  # other formats keep a store whole: not one here
        return
    elif data[:8] == b"\x89PNG\r\n\x1a\n":
        yield from _chunks(data, 8, b"caBX", big_endian=True)
    elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        yield from _chunks(data, 12, b"C2PA", big_endian=False)
    else:  # a store kept whole (a BMFF uuid box, ...), by its type
        at = data.find(b"jumb", 4, end)
        while at >= 0:
            (size,) = struct.unpack_from(">I", data, at - 4)
            if 8 < size <= len(data) - at + 4 and _is_store(data, at - 4, at - 4 + size):
                yield data[at - 4 : at - 4 + size]
                at += size - 4  # past it: its own superboxes are read as part of it
            at = data.find(b"jumb", at + 4, end)


def _is_store(data: bytes, start: int, end: int) -> bool:
    """Whether the superbox at start is a manifest store: its description's label is "c2pa"."""
    try:
        _, first, last = next(_boxes(data, start, end))
        kind, described, stop = next(_boxes(data, first, last))
    except (StopIteration, Unreadable, struct.error):
        return False
    return kind == b"jumd" and _label(data, described, stop) == b"c2pa"


def jpeg_segments(data: bytes) -> Iterator[tuple[int, int, int]]:
    """(marker, payload start, payload end) of a JPEG's segments up to its first scan, whose
    own marker (0xDA) comes last with an empty payload: what precedes the image data, where
    every kind of metadata is kept."""
    at = 2
    while at + 4 <= len(data) and data[at] == 0xFF:
        marker = data[at + 1]
        if marker in (0xD9, 0xDA):  # end of image, or start of scan: no more metadata segments
            yield marker, at, at
            return
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if 0xD0 <= marker <= 0xD8 or marker == 0x01:  # no length
            at += 2
            continue
        (length,) = struct.unpack_from(">H", data, at + 2)
        yield marker, at + 4, at + 2 + length
        at += 2 + length


def _jpeg_stores(data: bytes) -> Iterator[bytes]:
    """JPEG XT boxes in APP11 segments: "JP", box instance (2), sequence (4), then LBox and TBox
    (repeated in every segment of a box, with XLBox when LBox is 1) and that segment's part."""
    parts: dict[int, list[tuple[int, bytes]]] = {}
    for marker, start, end in jpeg_segments(data):
        if marker != 0xEB or data[start : start + 2] != b"JP" or end - start < 8:
            continue
        segment = data[start:end]
        instance, sequence = struct.unpack_from(">HI", segment, 2)
        if sequence == 1:
            parts.setdefault(instance, []).append((sequence, segment[8:]))
        elif len(segment) >= 16:
            header = 16 if struct.unpack_from(">I", segment, 8)[0] == 1 else 8
            parts.setdefault(instance, []).append((sequence, segment[8 + header :]))
    for pieces in parts.values():
        yield b"".join(piece for _, piece in sorted(pieces))


def _chunks(data: bytes, at: int, kind: bytes, big_endian: bool) -> Iterator[bytes]:
    """PNG (length, type, data, CRC) or RIFF (type, little-endian length, data, pad) chunks."""
    while at + 8 <= len(data):
        if big_endian:
            (length,), name, start = struct.unpack_from(">I", data, at), data[at + 4 : at + 8], at + 8
            after = start + length + 4
        else:
            name, (length,), start = data[at : at + 4], struct.unpack_from("<I", data, at + 4), at + 8
            after = start + length + (length & 1)
        if name == kind:
            yield data[start : start + length]
        at = after


def _boxes(data: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload start, payload end) of the JUMBF boxes between start and end."""
    at = start
    while at + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, at)
        header = 8
        if size == 1:
            (size,), header = struct.unpack_from(">Q", data, at + 8), 16
        elif size == 0:
            size = end - at
        if size < header or at + size > end:
            raise Unreadable("a box longer than what holds it")
        yield kind, at + header, at + size
        at += size


def _assertions(data: bytes, start: int, end: int, depth: int) -> Iterator[tuple[bytes, bytes]]:
    """(content type, content) of each training-mining assertion among the superboxes in
    start..end: CBOR, as the specification has it, or JSON, as C2PA's SDK also writes it."""
    if depth > _MAX_DEPTH:
        return
    for kind, first, last in _boxes(data, start, end):
        if kind != b"jumb":
            continue
        contents = list(_boxes(data, first, last))
        if not contents or contents[0][0] != b"jumd":
            raise Unreadable("a superbox without its description")
        _, description, described = contents[0]
        label = _label(data, description, described)
        if label.split(b"__")[0] in _LABELS:
            yield from ((kind, data[a:b]) for kind, a, b in contents[1:] if kind in (b"cbor", b"json"))
        else:
            yield from _assertions(data, described, last, depth + 1)


def _label(data: bytes, start: int, end: int) -> bytes:
    """A description box's label: after its 16-byte type UUID and toggles, when toggles say so."""
    if end - start < 17 or not data[start + 16] & 0x02:
        return b""
    stop = data.find(b"\0", start + 17, end)
    return data[start + 17 : stop if stop >= 0 else end]


def _content(kind: bytes, payload: bytes) -> dict:
    if not payload:
        return {}
    value = json.loads(payload) if kind == b"json" else _item(payload, 0, 0)[0]
    return value if isinstance(value, dict) else {}


def _item(data: bytes, at: int, depth: int) -> tuple[object, int]:
    """One CBOR data item (RFC 8949) at `at`, and where the next begins. Definite and indefinite
    lengths; tags are read through; floats, simple values and integers as Python's."""
    if depth > _MAX_CBOR_DEPTH:
        raise Unreadable("CBOR nested too deep")
    initial = data[at]
    major, info = initial >> 5, initial & 0x1F
    at += 1
    if major == 7:
        if info in (25, 26, 27):
            width, code = {25: (2, ">e"), 26: (4, ">f"), 27: (8, ">d")}[info]
            return struct.unpack_from(code, data, at)[0], at + width
        return {20: False, 21: True, 22: None, 23: None}.get(info), at + (1 if info == 24 else 0)
    if info == 31:  # indefinite length: items until the "break" byte
        if major in (2, 3):  # chunks, each a definite string of the same major type
            pieces = []
            while data[at] != 0xFF:
                if data[at] >> 5 != major or data[at] & 0x1F == 31:
                    raise Unreadable("a CBOR string chunk of another type")
                piece, at = _item(data, at, depth + 1)
                pieces.append(piece.encode() if isinstance(piece, str) else piece)
            joined = b"".join(pieces)
            return (joined.decode("utf-8", "replace") if major == 3 else joined), at + 1
        items = []
        while data[at] != 0xFF:
            item, at = _item(data, at, depth + 1)
            items.append(item)
        if major == 5:
            return {_hashable(k): v for k, v in zip(items[::2], items[1::2], strict=False)}, at + 1
        return items, at + 1
    if info < 24:
        count = info
    elif info <= 27:
        width = 1 << (info - 24)
        count = int.from_bytes(data[at : at + width], "big")
        if len(data) < at + width:
            raise Unreadable("CBOR cut short")
        at += width
    else:
        raise Unreadable("a reserved CBOR length")
    if major == 0:
        return count, at
    if major == 1:
        return -1 - count, at
    if major in (2, 3):
        if at + count > len(data):
            raise Unreadable("CBOR cut short")
        raw = data[at : at + count]
        return (raw.decode("utf-8", "replace") if major == 3 else raw), at + count
    if major == 6:
        return _item(data, at, depth + 1)
    if count > len(data) - at:  # every item takes at least a byte
        raise Unreadable("CBOR cut short")
    items = []
    for _ in range(count * 2 if major == 5 else count):
        item, at = _item(data, at, depth + 1)
        items.append(item)
    if major == 5:
        return {_hashable(k): v for k, v in zip(items[::2], items[1::2], strict=True)}, at
    return items, at


def _hashable(key: object) -> object:
    return key if isinstance(key, str | int | float | bytes | bool | None) else repr(key)
