"""Decoding untrusted image bytes into the RGB pixels PDQ hashes, within limits.

Everything here works in memory: no temporary files, and a failure is a `DecodeError` carrying a
short reason code. The code is chosen from the exception's type and message, but the message itself
is never passed on, because some decoders quote header bytes in their messages (zero view).
"""

from __future__ import annotations

import io
import warnings
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


def open_image(data: bytes, limits: DecodeLimits = DecodeLimits()) -> Image.Image:
    """Open and fully load the first frame of an image held in memory."""
    if not data:
        raise DecodeError("empty_file")
    with warnings.catch_warnings():
        # We apply our own pixel limit below; Pillow's warning would only duplicate it.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError:
            raise DecodeError("too_many_pixels") from None
        except UnidentifiedImageError:
            raise DecodeError("not_an_image") from None
        except Exception as exc:  # any decoder failure on untrusted bytes is a per-item status
            raise DecodeError(_reason_for(exc)) from None
        width, height = image.size
        if width <= 0 or height <= 0:
            raise DecodeError("empty_image")
        if width * height > limits.max_pixels:
            raise DecodeError("too_many_pixels")
        try:
            image.load()
        except Exception as exc:
            raise DecodeError(_reason_for(exc)) from None
    return image


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


def decode_rgb(data: bytes, limits: DecodeLimits = DecodeLimits()) -> np.ndarray:
    """Bytes -> HxWx3 uint8, or `DecodeError`."""
    image = open_image(data, limits)
    try:
        return to_rgb_array(image)
    except DecodeError:
        raise
    except Exception as exc:
        raise DecodeError(_reason_for(exc)) from None
