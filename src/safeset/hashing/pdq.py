"""PDQ, Meta's open 256-bit perceptual hash: the value object and a fast, compatible implementation.

`PdqHash.bits` holds the 256 bits most-significant first, so `str(h)` is the 64-hex-char form every
PDQ hash list (ThreatExchange, HMA, NCMEC exports) uses, and `a - b` is the Hamming distance.

The algorithm is the reference one (Meta's pdqhashing.cpp): luminance; a Jarosz filter (a box
filter applied twice along each axis, its window set by the image size) decimated to 64x64; a
quality score from the gradients of that 64x64 image; the 16x16 lowest frequencies of its DCT; one
bit per coefficient, set when it exceeds the median. The filter and decimation are linear, so they
are applied here as two small matrices cached per image size (`64 x H` and `64 x W`). When the
image was decoded at reduced size (JPEG DCT scaling, see `image.decode_luma`), those matrices are
the full-size ones summed over each reduced pixel's footprint, which keeps the result within a few
bits of the reference on the full image at a fraction of the decoding cost.

The 8 dihedral variants (flips and 90-degree rotations) come from the same DCT by sign changes and
a transpose, as in the reference's `dihedral` hashing; a border-trimmed variant re-hashes the image
without uniform letterbox or padding strips. Lists hold plain PDQ; variants are tried query-side.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .image import (
    DecodeError,
    DecodeLimits,
    Luma,
    decode_luma,
    luma_of_rgb,
    other_views,
    to_rgb_array,
)

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
        """From 256 0/1 values, first value = most significant bit (pdqhash's `compute` output)."""
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


# ---- the algorithm --------------------------------------------------------------------------------
def _jarosz_window(n: int) -> int:
    return (n + 2 * 64 - 1) // (2 * 64)


def _windows(n: int) -> tuple[np.ndarray, np.ndarray]:
    """[lo, hi) of the reference's box window around each of n positions: asymmetric, clipped."""
    window = _jarosz_window(n)
    half = (window + 2) // 2
    left, right = window - half, half - 1
    k = np.arange(n)
    return np.maximum(0, k - left), np.minimum(n, k + right + 1)


def _axis_matrix(n: int) -> np.ndarray:
    """(64, n): the reference's box filter (twice) along an axis of length n, then its decimation.

    Row r is the box window around sample position p_r, averaged over the box windows of the
    positions in it: built from a difference array in O(64 n), never the n x n box matrix (whose
    square, for a 40000-pixel side, would not fit in memory)."""
    lo, hi = _windows(n)
    width = (hi - lo).astype(np.float64)
    rows = ((np.arange(64) + 0.5) * n / 64).astype(int)
    # the box windows of the positions in each row's window: (row, position) pairs, row by row
    spans = hi[rows] - lo[rows]
    row = np.repeat(np.arange(64), spans)
    ks = np.arange(len(row)) - np.repeat(np.cumsum(spans) - spans, spans) + np.repeat(lo[rows], spans)
    weight = 1.0 / (width[rows][row] * width[ks])
    # each window adds its weight where it starts and takes it away where it ends (in that order,
    # as the row-by-row sum did: the same floating-point sums)
    cells = np.concatenate([row * (n + 1) + lo[ks], row * (n + 1) + hi[ks]])
    diff = np.bincount(cells, np.concatenate([weight, -weight]), minlength=64 * (n + 1)).reshape(64, n + 1)
    out = np.cumsum(diff[:, :n], axis=1)
    # exact zeros outside the support, not cumsum's rounding residue
    column = np.arange(n)
    out[(column < lo[lo[rows]][:, None]) | (column >= hi[hi[rows] - 1][:, None])] = 0.0
    return out


# Matrices are cached per (full, reduced) size, for reduced sides up to this: the sizes photos come
# in repeat, and an entry costs 256 bytes per pixel of side (at most 128 MB for the whole cache).
# Larger ones are built each time (a few ms; 30 ms at 40000 pixels), so hostile inputs of many odd
# large sizes cannot fill memory.
_CACHED_SIDE = 2048


def _reduced_matrix(full: int, reduced: int) -> np.ndarray:
    """(64, reduced): `_axis_matrix(full)` summed over the full-size pixels each reduced pixel covers."""
    return _cached_reduced_matrix(full, reduced) if reduced <= _CACHED_SIDE else _build_reduced_matrix(full, reduced)


def _build_reduced_matrix(full: int, reduced: int) -> np.ndarray:
    if full == reduced:
        return _axis_matrix(full).astype(np.float32)
    owner = np.minimum((np.arange(full) * reduced) // full, reduced - 1)  # non-decreasing, onto
    starts = np.searchsorted(owner, np.arange(reduced))
    return np.add.reduceat(_axis_matrix(full), starts, axis=1).astype(np.float32)


_cached_reduced_matrix = functools.lru_cache(maxsize=256)(_build_reduced_matrix)


@functools.lru_cache(maxsize=256)
def _upscaled_matrix(full: int, small: int) -> np.ndarray:
    """(64, small): `_axis_matrix(full)` applied to the bicubic upscale of `small` pixels to `full`,
    Pillow's own resampling, folded into one: PDQ of an upscaled image at the cost of PDQ of the
    small one. Small sides only: a few KB each.

    Pillow's weights are read off by upscaling combs, not the identity: row k of the probe is 1 at
    every `period`-th pixel from k, and an output pixel reads fewer neighbouring inputs than that
    (bicubic support), so each of its weights shows in one row, from the one input of that row near it.
    Upscaling `period` rows instead of `small` is what makes a new size cheap (sizes rarely repeat
    in a crawl: the originals' sizes vary)."""
    # an output pixel reads the inputs within 2 * max(1, small / full) of it: fewer than a period
    period = 8 * max(1, -(-small // full))
    probe = (np.arange(small) % period == np.arange(period)[:, None]).astype(np.float32)
    weights = np.asarray(Image.fromarray(probe).resize((full, period), Image.Resampling.BICUBIC), np.float64)
    centre = (np.arange(full) + 0.5) * small / full - 0.5  # each output pixel's place among the inputs
    rows = np.arange(period)[:, None]
    source = rows + period * np.round((centre - rows) / period).astype(np.int64)  # (period, full)
    pixel, row = np.nonzero(((source >= 0) & (source < small) & (weights != 0)).T)  # by output pixel
    inputs, weight = source[row, pixel], weights[row, pixel]
    first = np.searchsorted(pixel, np.arange(full + 1))  # pixel p's inputs: [first[p], first[p + 1])
    # Both factors are sparse (a filter row spans a few dozen pixels, a pixel a few inputs): the
    # product is summed term by term, not as a dense (64, full) x (full, small) product.
    axis = _axis_matrix(full)
    r, p = np.nonzero(axis)
    count = first[p + 1] - first[p]
    term = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count - first[p], count)
    rows = np.repeat(r, count)
    values = np.repeat(axis[r, p], count) * weight[term]
    return np.bincount(rows * small + inputs[term], values, 64 * small).reshape(64, small).astype(np.float32)


_U = np.arange(1, 17)
_DCT = (np.sqrt(2 / 64) * np.cos(np.pi / 128 * _U[:, None] * (2 * np.arange(64)[None, :] + 1))).astype(np.float32)
_FLIP = np.where(_U % 2 == 1, -1.0, 1.0).astype(np.float32)  # DCT of a mirrored axis: (-1)^u


def _filtered(luma: Luma) -> np.ndarray:
    matrix = _upscaled_matrix if luma.upscaled else _reduced_matrix
    rows = matrix(luma.full_height, luma.pixels.shape[0])
    cols = matrix(luma.full_width, luma.pixels.shape[1])
    return rows @ luma.pixels @ cols.T


def _quality(buffer64: np.ndarray) -> int:
    vertical = np.trunc((buffer64[:-1, :] - buffer64[1:, :]) * 100 / 255)
    horizontal = np.trunc((buffer64[:, :-1] - buffer64[:, 1:]) * 100 / 255)
    return min(100, int(np.abs(vertical).sum() + np.abs(horizontal).sum()) // 90)


def _bits(dct16: np.ndarray) -> list[bytes]:
    """Hashes of a stack of (..., 16, 16) DCTs: bit k = 16 i + j is set when coefficient (i, j)
    exceeds the median (the 128th smallest, as the reference's Torben median); bit 255 leads."""
    flat = dct16.reshape(-1, 256)
    median = np.partition(flat, 127, axis=1)[:, 127:128]
    packed = np.packbits((flat > median)[:, ::-1], axis=1)
    return [row.tobytes() for row in packed]


def _dct_and_quality(luma: Luma) -> tuple[np.ndarray, int]:
    buffer64 = _filtered(luma)
    return _DCT @ buffer64 @ _DCT.T, _quality(buffer64)


def pdq_luma(luma: Luma) -> PdqHash:
    dct16, quality = _dct_and_quality(luma)
    return PdqHash(_bits(dct16)[0], quality)


# The 8 images a flip or quarter turn can make, as operations on the 16x16 DCT. Each variant is the
# hash of the image after that operation; rotations are counter-clockwise, as numpy's `rot90`.
DIHEDRAL: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "": lambda d: d,
    "flip_h": lambda d: d * _FLIP[None, :],
    "flip_v": lambda d: d * _FLIP[:, None],
    "rot180": lambda d: d * _FLIP[:, None] * _FLIP[None, :],
    "transpose": lambda d: d.T,
    "rot90": lambda d: (d * _FLIP[None, :]).T,
    "rot270": lambda d: (d * _FLIP[:, None]).T,
    "antitranspose": lambda d: (d * _FLIP[:, None] * _FLIP[None, :]).T,
}


# Uniform borders: a strip counts as padding when every pixel in it is within this many grey
# levels of the edge's mean (JPEG ringing included), it is at least 2% and at most 45% of the side.
_BORDER_TOLERANCE = 12.0
_BORDER_MIN, _BORDER_MAX = 0.02, 0.45


def _uniform_run(strips: np.ndarray, limit: int) -> int:
    """How many leading strips (rows of `strips`, at most `limit`) lie within tolerance of the first
    one's mean. Most images have no border, so a non-uniform first strip ends the search at once."""
    first = strips[0]
    edge = first.mean()
    if np.abs(first - edge).max() > _BORDER_TOLERANCE:
        return 0
    deviation = np.abs(strips[:limit] - edge).max(axis=1)
    bad = np.flatnonzero(deviation > _BORDER_TOLERANCE)
    return int(bad[0]) if len(bad) else limit


def _trim_once(luma: Luma) -> tuple[Luma, float] | None:
    """The image without one layer of uniform strips, and their grey level; None without any."""
    pixels = luma.pixels
    h, w = pixels.shape
    edges = (pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1])
    if all(np.ptp(edge) > 2 * _BORDER_TOLERANCE for edge in edges):  # the usual case: no border at all
        return None
    cuts = []
    for strips, size in ((pixels, h), (pixels[::-1], h), (pixels.T, w), (pixels.T[::-1], w)):
        limit = int(_BORDER_MAX * size)
        run = _uniform_run(strips, limit + 1)
        cuts.append(run if _BORDER_MIN * size <= run <= limit else 0)
    top, bottom, left, right = cuts
    if not any(cuts):
        return None
    strips = [pixels[:top], pixels[h - bottom :], pixels[:, :left], pixels[:, w - right :]]
    level = float(np.mean([strip.mean() for strip in strips if strip.size]))
    return crop(luma, (left, top, w - right, h - bottom)), level


def trim_borders(luma: Luma) -> list[Luma]:
    """The image without its uniform letterbox / padding strips, a layer at a time: a border of
    another colour inside the first (a black letterbox inside white padding, as img2dataset's
    `border` resizing leaves around a letterboxed frame) is a second layer, up to three. Each layer
    is a variant of its own: a picture's own uniform edge (sky) can look like an inner border, and
    the outer trim alone must stay among the variants. Empty when there is no border."""
    layers: list[Luma] = []
    level = None
    for _ in range(3):
        found = _trim_once(layers[-1] if layers else luma)
        if found is None or (level is not None and abs(found[1] - level) <= 2 * _BORDER_TOLERANCE):
            break
        layers.append(found[0])
        level = found[1]
    return layers


def crop(luma: Luma, box: tuple[int, int, int, int]) -> Luma:
    """The part of the image in `box` (left, top, right, bottom, in the pixels' own coordinates)."""
    left, top, right, bottom = box
    inner = luma.pixels[top:bottom, left:right]
    scale_h, scale_w = luma.full_height / luma.pixels.shape[0], luma.full_width / luma.pixels.shape[1]
    return Luma(
        np.ascontiguousarray(inner),
        max(inner.shape[0], round(inner.shape[0] * scale_h)),
        max(inner.shape[1], round(inner.shape[1] * scale_w)),
    )


def content_crop(luma: Luma, box: tuple[int, int, int, int]) -> Luma | None:
    """The image's content when its writer says where it lies (`box`, in full-size pixels: a
    dataset tool's padding); None if the box is the whole image or does not fit in it."""
    left, top, right, bottom = box
    if not (0 <= left < right <= luma.full_width and 0 <= top < bottom <= luma.full_height):
        return None
    if (left, top, right, bottom) == (0, 0, luma.full_width, luma.full_height):
        return None
    fy, fx = luma.pixels.shape[0] / luma.full_height, luma.pixels.shape[1] / luma.full_width
    left, top, right, bottom = round(left * fx), round(top * fy), round(right * fx), round(bottom * fy)
    if right - left < 8 or bottom - top < 8:
        return None
    # Only padding lies outside the box: uniform strips (a writer that cropped instead, such as
    # img2dataset's center_crop, left content there, and this box is not where its content is).
    mask = np.ones(luma.pixels.shape, dtype=bool)
    mask[top:bottom, left:right] = False
    outside = luma.pixels[mask]
    if outside.size and np.ptp(outside) > 2 * _BORDER_TOLERANCE:
        return None
    return crop(luma, (left, top, right, bottom))


# PDQ's filter window grows with the image (a side over 128): on a small image it barely blurs
# before sampling 64 rows and columns, and the aliasing moves the hash away from the original's,
# whose pixels it was listed from (measured on 60 photos downscaled to 256 px: a median of 18
# bits from the original, 38 at the 90th percentile; 6 and 18 after a 4x bicubic upscale; from
# 320 px up the distance is 6 to 12 bits without). The window is set per axis, so an image with
# a side under `UPSCALE_BELOW` is also hashed as its upscale, as a query-side variant ("up"): to its size
# before a dataset tool shrank it, where the tool recorded it, else to `UPSCALE_TO`. On
# img2dataset's 256-pixel outputs of 60 photos that matched 60 of 60 (border and keep_ratio
# modes), 47 and 55 without.
UPSCALE_BELOW = 512
UPSCALE_TO = 1024


def upscaled(luma: Luma, original: tuple[int, int] | None = None) -> Luma | None:
    """The image as its bicubic upscale, if a side is short (under `UPSCALE_BELOW`) and it is
    decoded at full size: to the size it had before a dataset tool shrank it (`original`, width and height,
    when its shape is the image's: PDQ then filters it as it filtered the original), else to
    `UPSCALE_TO` on its longer side. Nothing is resampled here: PDQ's filter takes the upscale in
    its stride (`_upscaled_matrix`)."""
    h, w = luma.pixels.shape
    if (h, w) != (luma.full_height, luma.full_width) or luma.upscaled or min(h, w) >= UPSCALE_BELOW:
        return None
    width, height = original if original is not None else (w, h)
    if original is not None and abs(width * h / (height * w) - 1) < 0.03 and max(original) <= 2 * UPSCALE_TO:
        if max(original) > max(h, w):  # exactly the original's size: PDQ filters it as it did the original
            return Luma(luma.pixels, height, width, exact=False, upscaled=True)
        return None
    scale = UPSCALE_TO / max(h, w)
    if scale < 1.5:
        return None
    return Luma(luma.pixels, round(h * scale), round(w * scale), exact=False, upscaled=True)


@dataclass(frozen=True)
class Resized:
    """What a dataset tool says it did to an image (img2dataset's width, height, original_width,
    original_height): its size before, and where the content lies if it padded it (`box`, left,
    top, right, bottom, in the stored pixels)."""

    original: tuple[int, int]
    box: tuple[int, int, int, int] | None = None


def pdq_variants(
    luma: Luma, dihedral: bool = True, trim: bool = True, resized: Resized | None = None
) -> dict[str, PdqHash]:
    """Query-side hashes: "" is plain PDQ; then the dihedral variants, the trimmed ones ("trim",
    "trim+flip_h", ..., "trim2" for a border inside it), when `resized` says where padded content lies, that content's
    ("content", ...), and for small images each of those upscaled ("up", "trim+up", ...).
    Duplicates of an earlier variant are left out."""
    out: dict[str, PdqHash] = {}
    sources = [("", luma)]
    if trim:
        sources += [
            ("trim" if depth == 0 else f"trim{depth + 1}", layer) for depth, layer in enumerate(trim_borders(luma))
        ]
    content = content_crop(luma, resized.box) if trim and resized is not None and resized.box else None
    if content is not None:
        sources.append(("content", content))
    if trim:  # undoing what resizing did, with undoing padding
        original = resized.original if resized is not None else None
        sources += [(_variant(prefix, "up"), up) for prefix, source in sources if (up := upscaled(source, original))]
    seen: set[bytes] = set()
    operations = DIHEDRAL if dihedral else {"": DIHEDRAL[""]}
    for prefix, source in sources:
        dct16, quality = _dct_and_quality(source)
        hashes = _bits(np.stack([op(dct16) for op in operations.values()]))
        for name, bits in zip(operations, hashes, strict=True):
            if bits not in seen:
                seen.add(bits)
                out[_variant(prefix, name)] = PdqHash(bits, quality)
    return out


def _variant(*parts: str) -> str:
    """A variant's name: what was done to the image, in order ("trim+up+flip_h"); "" is the plain hash."""
    return "+".join(p for p in parts if p)


ImageLike = bytes | bytearray | memoryview | Image.Image | np.ndarray


def to_luma(image: ImageLike, limits: DecodeLimits = DecodeLimits()) -> Luma:
    """Luminance of encoded bytes (decoded fast, see `decode_luma`), a Pillow image or pixels."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        return decode_luma(bytes(image), limits)
    if isinstance(image, Image.Image):
        rgb = to_rgb_array(image)
    elif isinstance(image, np.ndarray):
        rgb = image if image.ndim == 3 else np.repeat(image[:, :, None], 3, axis=2)
        if rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError("pixels must be HxWx3 (or HxW) uint8")
    else:
        raise TypeError(f"cannot hash {type(image).__name__}; pass bytes, a PIL image or a uint8 array")
    return Luma(luma_of_rgb(rgb), rgb.shape[0], rgb.shape[1])


# Near the quality gate (50) the hash is recomputed from the full decode, exactly as the reference
# does, so that whether an image is matched at all never depends on the fast path. Its quality is
# within a few points of the reference's, so this band catches every image the gate could decide
# differently. Flatter images are never matched: their bits are noise (the slightest change in the
# pixels flips them, for the reference too), and recomputing them would only cost time.
EXACT_QUALITY_BAND = range(44, 57)  # the gate, 50, give or take 6


NEAR_FRAME = 8  # bits: a frame this near the one before it adds nothing a match would not find there


@dataclass(frozen=True)
class ImagePdq:
    """PDQ of an image and its query-side variants ("" is the plain hash), and the image's size.
    `incomplete`: why part of what the image holds was not hashed (frames beyond the bounds, a
    frame that did not decode), else None."""

    variants: dict[str, PdqHash]
    width: int
    height: int
    incomplete: str | None = None


def pdq_image(
    data: bytes,
    limits: DecodeLimits = DecodeLimits(),
    dihedral: bool = False,
    trim: bool = False,
    exact: bool = False,
    resized: Resized | None = None,
    min_quality: int = PDQ_MIN_QUALITY,
) -> ImagePdq:
    """PDQ of encoded image bytes and its query-side variants (see `pdq_variants`), decoded fast
    (reduced scale), and again exactly when its quality is near the gate. `exact`: from the full
    decode only, the reference's bits for every image, flat ones included (about 4x the time of
    the fast path at 1500 px). Only an image whose DCT coefficients tie exactly (a synthetic
    linear gradient) may still differ: its bits fall to float rounding, the reference's too.
    `resized`: what a dataset tool did to the image, if it says (see `pdq_variants`).

    What else the image shows (`image.other_views`: further frames, transparency) is hashed too,
    as variants named after the view ("frame2", "on_white+flip_h"; frames plain only). Variants
    below `min_quality` are left out (a flat view's bits are noise)."""
    luma = decode_luma(data, limits, exact=exact)
    variants = pdq_variants(luma, dihedral, trim, resized)
    if not luma.exact and variants[""].quality in EXACT_QUALITY_BAND:
        variants = pdq_variants(decode_luma(data, limits, exact=True), dihedral, trim, resized)
    views, incomplete = other_views(data, limits)
    seen = {h.bits for h in variants.values()}
    previous: PdqHash | None = None
    for view, view_luma in views:
        # A frame is queried as it is (an animation's frames are many; their flips would be 8
        # queries each), and not at all when it is within a few bits of the frame before it.
        frame = view.startswith("frame") and ":" not in view
        hashes = pdq_variants(view_luma, dihedral and not frame, trim=False)
        if frame:
            if previous is not None and hashes[""] - previous <= NEAR_FRAME:
                continue
            previous = hashes[""]
        for name, value in hashes.items():
            if value.bits not in seen:
                seen.add(value.bits)
                variants[_variant(view, name)] = value
    # each variant is held to the quality gate by its own quality (a trimmed one may pass where
    # the padded whole does not); the plain hash is kept whatever its quality, to be recorded
    kept = {name: value for name, value in variants.items() if not name or value.quality >= min_quality}
    return ImagePdq(kept, luma.full_width, luma.full_height, incomplete)


def pdq_partial(
    data: bytes, limits: DecodeLimits = DecodeLimits(), dihedral: bool = False, min_quality: int = PDQ_MIN_QUALITY
) -> dict[str, PdqHash]:
    """PDQ of what there is of an image that is not all there: the first bytes of one too large
    to hold, or one cut short (see `decode_luma`'s `partial`). Its hashes are variants named
    "partial..." (those of at least `min_quality`), never the image's own: they stand for part of
    it. Empty when nothing of it decodes."""
    try:
        luma = decode_luma(data, limits, partial=True)
    except DecodeError:
        return {}
    return {
        _variant("partial", name): value
        for name, value in pdq_variants(luma, dihedral, trim=False).items()
        if value.quality >= min_quality
    }


def pdq_bytes(
    data: bytes,
    limits: DecodeLimits = DecodeLimits(),
    dihedral: bool = False,
    trim: bool = False,
    exact: bool = False,
) -> dict[str, PdqHash]:
    """`pdq_image`'s hashes alone."""
    return pdq_image(data, limits, dihedral, trim, exact).variants


def pdq(image: ImageLike, limits: DecodeLimits = DecodeLimits()) -> PdqHash:
    """PDQ of encoded bytes, a Pillow image, or an HxWx3 (or HxW) uint8 array.

    Raises `safeset.hashing.image.DecodeError` for bytes that are not a decodable image.
    """
    if isinstance(image, (bytes, bytearray, memoryview)):
        return pdq_bytes(bytes(image), limits)[""]
    return pdq_luma(to_luma(image, limits))
