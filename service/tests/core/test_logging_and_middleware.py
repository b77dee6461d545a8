from __future__ import annotations

import asyncio
import configparser
import io
import json
import logging
import logging.handlers
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from app.api.deps import get_redis
from app.core.logging import APP_LOGGERS, JsonFormatter, configure_logging, request_id_var
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
def shipped_logging_conf(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[str], Path]]:
    """Load the shipped logging.conf the way the service does (configure_logging with LOG_LEVEL),
    its file handler in tmp_path, stderr captured; yield a loader that returns the log file."""
    log_file = tmp_path / "app.log"
    monkeypatch.setenv("APP_LOG_FILE", str(log_file))
    root = logging.getLogger()
    saved = {name: logging.getLogger(name).level for name in APP_LOGGERS}
    root_level, root_handlers = root.level, root.handlers[:]

    def load(level: str) -> Path:
        configure_logging(level, str(SERVICE / "logging.conf"))
        return log_file

    try:
        yield load
    finally:
        for name, level in saved.items():
            logger = logging.getLogger(name)
            for h in logger.handlers:
                h.close()
            logger.handlers.clear()
            logger.propagate = True
            logger.setLevel(level)
        root.handlers[:] = root_handlers
        root.setLevel(root_level)


def console_of(root: logging.Logger) -> io.StringIO:
    """Point logging.conf's stderr handler (root's only handler) at a buffer and return it."""
    (console,) = root.handlers
    assert type(console) is logging.StreamHandler
    assert isinstance(console.formatter, JsonFormatter)
    console.setStream(buffer := io.StringIO())
    return buffer


def test_logging_conf_has_the_guides_loggers_handlers_and_formatter() -> None:
    """root on the console; app.api, app.services, app.models on the file only (propagate 0); JSON."""
    conf = configparser.ConfigParser(interpolation=None)
    conf.read(SERVICE / "logging.conf")
    assert conf["loggers"]["keys"].replace(" ", "").split(",") == [
        "root",
        "app_api",
        "app_services",
        "app_models",
    ]
    assert conf["logger_root"]["handlers"] == "console"
    for name in ("app.api", "app.services", "app.models"):
        section = conf["logger_" + name.replace(".", "_")]
        assert (section["qualname"], section["handlers"], section["propagate"]) == (
            name,
            "file",
            "0",
        )
    assert conf["handlers"]["keys"].replace(" ", "") == "console,file"
    assert conf["handler_console"]["class"] == "StreamHandler"
    assert conf["handler_file"]["class"] == "logging.handlers.WatchedFileHandler"
    assert conf["formatters"]["keys"].strip() == "json"
    assert conf["formatter_json"]["class"] == "app.core.logging.JsonFormatter"


def test_logging_conf_writes_json_to_a_watched_file(
    shipped_logging_conf: Callable[[str], Path],
) -> None:
    log_file = shipped_logging_conf("INFO")
    (handler,) = logging.getLogger("app.api").handlers
    assert isinstance(handler, logging.handlers.WatchedFileHandler)
    logging.getLogger("app.services").info("before rotation")
    log_file.rename(log_file.with_name("app.log.1"))  # what logrotate does (create mode)
    logging.getLogger("app.api").info("after rotation")
    handler.flush()
    assert json.loads(log_file.with_name("app.log.1").read_text())["message"] == "before rotation"
    assert json.loads(log_file.read_text())["message"] == "after rotation"


def test_logging_conf_writes_each_app_line_once_to_the_file_and_others_to_stderr(
    shipped_logging_conf: Callable[[str], Path],
) -> None:
    """Each app logger's records land in the file exactly once and never on stderr; a record of any
    other logger goes to stderr only (root's console handler)."""
    log_file = shipped_logging_conf("INFO")
    stderr = console_of(logging.getLogger())
    for name in ("app.api", "app.services", "app.models"):
        logging.getLogger(name).info("from %s", name)
    logging.getLogger("a.library").warning("not the app's")
    lines = [json.loads(x) for x in log_file.read_text().splitlines()]
    assert [(x["logger"], x["message"]) for x in lines] == [
        ("app.api", "from app.api"),
        ("app.services", "from app.services"),
        ("app.models", "from app.models"),
    ]
    (other,) = [json.loads(x) for x in stderr.getvalue().splitlines()]
    assert (other["logger"], other["message"]) == ("a.library", "not the app's")


@pytest.mark.parametrize(
    ("level", "written"),
    [("DEBUG", ["debug", "info", "warning"]), ("WARNING", ["warning"]), ("ERROR", [])],
)
def test_log_level_sets_every_app_logger_of_the_shipped_file(
    shipped_logging_conf: Callable[[str], Path], level: str, written: list[str]
) -> None:
    """LOG_LEVEL, not the file, decides what each app logger writes (one source for the level)."""
    log_file = shipped_logging_conf(level)
    for name in ("app.api", "app.services", "app.models"):
        assert logging.getLogger(name).level == logging.getLevelName(level)
        logger = logging.getLogger(name)
        logger.debug("debug")
        logger.info("info")
        logger.warning("warning")
    lines = [json.loads(x) for x in log_file.read_text().splitlines()]
    assert [(x["logger"], x["message"]) for x in lines] == [
        (name, message) for name in ("app.api", "app.services", "app.models") for message in written
    ]


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
