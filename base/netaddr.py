"""IP addresses and networks from client input, with IPv6 zones checked.

Python's ``ipaddress`` takes anything after an IPv6 '%' as the zone, newlines
included; here a zone must name an interface (or its index), and only where a zone
means something: on a link-local address, and only where the caller allows one.
"""

from __future__ import annotations

import ipaddress
import re

from base.errors import InvalidArgument
from base.text import shorten

# An interface name (at most IFNAMSIZ - 1 bytes, no '/', ':' or whitespace) or index.
_ZONE = re.compile(r"[A-Za-z0-9_.-]{1,15}")
_MAX_TEXT = 64  # longer than any address with a zone

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def ip_address(text: str, what: str, *, zone: bool = False) -> Address:
    """The address ``text`` names; ``zone`` allows "fe80::1%eth0" on link-local addresses."""
    if len(text) > _MAX_TEXT:
        raise InvalidArgument(f"{what} {shorten(text)} is not an IP address")
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        raise InvalidArgument(f"{what} {shorten(text)} is not an IP address") from None
    scope = getattr(addr, "scope_id", None)
    if scope is None:
        return addr
    if not zone:
        raise InvalidArgument(
            f"{what} {shorten(text)} has an IPv6 zone ('%...'), which is not allowed here"
        )
    if not _ZONE.fullmatch(scope) or scope in (".", ".."):
        raise InvalidArgument(
            f"{what} {shorten(text)}: the zone after '%' must be an interface name or index"
        )
    if not addr.is_link_local:
        raise InvalidArgument(
            f"{what} {shorten(text)}: only a link-local (fe80::/10) address takes a zone"
        )
    return addr


def ip_network(text: str, what: str) -> Network:
    """The network a CIDR such as "10.244.0.0/24" names (host bits must be zero)."""
    if len(text) > _MAX_TEXT or "%" in text:
        raise InvalidArgument(f"{what} {shorten(text)} is not a CIDR such as 10.244.0.0/24")
    try:
        return ipaddress.ip_network(text)
    except ValueError as exc:
        raise InvalidArgument(
            f"{what} {shorten(text)} is not a CIDR such as 10.244.0.0/24: {exc}"
        ) from None
