"""PDQ, Meta's open 256-bit perceptual hash, as a value object.

`PdqHash.bits` holds the 256 bits most-significant first, so `str(h)` is the 64-hex-char form every
PDQ hash list (ThreatExchange, HMA, NCMEC exports) uses, and `a - b` is the Hamming distance.
The pixels are hashed by the reference implementation (the `pdqhash` package) for now.
"""

from __future__ import annotations

import numpy as np
import pdqhash
from PIL import Image

from .image import DecodeLimits, decode_rgb, to_rgb_array

PDQ_BYTES = 32
PDQ_HEX_CHARS = 64
# Below this quality the hash of a flat or tiny image is unreliable: Meta's guidance is to not match it.
PDQ_MIN_QUALITY = 50
PDQ_DEFAULT_THRESHOLD = 31


class PdqHash:
    """An immutable PDQ hash with its quality (0..100)."""

    __slots__ = ("_bits", "_quality")

    def __init__(self, bits: bytes, quality: int = 100):
        if len(bits) != PDQ_BYTES:
            raise ValueError(f"a PDQ hash has {PDQ_BYTES} bytes, got {len(bits)}")
        self._bits = bytes(bits)
        self._quality = int(quality)

    @classmethod
    def from_hex(cls, text: str, quality: int = 100) -> PdqHash:
        if len(text) != PDQ_HEX_CHARS:
            raise ValueError(f"a PDQ hash has {PDQ_HEX_CHARS} hex chars, got {len(text)}")
        return cls(bytes.fromhex(text), quality)

    @classmethod
    def from_bit_vector(cls, vector: np.ndarray, quality: int) -> PdqHash:
        """From the 256 0/1 values `pdqhash.compute` returns, first value = most significant bit."""
        return cls(np.packbits(np.asarray(vector, dtype=np.uint8)).tobytes(), quality)

    @property
    def bits(self) -> bytes:
        return self._bits

    @property
    def quality(self) -> int:
        return self._quality

    def to_array(self) -> np.ndarray:
        """The hash as a (32,) uint8 array, the row layout `PdqIndex` takes."""
        return np.frombuffer(self._bits, dtype=np.uint8).copy()

    def __str__(self) -> str:
        return self._bits.hex()

    def __repr__(self) -> str:
        return f"PdqHash('{self}', quality={self._quality})"

    def __sub__(self, other: PdqHash) -> int:
        if not isinstance(other, PdqHash):
            return NotImplemented
        return (int.from_bytes(self._bits, "big") ^ int.from_bytes(other._bits, "big")).bit_count()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PdqHash) and self._bits == other._bits

    def __hash__(self) -> int:
        return hash(self._bits)


ImageLike = bytes | bytearray | memoryview | Image.Image | np.ndarray


def pdq_pixels(rgb: np.ndarray) -> PdqHash:
    """PDQ of HxWx3 uint8 pixels."""
    vector, quality = pdqhash.compute(np.ascontiguousarray(rgb, dtype=np.uint8))
    return PdqHash.from_bit_vector(vector, quality)


def pdq(image: ImageLike, limits: DecodeLimits = DecodeLimits()) -> PdqHash:
    """PDQ of encoded bytes, a Pillow image, or an HxWx3 (or HxW) uint8 array.

    Raises `safeset.hashing.image.DecodeError` for bytes that are not a decodable image.
    """
    if isinstance(image, (bytes, bytearray, memoryview)):
        rgb = decode_rgb(bytes(image), limits)
    elif isinstance(image, Image.Image):
        rgb = to_rgb_array(image)
    elif isinstance(image, np.ndarray):
        rgb = image if image.ndim == 3 else np.repeat(image[:, :, None], 3, axis=2)
        if rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError("pixels must be HxWx3 (or HxW) uint8")
    else:
        raise TypeError(f"cannot hash {type(image).__name__}; pass bytes, a PIL image or a uint8 array")
    return pdq_pixels(rgb)
