"""Decoding untrusted image bytes into the RGB pixels PDQ hashes, within limits.

Everything here works in memory: no temporary files, and a failure is a `DecodeError` carrying a
short reason code. The code is chosen from the exception's type and message, but the message itself
is never passed on, because some decoders quote header bytes in their messages (zero view).

Only an allow-list of formats is decoded (`IMAGE_FORMATS`): Pillow can open more, but some of its
plugins hand the bytes to another program through a temporary file (EPS and PostScript go to
Ghostscript), and a flagged image's bytes must never reach a disk. Bytes in any other format are
not an image safeset decodes (`UnsupportedMedia`, with what they look like, see `sniff`).

A decoder failure on bad bytes is the item's status; any other exception is a bug and propagates
(the shard fails and says so), so a bug is never mistaken for a bad image.
"""

from __future__ import annotations

import io
import struct
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError

from .sniff import DECODED_KINDS, is_text, sniff

# Pillow's own decompression-bomb threshold (about 89.5 megapixels); larger images are refused
# before their pixels are decoded.
DEFAULT_MAX_PIXELS = 89_478_485
# Longest side decoded. PDQ's filter costs memory and time in proportion to the sides, and a
# 40000 x 8 image is a probe, not a photograph; JPEG itself stops at 65535.
DEFAULT_MAX_SIDE = 32_768
# Formats decoded in memory by Pillow's own code or its bundled libraries, without temporary files
# or helper programs. Pillow's registry names; MPO (multi-picture JPEG) opens through JPEG.
IMAGE_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "DIB", "TIFF", "ICO", "AVIF", "JPEG2000", "PPM")
# What Pillow raises on bad data (its own fuzz tests list these); anything else is a bug.
DECODER_ERRORS = (OSError, SyntaxError, ValueError, NotImplementedError, EOFError, struct.error)


class DecodeError(Exception):
    """The bytes could not be turned into pixels. `reason` is a short, byte-free code."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class UnsupportedMedia(DecodeError):
    """The bytes are not in a format safeset decodes; `reason` says what they look like ("mp4",
    "tar", "postscript", "html", "unknown", ...)."""


@dataclass(frozen=True)
class DecodeLimits:
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_side: int = DEFAULT_MAX_SIDE


# A decoded image whose shorter side is at least this is treated as sharp enough: larger JPEGs are
# decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling) and other formats box-reduced to it. PDQ
# blurs everything down to 64x64 anyway; `safeset.hashing.pdq` compensates for the reduction.
REDUCED_MIN_SIDE = 200


@dataclass(frozen=True)
class Luma:
    """Luminance (0.299 R + 0.587 G + 0.114 B) as float32, perhaps reduced from the full size.
    `exact` when it is what the reference computes: full size, from the fully decoded RGB.
    `upscaled`: the full size is larger than the pixels, which stand for their bicubic upscale
    to it (a query-side variant of small images, see `pdq.upscaled`)."""

    pixels: np.ndarray
    full_height: int
    full_width: int
    exact: bool = True
    upscaled: bool = False


# We apply our own pixel limit (`DecodeLimits`); Pillow's warning would only duplicate it. Set once
# for the process: `warnings.catch_warnings` around each decode is not thread-safe, and images are
# decoded on several threads when fetching.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
# Decoders warn about oddities of bytes they still decode ("Corrupt EXIF data"): a dataset of
# millions of web images would fill the terminal and logs with them, and they say nothing the
# item's status does not.
warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")


@contextmanager
def _decoding():
    """Map a decoder's failure on untrusted bytes to a per-item `DecodeError`. Only Pillow's calls
    run inside; an exception of another type is a bug, and goes on up."""
    try:
        yield
    except Image.DecompressionBombError:
        raise DecodeError("too_many_pixels") from None
    except MemoryError:
        raise DecodeError("too_large") from None
    except DECODER_ERRORS as exc:
        raise DecodeError(_reason_for(exc)) from None


def open_image(data: bytes, limits: DecodeLimits = DecodeLimits()) -> Image.Image:
    """Open an image held in memory and check its size; pixels are decoded later, by `load()`."""
    if not data:
        raise DecodeError("empty_file")
    with _decoding():
        try:
            image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
        except UnidentifiedImageError:  # no allowed format's reader would take it
            kind = sniff(data)
            raise (DecodeError("corrupt:header") if kind in DECODED_KINDS else UnsupportedMedia(kind)) from None
        width, height = image.size
    if width <= 0 or height <= 0:
        raise DecodeError("empty_image")
    if width * height > limits.max_pixels:
        raise DecodeError("too_many_pixels")
    if max(width, height) > limits.max_side:
        raise DecodeError("too_large")
    return image


# What the readers of `IMAGE_FORMATS` accept as a start that text can have: GIF's signature, BMP's,
# RIFF (WebP), PNM's "P" (Pillow takes P0-P6, Pf, Py) and AVIF's "ftyp" after any 4 bytes. Every
# other allowed format starts with a NUL or a byte that is not UTF-8: such text needs no decoder.
_TEXT_IMAGE_STARTS = (b"GIF8", b"BM", b"RIFF", b"P")


def is_metadata(data: bytes) -> bool:
    """Whether a sidecar's bytes are text to read (a caption, a JSON record) rather than content
    to check: text (see `sniff.is_text`) that is no image written as text: not SVG, XPM or XBM
    (which viewers show), and not a start an allowed decoder reads as its header (plain PNM,
    `P1`-`P3`, is ASCII). A caption that merely starts like one ("P6 Pro camera review") is text.
    Called on every sidecar, so the common case (a caption, a JSON record) costs a few microseconds."""
    if not is_text(data):
        return False
    head = data[:512].lstrip()
    if head.startswith((b"/* XPM */", b"#define")) or (head.startswith(b"<") and b"<svg" in head.lower()):
        return False
    if not data.startswith(_TEXT_IMAGE_STARTS) and data[4:8] != b"ftyp":
        return True
    try:
        open_image(data)  # a header an image decoder reads: an image, whatever its pixels turn out to be
    except DecodeError as exc:
        return exc.reason not in ("too_many_pixels", "too_large")  # those headers were read
    return False


def decode_rgb(data: bytes, limits: DecodeLimits = DecodeLimits()) -> np.ndarray:
    """Bytes -> full-size HxWx3 uint8 (the first frame), or `DecodeError`."""
    return to_rgb_array(_loaded(open_image(data, limits)))


def decode_reduced(data: bytes, side: int, limits: DecodeLimits = DecodeLimits()) -> Image.Image:
    """Bytes -> an RGB image (the first frame) no smaller than `side` on its shorter side where
    the original is not, decoded at reduced scale where the format allows it (a JPEG's DCT
    scaling): what a classifier that resizes to `side` needs, for a fraction of a full decode."""
    image = open_image(data, limits)
    if image.format == "JPEG" and image.mode in ("RGB", "L", "YCbCr", "CMYK"):
        with _decoding():
            image.draft("RGB", (side, side))
    loaded = _loaded(image)
    return loaded if loaded.mode == "RGB" else Image.fromarray(to_rgb_array(loaded))


def _scale(width: int, height: int, min_side: int) -> int:
    return next((s for s in (8, 4, 2) if min(width, height) // s >= min_side), 1)


def decode_luma(data: bytes, limits: DecodeLimits = DecodeLimits(), exact: bool = False, partial: bool = False) -> Luma:
    """Bytes -> luminance for PDQ, decoding no more pixels than PDQ needs.

    A JPEG is decoded at the smallest DCT scale whose shorter side stays >= REDUCED_MIN_SIDE,
    luminance only (its Y channel uses PDQ's own weights, so no colour conversion is needed). Other
    formats are decoded in full and box-reduced by an integer factor. `exact` decodes everything
    in full to RGB, as the reference does. `partial`: decode what there is of an image cut short
    (a JPEG is given the end marker it lacks, so the decoder finishes its rows; other formats
    keep the rows that arrived).
    """
    if partial and data[:3] == b"\xff\xd8\xff":
        data += b"\xff\xd9"
    image = open_image(data, limits)
    width, height = image.size
    scale = 1 if exact else _scale(width, height, REDUCED_MIN_SIDE)
    jpeg_luma = not exact and image.format == "JPEG" and image.mode in ("RGB", "L", "YCbCr")
    # Full size, and luminance from RGB (or a greyscale original): the reference's own input.
    same_as_reference = scale == 1 and not (jpeg_luma and image.mode != "L")
    if jpeg_luma:
        with _decoding():
            image.draft("L", (width // scale, height // scale))
    pixels = _luma_pixels(_loaded(image, partial), 1 if jpeg_luma else scale)  # a JPEG's draft reduced it
    return Luma(pixels, height, width, exact=same_as_reference)


def _luma_pixels(image: Image.Image, scale: int) -> np.ndarray:
    """Luminance of a loaded image, box-reduced by `scale` (high bit depth scaled into 0..255
    first, see `to_rgb_array`)."""
    if image.mode not in ("L", "RGB"):
        image = Image.fromarray(to_rgb_array(image))
    if scale > 1:
        image = image.reduce(scale)
    return np.asarray(image, dtype=np.float32) if image.mode == "L" else luma_of_rgb(to_rgb_array(image))


# Frames beyond the first are hashed too (an animation's second frame, a TIFF's second page, an
# MPO's second picture, an icon's other sizes hold pictures of their own), within these bounds: at
# most `MAX_FRAMES` frames, and all of them together at most `FRAME_PIXEL_FACTOR` times the pixel
# limit of one image. Beyond them the image is not wholly checked, and says so.
MAX_FRAMES = 1000
FRAME_PIXEL_FACTOR = 4


def other_views(data: bytes, limits: DecodeLimits = DecodeLimits()) -> tuple[list[tuple[str, Luma]], str | None]:
    """What an image shows besides its first frame as RGB: its EXIF thumbnail ("thumbnail"), each
    further frame ("frame2", ...), and
    for a frame with transparency its alpha channel ("alpha", "frame2:alpha") and its composites
    on white and black ("on_white", "on_black": what a page shows; the RGB under transparent
    pixels is anything). Each is reduced as `decode_luma` reduces. Returns the (name, luminance)
    pairs and, if some frames could not be decoded or were beyond the bounds, why (a short code),
    else None. An image that does not open raises `DecodeError` as `decode_luma` does."""
    if data[:3] == b"\xff\xd8\xff" and not _jpeg_holds_more(data):
        return [], None  # a JPEG without an EXIF block or a second picture (most of them) shows nothing more
    image = open_image(data, limits)
    views: list[tuple[str, Luma]] = []
    thumbnail = _exif_thumbnail(image)
    if thumbnail:
        try:
            views.append(("thumbnail", decode_luma(thumbnail, limits)))
        except DecodeError:
            pass  # a thumbnail that does not decode is not shown either
    if _transparent(image):
        views += _alpha_views(image, "")
    budget = FRAME_PIXEL_FACTOR * limits.max_pixels - image.size[0] * image.size[1]
    try:
        for number, frame in enumerate(_frames(image), start=2):
            width, height = frame.size
            budget -= width * height
            if number > MAX_FRAMES or budget < 0 or max(width, height) > limits.max_side:
                return views, "too_many_frames"
            name = f"frame{number}"
            views.append((name, _reduced_luma(_loaded(frame))))
            if _transparent(frame):
                views += _alpha_views(frame, f"{name}:")
    except DecodeError as exc:
        return views, f"frames: {exc.reason}"
    return views, None


# Pillow's code for finding frames after the first raises these too on bad data (a GIF cut after
# its first frame, a TIFF page without a width, an MPO picture with a bad header).
_FRAME_ERRORS = (*DECODER_ERRORS, IndexError, TypeError, KeyError)


@contextmanager
def _finding_frames():
    """Around Pillow's frame-finding calls, once the first frame has decoded: their failure on bad
    data is the payload's (`frames: corrupt`), not a bug that fails the shard."""
    try:
        with _decoding():
            yield
    except _FRAME_ERRORS:
        raise DecodeError("corrupt") from None


def _jpeg_holds_more(data: bytes) -> bool:
    """Whether a JPEG has an EXIF block (APP1, where a thumbnail lives) or a multi-picture index
    (APP2, MPO) among the segments before its image data; True when its segments do not parse,
    so that the full look decides."""
    at = 2
    while at + 4 <= len(data):
        if data[at] != 0xFF:
            return True
        marker = data[at + 1]
        if marker == 0xFF:  # fill bytes before a marker
            at += 1
            continue
        if marker in (0xDA, 0xD9):  # start of scan, end of image: no more header segments
            return False
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # markers without a length
            at += 2
            continue
        length = int.from_bytes(data[at + 2 : at + 4], "big")
        body = data[at + 4 : at + 10]
        if (marker == 0xE1 and body.startswith(b"Exif\0\0")) or (marker == 0xE2 and body.startswith(b"MPF\0")):
            return True
        at += 2 + length
    return True


def _exif_thumbnail(image: Image.Image) -> bytes | None:
    """The JPEG thumbnail an EXIF block carries (IFD1), which file managers and cameras show: a
    picture of its own, whatever the image is."""
    raw = image.info.get("exif")
    if not isinstance(raw, bytes) or len(raw) < 8:
        return None
    try:
        ifd1 = image.getexif().get_ifd(ExifTags.IFD.IFD1)
    except _FRAME_ERRORS:
        return None
    offset, length = ifd1.get(0x0201), ifd1.get(0x0202)  # JPEGInterchangeFormat, and its length
    if not (isinstance(offset, int) and isinstance(length, int) and length > 0):
        return None
    tiff = raw[6:] if raw.startswith(b"Exif\0\0") else raw  # offsets count from the TIFF header
    return tiff[offset : offset + length] or None


def _frames(image: Image.Image) -> Iterator[Image.Image]:
    """Every frame after the first: of an animation, a multi-page file, every other picture of an
    icon (one per size and colour depth). Failures come out as `DecodeError`."""
    if image.format == "ICO":
        with _finding_frames():
            opened, count = image.ico.getentryindex(image.size), len(image.ico.entry)
        for index in range(count):
            if index != opened:
                with _finding_frames():
                    frame = image.ico.frame(index)
                yield frame
        return
    with _finding_frames():
        count = getattr(image, "n_frames", 1)
    for index in range(1, count):
        with _finding_frames():
            image.seek(index)
        yield image


def _reduced_luma(image: Image.Image) -> Luma:
    """Luminance of a loaded frame, reduced as `decode_luma` reduces."""
    width, height = image.size
    scale = _scale(width, height, REDUCED_MIN_SIDE)
    return Luma(_luma_pixels(image, scale), height, width, exact=scale == 1)


def _transparent(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info


def _alpha_views(image: Image.Image, prefix: str) -> list[tuple[str, Luma]]:
    """The alpha channel and the composites on white and black of an image with transparency,
    reduced first (at most one full-size RGBA copy is made); none if every pixel is opaque."""
    width, height = image.size
    scale = _scale(width, height, REDUCED_MIN_SIDE)
    with _decoding():
        image.load()
        rgba = image if image.mode == "RGBA" else image.convert("RGBA")
    if scale > 1:
        rgba = rgba.reduce(scale)
    pixels = np.asarray(rgba, dtype=np.uint8)
    alpha = pixels[..., 3].astype(np.float32)
    if alpha.min() == 255:
        return []
    luma = luma_of_rgb(pixels[..., :3])
    alpha *= np.float32(1 / 255)
    luma *= alpha  # on black
    on_white = luma + np.float32(255) * (1 - alpha)
    alpha *= np.float32(255)
    views = {"alpha": alpha, "on_white": on_white, "on_black": luma}
    return [(prefix + name, Luma(view, height, width, exact=scale == 1)) for name, view in views.items()]


def _high_depth(mode: str) -> bool:
    return mode.startswith("I") or mode == "F"


def _loaded(image: Image.Image, partial: bool = False) -> Image.Image:
    """The decoded pixels, as L, RGB or a high-bit-depth grey mode: the decoder's work, under
    `_decoding`, so that what follows (ours) raises as the bug it would be. `partial`: an image
    cut short keeps the rows that arrived, the rest as the decoder left them (black); what
    Pillow's LOAD_TRUNCATED_IMAGES does, which is a process-wide switch and so not usable here."""
    with _decoding():
        try:
            image.load()
        except DECODER_ERRORS as exc:
            if not (partial and _reason_for(exc) == "truncated"):
                raise
            image.tile = []  # what the decoder wrote stays; nothing more is read
            image.load()
        if image.mode not in ("L", "RGB") and not _high_depth(image.mode):
            image = image.convert("RGB")
    return image


def luma_of_rgb(rgb: np.ndarray) -> np.ndarray:
    """0.299 R + 0.587 G + 0.114 B in float32, in the reference's order (so the same bits)."""
    out = rgb[..., 0].astype(np.float32)
    out *= np.float32(0.299)
    term = rgb[..., 1].astype(np.float32)
    term *= np.float32(0.587)
    out += term
    np.multiply(rgb[..., 2], np.float32(0.114), out=term, dtype=np.float32)
    out += term
    return out


def _reason_for(exc: BaseException) -> str:
    text = str(exc).lower()
    if "truncated" in text or isinstance(exc, EOFError):
        return "truncated"
    return f"corrupt:{type(exc).__name__}"


def to_rgb_array(image: Image.Image) -> np.ndarray:
    """HxWx3 uint8 pixels of any Pillow mode, as the reference PDQ pipeline expects.

    High-bit-depth greyscale (16-bit PNG and TIFF, 32-bit int, float) is scaled into 0..255 instead
    of being clipped, which is what Pillow's own `convert("RGB")` would do to it.
    """
    mode = image.mode
    if _high_depth(mode):
        grey = np.asarray(image, dtype=np.float64)
        if mode.startswith("I;16"):
            grey = grey / 257.0
        else:
            low, high = float(np.nanmin(grey)), float(np.nanmax(grey))
            grey = (grey - low) * (255.0 / (high - low)) if high > low else np.zeros_like(grey)
        grey8 = np.clip(np.nan_to_num(grey), 0, 255).astype(np.uint8)
        return np.repeat(grey8[:, :, None], 3, axis=2)
    if mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.uint8)
