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
"""

from __future__ import annotations

import re

# What hashing records of every payload's bytes, whatever a scan asks for: 1.0 where they opt out,
# and which statement said so.
SIGNAL = "optout_in_file"
SIGNALS = (SIGNAL, f"{SIGNAL}.xmp")

_PROPERTY = b"DataMining"
# the property's value follows within its own element or attribute: a few hundred bytes at most
_WINDOW = 400
_PROHIBITED = re.compile(
    rb"[^<>]{0,200}?(?:[\"'>/])(?:https?://ns\.useplus\.org/ldf/vocab/)?"
    rb"DMI-PROHIBITED(?:-AIMLTRAINING|-GENAIMLTRAINING|-EXCEPTSEARCHENGINEINDEXING)?[\"'<]"
)


def in_file_optout(data: bytes) -> str | None:
    """ "xmp" where an XMP packet of the bytes prohibits AI/ML training; else None."""
    at = data.find(_PROPERTY)
    while at >= 0:
        if data[at - 5 : at] == b"plus:" or data[at - 1 : at] == b":":
            if _PROHIBITED.match(data, at + len(_PROPERTY), at + len(_PROPERTY) + _WINDOW):
                return "xmp"
        at = data.find(_PROPERTY, at + len(_PROPERTY))
    return None
