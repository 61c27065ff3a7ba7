"""The kinds of value a bank can list, each knowing how to validate a listed value and which values
of a table of results it is compared with (`queries`, column by column: see `banks.columns`).

Hex digests are stored as fixed-width bytes (half the memory of hex text, and sortable); URLs and
domains as normalised text. The registry is keyed by the classes' own names and aliases, checked for
uniqueness at import.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from ..hashing.digests import MAX_DOMAIN, normal_host, normalise_url

if TYPE_CHECKING:
    import pyarrow as pa

    from .columns import Queries


class InvalidEntry(ValueError):
    """A listed value that cannot be used; the message is a reason, never the value itself."""


class SignalType(ABC):
    name: ClassVar[str]
    aliases: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def normalise(self, value: str) -> str:
        """The canonical form of a listed value, or `InvalidEntry` with the reason."""

    @abstractmethod
    def queries(self, table: pa.Table, min_quality: int) -> Queries:
        """The canonical values this type compares against its lists, of every row of a results
        table (of each payload of a row too, for types that describe bytes: a row's second image
        can be the listed one), with their variants ("" except for PDQ's query-side variants and
        URL forms). `min_quality`: the PDQ quality gate."""


class HexDigestType(SignalType):
    """A hash written as a fixed number of hex characters, stored as `width` bytes. It is compared
    with the field of the same name of each payload's hashes."""

    hex_chars: ClassVar[int]

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

    def queries(self, table: pa.Table, min_quality: int) -> Queries:
        from .columns import Queries, codes, flat, hex_values, plain, struct_field

        parts = [plain(*hex_values(table[self.name], self.width))]
        payloads, parents = flat(table["payloads"])
        if len(payloads):
            positions, rows = hex_values(struct_field(payloads, self.name), self.width)
            names, distinct = codes(struct_field(payloads, "name").take(positions))
            parts.append(Queries(parents[positions], rows, names, np.zeros(len(rows), np.int32), distinct))
        return Queries.join(parts, np.zeros((0, self.width), np.uint8))


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
    normalises it first (its lists, observed as `url_md5_threatexchange` where it differs); a
    match of the second records variant "threatexchange"."""

    name = "url_md5"
    hex_chars = 32

    def queries(self, table: pa.Table, min_quality: int) -> Queries:
        from .columns import Queries, hex_values, plain

        positions, rows = hex_values(table["url_md5_threatexchange"], self.width)
        ones = np.ones(len(rows), np.int32)
        other = Queries(positions, rows, np.zeros(len(rows), np.int32), ones, [""], ["", "threatexchange"])
        return Queries.join([plain(*hex_values(table["url_md5"], self.width)), other], np.zeros((0, 16), np.uint8))


class Pdq(HexDigestType):
    """Matched by Hamming distance, not equality; an all-zero hash is the hash of a blank image."""

    name = "pdq"
    hex_chars = 64

    def normalise(self, value: str) -> str:
        text = super().normalise(value)
        if text == "0" * self.hex_chars:
            raise InvalidEntry("all-zero PDQ hash (the hash of a blank image)")
        return text

    def queries(self, table: pa.Table, min_quality: int) -> Queries:
        """Each image's plain PDQ if its quality passes the gate (a flat image's bits are noise),
        and its variants, each of which passed the gate by its own quality when it was made
        (partial ones come without a plain PDQ)."""
        from .columns import Queries, codes, flat, frame_queries, pdq_queries, struct_field

        n = table.num_rows
        parts = pdq_queries(table["pdq"], table["pdq_quality"], table["pdq_variants"], np.arange(n), None, min_quality)
        payloads, parents = flat(table["payloads"])
        if len(payloads):
            names = codes(struct_field(payloads, "name"))
            fields = (struct_field(payloads, name) for name in ("pdq", "pdq_quality", "pdq_variants"))
            parts += pdq_queries(*fields, parents, names, min_quality)
        parts += frame_queries(table, min_quality, whole_videos=False)  # a listed still in a video
        return Queries.join(parts, np.zeros((0, 32), np.uint8))


class Vpdq(SignalType):
    """A listed video: its frames' PDQs (vPDQ), matched by the share of a video's frames that
    match the listed one's (see `banks.vpdq`). Stored as "LABEL\tSIGNAL" (`vpdq.listed_video`):
    the label, given where the list is read, is what a match records, with both shares."""

    name = "vpdq"

    def normalise(self, value: str) -> str:
        """The signal's canonical form; the label is added where the list is read."""
        from .vpdq import canonical_signal

        return canonical_signal(value)

    def queries(self, table: pa.Table, min_quality: int) -> Queries:
        """Each video's distinct frames of a quality that passes the gate."""
        from .columns import Queries, frame_queries

        return Queries.join(frame_queries(table, min_quality, whole_videos=True), np.zeros((0, 32), np.uint8))


class Url(SignalType):
    name = "url"

    def normalise(self, value: str) -> str:
        normal = normalise_url(value)
        if normal is None:
            raise InvalidEntry("not an absolute http(s) URL")
        return normal

    def queries(self, table: pa.Table, min_quality: int) -> Queries:
        from ..hashing.columns import normal_urls
        from .columns import plain, valid

        return plain(*valid(normal_urls(table["url"])))


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
        if not host or not _DOMAIN.fullmatch(host) or len(host) > MAX_DOMAIN:
            raise InvalidEntry("not a domain name")
        return host

    def queries(self, table: pa.Table, min_quality: int) -> Queries:
        from ..hashing.columns import host_suffixes
        from .columns import plain

        return plain(*host_suffixes(table["url"]))


class Keyword(SignalType):
    """A term or phrase looked for in captions (see `banks.keywords`: normal forms, whole words).
    Stored as "TERM\tline:N"; a match records only the `line:N`."""

    name = "keyword"

    def normalise(self, value: str) -> str:
        from .keywords import normal_text

        term = normal_text(value)
        if not term:
            raise InvalidEntry("no letter or digit in the term")
        return term

    def queries(self, table: pa.Table, min_quality: int) -> Queries:
        from .columns import plain
        from .keywords import normal_captions

        return plain(*normal_captions(table["caption"]))


def _build_registry(*types: type[SignalType]) -> dict[str, SignalType]:
    registry: dict[str, SignalType] = {}
    for cls in types:
        for name in (cls.name, *cls.aliases):
            if name in registry:
                raise RuntimeError(f"signal type name {name!r} is registered twice")
            registry[name] = cls()
    return registry


_REGISTRY = _build_registry(Md5, Sha1, Sha256, Pdq, Vpdq, Url, UrlMd5, Domain, Keyword)

SIGNAL_TYPES: tuple[str, ...] = tuple(dict.fromkeys(t.name for t in _REGISTRY.values()))
TYPE_NAMES: tuple[str, ...] = tuple(_REGISTRY)  # the types' names and their aliases (python-threatexchange's)


def signal_type(name: str) -> SignalType:
    """The signal type called `name` (or one of its aliases); KeyError if unknown."""
    return _REGISTRY[name.strip().lower()]
