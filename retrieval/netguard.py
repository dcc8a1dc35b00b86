"""Which addresses fetching may reach: only public ones unless the person allows private networks.

The fetcher resolves every hop's hostname here and connects to an address checked here, so neither a
redirect nor a DNS answer that changes between check and connect can reach the local network.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from typing import Protocol

from sala_report.retrieval.errors import AddressRefused

ALLOWED_SCHEMES = ("http", "https")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class Resolver(Protocol):
    def __call__(self, host: str, port: int) -> list[str]:
        """Return the IP addresses `host` resolves to (blocking; the fetcher runs it in a thread)."""
        ...


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses: list[str] = []
    for *_, sockaddr in infos:
        if sockaddr[0] not in addresses:
            addresses.append(sockaddr[0])
    return addresses


def is_public_address(ip: IPAddress) -> bool:
    """True for globally routable unicast addresses; loopback, private, link-local, CGNAT, reserved,
    multicast and unspecified addresses are not public. An IPv6 address that carries an IPv4 address
    (IPv4-mapped, IPv4-compatible, NAT64, 6to4, Teredo) is public only if the IPv4 it carries is: a
    translator or relay on the path delivers it to that IPv4 address."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return is_public_address(ip.ipv4_mapped)
        if not all(is_public_address(v4) for v4 in embedded_ipv4(ip)):
            return False
    return ip.is_global and not ip.is_multicast


_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
_NAT64_WELL_KNOWN = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052


def embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address stands for, by the standard embeddings; empty for plain IPv6."""
    if ip.ipv4_mapped is not None:
        return [ip.ipv4_mapped]
    if ip.sixtofour is not None:
        return [ip.sixtofour]
    if ip.teredo is not None:
        return list(ip.teredo)  # (server, client)
    if ip in _NAT64_WELL_KNOWN or (ip in _IPV4_COMPATIBLE and int(ip) > 1):  # :: and ::1 are judged as IPv6
        return [ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)]
    return []


def describe_address(ip: IPAddress) -> str:
    if isinstance(ip, ipaddress.IPv6Address):
        for v4 in embedded_ipv4(ip):
            if not is_public_address(v4):
                return f"{describe_address(v4)} ({v4} in IPv6 form)"
    for flag in ("loopback", "link_local", "private", "multicast", "reserved", "unspecified"):
        if getattr(ip, f"is_{flag}"):
            return flag.replace("_", "-")
    return "not public"


def parse_ip(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def check_scheme(url: str, scheme: str) -> None:
    if scheme not in ALLOWED_SCHEMES:
        raise AddressRefused(f"{url}: only http and https URLs are read, not '{scheme or 'no scheme'}:'")


def checked_addresses(
    host: str,
    port: int,
    *,
    resolver: Resolver,
    allow_private: bool,
    is_public: Callable[[IPAddress], bool] = is_public_address,
) -> list[str]:
    """Resolve `host` and return the addresses to connect to; refuse if any of them is not public.

    Refusing when any address is private (not only the first) matters: an attacker's DNS can mix a
    public and a private answer and hope the client picks the private one.
    """
    literal = parse_ip(host)
    if literal is not None:
        addresses = [literal]
    else:
        try:
            addresses = [ipaddress.ip_address(a.split("%", 1)[0]) for a in resolver(host, port)]
        except (OSError, UnicodeError) as e:
            raise OSError(f"cannot resolve {host}: {e}") from e
        if not addresses:
            raise OSError(f"cannot resolve {host}: no addresses")
    if not allow_private:
        for ip in addresses:
            if not is_public(ip):
                shown = host if literal is not None else f"{host} resolves to {ip}, which"
                raise AddressRefused(
                    f"{shown} is a {describe_address(ip)} address; private networks are not read "
                    "unless allowed (--allow-private-addresses or fetch.allow_private_addresses)"
                )
    return [str(ip) for ip in addresses]
