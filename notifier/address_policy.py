"""Where a webhook may be sent (server-side request forgery): public addresses only, checked after
DNS resolution, unless a bank allow-lists its own receivers. Standard library only.

A webhook URL is checked when it is registered and again before every delivery: the host is
resolved, *every* address it resolves to must be public (or inside an allow-listed network), and
the delivery then connects to the address that was checked, so a name that resolves to a public
address at registration and to 127.0.0.1 later (DNS rebinding) is refused, not followed.

Refused: loopback, unspecified, link-local, private (RFC 1918), unique local (fc00::/7), shared
address space (CGNAT, 100.64.0.0/10), multicast, cloud metadata endpoints, and every other range
that is not globally routable (documentation, benchmarking, reserved, broadcast); IPv6 forms that
embed an IPv4 address (mapped, NAT64, 6to4, Teredo) are judged by that address.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], list[IPAddress]]

ALLOW_VARIABLE = "PLEDGEWATCH_WEBHOOK_ALLOW"

# First match names the reason; the order puts the most specific first.
_BLOCKED: tuple[tuple[str, str], ...] = (
    ("169.254.169.254/32", "cloud metadata"),
    ("169.254.170.2/32", "cloud metadata"),
    ("100.100.100.200/32", "cloud metadata"),
    ("fd00:ec2::254/128", "cloud metadata"),
    ("0.0.0.0/8", "unspecified"),
    ("::/128", "unspecified"),
    ("127.0.0.0/8", "loopback"),
    ("::1/128", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("fe80::/10", "link-local"),
    ("10.0.0.0/8", "private (RFC 1918)"),
    ("172.16.0.0/12", "private (RFC 1918)"),
    ("192.168.0.0/16", "private (RFC 1918)"),
    ("fc00::/7", "unique local (private IPv6)"),
    ("fec0::/10", "site-local (private IPv6)"),
    ("100.64.0.0/10", "shared address space (CGNAT)"),
    ("224.0.0.0/4", "multicast"),
    ("ff00::/8", "multicast"),
)
BLOCKED_NETWORKS: tuple[tuple[IPNetwork, str], ...] = tuple(
    (ipaddress.ip_network(cidr), reason) for cidr, reason in _BLOCKED)
NAT64 = ipaddress.ip_network("64:ff9b::/96")


class RefusedDestination(ValueError):
    """The URL's host may not receive webhooks; the message says why, in one line."""


def embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, NAT64, 6to4, Teredo client), if any."""
    if isinstance(ip, ipaddress.IPv4Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    return None


def blocked_reason(ip: IPAddress) -> str | None:
    """Why ``ip`` may not receive webhooks (e.g. ``"loopback"``), or None for a public address."""
    inner = embedded_ipv4(ip)
    if inner is not None:
        reason = blocked_reason(inner)
        return None if reason is None else f"{reason}, inside {ip}"
    for network, reason in BLOCKED_NETWORKS:
        if ip.version == network.version and ip in network:
            return reason
    if not ip.is_global:
        return "not publicly routable (reserved)"
    return None


def _host_key(host: str) -> str:
    return host.strip().rstrip(".").lower()


@dataclass(frozen=True)
class DestinationPolicy:
    """The allow-list for banks' internal receivers: networks (CIDRs or single addresses) whose
    addresses are accepted although not public, and host names (exact, or ``*.suffix`` for every
    name under it) that are accepted without resolving or checking their addresses."""

    networks: tuple[IPNetwork, ...] = ()
    hosts: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> DestinationPolicy:
        """From entries such as ``10.20.0.0/16``, ``127.0.0.1``, ``hooks.bank.internal`` or
        ``*.bank.internal``; ValueError names the first bad one."""
        networks: list[IPNetwork] = []
        hosts: set[str] = set()
        for raw in entries:
            entry = raw.strip()
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
                continue
            except ValueError:
                pass
            name = _host_key(entry)
            label = name.removeprefix("*.")
            if not _is_host_name(label) or label.replace(".", "").isdigit():
                raise ValueError(f"{entry!r} is neither a CIDR, an IP address nor a host name")
            hosts.add(name)
        return cls(tuple(networks), frozenset(hosts))

    def host_allowed(self, host: str) -> bool:
        name = _host_key(host)
        if name in self.hosts:
            return True
        return any(h.startswith("*.") and name.endswith(h[1:]) for h in self.hosts)

    def address_allowed(self, ip: IPAddress) -> bool:
        return any(ip.version == n.version and ip in n for n in self.networks)

    def refusal(self, host: str, ip: IPAddress) -> str | None:
        """Why ``host`` (resolving to ``ip``) is refused, or None."""
        if self.address_allowed(ip):
            return None
        reason = blocked_reason(ip)
        if reason is None:
            return None
        shown = (f"{host} resolves to {ip}, a" if _literal(host) is None else f"{ip} is a")
        return (f"{shown} {reason} address; webhooks go to public addresses only unless the "
                f"receiver is allow-listed ({ALLOW_VARIABLE})")


def _is_host_name(name: str) -> bool:
    labels = name.split(".")
    return 0 < len(name) <= 253 and all(
        0 < len(label) <= 63 and label[0] != "-" and label[-1] != "-"
        and all(c.isascii() and (c.isalnum() or c in "-_") for c in label) for label in labels)


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to (A and AAAA), in the resolver's order, without
    duplicates. OSError (socket.gaierror) when it does not resolve."""
    found: list[IPAddress] = []
    for *_rest, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if ip not in found:
            found.append(ip)
    return found


@dataclass(frozen=True)
class Destination:
    """Where a delivery goes: the URL's host and port, and the checked address to connect to
    (None for an allow-listed host name: the connection resolves it as usual)."""

    host: str
    port: int
    address: IPAddress | None


def check_destination(url: str, policy: DestinationPolicy,
                      resolver: Resolver = resolve) -> Destination:
    """Resolve the URL's host and check every address; RefusedDestination says why not."""
    parts = urlsplit(url)
    host = parts.hostname
    if not host:
        raise RefusedDestination("the URL needs a host")
    port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    if policy.host_allowed(host):
        return Destination(host, port, None)
    addresses = _literal(host)
    if addresses is None:
        try:
            addresses = resolver(host, port)
        except (OSError, UnicodeError) as exc:
            raise RefusedDestination(f"{host} does not resolve ({_dns_error(exc)})") from None
    if not addresses:
        raise RefusedDestination(f"{host} does not resolve")
    for ip in addresses:
        refusal = policy.refusal(host, ip)
        if refusal is not None:
            raise RefusedDestination(refusal)
    return Destination(host, port, addresses[0])


def _literal(host: str) -> list[IPAddress] | None:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        return None


def _dns_error(exc: Exception) -> str:
    if isinstance(exc, socket.gaierror) and exc.strerror:
        return exc.strerror
    return type(exc).__name__
