"""Fetch: downloading the images of URL-only datasets (LAION metadata) into memory, politely and
safely, for hashing. Nothing fetched is written to disk unless kept (`--save-images`)."""

from .client import Fetched, FetchOptions, fetch_one, optout_reason, retry_after_seconds, worth_refetching
from .guard import AddressPolicy, Blocked, check_url
from .scheduler import Fetcher, FetchStats

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
