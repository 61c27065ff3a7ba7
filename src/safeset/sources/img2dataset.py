"""What img2dataset records of a sample it downloaded, as a reader needs it (see `sinks.img2dataset`
for its layout, written)."""

from __future__ import annotations

from ..hashing import Resized


def resized(record: dict) -> Resized | None:
    """What img2dataset did to a sample's image, from its row (or its .json): its size before
    (`original_width`, `original_height`), and, where it wrote a square of an image that was not
    one, the box its `border` resizing (the default) put the content in: scaled so that the longer
    side fills the square, centred, the rest white. Which resize mode ran is not recorded, so PDQ
    uses the box only where what lies outside it is uniform (see `hashing.pdq.content_crop`)."""
    sides = [record.get(k) for k in ("width", "height", "original_width", "original_height")]
    if not all(isinstance(v, int) and v > 0 for v in sides):
        return None
    width, height, original_width, original_height = sides
    if width != height or original_width == original_height:
        return Resized((original_width, original_height))
    scale = width / max(original_width, original_height)
    inner_width, inner_height = round(original_width * scale), round(original_height * scale)
    if inner_width > width or inner_height > height:
        return Resized((original_width, original_height))
    left, top = (width - inner_width) // 2, (height - inner_height) // 2
    return Resized((original_width, original_height), (left, top, left + inner_width, top + inner_height))
