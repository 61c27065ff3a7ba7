"""Opt-outs written inside an image: the creator's own statement that it must not be used to
train AI, read from the bytes already in memory (no network).

IPTC's Data Mining property (PLUS vocabulary) in an XMP packet, `plus:DataMining`, as Adobe's
tools, ExifTool and photo agencies write it, in any of XMP's forms: an attribute
(`plus:DataMining="http://ns.useplus.org/ldf/vocab/DMI-PROHIBITED-AIMLTRAINING"`), an element
holding the value, or an element with `rdf:resource`. Values that prohibit AI/ML training:
`DMI-PROHIBITED`, `DMI-PROHIBITED-AIMLTRAINING`, `DMI-PROHIBITED-GENAIMLTRAINING` and
`DMI-PROHIBITED-EXCEPTSEARCHENGINEINDEXING`; the others (`DMI-UNSPECIFIED`, `DMI-ALLOWED`,
`DMI-SEE-CONSTRAINT`, ...) do not. The packet is found by its text wherever the format keeps it
(JPEG APP1, a PNG iTXt chunk, WebP's XMP chunk, TIFF's tag 700), uncompressed as XMP is stored.

A C2PA manifest's training-and-mining assertion (`signals.c2pa`) whose `c2pa.` or `cawg.`
`ai_training`, `ai_generative_training` or `data_mining` entry is `notAllowed`; `ai_inference`
alone, `allowed` and `constrained` do not opt out of a training set. Any manifest of the store
counts, ingredients' included: an opt-out of the original holds for what was made from it.
"""

from __future__ import annotations

import re

from .c2pa import jpeg_segments, training_mining_uses

# What hashing records of every payload's bytes, whatever a scan asks for: 1.0 where they opt out,
# and which statement said so.
SIGNAL = "optout_in_file"
SIGNALS = (SIGNAL, f"{SIGNAL}.xmp", f"{SIGNAL}.c2pa")

_PROPERTY = b"DataMining"
# the property's value follows within its own element or attribute: a few hundred bytes at most
_WINDOW = 400
_PROHIBITED = re.compile(
    rb"[^<>]{0,200}?(?:[\"'>/])(?:https?://ns\.useplus\.org/ldf/vocab/)?"
    rb"DMI-PROHIBITED(?:-AIMLTRAINING|-GENAIMLTRAINING|-EXCEPTSEARCHENGINEINDEXING)?[\"'<]"
)
_TRAINING = {
    f"{prefix}.{use}" for prefix in ("c2pa", "cawg") for use in ("ai_training", "ai_generative_training", "data_mining")
}


def in_file_optouts(data: bytes) -> tuple[str, ...]:
    """Which statements of the bytes prohibit AI/ML training: "xmp", "c2pa", both or none."""
    end = metadata_end(data)
    said = ("xmp",) if _xmp_prohibits(data, end) else ()
    if any(name in _TRAINING and use == "notAllowed" for name, use in training_mining_uses(data, end)):
        said += ("c2pa",)
    return said


def metadata_end(data: bytes) -> int:
    """Where a file's metadata can end: a JPEG's first scan (XMP is in APP1, C2PA in APP11, both
    before it), so that the image data (a twentieth of a millisecond per 100 KB) is not searched;
    the whole of other formats (PNG may keep XMP after its image data)."""
    if data[:2] == b"\xff\xd8":
        for marker, start, _ in jpeg_segments(data):
            if marker == 0xDA:
                return start
    return len(data)


def _xmp_prohibits(data: bytes, end: int) -> bool:
    at = data.find(_PROPERTY, 0, end)
    while at >= 0:
        if data[at - 5 : at] == b"plus:" or data[at - 1 : at] == b":":
            if _PROHIBITED.match(data, at + len(_PROPERTY), at + len(_PROPERTY) + _WINDOW):
                return True
        at = data.find(_PROPERTY, at + len(_PROPERTY), end)
    return False
