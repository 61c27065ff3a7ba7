"""Hashing: exact digests of bytes and URLs, and PDQ of pixels. Pure: imports no other stage."""

from .digests import byte_digests, domain_suffixes, normalise_url, url_host, url_md5
from .image import DecodeError, DecodeLimits, decode_rgb, open_image
from .pdq import PDQ_DEFAULT_THRESHOLD, PDQ_MIN_QUALITY, PdqHash, pdq, pdq_pixels

__all__ = [
    "PDQ_DEFAULT_THRESHOLD",
    "PDQ_MIN_QUALITY",
    "DecodeError",
    "DecodeLimits",
    "PdqHash",
    "byte_digests",
    "decode_rgb",
    "domain_suffixes",
    "normalise_url",
    "open_image",
    "pdq",
    "pdq_pixels",
    "url_host",
    "url_md5",
]
