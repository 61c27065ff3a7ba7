"""What a run of bytes is, by its content: never by a file name or extension, which a hostile or
careless dataset can get wrong either way (`KEY.bin` holding a JPEG, `KEY.jpg` holding a web page).

Used to name why bytes are not an image safeset decodes (`unsupported_media: mp4`) and to tell a
broken image from something that never was one. The names are short codes, safe to record: they
say what the bytes look like, never what they contain.
"""

from __future__ import annotations

# (offset, magic, kind), tried in order.
_MAGIC: tuple[tuple[int, bytes, str], ...] = (
    (0, b"\xff\xd8\xff", "jpeg"),
    (0, b"\x89PNG\r\n\x1a\n", "png"),
    (0, b"GIF87a", "gif"),
    (0, b"GIF89a", "gif"),
    (0, b"BM", "bmp"),
    (0, b"II*\x00", "tiff"),
    (0, b"MM\x00*", "tiff"),
    (0, b"\x00\x00\x01\x00", "ico"),
    (0, b"\x00\x00\x02\x00", "ico"),
    (0, b"\x00\x00\x00\x0cjP  \r\n\x87\n", "jpeg2000"),
    (0, b"\xff\x4f\xff\x51", "jpeg2000"),
    (0, b"\xff\x0a", "jxl"),
    (0, b"\x00\x00\x00\x0cJXL \r\n\x87\n", "jxl"),
    (0, b"8BPS", "psd"),
    (0, b"\x1a\x45\xdf\xa3", "matroska"),  # also WebM
    (0, b"OggS", "ogg"),
    (0, b"FLV\x01", "flv"),
    (0, b"\x00\x00\x01\xba", "mpeg-ps"),
    (0, b"ID3", "mp3"),
    (0, b"fLaC", "flac"),
    (0, b"%PDF", "pdf"),
    (0, b"%!PS", "postscript"),
    (0, b"\xc5\xd0\xd3\xc6", "postscript"),  # DOS EPS binary header
    (0, b"PK\x03\x04", "zip"),  # also .npz, .docx
    (0, b"\x1f\x8b", "gzip"),
    (0, b"BZh", "bzip2"),
    (0, b"\xfd7zXZ\x00", "xz"),
    (0, b"(\xb5/\xfd", "zstd"),
    (0, b"7z\xbc\xaf\x27\x1c", "7z"),
    (0, b"Rar!", "rar"),
    (0, b"\x93NUMPY", "npy"),
    (257, b"ustar", "tar"),
)
# ISO base media files (`....ftyp<brand>`): still images in HEIF or AVIF (or a camera's raw file),
# by their major or any compatible brand, the rest video.
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1", b"miaf"})
_AVIF_BRANDS = frozenset({b"avif", b"avis", b"avio", b"MA1A", b"MA1B"})
_RAW_BRANDS = frozenset({b"crx "})  # Canon CR3


def _iso_kind(head: bytes) -> str:
    size = int.from_bytes(head[:4], "big")
    brands = {head[8:12], *(head[i : i + 4] for i in range(16, min(size, len(head)) - 3, 4))}
    if brands & _AVIF_BRANDS:
        return "avif"
    if brands & _HEIF_BRANDS:
        return "heif"
    return "cr3" if brands & _RAW_BRANDS else "mp4"


_RIFF = {b"WEBP": "webp", b"AVI ": "avi", b"WAVE": "wav"}
# Kinds the decoder reads (see `image.IMAGE_FORMATS`): such bytes that fail to decode are a broken
# image (`decode_failed`), where any other kind is not an image at all (`unsupported_media`).
DECODED_KINDS = frozenset({"jpeg", "png", "gif", "webp", "bmp", "tiff", "ico", "avif", "jpeg2000", "ppm"})
# Video containers, decoded as videos (`hashing.video`): ISO BMFF but the still-image brands (mp4,
# mov, m4v), Matroska and WebM, AVI, FLV, MPEG transport and program streams.
VIDEO_KINDS = frozenset({"mp4", "matroska", "avi", "flv", "mpeg-ts", "mpeg-ps"})


def sniff(data: bytes) -> str:
    """A short name for what `data` is: an image format, a container, a kind of text, or "unknown"."""
    head = bytes(data[:512])  # a download arrives as a bytearray, which is no dict key
    for offset, magic, kind in _MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return kind
    if head[:4] == b"RIFF" and head[8:12] in _RIFF:
        return _RIFF[head[8:12]]
    if head[:2] in (b"P1", b"P2", b"P3", b"P4", b"P5", b"P6") and head[2:3].isspace():
        return "ppm"  # before ISO BMFF: a PNM comment may hold "ftyp" at byte 4
    if head[4:8] == b"ftyp":
        return _iso_kind(head)
    if len(data) >= 188 * 2 and data[0] == data[188] == 0x47:
        return "mpeg-ts"
    if is_text(data):
        stripped = head.lstrip().lower()
        if stripped.startswith((b"<!doctype html", b"<html")):
            return "html"
        if stripped.startswith((b"<svg", b"<?xml")):
            return "svg" if b"<svg" in stripped else "xml"
        return "text"
    return "unknown"


def is_video(data: bytes) -> bool:
    """Whether bytes look like a video container, by content, not name (see `VIDEO_KINDS`)."""
    return sniff(data) in VIDEO_KINDS


def decodable(head: bytes) -> bool:
    """Whether bytes that begin with `head` look like an image the decoder reads, or a video (by
    their magic): worth keeping the first bytes of for a partial look when the whole is too large
    to hold."""
    return sniff(head[:512]) in DECODED_KINDS | VIDEO_KINDS


def is_text(data: bytes) -> bool:
    """UTF-8 with no NUL byte, as captions and JSON records are. Most image formats have bytes
    invalid in UTF-8 or NUL bytes in their header, but not all: plain PNM (`P1`-`P3`) is ASCII,
    so use `image.is_metadata` to decide that bytes need no checking."""
    if b"\x00" in data:
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
