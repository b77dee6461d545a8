from __future__ import annotations

import asyncio
import io
import json
import logging
import logging.config
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from app.api.deps import get_redis
from app.core.logging import JsonFormatter, request_id_var
from app.core.middleware import RequestContextMiddleware
from app.main import create_app
from tests.conftest import metric_value

SERVICE = Path(__file__).resolve().parents[2]


def test_json_formatter_carries_request_id_and_extras() -> None:
    record = logging.LogRecord("app.api", logging.INFO, __file__, 1, "hello %s", ("x",), None)
    record.pool_id = 7
    token = request_id_var.set("req-1")
    try:
        line = JsonFormatter().format(record)
    finally:
        request_id_var.reset(token)
    data = json.loads(line)
    assert data["message"] == "hello x"
    assert data["request_id"] == "req-1"
    assert data["pool_id"] == 7
    assert data["logger"] == "app.api"
    assert data["level"] == "INFO"
    assert "\n" not in line


def test_json_formatter_carries_the_formatted_exception() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        exc_info = sys.exc_info()
    record = logging.LogRecord("app.api", logging.ERROR, __file__, 1, "failed", (), exc_info)
    line = JsonFormatter().format(record)
    data = json.loads(line)
    assert data["level"] == "ERROR"
    assert data["message"] == "failed"
    assert data["exc_info"].startswith("Traceback (most recent call last):")
    assert data["exc_info"].endswith("RuntimeError: boom")
    assert "\n" not in line  # the traceback's newlines are escaped inside the JSON string


def test_request_id_is_taken_from_header_or_made(client: TestClient) -> None:
    given = client.get("/health", headers={"X-Request-ID": "abc-123"})
    assert given.headers["x-request-id"] == "abc-123"
    made = client.get("/health")
    assert len(made.headers["x-request-id"]) == 32
    hostile = client.get("/health", headers={"X-Request-ID": "bad id\twith spaces"})
    assert hostile.headers["x-request-id"] != "bad id\twith spaces"


def test_request_id_header_is_capped_at_128_characters(client: TestClient) -> None:
    """An incoming X-Request-ID of 128 characters is kept; one of 129 is replaced by a new id."""
    longest = "a" * 128
    assert (
        client.get("/health", headers={"X-Request-ID": longest}).headers["x-request-id"] == longest
    )
    replaced = client.get("/health", headers={"X-Request-ID": longest + "a"})
    assert len(replaced.headers["x-request-id"]) == 32


def test_access_log_line_has_request_id(
    make_settings: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    with TestClient(create_app(make_settings(log_level="INFO"))) as c:
        c.get("/api/v1/asset-classes/RMBS", headers={"X-Request-ID": "trace-42"})
    lines = [json.loads(x) for x in capsys.readouterr().err.splitlines() if x.startswith("{")]
    access = [
        x for x in lines if x.get("message") == "request" and x.get("request_id") == "trace-42"
    ]
    assert access
    assert access[0]["route"] == "/api/v1/asset-classes/{code}"
    assert access[0]["status"] == 200


@pytest.fixture
def shipped_logging_conf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Load the shipped logging.conf with its file handler in tmp_path; yield the log file."""
    log_file = tmp_path / "app.log"
    monkeypatch.setenv("APP_LOG_FILE", str(log_file))
    root = logging.getLogger()
    level = root.level
    logging.config.fileConfig(SERVICE / "logging.conf", disable_existing_loggers=False)
    try:
        yield log_file
    finally:
        for h in logging.getLogger("app").handlers:
            h.close()
        logging.getLogger("app").handlers.clear()
        logging.getLogger("app").propagate = True
        for h in root.handlers[:]:
            if isinstance(h.formatter, JsonFormatter):  # logging.conf's stderr handler
                root.removeHandler(h)
        root.setLevel(level)


def test_logging_conf_writes_json_to_a_watched_file(shipped_logging_conf: Path) -> None:
    log_file = shipped_logging_conf
    handler = logging.getLogger("app").handlers[0]
    assert isinstance(handler, logging.handlers.WatchedFileHandler)
    logging.getLogger("app.services").info("before rotation")
    log_file.rename(log_file.with_name("app.log.1"))  # what logrotate does (create mode)
    logging.getLogger("app.api").info("after rotation")
    handler.flush()
    assert json.loads(log_file.with_name("app.log.1").read_text())["message"] == "before rotation"
    assert json.loads(log_file.read_text())["message"] == "after rotation"


def test_logging_conf_writes_an_app_line_once_to_the_file_and_not_to_stderr(
    shipped_logging_conf: Path,
) -> None:
    """app.* records propagate up to the `app` file handler and stop there (no stderr copy)."""
    root = logging.getLogger()
    (console,) = [h for h in root.handlers if isinstance(h.formatter, JsonFormatter)]
    assert isinstance(console, logging.StreamHandler)  # logging.conf's stderr handler
    console.setStream(stderr := io.StringIO())
    for name in ("app.api", "app.services", "app.models"):
        logging.getLogger(name).warning("from %s", name)
    logging.getLogger("app").handlers[0].flush()
    lines = [json.loads(x) for x in shipped_logging_conf.read_text().splitlines()]
    assert [x["message"] for x in lines] == ["from app.api", "from app.services", "from app.models"]
    assert stderr.getvalue() == ""


def test_metrics_count_requests_by_route_and_status(client: TestClient) -> None:
    before = client.get("/metrics").text
    client.get("/api/v1/asset-classes/RMBS")
    client.get("/api/v1/asset-classes/NOPE")
    after = client.get("/metrics").text
    route = "/api/v1/asset-classes/{code}"
    for status in ("200", "404"):
        delta = metric_value(
            after, "http_requests_total", route=route, status=status
        ) - metric_value(before, "http_requests_total", route=route, status=status)
        assert delta == 1
    hist = metric_value(
        after, "http_request_duration_seconds_count", route=route, status="200"
    ) - metric_value(before, "http_request_duration_seconds_count", route=route, status="200")
    assert hist == 1


def test_metrics_off_when_disabled(make_settings: Any) -> None:
    with TestClient(create_app(make_settings(enable_prometheus=False))) as c:
        assert c.get("/metrics").status_code == 404


def test_trusted_hosts_and_cors(make_settings: Any) -> None:
    settings = make_settings(allowed_hosts="api.example", cors_origins="https://ui.example")
    with TestClient(create_app(settings), base_url="http://api.example") as c:
        assert c.get("/health").status_code == 200
        assert c.get("/health", headers={"Host": "evil.example"}).status_code == 400
        pre = c.options(
            "/api/v1/asset-classes",
            headers={"Origin": "https://ui.example", "Access-Control-Request-Method": "GET"},
        )
        assert pre.headers["access-control-allow-origin"] == "https://ui.example"
        other = c.options(
            "/api/v1/asset-classes",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
        )
        assert "access-control-allow-origin" not in other.headers


def test_cors_lets_browsers_send_and_read_the_request_id_and_rate_limit_headers(
    make_settings: Any,
) -> None:
    """An allowed origin may send X-Request-ID and read it, Retry-After and X-RateLimit-*."""
    with TestClient(create_app(make_settings(cors_origins="https://ui.example"))) as c:
        pre = c.options(
            "/api/v1/asset-classes",
            headers={
                "Origin": "https://ui.example",
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "Authorization, X-Request-ID",
            },
        )
        assert pre.status_code == 200
        resp = c.get("/api/v1/asset-classes", headers={"Origin": "https://ui.example"})
    exposed = {h.strip().lower() for h in resp.headers["access-control-expose-headers"].split(",")}
    assert exposed >= {
        "x-request-id",
        "retry-after",
        "x-ratelimit-limit",
        "x-ratelimit-burst",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
    }


def _run(
    app: Any, timeout: float, headers: list[tuple[bytes, bytes]] | None = None
) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/slow", "headers": headers or []}
    asyncio.run(RequestContextMiddleware(app, timeout=timeout, metrics=True)(scope, receive, send))
    return sent


def errors_total(kind: str) -> float:
    return REGISTRY.get_sample_value("app_errors_total", {"type": kind}) or 0.0


def test_request_timeout_answers_504() -> None:
    async def slow(scope: Any, receive: Any, send: Any) -> None:
        await asyncio.sleep(5)

    before = errors_total("timeout"), errors_total("exception")
    sent = _run(slow, 0.05)
    assert sent[0]["status"] == 504
    assert (errors_total("timeout"), errors_total("exception")) == (before[0] + 1, before[1])


@pytest.mark.parametrize("failure", ["timeout", "exception"])
def test_no_error_response_once_the_response_has_started(failure: str) -> None:
    """A timeout or error after the headers went out sends no second response start (no 504/500)."""

    async def starts_then_fails(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        if failure == "exception":
            raise RuntimeError("boom")
        await asyncio.sleep(5)

    before = errors_total(failure)
    sent = _run(starts_then_fails, 0.05)
    assert [(m["type"], m.get("status")) for m in sent] == [("http.response.start", 200)]
    assert errors_total(failure) == before + 1


class JsonLines(logging.Handler):
    """Collects the records of a logger as the parsed JSON lines the app writes."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter())
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


def test_access_log_line_has_duration_in_milliseconds_and_request_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The JSON access line of a request that takes 100 ms says duration_ms >= 90 and its id."""

    async def takes_100ms(scope: Any, receive: Any, send: Any) -> None:
        await asyncio.sleep(0.1)
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    handler = JsonLines()
    logger = logging.getLogger("app.api")
    logger.addHandler(handler)
    try:
        with caplog.at_level(logging.INFO, logger="app.api"):
            _run(takes_100ms, 5, headers=[(b"x-request-id", b"timed-1")])
    finally:
        logger.removeHandler(handler)
    (access,) = [x for x in handler.lines if x["message"] == "request"]
    assert access["request_id"] == "timed-1"
    assert access["status"] == 204
    assert 90 <= access["duration_ms"] < 60_000  # milliseconds, not seconds or microseconds


def test_request_timeout_is_request_timeout_setting(make_settings: Any) -> None:
    """Through the real app: a /health whose Redis check hangs is cut off after REQUEST_TIMEOUT,
    and the timeout shows in app_errors_total."""

    async def hanging_redis() -> None:
        await asyncio.sleep(3)

    app = create_app(make_settings(request_timeout=0.2))
    app.dependency_overrides[get_redis] = hanging_redis
    with TestClient(app) as c:
        # Read from the registry, not through /metrics: a /metrics request under a 0.2 s budget on
        # a busy machine can time out itself and count (it failed 3 times in ~99 runs that way).
        before = errors_total("timeout")
        started = time.monotonic()
        resp = c.get("/health", headers={"X-Request-ID": "slow-1"})
        elapsed = time.monotonic() - started
        after = errors_total("timeout")
    assert resp.status_code == 504
    assert resp.json() == {"detail": "Request timed out", "request_id": "slow-1"}
    assert elapsed < 2
    assert after - before == 1


def test_unhandled_error_answers_json_500_with_request_id() -> None:
    async def broken(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("boom")

    before = errors_total("exception"), errors_total("timeout")
    sent = _run(broken, 5)
    assert (errors_total("exception"), errors_total("timeout")) == (before[0] + 1, before[1])
    assert sent[0]["status"] == 500
    body = json.loads(sent[1]["body"])
    assert body["detail"] == "Internal Server Error"
    assert (b"x-request-id", body["request_id"].encode()) in sent[0]["headers"]


def test_sentry_starts_only_with_flag_and_dsn(make_settings: Any) -> None:
    assert create_app(make_settings(enable_sentry=True)).state.sentry is False
    assert (
        create_app(make_settings(sentry_dsn="https://k@o0.ingest.invalid/1")).state.sentry is False
    )
    import sentry_sdk

    try:
        app = create_app(
            make_settings(enable_sentry=True, sentry_dsn="https://k@o0.ingest.invalid/1")
        )
        assert app.state.sentry is True
    finally:
        sentry_sdk.init(dsn=None)  # switch it off again for the other tests, even on failure
