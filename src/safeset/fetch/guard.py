"""What a fetch may connect to: http(s) URLs whose every address is public, unless allowed.

A dataset's URLs are untrusted input. Without a guard, a row pointing at `http://169.254.169.254/`
(a cloud's metadata service), `http://localhost:6379/` or a 10.x address makes the audit machine
attack its own network. Every address a name resolves to is checked, at connect time, through the
HTTP client's resolver, so a name cannot resolve to a public address when checked and a private one
when used (DNS rebinding); IP literals are checked before the request; every redirect hop goes
through both checks again.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from urllib.parse import urlsplit

from aiohttp import ThreadedResolver
from aiohttp.abc import AbstractResolver, ResolveResult

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class Blocked(OSError):
    """The URL or an address it resolves to is not allowed. `reason` is the status reason code."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class AddressPolicy:
    """Public unicast addresses are allowed; loopback, private, link-local, multicast, reserved and
    unspecified ones (IPv4 and IPv6, IPv4-mapped IPv6 included) are not, unless listed in
    `allowed` or `allow_private` is set (tests, internal mirrors)."""

    def __init__(self, allow_private: bool = False, allowed: Sequence[str] = ()):
        self.allow_private = allow_private
        self.allowed: list[IpNetwork] = [ipaddress.ip_network(n, strict=False) for n in allowed]
        # host or address text -> refused (True), permitted (False), or a name (None): a crawl
        # meets the same hosts again and again, and parsing addresses is most of a check's cost.
        self._verdicts: dict[str, bool | None] = {}

    def permits(self, address: IpAddress) -> bool:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if any(address in network for network in self.allowed if network.version == address.version):
            return True
        if self.allow_private:
            return not address.is_multicast and not address.is_unspecified
        return address.is_global and not address.is_multicast

    def check(self, host: str, name_ok: bool = True) -> None:
        """Refuse an address (or a URL's host, when it is an IP literal) the policy does not permit.
        A host name passes if `name_ok`: its addresses are checked when it is resolved."""
        try:
            refused = self._verdicts[host]
        except KeyError:
            try:
                refused = not self.permits(ipaddress.ip_address(host.split("%", 1)[0]))
            except ValueError:
                refused = None  # not an address
            if len(self._verdicts) >= 1 << 16:
                self._verdicts.clear()
            self._verdicts[host] = refused
        if refused or (refused is None and not name_ok):
            raise Blocked("ssrf_blocked")


def check_url(url: str, policy: AddressPolicy) -> tuple[str, str]:
    """(scheme, host) of an http(s) URL, its host checked if it is an IP literal; else `Blocked`."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 (a malformed port raises here)
    except ValueError:
        raise Blocked("bad_url") from None
    if parts.scheme not in ("http", "https"):
        raise Blocked("bad_scheme")
    if not host:
        raise Blocked("bad_url")
    policy.check(host)
    return parts.scheme, host


class GuardedResolver(AbstractResolver):
    """Resolves with the system resolver and refuses the name if any of its addresses is refused."""

    def __init__(self, policy: AddressPolicy):
        self._policy = policy
        self._resolver = ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        try:
            found = await self._resolver.resolve(host, port, family)
        except OSError:
            raise Blocked("dns") from None
        for entry in found:
            self._policy.check(entry["host"], name_ok=False)
        return found

    async def close(self) -> None:
        await self._resolver.close()
