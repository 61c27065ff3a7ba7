"""Hashing: exact digests of bytes and URLs, and PDQ of pixels. Pure: imports no other stage."""

from .digests import byte_digests, domain_suffixes, normalise_url, url_host, url_md5
from .image import DecodeError, DecodeLimits, Luma, decode_luma, decode_rgb, open_image
from .pdq import (
    DIHEDRAL,
    PDQ_DEFAULT_THRESHOLD,
    PDQ_MIN_QUALITY,
    PdqHash,
    pdq,
    pdq_bytes,
    pdq_luma,
    pdq_variants,
    to_luma,
    trim_borders,
)

__all__ = [
    "DIHEDRAL",
    "PDQ_DEFAULT_THRESHOLD",
    "PDQ_MIN_QUALITY",
    "DecodeError",
    "DecodeLimits",
    "Luma",
    "PdqHash",
    "byte_digests",
    "decode_luma",
    "decode_rgb",
    "domain_suffixes",
    "normalise_url",
    "open_image",
    "pdq",
    "pdq_bytes",
    "pdq_luma",
    "pdq_variants",
    "to_luma",
    "trim_borders",
    "url_host",
    "url_md5",
]
