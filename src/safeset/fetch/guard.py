"""What a fetch may connect to: http(s) URLs whose every address is public, unless allowed.

A dataset's URLs are untrusted input. Without a guard, a row pointing at `http://169.254.169.254/`
(a cloud's metadata service), `http://localhost:6379/` or a 10.x address makes the audit machine
attack its own network. Three checks, each on what the HTTP client itself will use:

- `check_url` parses the URL with yarl, the library aiohttp parses it with, so the host checked is
  the host the client connects to: `http://１２７.０.０.１/` (full-width digits), `127。0。0。1`
  (ideographic dots) and `①②⑦.0.0.1` all normalise (IDNA) to the IP literal `127.0.0.1`, and
  are refused here, before any request. The checked `URL` object is the one requested.
- `GuardedResolver` checks every address a name resolves to, at connect time, so a name cannot
  resolve to a public address when checked and a private one when used (DNS rebinding).
- `guarded_socket_factory` checks the address of every socket the client opens, literal or
  resolved: the last gate, whatever path a host took to get there.

Every redirect hop goes through all three again. Addresses that embed an IPv4 address (IPv4-mapped
and IPv4-compatible IPv6, NAT64 `64:ff9b::/96` and `64:ff9b:1::/48`, 6to4 `2002::/16`) are judged
by the IPv4 address inside them.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence

from aiohttp import ThreadedResolver
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from ..errors import UsageError

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

BLOCKED = "ssrf_blocked"
# IPv6 prefixes whose last 32 bits are an IPv4 address the packets end up at (RFC 4291, 6052, 8215).
_EMBEDDING = tuple(ipaddress.IPv6Network(n) for n in ("::/96", "::ffff:0:0/96", "64:ff9b::/96", "64:ff9b:1::/48"))


class Blocked(OSError):
    """The URL or an address it resolves to is not allowed. `reason` is the status reason code."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def parse_networks(networks: Sequence[str]) -> list[IpNetwork]:
    """CIDRs (`10.1.0.0/16`, `::1/128`) as networks; a bad one is a usage error naming it."""
    parsed = []
    for text in networks:
        try:
            parsed.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise UsageError(f"--allow-network {text!r} is not a network (expected CIDR such as 10.1.0.0/16)") from None
    return parsed


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries, where the network delivers it there."""
    if address.sixtofour is not None:
        return address.sixtofour
    if any(address in network for network in _EMBEDDING) and address != ipaddress.IPv6Address("::1"):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


class AddressPolicy:
    """Public unicast addresses are allowed; loopback, private, link-local, site-local, multicast,
    reserved and unspecified ones are not (an IPv6 address embedding an IPv4 one is judged by
    that), unless listed in `allowed` or `allow_private` is set (tests, internal mirrors)."""

    def __init__(self, allow_private: bool = False, allowed: Sequence[str] = ()):
        self.allow_private = allow_private
        self.allowed: list[IpNetwork] = parse_networks(allowed)
        # host or address text -> refused (True), permitted (False), or a name (None): a crawl
        # meets the same hosts again and again, and parsing addresses is most of a check's cost.
        self._verdicts: dict[str, bool | None] = {}

    def permits(self, address: IpAddress) -> bool:
        if any(address in network for network in self.allowed if network.version == address.version):
            return True
        if isinstance(address, ipaddress.IPv6Address):
            inner = embedded_ipv4(address)
            if inner is not None:
                return self.permits(inner)
        if address.is_multicast or address.is_unspecified:
            return False
        if self.allow_private:
            return True
        site_local = isinstance(address, ipaddress.IPv6Address) and address.is_site_local
        return address.is_global and not address.is_reserved and not site_local

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
            raise Blocked(BLOCKED)


def check_url(url: str | URL, policy: AddressPolicy) -> URL:
    """The URL as the client will request it, its host checked if it is an IP literal; else
    `Blocked` with the reason (`bad_url`, `bad_scheme`, `ssrf_blocked`)."""
    try:
        parsed = url if isinstance(url, URL) else URL(url)
        host = parsed.host
        parsed.port  # noqa: B018 (a malformed port raises here)
    except (ValueError, TypeError, UnicodeError):
        raise Blocked("bad_url") from None
    if parsed.scheme not in ("http", "https"):
        raise Blocked("bad_scheme")
    if not host:
        raise Blocked("bad_url")
    policy.check(host)
    return parsed


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


def guarded_socket_factory(policy: AddressPolicy) -> Callable[[tuple], socket.socket]:
    """For `aiohttp.TCPConnector(socket_factory=...)`: refuses to open a socket to an address the
    policy does not permit, before it connects anywhere."""

    def factory(addr_info: tuple) -> socket.socket:
        family, type_, proto, _, sockaddr = addr_info
        policy.check(str(sockaddr[0]), name_ok=False)
        return socket.socket(family=family, type=type_, proto=proto)

    return factory


def is_blocked(exc: BaseException | None) -> bool:
    """Whether a connection error came from the guard (directly, or among several addresses'
    errors, which the client merges into one message)."""
    return isinstance(exc, Blocked) or (exc is not None and BLOCKED in str(exc))
