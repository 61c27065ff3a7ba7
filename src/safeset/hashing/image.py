"""Decoding untrusted image bytes into the RGB pixels PDQ hashes, within limits.

Everything here works in memory: no temporary files, and a failure is a `DecodeError` carrying a
short reason code. The code is chosen from the exception's type and message, but the message itself
is never passed on, because some decoders quote header bytes in their messages (zero view).
"""

from __future__ import annotations

import io
import warnings
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

# Pillow's own decompression-bomb threshold (about 89.5 megapixels); larger images are refused
# before their pixels are decoded.
DEFAULT_MAX_PIXELS = 89_478_485


class DecodeError(Exception):
    """The bytes could not be turned into pixels. `reason` is a short, byte-free code."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class DecodeLimits:
    max_pixels: int = DEFAULT_MAX_PIXELS


# A decoded image whose shorter side is at least this is treated as sharp enough: larger JPEGs are
# decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling) and other formats box-reduced to it. PDQ
# blurs everything down to 64x64 anyway; `safeset.hashing.pdq` compensates for the reduction.
REDUCED_MIN_SIDE = 200


@dataclass(frozen=True)
class Luma:
    """Luminance (0.299 R + 0.587 G + 0.114 B) as float32, perhaps reduced from the full size.
    `exact` when it is what the reference computes: full size, from the fully decoded RGB."""

    pixels: np.ndarray
    full_height: int
    full_width: int
    exact: bool = True


# We apply our own pixel limit (`DecodeLimits`); Pillow's warning would only duplicate it. Set once
# for the process: `warnings.catch_warnings` around each decode is not thread-safe, and images are
# decoded on several threads when fetching.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


@contextmanager
def _decoding():
    """Map any decoder failure on untrusted bytes to a per-item `DecodeError`."""
    try:
        yield
    except DecodeError:
        raise
    except Image.DecompressionBombError:
        raise DecodeError("too_many_pixels") from None
    except UnidentifiedImageError:
        raise DecodeError("not_an_image") from None
    except Exception as exc:
        raise DecodeError(_reason_for(exc)) from None


def open_image(data: bytes, limits: DecodeLimits = DecodeLimits()) -> Image.Image:
    """Open an image held in memory and check its size; pixels are decoded later, by `load()`."""
    if not data:
        raise DecodeError("empty_file")
    with _decoding():
        image = Image.open(io.BytesIO(data))
        width, height = image.size
        if width <= 0 or height <= 0:
            raise DecodeError("empty_image")
        if width * height > limits.max_pixels:
            raise DecodeError("too_many_pixels")
    return image


def decode_rgb(data: bytes, limits: DecodeLimits = DecodeLimits()) -> np.ndarray:
    """Bytes -> full-size HxWx3 uint8 (the first frame), or `DecodeError`."""
    image = open_image(data, limits)
    with _decoding():
        image.load()
        return to_rgb_array(image)


def _scale(width: int, height: int, min_side: int) -> int:
    return next((s for s in (8, 4, 2) if min(width, height) // s >= min_side), 1)


def decode_luma(data: bytes, limits: DecodeLimits = DecodeLimits(), exact: bool = False) -> Luma:
    """Bytes -> luminance for PDQ, decoding no more pixels than PDQ needs.

    A JPEG is decoded at the smallest DCT scale whose shorter side stays >= REDUCED_MIN_SIDE,
    luminance only (its Y channel uses PDQ's own weights, so no colour conversion is needed). Other
    formats are decoded in full and box-reduced by an integer factor. `exact` decodes everything
    in full to RGB, as the reference does.
    """
    image = open_image(data, limits)
    width, height = image.size
    scale = 1 if exact else _scale(width, height, REDUCED_MIN_SIDE)
    jpeg_luma = not exact and image.format == "JPEG" and image.mode in ("RGB", "L", "YCbCr")
    # Full size, and luminance from RGB (or a greyscale original): the reference's own input.
    same_as_reference = scale == 1 and not (jpeg_luma and image.mode != "L")
    with _decoding():
        if jpeg_luma:
            image.draft("L", (width // scale, height // scale))
        image.load()
        if image.mode not in ("L", "RGB"):
            image = Image.fromarray(to_rgb_array(image))
        if scale > 1 and not jpeg_luma:
            image = image.reduce(scale)
        pixels = np.asarray(image, dtype=np.float32) if image.mode == "L" else luma_of_rgb(to_rgb_array(image))
    return Luma(pixels, height, width, exact=same_as_reference)


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
    if isinstance(exc, MemoryError):
        return "too_large"
    return f"corrupt:{type(exc).__name__}"


def to_rgb_array(image: Image.Image) -> np.ndarray:
    """HxWx3 uint8 pixels of any Pillow mode, as the reference PDQ pipeline expects.

    High-bit-depth greyscale (16-bit PNG and TIFF, 32-bit int, float) is scaled into 0..255 instead
    of being clipped, which is what Pillow's own `convert("RGB")` would do to it.
    """
    mode = image.mode
    if mode.startswith("I") or mode == "F":
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
