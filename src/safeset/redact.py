"""Credentials in URIs, masked wherever safeset writes or says a URI it was given.

Inputs and outputs on object storage may carry credentials (`s3://KEY:SECRET@bucket/...`, or a
store's query options such as `?secret_key=...`, `?token=...`, a signature). A scan needs them to
reach the store, but they must never reach report.json, the run state, done-markers, error
messages or progress lines: all of those pass through `redact`. Dataset URLs in the results are
data, and are left as the dataset holds them.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

MASK = "***"
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>,;)\]]+")
# Query options whose value is a secret: keys, tokens, passwords, signatures (AWS, GCS, Azure SAS).
_SECRET_OPTION = re.compile(r"secret|token|passw|credential|signature|^sig$|key|auth", re.IGNORECASE)


def redact_uri(uri: str) -> str:
    """The URI with its user info and the values of its secret query options masked."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return MASK
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{MASK}@{netloc.rpartition('@')[2]}"
    query = "&".join(
        f"{name}={MASK}" if sep and _SECRET_OPTION.search(name) else f"{name}{sep}{value}"
        for name, sep, value in (pair.partition("=") for pair in parts.query.split("&") if pair)
    )
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def redact(value: Any) -> Any:
    """`value` with every URI in it redacted: in a string, or in the strings of a JSON-like value."""
    if isinstance(value, str):
        return _URI.sub(lambda m: redact_uri(m.group(0)), value) if "://" in value else value
    if isinstance(value, dict):
        return {redact(k): redact(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    return value
