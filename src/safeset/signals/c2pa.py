"""The training-and-mining statements of a C2PA manifest store, read from an image's bytes.

C2PA (the Content Credentials of Adobe, camera makers and news agencies) embeds a manifest store
as JUMBF boxes (ISO 19566-5): in JPEG's APP11 segments (split across segments, reassembled here),
PNG's `caBX` chunk, and WebP's `C2PA` chunk; BMFF/HEIF and other formats keep the store whole, and
a contiguous store found by its box type is read too. The store holds manifests, each an
assertion store whose `c2pa.training-mining` (C2PA 1.x) or `cawg.training-mining` (the Creator
Assertions Working Group's successor) assertion is CBOR:
`{"entries": {"c2pa.ai_training": {"use": "notAllowed"}, ...}}`.

This is a reader of our own rather than `c2pa-python` (which the tests use to write real signed
files): it does no validation, no network and no hashing of the asset, and it is a few
microseconds where a file has no store. Signatures are not checked because an opt-out only ever
removes a row: whoever could forge one could as well take the image down.
"""

from __future__ import annotations

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
    if data.find(_NEEDLE, 0, len(data) if end is None else end) < 0:  # most files: one pass, nothing parsed
        return []
    found: list[tuple[str, str]] = []
    for store in _stores(data):
        try:
            for payload in _assertions(store, 0, len(store), 0):
                entries = _cbor(payload).get("entries") if payload else None
                if isinstance(entries, dict):
                    found += [
                        (str(name), str(entry.get("use"))) for name, entry in entries.items() if isinstance(entry, dict)
                    ]
        except (Unreadable, struct.error, IndexError, RecursionError, AttributeError):
            continue
    return found


def _stores(data: bytes) -> Iterator[bytes]:
    """Each JUMBF manifest store of the bytes, whole, by the container's own framing."""
    if data[:2] == b"\xff\xd8":
        yield from _jpeg_stores(data)
    elif data[:8] == b"\x89PNG\r\n\x1a\n":
        yield from _chunks(data, 8, b"caBX", big_endian=True)
    elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        yield from _chunks(data, 12, b"C2PA", big_endian=False)
    else:  # a store kept whole (a BMFF uuid box, ...): find its superbox by type
        at = data.find(b"jumb")
        while at >= 4:
            (size,) = struct.unpack_from(">I", data, at - 4)
            if 8 < size <= len(data) - at + 4:
                yield data[at - 4 : at - 4 + size]
            at = data.find(b"jumb", at + 4)


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
        segment = data[start:end]
        if marker != 0xEB or segment[:2] != b"JP" or len(segment) < 16:
            continue
        instance, sequence = struct.unpack_from(">HI", segment, 2)
        header = 16 if struct.unpack_from(">I", segment, 8)[0] == 1 else 8
        parts.setdefault(instance, []).append((sequence, segment[8:] if sequence == 1 else segment[8 + header :]))
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


def _assertions(data: bytes, start: int, end: int, depth: int) -> Iterator[bytes]:
    """The CBOR payload of each training-mining assertion among the superboxes in start..end."""
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
            yield next((data[a:b] for kind, a, b in contents[1:] if kind == b"cbor"), b"")
        else:
            yield from _assertions(data, described, last, depth + 1)


def _label(data: bytes, start: int, end: int) -> bytes:
    """A description box's label: after its 16-byte type UUID and toggles, when toggles say so."""
    if end - start < 17 or not data[start + 16] & 0x02:
        return b""
    stop = data.find(b"\0", start + 17, end)
    return data[start + 17 : stop if stop >= 0 else end]


def _cbor(data: bytes) -> dict:
    value, _ = _item(data, 0, 0)
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
        if major in (2, 3):
            pieces = []
            while data[at] != 0xFF:
                piece, at = _item(data, at, depth + 1)
                pieces.append(piece)
            joined = b"".join(p.encode() if isinstance(p, str) else p for p in pieces)
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
