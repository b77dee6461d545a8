"""The worker's Gunicorn access-log wrapper (app/core/worker.py), driven in-process: a real Gunicorn
Logger writes the line with the shipped access_log_format, so each field can be pinned without
starting Gunicorn (tests/test_gunicorn_config.py checks one line from a real server)."""

from __future__ import annotations

import asyncio
import runpy
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from gunicorn.config import Config
from gunicorn.glogging import Logger

from app.core import worker
from app.core.worker import decode_headers, gunicorn_access_log, wsgi_environ

SHIPPED_FORMAT = str(
    runpy.run_path(str(Path(__file__).resolve().parents[2] / "gunicorn_config.py"))[
        "access_log_format"
    ]
)


class AccessLog:
    def __init__(self, path: Path, log: Logger) -> None:
        self.path = path
        self.log = log

    def lines(self) -> list[str]:
        for handler in self.log.access_log.handlers:
            handler.flush()
        return self.path.read_text().splitlines()


@pytest.fixture
def make_access_log(tmp_path: Path) -> Iterator[Callable[[str], AccessLog]]:
    """A real Gunicorn Logger writing its access log in a given format to a file."""
    logs: list[Logger] = []

    def factory(access_log_format: str) -> AccessLog:
        cfg = Config()
        cfg.set("accesslog", str(tmp_path / "access.log"))
        cfg.set("access_log_format", access_log_format)
        logs.append(Logger(cfg))
        return AccessLog(tmp_path / "access.log", logs[-1])

    yield factory
    for log in logs:
        for handler in list(log.access_log.handlers):
            log.access_log.removeHandler(handler)
            handler.close()


@pytest.fixture
def access_log(make_access_log: Callable[[str], AccessLog]) -> AccessLog:
    return make_access_log(SHIPPED_FORMAT)


def http_scope(**overrides: Any) -> dict[str, Any]:
    scope: dict[str, Any] = {
        "type": "http",
        "http_version": "1.1",
        "method": "GET",
        "path": "/api/v1/asset-classes",
        "raw_path": b"/api/v1/asset-classes",
        "query_string": b"",
        "client": ("10.1.2.3", 40000),
        "headers": [(b"user-agent", b"probe/1")],
    }
    scope.update(overrides)
    return scope


def serve(app: Any, log: Logger, scope: dict[str, Any]) -> None:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        pass

    asyncio.run(gunicorn_access_log(app, log)(scope, receive, send))


def test_bytes_count_every_body_chunk_of_a_streamed_response(access_log: AccessLog) -> None:
    """%(b)s is the sum of all body chunks (a streamed or gzip-streamed answer), not the last."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"a" * 700, "more_body": True})
        await send({"type": "http.response.body", "body": b"b" * 300, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    serve(app, access_log.log, http_scope())
    [line] = access_log.lines()
    assert " 200 1000 " in line, line


def test_an_app_that_sends_nothing_is_logged_as_500(access_log: AccessLog) -> None:
    """A request that ends without a response start (the app failed) logs 500 and 0 bytes."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        serve(app, access_log.log, http_scope())
    [line] = access_log.lines()
    assert " 500 0 " in line, line


def test_duration_is_logged_in_milliseconds(
    access_log: AccessLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request that took 1.5 s (fake clock) logs `1500ms`: the time the app took, in ms."""
    clock = iter([100.0, 101.5])
    monkeypatch.setattr(worker, "time", SimpleNamespace(perf_counter=lambda: next(clock)))

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    serve(app, access_log.log, http_scope())
    [line] = access_log.lines()
    assert ' 204 0 1500ms "probe/1"' in line, line


def test_wsgi_environ_keeps_the_request_as_sent() -> None:
    """RAW_URI is the undecoded path plus query, SERVER_PROTOCOL the client's HTTP version, and a
    peer without an address (unix socket) is `-`."""
    scope = http_scope(
        http_version="1.0",
        method="POST",
        path="/api/v1/asset-classes/RMBS x",
        raw_path=b"/api/v1/asset-classes/RMBS%20x",
        query_string=b"a=1&b=%41",
        client=None,
        headers=[(b"x-request-id", b"r-1"), (b"user-agent", b"probe/1")],
    )
    assert wsgi_environ(scope, decode_headers(scope["headers"])) == {
        "REMOTE_ADDR": "-",
        "REQUEST_METHOD": "POST",
        "RAW_URI": "/api/v1/asset-classes/RMBS%20x?a=1&b=%41",
        "SERVER_PROTOCOL": "HTTP/1.0",
        "PATH_INFO": "/api/v1/asset-classes/RMBS x",
        "QUERY_STRING": "a=1&b=%41",
        "HTTP_X_REQUEST_ID": "r-1",
        "HTTP_USER_AGENT": "probe/1",
    }


def test_request_and_response_header_atoms_are_filled(
    make_access_log: Callable[[str], AccessLog],
) -> None:
    """`%({name}i)s` reads the request's headers and `%({name}o)s` the response's."""
    log = make_access_log("%({x-forwarded-for}i)s %({content-type}o)s")

    async def app(scope: Any, receive: Any, send: Any) -> None:
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"{}"})

    serve(app, log.log, http_scope(headers=[(b"x-forwarded-for", b"203.0.113.9")]))
    assert log.lines() == ["203.0.113.9 application/json"]


def test_lifespan_passes_through_unlogged(access_log: AccessLog) -> None:
    """Only HTTP requests are logged: the lifespan scope reaches the app and writes no line."""
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    serve(app, access_log.log, {"type": "lifespan", "asgi": {"version": "3.0"}})
    assert seen == ["lifespan"]
    assert not access_log.path.exists() or access_log.lines() == []
