"""One image fetch: redirects followed by hand (each hop checked), the body streamed into memory
under a byte cap, opt-out headers honoured, and every failure turned into a short reason code.

Nothing here touches the disk: the bytes stay in memory and go straight to hashing.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
from yarl import URL

from ..hashing.sniff import DECODED_KINDS, is_video, sniff
from .guard import AddressPolicy, Blocked, check_url, guarded_socket_factory, is_blocked
from .options import FetchOptions

_REDIRECTS = (301, 302, 303, 307, 308)
_NOT_IMAGE_TYPES = ("text/", "application/json", "application/xml", "application/xhtml", "application/javascript")


@dataclass(frozen=True)
class Fetched:
    """The outcome of one fetch. `data` when ok, and for a page (`not_image`: said to be text, and
    not an image by its bytes either), to be matched by its digests; `retry_after` when the
    failure may pass."""

    status: str  # "ok" | "fetch_failed" | "skipped_optout"
    reason: str = ""
    data: bytes | None = None
    content_type: str = ""
    retryable: bool = False
    retry_after: float | None = None


# Failures that may pass: the server or the path to it was overloaded or down for a while. They are
# retried within a run (with backoff), and `--retry-failed` fetches them again in a later one.
_PASSING = frozenset({"connect", "timeout", "truncated", "disconnected"})


def may_pass(reason: str) -> bool:
    return reason in _PASSING or reason == "http_429" or (reason.startswith("http_5") and len(reason) == 8)


def worth_refetching(reason: str | None) -> bool:
    """Whether a row that failed for `reason` is fetched again by `--retry-failed`: the failures
    that may pass, and DNS failures too (a resolver overloaded by a crawl fails names that exist;
    retrying at once would not help, an hour later it may)."""
    return reason is not None and (may_pass(reason) or reason == "dns")


def _failed(reason: str, retry_after: float | None = None) -> Fetched:
    return Fetched("fetch_failed", reason, retryable=may_pass(reason), retry_after=retry_after)


def optout_reason(headers) -> str | None:
    """`X-Robots-Tag: noai` / `noimageai` (any user agent) or TDMRep's `tdm-reservation: 1`."""
    for value in headers.getall("X-Robots-Tag", ()):
        for token in value.lower().split(","):
            directive = token.rsplit(":", 1)[-1].strip()
            if directive in ("noai", "noimageai"):
                return f"x-robots-tag: {directive}"
    if headers.get("tdm-reservation", "").strip() == "1":
        return "tdm-reservation"
    return None


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds: either a number, or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


# Why a URL must not be requested at all (a `domain` bank lists its host), or None.
Skip = Callable[[str], str | None]


async def fetch_one(
    session: aiohttp.ClientSession, url: str, options: FetchOptions, policy: AddressPolicy, skip: Skip | None = None
) -> Fetched:
    """Fetch `url`; every failure becomes a reason code. `skip` is asked about every hop."""
    try:
        return await _fetch(session, url, options, policy, skip)
    except Blocked as exc:
        return _failed(exc.reason)
    except aiohttp.ClientConnectorDNSError as exc:
        cause = exc.os_error
        return _failed(cause.reason if isinstance(cause, Blocked) else "dns")
    except aiohttp.ClientConnectorCertificateError:
        return _failed("tls")
    except aiohttp.ClientSSLError:
        return _failed("tls")
    except aiohttp.ClientConnectorError as exc:
        return _failed("ssrf_blocked" if is_blocked(exc.os_error) else "connect")
    except (TimeoutError, aiohttp.ServerTimeoutError):
        return _failed("timeout")
    except aiohttp.ClientPayloadError:
        return _failed("truncated")
    except aiohttp.ServerDisconnectedError:
        return _failed("disconnected")
    except aiohttp.InvalidURL:
        return _failed("bad_url")
    except (aiohttp.ClientError, ValueError, UnicodeError):
        return _failed("http_error")


async def _fetch(
    session: aiohttp.ClientSession, url: str, options: FetchOptions, policy: AddressPolicy, skip: Skip | None
) -> Fetched:
    timeout = aiohttp.ClientTimeout(
        total=options.total_timeout, sock_connect=options.connect_timeout, sock_read=options.read_timeout
    )
    target = check_url(url, policy)
    for _ in range(options.max_redirects + 1):
        if skip is not None and (reason := skip(str(target))):
            return Fetched("skipped_optout", reason)  # an opt-out is never requested, redirected to or not
        async with session.get(target, allow_redirects=False, timeout=timeout) as response:
            if response.status in _REDIRECTS:
                location = response.headers.get("Location")
                if not location:
                    return _failed("bad_redirect")
                try:
                    target = check_url(target.join(URL(location)), policy)
                except ValueError:
                    return _failed("bad_redirect")
                continue
            if options.respect_optout and (reason := optout_reason(response.headers)):
                return Fetched("skipped_optout", reason)
            if response.status == 429 or response.status >= 500:
                wait = retry_after_seconds(response.headers.get("Retry-After"))
                return _failed(f"http_{response.status}", retry_after=wait)
            if response.status != 200:
                return _failed(f"http_{response.status}")
            content_type = response.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
            if (response.content_length or 0) > options.max_bytes:
                return _failed("too_large")
            body = bytearray()
            async for chunk in response.content.iter_chunked(1 << 16):  # decompressed, if encoded
                body += chunk
                if len(body) > options.max_bytes:
                    return _failed("too_large")
            if content_type.startswith(_NOT_IMAGE_TYPES) and sniff(body) not in DECODED_KINDS and not is_video(body):
                # Checked all the same (its digests are matched), but a page: a failed download. A
                # header is only the server's word: an image (or video) sent as text/plain is one.
                return Fetched("fetch_failed", "not_image", data=bytes(body), content_type=content_type)
            return Fetched("ok", data=bytes(body), content_type=content_type)
    return _failed("too_many_redirects")


def make_session(options: FetchOptions, policy: AddressPolicy, version: str) -> aiohttp.ClientSession:
    from .guard import GuardedResolver

    connector = aiohttp.TCPConnector(
        resolver=GuardedResolver(policy),
        socket_factory=guarded_socket_factory(policy),
        limit=options.concurrency,
        limit_per_host=options.per_domain_concurrency,
        ttl_dns_cache=300,
    )
    return aiohttp.ClientSession(
        connector=connector,
        headers={"User-Agent": options.user_agent(version), "Accept": "image/*,*/*;q=0.5"},
        auto_decompress=True,
        trust_env=False,
    )


__all__ = ["FetchOptions", "Fetched", "fetch_one", "make_session", "optout_reason", "retry_after_seconds"]
