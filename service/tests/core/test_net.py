from __future__ import annotations

from typing import Any

from app.core.net import client_ip, parse_networks

LOOPBACK = parse_networks(("127.0.0.1/32",))
FORWARDED = [(b"x-forwarded-for", b"203.0.113.9")]


def scope(**values: Any) -> dict[str, Any]:
    return {"type": "http", "headers": FORWARDED, **values}


def test_a_unix_socket_peer_is_a_local_proxy() -> None:
    """uvicorn gives no client address on a unix socket (GUNICORN_BIND=unix:...): the proxy in
    front is local, so its X-Forwarded-For names the client, as it does over 127.0.0.1."""
    unix = scope(client=None, server=("/run/asset-classes-api/app.sock", None))
    assert client_ip(unix, LOOPBACK) == "203.0.113.9"
    tcp = scope(client=("127.0.0.1", 40000), server=("127.0.0.1", 8000))
    assert client_ip(tcp, LOOPBACK) == "203.0.113.9"


def test_an_unknown_peer_is_not_trusted() -> None:
    assert client_ip(scope(client=None, server=("127.0.0.1", 8000)), LOOPBACK) == "unknown"
    assert client_ip(scope(client=None), LOOPBACK) == "unknown"
    untrusted_unix = scope(client=None, server=("/run/app.sock", None))
    assert client_ip(untrusted_unix, parse_networks(("10.0.0.0/8",))) == "127.0.0.1"
