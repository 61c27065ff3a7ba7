"""Exact digests of image bytes and of URLs, and the URL normal form the `url` and `domain` banks use."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from urllib.parse import urlparse, urlsplit, urlunsplit

from yarl import URL

_DEFAULT_PORTS = {"http": 80, "https": 443}


def byte_digests(data: bytes) -> dict[str, str]:
    """md5, sha1 and sha256 of `data` as lowercase hex, the forms hotline lists use."""
    return stream_digests((data,))


def stream_digests(chunks: Iterable[bytes]) -> dict[str, str]:
    """`byte_digests` of the concatenated chunks, holding one chunk at a time: for payloads too
    large to keep in memory (a reader hashes them as they stream past)."""
    md5, sha1, sha256 = hashlib.md5(usedforsecurity=False), hashlib.sha1(usedforsecurity=False), hashlib.sha256()
    for chunk in chunks:
        md5.update(chunk)
        sha1.update(chunk)
        sha256.update(chunk)
    return {"md5": md5.hexdigest(), "sha1": sha1.hexdigest(), "sha256": sha256.hexdigest()}


def url_md5(url: str) -> str:
    """MD5 of the URL string exactly as the dataset holds it (Re-LAION matched URLs this way). A
    lone surrogate (JSON can carry one) is hashed as its own UTF-8-like bytes, not an error."""
    return hashlib.md5(url.encode("utf-8", "surrogatepass"), usedforsecurity=False).hexdigest()


def threatexchange_url_md5(url: str) -> str | None:
    """MD5 of a URL as python-threatexchange hashes it for its `url_md5` lists (its
    `common.normalize_url`): the whole URL lower-cased, parsed and re-joined, its first
    `scheme://` removed, UTF-8. Lists written with it match only this form, not the URL as held.
    None for a URL the parser refuses (a broken IPv6 literal): pytx could not hash it either."""
    lowered = url.lower()
    try:
        parsed = urlparse(lowered)
    except ValueError:
        return None
    text = parsed.geturl().replace(f"{parsed.scheme}://", "", 1)
    return hashlib.md5(text.encode("utf-8", "surrogatepass"), usedforsecurity=False).hexdigest()


def normal_host(host: str) -> str | None:
    """A host name as an HTTP client connects to it: IDNA-encoded (full-width letters and digits,
    ideographic dots and other compatibility forms mapped, so `ｅｘａｍｐｌｅ.com` is
    `example.com` and `１２７.０.０.１` the IP literal `127.0.0.1`), lower case, no trailing
    dot; an IPv6 literal compressed. None for a host no client could use."""
    host = host.strip().rstrip(".")
    if not host:
        return None
    try:
        return URL.build(scheme="http", host=host).raw_host or None
    except (ValueError, UnicodeError):
        return None


def normalise_url(url: str) -> str | None:
    """Scheme and host normalised (see `normal_host`), default port and fragment dropped, empty
    path made '/'.

    Path and query are kept as they are: servers treat them case-sensitively. Returns None for a
    string that is not an absolute http(s) URL, which then simply matches nothing.
    """
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = normal_host(parts.hostname or "")
    if scheme not in _DEFAULT_PORTS or not host:
        return None
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and port != _DEFAULT_PORTS[scheme]:
        netloc += f":{port}"
    return urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))


def url_host(url: str) -> str | None:
    """The lowercased host of an http(s) URL, or None."""
    normal = normalise_url(url)
    if normal is None:
        return None
    return (urlsplit(normal).hostname or "").rstrip(".") or None


# The longest name DNS holds: no listed domain is longer, so no longer suffix can match one.
MAX_DOMAIN = 253


def domain_suffixes(host: str) -> list[str]:
    """`a.b.example.com` -> [a.b.example.com, b.example.com, example.com, com]: a listed domain covers
    its subdomains. Only suffixes a domain could be (`MAX_DOMAIN` characters at most), so that a
    host of a hundred thousand labels costs its length, not its square."""
    labels = host[-MAX_DOMAIN - 1 :].split(".")
    if len(host) > MAX_DOMAIN:
        labels = labels[1:]  # cut mid-label, or right after a dot: no suffix starts there
    return [".".join(labels[i:]) for i in range(len(labels))]
