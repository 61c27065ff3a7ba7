"""URL columns hashed and normalised as Arrow arrays, not one Python call per row where it can
be helped: the MD5s a scan observes of every URL (`url_digests`), and the normal forms the `url`
and `domain` banks compare (`normal_urls`, `host_suffixes`). Plain URLs (nearly all of a web
crawl) go through a fast path of Arrow string functions; the rest through the one-URL functions
of `hashing.digests`, which tests hold the fast path to, URL for URL.
"""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import _md5
from .digests import MAX_DOMAIN, domain_suffixes, normalise_url, threatexchange_url_md5, url_host


def whole(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    """A column as one array (a table's columns come in chunks)."""
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


# URLs whose normal form (`hashing.normalise_url`) is plain string work: printable ASCII, http(s), a
# host name of letters, digits and hyphens ending in a letter label, no user, no port. The rest (a
# few in a web crawl) go through `normalise_url` itself; tests hold the two to the same answers.
# Character classes: printable ASCII `[!-~]`, without "#" `[!-"$-~]`, without "?" and "#" too.
_PARTS = (
    r"^(?P<scheme>[Hh][Tt][Tt][Pp][Ss]?)://(?P<host>(?:[A-Za-z0-9-]+\.)*[A-Za-z][A-Za-z0-9-]*)\.?"
    r'(?P<path>/[!-"$->@-~]*)?(?:\?(?P<query>[!-"$-~]*))?(?:#[!-~]*)?$'
)
# The same test without captures: RE2 answers it with a DFA, seven times as fast as extracting.
_SIMPLE = re.sub(r"\(\?P<\w+>", "(?:", _PARTS)
# The host of a URL known to be simple (a trailing dot included).
_HOST = r"^[A-Za-z]+://(?P<host>[A-Za-z0-9.-]*)"


def _split_simple(urls: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(positions of simple URLs, positions of the other non-null URLs)."""
    matched = pc.fill_null(pc.match_substring_regex(urls, _SIMPLE), False).to_numpy(zero_copy_only=False)
    others = np.flatnonzero(urls.is_valid().to_numpy(zero_copy_only=False) & ~matched)
    return np.flatnonzero(matched), others


def normal_urls(urls: pa.Array) -> pa.Array:
    """`normalise_url` of every URL of a column, null where it gives None."""
    urls = whole(urls)
    simple, others = _split_simple(urls)
    parts = pc.extract_regex(urls.take(pa.array(simple)), _PARTS)
    path = pc.struct_field(parts, "path")
    query = pc.struct_field(parts, "query")
    normal = pc.binary_join_element_wise(
        pc.ascii_lower(pc.struct_field(parts, "scheme")),
        "://",
        pc.ascii_lower(pc.struct_field(parts, "host")),
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


def host_suffixes(urls: pa.Array) -> tuple[np.ndarray, pa.DictionaryArray]:
    """(row, suffix) of every suffix of each URL's host (`url_host`, `domain_suffixes`): a listed
    domain covers its subdomains. The suffixes come dictionary-encoded: each distinct one is
    worked out, and looked up, once (a crawl's million rows hold a few thousand hosts)."""
    urls = whole(urls)
    simple, others = _split_simple(urls)
    named = pc.struct_field(pc.extract_regex(urls.take(pa.array(simple)), _HOST), "host")
    rest = pa.array([url_host(url) for url in urls.take(pa.array(others)).to_pylist()], pa.string())
    hosts = pc.dictionary_encode(
        _scatter(len(urls), (simple, pc.ascii_lower(pc.utf8_rtrim(named, "."))), (others, rest))
    )
    owner, found = _suffixes(hosts.dictionary)
    counts = np.bincount(owner, minlength=len(hosts.dictionary))
    suffixes = pc.dictionary_encode(found)
    rows = np.flatnonzero(hosts.indices.is_valid().to_numpy(zero_copy_only=False))
    host = hosts.indices.to_numpy(zero_copy_only=False)[rows].astype(np.int64)
    per_row = counts[host]
    # row j's suffixes are those of its host: positions first[host] ... of the hosts' list
    first = np.cumsum(counts) - counts
    block = np.cumsum(per_row) - per_row
    at = np.repeat(first[host] - block, per_row) + np.arange(per_row.sum())
    codes = suffixes.indices.to_numpy(zero_copy_only=False)[at]
    return np.repeat(rows, per_row), pa.DictionaryArray.from_arrays(pa.array(codes, pa.int32()), suffixes.dictionary)


def _suffixes(hosts: pa.Array) -> tuple[np.ndarray, pa.Array]:
    """(host, suffix) of every suffix of each host (`domain_suffixes`), host by host, longest
    first: a label at a time off every host at once, in Arrow (a crawl's batch holds tens of
    thousands of distinct hosts). A host longer than a domain can be goes through
    `domain_suffixes`, which keeps only the suffixes a domain could be."""
    long = pc.greater(pc.binary_length(hosts), MAX_DOMAIN).to_numpy(zero_copy_only=False)
    at = np.flatnonzero(~long)
    owners, values = [at], [hosts.take(pa.array(at))]
    current, left = values[0], at
    while len(current):
        dotted = pc.match_substring(current, ".")
        current, left = current.filter(dotted), left[dotted.to_numpy(zero_copy_only=False)]
        current = pc.list_element(pc.split_pattern(current, ".", max_splits=1), 1)
        owners.append(left)
        values.append(current)
    for host in np.flatnonzero(long).tolist():
        found = domain_suffixes(hosts[host].as_py())
        owners.append(np.full(len(found), host, np.int64))
        values.append(pa.array(found, pa.string()))
    order = np.argsort(np.concatenate(owners), kind="stable")  # by host; longest first within one
    return np.concatenate(owners)[order], pa.concat_arrays([v.cast(pa.string()) for v in values]).take(order)


# A byte -> its two lowercase hex characters, as one little-endian uint16.
_HEX_PAIRS = np.array([ord(f"{b:02x}"[0]) | ord(f"{b:02x}"[1]) << 8 for b in range(256)], "<u2")


def md5_digests(texts: pa.Array, skip: np.ndarray | None = None) -> np.ndarray:
    """The MD5 of every value of a string or binary column (its bytes, after the first `skip[i]`
    of value i if given) as a writable (n, 16) uint8 array; a null's row is meaningless. One C
    call over the column's buffers (`_md5.c`), none per value."""
    texts = whole(texts).cast(pa.large_binary())
    _, offsets, values = texts.buffers()
    bounds = np.frombuffer(offsets, np.int64)[texts.offset : texts.offset + len(texts) + 1]
    starts, ends = bounds[:-1], np.ascontiguousarray(bounds[1:])
    starts = np.minimum(starts + skip, ends) if skip is not None else np.ascontiguousarray(starts)
    digests = _md5.md5_many(b"" if values is None else values, starts, ends)
    return np.frombuffer(bytearray(digests), np.uint8).reshape(-1, 16)


def _hex_column(digests: np.ndarray, present: np.ndarray) -> pa.Array:
    """(n, 16) digests as a string column of hex, null where not `present`."""
    chars = _HEX_PAIRS[digests.reshape(-1)].view(np.uint8)
    offsets = pa.py_buffer(np.arange(0, len(chars) + 1, 32, dtype=np.int32).tobytes())
    absent = len(present) - int(np.count_nonzero(present))
    validity = pa.py_buffer(np.packbits(present, bitorder="little").tobytes()) if absent else None
    return pa.StringArray.from_buffers(len(present), offsets, pa.py_buffer(chars.tobytes()), validity, absent)


def url_md5_column(urls: pa.Array) -> pa.Array:
    """The hex MD5 of every URL of a column as held (`url_md5`), null where there is none."""
    urls = whole(urls).cast(pa.string())
    return _hex_column(md5_digests(urls), urls.is_valid().to_numpy(zero_copy_only=False))


def url_digests(urls: pa.Array) -> tuple[pa.Array, pa.Array]:
    """(`url_md5`, `url_md5_threatexchange`) of every URL of a column (see `hashing.digests`):
    the MD5 of the URL as held, and of python-threatexchange's form of it where that differs."""
    urls = whole(urls).cast(pa.string())
    present = urls.is_valid().to_numpy(zero_copy_only=False)
    held = md5_digests(urls)
    simple, others = _split_simple(urls)
    # pytx lower-cases the URL, parses and re-joins it, and drops its "scheme://": for a plain URL
    # without ";" params or an empty query or fragment (which re-joining drops), that is the
    # lower-cased URL after "://". Worked out for every row; the others' are replaced below.
    rejoined_apart = pc.or_(
        pc.or_(pc.match_substring(urls, ";"), pc.match_substring(urls, "?#")),
        pc.or_(pc.ends_with(urls, "?"), pc.ends_with(urls, "#")),
    )
    fast = np.zeros(len(urls), bool)
    fast[simple] = True
    fast &= ~pc.fill_null(rejoined_apart, True).to_numpy(zero_copy_only=False)
    lowered = pc.ascii_lower(urls)
    scheme = np.where(pc.fill_null(pc.starts_with(lowered, "https://"), False).to_numpy(zero_copy_only=False), 8, 7)
    pytx = md5_digests(lowered, skip=scheme)
    pytx_present = present.copy()
    slow = np.flatnonzero(present & ~fast)
    for row, url in zip(slow.tolist(), urls.take(pa.array(slow)).to_pylist(), strict=True):
        digest = threatexchange_url_md5(url)
        if digest is None:
            pytx_present[row] = False
        else:
            pytx[row] = np.frombuffer(bytes.fromhex(digest), np.uint8)
    differs = pytx_present & (pytx != held).any(axis=1)
    return _hex_column(held, present), _hex_column(pytx, differs)
