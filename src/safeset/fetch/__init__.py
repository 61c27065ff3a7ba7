"""Fetch: downloading the images of URL-only datasets (LAION metadata) into memory, politely and
safely, for hashing. Nothing fetched is written to disk unless kept (`--save-images`)."""

from importlib import import_module

from .options import FetchOptions

# The rest loads aiohttp: imported when first asked for, so that the command line and scans that
# do not fetch start without it.
_LAZY = {
    "Fetched": "client",
    "fetch_one": "client",
    "optout_reason": "client",
    "retry_after_seconds": "client",
    "worth_refetching": "client",
    "AddressPolicy": "guard",
    "Blocked": "guard",
    "check_url": "guard",
    "Fetcher": "scheduler",
    "FetchStats": "scheduler",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AddressPolicy",
    "Blocked",
    "FetchOptions",
    "FetchStats",
    "Fetched",
    "Fetcher",
    "check_url",
    "fetch_one",
    "optout_reason",
    "retry_after_seconds",
    "worth_refetching",
]
