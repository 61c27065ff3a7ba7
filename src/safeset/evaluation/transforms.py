"""The edits a listed image goes through before it turns up again: recompression, resizing, crops,
flips and rotations, colour changes, overlays, blur, padding, squeezing.

Each transform takes a Pillow RGB image and a seeded random generator (so a run is reproducible)
and returns an RGB image; the result is then saved as JPEG, as it would be on the web.
"""

from __future__ import annotations

import io
import random
from collections.abc import Callable

from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps

Transform = Callable[[Image.Image, random.Random], Image.Image]


def _resize(factor: float) -> Transform:
    def resize(image: Image.Image, rng: random.Random) -> Image.Image:
        size = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
        return image.resize(size, Image.Resampling.LANCZOS)

    return resize


def _crop(fraction: float) -> Transform:
    """Keep (1 - fraction) of each side, at a random offset."""

    def crop(image: Image.Image, rng: random.Random) -> Image.Image:
        w, h = round(image.width * (1 - fraction)), round(image.height * (1 - fraction))
        x, y = rng.randint(0, image.width - w), rng.randint(0, image.height - h)
        return image.crop((x, y, x + w, y + h))

    return crop


def _text(image: Image.Image, rng: random.Random) -> Image.Image:
    out = image.copy()
    draw = ImageDraw.Draw(out)
    size = max(10, image.height // 10)
    font = ImageFont.load_default(size=size)
    words = ["sample", "caption", "watermark", "copyright", "meme", "text", "photo", "www.example.org"]
    for line in range(2):
        text = " ".join(rng.choice(words) for _ in range(3))
        y = rng.randint(0, max(0, image.height - size)) if line else image.height - size * 2
        outline = {"stroke_width": max(1, size // 12), "stroke_fill": (0, 0, 0)}
        draw.text((size // 2, y), text, font=font, fill=(255, 255, 255), **outline)
    return out


def _pad(fraction: float) -> Transform:
    def pad(image: Image.Image, rng: random.Random) -> Image.Image:
        border = (round(image.width * fraction), round(image.height * fraction))
        return ImageOps.expand(image, border=(border[0], border[1], border[0], border[1]), fill=(0, 0, 0))

    return pad


TRANSFORMS: dict[str, Transform] = {
    "jpeg_q50": lambda im, rng: im,  # the quality is applied when saving, see `apply`
    "jpeg_q30": lambda im, rng: im,
    "resize_50": _resize(0.5),
    "resize_25": _resize(0.25),
    "crop_5": _crop(0.05),
    "crop_10": _crop(0.10),
    "flip": lambda im, rng: ImageOps.mirror(im),
    "rotate_90": lambda im, rng: im.transpose(Image.Transpose.ROTATE_90),
    "rotate_5": lambda im, rng: im.rotate(5, resample=Image.Resampling.BILINEAR, fillcolor=(0, 0, 0)),
    "brightness_contrast": lambda im, rng: ImageEnhance.Contrast(ImageEnhance.Brightness(im).enhance(1.3)).enhance(0.8),
    "grayscale": lambda im, rng: ImageOps.grayscale(im).convert("RGB"),
    "text_overlay": _text,
    "blur": lambda im, rng: im.filter(ImageFilter.GaussianBlur(radius=max(1.0, max(im.size) / 200))),
    "pad_10": _pad(0.10),
    "aspect_squeeze": lambda im, rng: im.resize((round(im.width * 0.7), im.height), Image.Resampling.LANCZOS),
}
_QUALITY = {"jpeg_q50": 50, "jpeg_q30": 30}


def apply(name: str, image: Image.Image, seed: int) -> bytes:
    """The transformed image, saved as JPEG (quality 90 unless the transform is about quality)."""
    out = TRANSFORMS[name](image.convert("RGB"), random.Random(f"{name}:{seed}"))
    buf = io.BytesIO()
    out.save(buf, format="JPEG", quality=_QUALITY.get(name, 90))
    return buf.getvalue()
