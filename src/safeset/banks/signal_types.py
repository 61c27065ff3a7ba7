"""The kinds of value a bank can list, each knowing how to validate a listed value and which value of
an item's result it is compared with.

Hex digests are stored as fixed-width bytes (half the memory of hex text, and sortable); URLs and
domains as normalised text. The registry is keyed by the classes' own names and aliases, checked for
uniqueness at import.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from typing import ClassVar

from ..hashing.digests import domain_suffixes, normal_host, normalise_url, threatexchange_url_md5, url_host
from ..model import Hashes, ItemResult


class InvalidEntry(ValueError):
    """A listed value that cannot be used; the message is a reason, never the value itself."""


class SignalType(ABC):
    name: ClassVar[str]
    aliases: ClassVar[tuple[str, ...]] = ()
    # Whether it describes bytes, so that every payload of a row is compared (a row's second image
    # can be the listed one), or the row itself (its URL), compared once.
    per_payload: ClassVar[bool] = False

    @abstractmethod
    def normalise(self, value: str) -> str:
        """The canonical form of a listed value, or `InvalidEntry` with the reason."""

    @abstractmethod
    def item_values(self, hashes: Hashes) -> list[tuple[str, str]]:
        """(variant, canonical value) pairs this type compares against its lists: of one payload's
        hashes if `per_payload`, else of the row's `ItemResult`. The variant is "" except for
        PDQ's query-side variants."""


class HexDigestType(SignalType):
    """A hash written as a fixed number of hex characters, stored as `width` bytes. It is compared
    with the field of the same name of each payload's hashes."""

    hex_chars: ClassVar[int]
    per_payload = True

    @property
    def width(self) -> int:
        return self.hex_chars // 2

    def normalise(self, value: str) -> str:
        text = value.strip().lower()
        if len(text) != self.hex_chars:
            raise InvalidEntry(f"wrong length for {self.name}: {len(text)} chars, expected {self.hex_chars}")
        if not _HEX.fullmatch(text):
            raise InvalidEntry(f"not hex ({self.name})")
        return text

    def item_values(self, hashes: Hashes) -> list[tuple[str, str]]:
        value = getattr(hashes, self.name)
        return [("", value)] if value else []


_HEX = re.compile(r"[0-9a-f]+")


class Md5(HexDigestType):
    name = "md5"
    aliases = ("photo_md5", "video_md5")  # python-threatexchange's names: MD5s of a file's bytes
    hex_chars = 32


class Sha1(HexDigestType):
    name = "sha1"
    hex_chars = 40


class Sha256(HexDigestType):
    name = "sha256"
    aliases = ("video_sha256",)
    hex_chars = 64


class UrlMd5(HexDigestType):
    """MD5 of the URL: as the dataset holds it (Re-LAION's lists), and as python-threatexchange
    normalises it first (its lists); a match records the second as variant "threatexchange"."""

    name = "url_md5"
    hex_chars = 32
    per_payload = False

    def item_values(self, hashes: Hashes) -> list[tuple[str, str]]:
        values = super().item_values(hashes)
        url = getattr(hashes, "url", None)
        if url:
            normal = threatexchange_url_md5(url)
            values += [("threatexchange", normal)] if normal != hashes.url_md5 else []
        return values


class Pdq(HexDigestType):
    """Matched by Hamming distance, not equality; an all-zero hash is the hash of a blank image."""

    name = "pdq"
    hex_chars = 64

    def normalise(self, value: str) -> str:
        text = super().normalise(value)
        if text == "0" * self.hex_chars:
            raise InvalidEntry("all-zero PDQ hash (the hash of a blank image)")
        return text

    def item_values(self, hashes: Hashes) -> list[tuple[str, str]]:
        return super().item_values(hashes) + list(hashes.pdq_variants.items())  # partial ones without a PDQ


class Url(SignalType):
    name = "url"

    def normalise(self, value: str) -> str:
        normal = normalise_url(value)
        if normal is None:
            raise InvalidEntry("not an absolute http(s) URL")
        return normal

    def item_values(self, result: ItemResult) -> list[tuple[str, str]]:
        normal = normalise_url(result.url) if result.url else None
        return [("", normal)] if normal else []


_DOMAIN = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*|[0-9a-f:.]+")


class Domain(SignalType):
    """A listed domain covers its subdomains: `example.com` matches `img.example.com`. Listed and
    requested hosts are normalised alike (`normal_host`: IDNA, so `bücher.de`, its punycode and
    its full-width spelling are one domain)."""

    name = "domain"

    def normalise(self, value: str) -> str:
        text = value.strip()
        if text.startswith("*."):
            text = text[2:]
        if text.startswith("[") and text.endswith("]"):
            text = text[1:-1]
        host = normal_host(text)
        if not host or not _DOMAIN.fullmatch(host):
            raise InvalidEntry("not a domain name")
        return host

    def item_values(self, result: ItemResult) -> list[tuple[str, str]]:
        host = url_host(result.url) if result.url else None
        return [("", suffix) for suffix in domain_suffixes(host)] if host else []


def _build_registry(*types: type[SignalType]) -> dict[str, SignalType]:
    registry: dict[str, SignalType] = {}
    for cls in types:
        for name in (cls.name, *cls.aliases):
            if name in registry:
                raise RuntimeError(f"signal type name {name!r} is registered twice")
            registry[name] = cls()
    return registry


_REGISTRY = _build_registry(Md5, Sha1, Sha256, Pdq, Url, UrlMd5, Domain)

SIGNAL_TYPES: tuple[str, ...] = tuple(dict.fromkeys(t.name for t in _REGISTRY.values()))


def signal_type(name: str) -> SignalType:
    """The signal type called `name` (or one of its aliases); KeyError if unknown."""
    return _REGISTRY[name.strip().lower()]
