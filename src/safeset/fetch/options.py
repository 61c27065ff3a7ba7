"""How politely and how safely to fetch: the settings of `--fetch`, apart from the fetching code
(and its HTTP stack), so that the command line can describe them without loading it."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..model import DEFAULT_MAX_BYTES
from ..options import option


@dataclass(frozen=True)
class FetchOptions:
    """How politely and how safely to fetch. Everything a user may want to tune is here."""

    concurrency: int = field(default=64, metadata=option("Downloads in flight over all domains, per worker.", min=1))
    per_domain_concurrency: int = field(
        default=4, metadata=option("Downloads in flight to one domain, shared by all workers.", min=1)
    )
    per_domain_rate: float = field(
        default=8.0, metadata=option("Requests per second to one domain, shared by all workers.", min=0.01)
    )
    retries: int = field(
        default=3,
        metadata=option(
            "Retries after a timeout, a connection failure, 429 or 5xx (exponential backoff, Retry-After).",
            flag="--fetch-retries",
            min=0,
        ),
    )
    backoff: float = 1.0  # first retry delay in seconds; doubles each attempt, with jitter
    max_backoff: float = 60.0
    max_retry_after: float = 120.0  # a longer Retry-After gives up on the row instead of waiting
    connect_timeout: float = 10.0
    read_timeout: float = 20.0  # between two reads of the body
    total_timeout: float = field(
        default=60.0,
        metadata=option(
            "Seconds one download may take in all (connect 10 s and 20 s between reads at most).",
            flag="--timeout",
            min=0.1,
        ),
    )
    max_bytes: int = DEFAULT_MAX_BYTES
    max_redirects: int = 5
    contact: str = field(default="", metadata=option("How to reach you (URL or e-mail), sent in the user agent."))
    allow_private: bool = field(
        default=False,
        metadata=option(
            "Allow URLs on loopback, private and link-local addresses (tests, internal mirrors).",
            flag="--allow-private-networks",
        ),
    )
    allowed_networks: tuple[str, ...] = field(
        default=(),
        metadata=option(
            "Allow one network (e.g. 10.1.0.0/16) that is otherwise refused (repeatable).",
            flag="--allow-network",
            metavar="CIDR",
        ),
    )
    respect_optout: bool = field(
        default=True,
        metadata=option(
            "Fetch even where X-Robots-Tag says noai/noimageai or tdm-reservation is 1.",
            flag="--ignore-optout",
            invert=True,
        ),
    )

    def __post_init__(self) -> None:
        from .guard import parse_networks

        parse_networks(self.allowed_networks)  # a bad CIDR is a usage error now, not in a worker later

    def user_agent(self, version: str) -> str:
        contact = f"; contact: {self.contact}" if self.contact else ""
        return f"safeset/{version} (dataset safety audit; hashes images, keeps none{contact})"
