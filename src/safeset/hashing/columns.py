"""URL columns hashed and normalised as Arrow arrays, not one Python call per row where it can
be helped: the MD5s a scan observes of every URL (`url_digests`), and the normal forms the `url`
and `domain` banks compare (`normal_urls`, `host_suffixes`). Plain URLs (nearly all of a web
crawl) go through a fast path of Arrow string functions; the rest through the one-URL functions
of `hashing.digests`, which tests hold the fast path to, URL for URL.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .digests import domain_suffixes, normalise_url, threatexchange_url_md5, url_host


def whole(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    """A column as one array (a table's columns come in chunks)."""
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


# URLs whose normal form (`hashing.normalise_url`) is plain string work: printable ASCII, http(s), a
# host name of letters, digits and hyphens ending in a letter label, no user, no port. The rest (a
# few in a web crawl) go through `normalise_url` itself; tests hold the two to the same answers.
# Character classes: printable ASCII `[!-~]`, without "#" `[!-"$-~]`, without "?" and "#" too.
_SIMPLE = (
    r"^(?P<scheme>[Hh][Tt][Tt][Pp][Ss]?)://(?P<host>(?:[A-Za-z0-9-]+\.)*[A-Za-z][A-Za-z0-9-]*)\.?"
    r'(?P<path>/[!-"$->@-~]*)?(?:\?(?P<query>[!-"$-~]*))?(?:#[!-~]*)?$'
)


def _split_simple(urls: pa.Array) -> tuple[np.ndarray, pa.StructArray, np.ndarray]:
    """(positions of simple URLs, their parts, positions of the other non-null URLs)."""
    urls = whole(urls)
    parts = pc.extract_regex(urls, _SIMPLE)
    matched = parts.is_valid().to_numpy(zero_copy_only=False)
    simple = np.flatnonzero(matched)
    others = np.flatnonzero(urls.is_valid().to_numpy(zero_copy_only=False) & ~matched)
    return simple, parts.filter(pa.array(matched)), others


def normal_urls(urls: pa.Array) -> pa.Array:
    """`normalise_url` of every URL of a column, null where it gives None."""
    urls = whole(urls)
    simple, parts, others = _split_simple(urls)
    path = pc.struct_field(parts, "path")
    query = pc.struct_field(parts, "query")
    normal = pc.binary_join_element_wise(
        pc.utf8_lower(pc.struct_field(parts, "scheme")),
        "://",
        pc.utf8_lower(pc.struct_field(parts, "host")),
        pc.if_else(pc.equal(path, ""), "/", path),
        pc.if_else(pc.equal(query, ""), "", pc.binary_join_element_wise("?", query, "")),
        "",
    )
    rest = pa.array([normalise_url(url) for url in urls.take(pa.array(others)).to_pylist()], pa.string())
    return _scatter(len(urls), (simple, normal), (others, rest))


def _scatter(n: int, *pieces: tuple[np.ndarray, pa.Array]) -> pa.Array:
    """A string column of `n` rows from (positions, values) pieces; null elsewhere."""
    where = np.full(n, -1, np.int64)
    start = 0
    for positions, values in pieces:
        where[positions] = np.arange(start, start + len(values))
        start += len(values)
    joined = pa.concat_arrays([whole(values).cast(pa.string()) for _, values in pieces])
    return joined.take(pa.array(where, mask=where < 0))


def host_suffixes(urls: pa.Array) -> tuple[np.ndarray, pa.Array]:
    """(row, suffix) of every suffix of each URL's host (`url_host`, `domain_suffixes`): a listed
    domain covers its subdomains. Worked out once per distinct host."""
    urls = whole(urls)
    simple, parts, others = _split_simple(urls)
    rest = pa.array([url_host(url) for url in urls.take(pa.array(others)).to_pylist()], pa.string())
    hosts = _scatter(len(urls), (simple, pc.utf8_lower(pc.struct_field(parts, "host"))), (others, rest))
    encoded = pc.dictionary_encode(hosts)
    suffixes = pa.array([domain_suffixes(h) for h in encoded.dictionary.to_pylist()], pa.list_(pa.string()))
    rows = np.flatnonzero(encoded.indices.is_valid().to_numpy(zero_copy_only=False))
    per_row = suffixes.take(encoded.indices.take(pa.array(rows)))
    values = pc.list_flatten(per_row)
    parents = pc.list_parent_indices(per_row).to_numpy().astype(np.int64)
    return rows[parents], values


_HEX = np.frombuffer(b"0123456789abcdef", np.uint8)


def md5_hex(texts: pa.Array) -> pa.Array:
    """The MD5 of each string of a column (its UTF-8 bytes) as 32 lowercase hex characters; null
    for null. One hashlib call per string, the rest in numpy: no hex string made in Python."""
    texts = whole(texts)
    present = np.flatnonzero(texts.is_valid().to_numpy(zero_copy_only=False))
    values = texts.take(pa.array(present)).cast(pa.binary()).to_pylist()
    md5 = hashlib.md5
    digests = np.frombuffer(b"".join([md5(v, usedforsecurity=False).digest() for v in values]), np.uint8)
    chars = np.empty(len(digests) * 2, np.uint8)
    chars[0::2], chars[1::2] = _HEX[digests >> 4], _HEX[digests & 15]
    offsets = pa.py_buffer(np.arange(0, len(chars) + 1, 32, dtype=np.int32).tobytes())
    hexes = pa.StringArray.from_buffers(len(values), offsets, pa.py_buffer(chars.tobytes()))
    return _scatter(len(texts), (present, hexes))


def url_digests(urls: pa.Array) -> tuple[pa.Array, pa.Array]:
    """(`url_md5`, `url_md5_threatexchange`) of every URL of a column (see `hashing.digests`):
    the MD5 of the URL as held, and of python-threatexchange's form of it where that differs."""
    urls = whole(urls).cast(pa.string())
    held = md5_hex(urls)
    simple, _, others = _split_simple(urls)
    # pytx lower-cases the URL, parses and re-joins it, and drops its "scheme://": for a plain URL
    # without ";" params or an empty query or fragment (which re-joining drops), that is the
    # lower-cased URL after "://".
    plain = urls.take(pa.array(simple))
    rejoined_alike = pc.invert(pc.match_substring_regex(plain, r";|\?$|#$|\?#"))
    keep = rejoined_alike.to_numpy(zero_copy_only=False)
    fast = simple[keep]
    lowered = pc.utf8_lower(plain.filter(pa.array(keep)))
    stripped = pc.replace_substring_regex(lowered, r"^https?://", "", max_replacements=1)
    slow = np.sort(np.concatenate([others, simple[~keep]]))
    rest = [threatexchange_url_md5(u) for u in urls.take(pa.array(slow)).to_pylist()]
    pytx = _scatter(len(urls), (fast, md5_hex(stripped)), (slow, pa.array(rest, pa.string())))
    differs = pc.fill_null(pc.not_equal(pytx, held), True)
    return held, pc.if_else(differs, pytx, pa.scalar(None, pa.string()))
