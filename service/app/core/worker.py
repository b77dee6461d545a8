"""Gunicorn worker: uvicorn-worker's UvicornWorker whose shutdown does not reset requests in flight.

When a uvicorn worker stops (Gunicorn's max_requests recycling, a reload, a stop) it closes at once
every connection that is not in the middle of a request. Some of those already carry a request the
worker has not read yet: connections it accepted a moment ago (asyncio accepts in batches), and a
proxy's kept-alive connections that nginx just picked. Closing a socket with unread data sends a TCP
reset; nginx retries a GET elsewhere but answers a POST or PATCH with 502. Measured through nginx at
1,000 POST/s with max_requests 1000: about one 502 per recycle (roles/app/README.md).

Here an idle connection is given DRAIN_SECONDS instead: a request that arrives in that time is
served with `Connection: close`, then the connection closes; one that stays silent is closed after
it. Requests in progress are untouched (they finish with `Connection: close`, as before).

It also writes Gunicorn's access log itself, in Gunicorn's `access_log_format` (gunicorn_config.py:
request id, duration in ms, ...). UvicornWorker hands Gunicorn's access-log handlers to uvicorn's
own access logger, whose fixed format ignores `access_log_format`, so that setting had no effect.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable
from typing import Any, ClassVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn_worker import UvicornWorker

# A request already on the wire arrives well within this; the stopping worker waits this long.
DRAIN_SECONDS = 0.2


class DrainingHttpToolsProtocol(HttpToolsProtocol):
    draining = False

    def shutdown(self) -> None:
        if self.cycle is None or self.cycle.response_complete:
            self.draining = True
            self.loop.call_later(DRAIN_SECONDS, self._close_if_idle)
        else:
            self.cycle.keep_alive = False

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        if self.draining and self.cycle is not None:
            self.cycle.keep_alive = False  # answer it, then close

    def _close_if_idle(self) -> None:
        idle = self.cycle is None or self.cycle.response_complete
        if idle and not self.transport.is_closing():
            self.transport.close()


class AccessResponse:
    """The response as Gunicorn's access logger reads it: status, headers, bytes sent."""

    def __init__(self) -> None:
        self.status = 500  # what uvicorn answers when the app sends nothing
        self.headers: list[tuple[str, str]] = []
        self.sent = 0


def decode_headers(raw: Iterable[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    """ASGI header pairs as the (name, value) strings Gunicorn's access logger reads."""
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in raw]


def wsgi_environ(scope: Scope, headers: list[tuple[str, str]]) -> dict[str, str]:
    """The WSGI-style environ Gunicorn's access-log atoms are read from; `headers` are the
    request's, decoded once by the caller."""
    query = scope.get("query_string", b"").decode("latin-1")
    raw_path = scope.get("raw_path") or scope["path"].encode()
    environ = {
        "REMOTE_ADDR": scope["client"][0] if scope.get("client") else "-",
        "REQUEST_METHOD": scope["method"],
        "RAW_URI": raw_path.decode("latin-1") + (f"?{query}" if query else ""),
        "SERVER_PROTOCOL": f"HTTP/{scope['http_version']}",
        "PATH_INFO": scope["path"],
        "QUERY_STRING": query,
    }
    for key, value in headers:
        environ["HTTP_" + key.upper().replace("-", "_")] = value
    return environ


def gunicorn_access_log(app: ASGIApp, log: Any) -> ASGIApp:
    """Wrap `app` so that every HTTP request writes one line to Gunicorn's access log (`log`)."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not log.access_log_enabled:
            await app(scope, receive, send)
            return
        response = AccessResponse()

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                response.status = message["status"]
                response.headers = decode_headers(message.get("headers", ()))
            elif message["type"] == "http.response.body":
                response.sent += len(message.get("body", b""))
            await send(message)

        start = time.perf_counter()
        try:
            await app(scope, receive, send_wrapper)
        finally:
            elapsed = dt.timedelta(seconds=time.perf_counter() - start)
            request_headers = decode_headers(scope["headers"])
            log.access(response, request_headers, wsgi_environ(scope, request_headers), elapsed)

    return wrapped


class DrainingUvicornWorker(UvicornWorker):
    CONFIG_KWARGS: ClassVar[dict[str, Any]] = {
        **UvicornWorker.CONFIG_KWARGS,
        "http": DrainingHttpToolsProtocol,
        "access_log": False,  # gunicorn_access_log writes the access log instead
    }
    wsgi: ASGIApp  # set by Gunicorn's Worker.load_wsgi (the name is Gunicorn's)

    def load_wsgi(self) -> None:
        super().load_wsgi()
        self.wsgi = gunicorn_access_log(self.wsgi, self.log)
