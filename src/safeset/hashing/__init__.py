"""Hashing: exact digests of bytes and URLs, and PDQ of pixels. Pure: imports no other stage."""

from .digests import byte_digests, domain_suffixes, normal_host, normalise_url, stream_digests, url_host, url_md5
from .image import DecodeError, DecodeLimits, Luma, UnsupportedMedia, decode_luma, decode_rgb, open_image
from .pdq import (
    DIHEDRAL,
    PDQ_DEFAULT_THRESHOLD,
    PDQ_MIN_QUALITY,
    ImagePdq,
    PdqHash,
    Resized,
    pdq,
    pdq_bytes,
    pdq_image,
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
    "ImagePdq",
    "Luma",
    "PdqHash",
    "Resized",
    "UnsupportedMedia",
    "byte_digests",
    "decode_luma",
    "decode_rgb",
    "domain_suffixes",
    "normal_host",
    "normalise_url",
    "open_image",
    "pdq",
    "pdq_bytes",
    "pdq_image",
    "pdq_luma",
    "pdq_variants",
    "stream_digests",
    "to_luma",
    "trim_borders",
    "url_host",
    "url_md5",
]
