"""Client address resolution: X-Forwarded-For is believed only when the peer is a trusted proxy."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from functools import lru_cache

from starlette.types import Scope

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=64)
def parse_networks(items: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(item, strict=False) for item in items)


def ip_in(ip: str, networks: Iterable[Network]) -> bool:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(addr in net for net in networks)


def client_ip(scope: Scope, trusted: tuple[Network, ...]) -> str:
    client = scope.get("client")
    server = scope.get("server")
    peer: str
    if client:
        peer = str(client[0])
    elif server and server[1] is None:
        # A unix socket (GUNICORN_BIND=unix:...) has no peer address; only a process on this host
        # that may open the socket file can connect, so it counts as a loopback peer.
        peer = "127.0.0.1"
    else:
        peer = "unknown"
    if not trusted or not ip_in(peer, trusted):
        return peer
    forwarded = None
    for key, value in scope.get("headers", ()):
        if key == b"x-forwarded-for":
            forwarded = value.decode("latin-1")
    if not forwarded:
        return peer
    # Walk from the right: the first hop that is not one of our proxies is the client.
    hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not ip_in(hop, trusted):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return peer
    return hops[0] if hops else peer
