"""Where webhooks may be delivered: public addresses only, unless an operator allows more.

An admin's subscription must not turn the dispatcher into a way of reaching what only the
service can reach (the database's host, a cloud's metadata service at 169.254.169.254, the
loopback interface, private networks). ``Targets.refusal`` is the one rule: every address a
host resolves to must be globally routable (not private, loopback, link-local, shared,
reserved, multicast or unspecified), or inside ``WEBHOOK_ALLOWED_NETWORKS``. It is checked when
a subscription is made, and again at every delivery, on the addresses the connection is then
made to (``guarded_transport``), so a name that resolves elsewhere later (DNS rebinding) is
refused too. Numeric spellings such as ``2130706433``, ``0x7f000001`` or ``127.1`` resolve to
the address they mean and are judged by it.
"""
from __future__ import annotations

import ipaddress
import socket
from typing import Iterable

import httpcore
import httpx

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


# IPv6 ranges that carry an IPv4 address a gateway may turn back into IPv4 (so 64:ff9b::7f00:1
# can reach 127.0.0.1): refused unless WEBHOOK_ALLOWED_NETWORKS names them.
_CARRIES_IPV4 = tuple(ipaddress.ip_network(n) for n in ("64:ff9b::/96", "64:ff9b:1::/48", "2002::/16",
                                                         "2001::/32", "::/96"))


class TargetRefused(Exception):
    """The receiver's address is not one webhooks may be delivered to."""


class TargetUnresolved(TargetRefused):
    """The receiver's host name does not resolve (now: it may later)."""


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """``WEBHOOK_ALLOWED_NETWORKS`` entries (``10.0.0.0/8``, ``127.0.0.1``, ``::1``) as networks."""
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address or network (e.g. 10.0.0.0/8)") from None
    return tuple(networks)


class Targets:
    def __init__(self, allowed: Iterable[Network] = ()):
        self.allowed = tuple(allowed)

    def _internal(self, address: Address) -> bool:
        if any(address in network for network in self.allowed):
            return False
        if isinstance(address, ipaddress.IPv6Address):
            if address.ipv4_mapped is not None:
                return self._internal(address.ipv4_mapped)
            if any(address in network for network in _CARRIES_IPV4):
                return True  # an IPv4 address inside (NAT64, 6to4, Teredo, IPv4-compatible): not judged here
        return not address.is_global or address.is_multicast

    def resolve(self, host: str, port: int) -> list[str]:
        """The addresses ``host`` resolves to, every one of them allowed; else TargetRefused."""
        try:
            found = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError):
            raise TargetUnresolved(f"the host {host!r} cannot be resolved") from None
        addresses = list(dict.fromkeys(info[4][0] for info in found))
        internal = [a for a in addresses if self._internal(ipaddress.ip_address(a.split("%")[0]))]
        if internal or not addresses:
            raise TargetRefused(f"the host {host!r} is an internal address ({', '.join(internal)}); webhooks go "
                                "to public addresses unless WEBHOOK_ALLOWED_NETWORKS allows it")
        return addresses

    def refusal(self, url: str) -> str | None:
        """Why webhooks may not be delivered to ``url`` (None: they may)."""
        try:
            parsed = httpx.URL(url)
            self.resolve(parsed.host, parsed.port or (443 if parsed.scheme == "https" else 80))
        except TargetRefused as refused:
            return str(refused)
        except (httpx.InvalidURL, ValueError):
            return "the URL cannot be used"
        return None


class _GuardedBackend(httpcore.SyncBackend):
    """Connects only to addresses ``Targets`` allows, resolved once and connected to as resolved
    (TLS still checks the certificate against the host name)."""

    def __init__(self, targets: Targets):
        self.targets = targets

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        addresses = self.targets.resolve(host, port)
        last: Exception | None = None
        for address in addresses:
            try:
                return super().connect_tcp(address, port, timeout, local_address, socket_options)
            except httpcore.ConnectError as error:
                last = error
        raise last or httpcore.ConnectError(f"could not connect to {host}")


def guarded_transport(targets: Targets) -> httpx.HTTPTransport:
    """An HTTP transport for webhook deliveries: no proxies from the environment, and connections
    only to addresses ``targets`` allows."""
    transport = httpx.HTTPTransport(trust_env=False)
    transport._pool._network_backend = _GuardedBackend(targets)  # httpcore's hook for how to connect
    return transport
