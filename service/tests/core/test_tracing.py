"""OpenTelemetry tracing: spans recorded by the SDK's in-memory exporter (and, once, sent over
OTLP/HTTP to a receiver on the loopback), and proof that with tracing off no OpenTelemetry code
runs while a request is served."""

from __future__ import annotations

import gc
import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

import pytest
from fastapi.testclient import TestClient
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import ProxyTracerProvider, SpanKind, get_tracer_provider

from app.core.config import SettingsError, load_settings
from app.core.security import create_token
from app.main import create_app
from tests.conftest import POOL, SECRET, MakeSettings, RedisServer, free_port

TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
PARENT_ID = 0x00F067AA0BA902B7
TRACEPARENT = f"00-{TRACE_ID:032x}-{PARENT_ID:016x}-01"  # sampled
FASTAPI_CONTEXT_LOOKUP = {
    "opentelemetry.context:get_value",
    "opentelemetry.context:get_current",
    "opentelemetry.context.contextvars_context:get_current",
}
ENDPOINT = "http://127.0.0.1:9/v1/traces"  # never reached: the in-memory exporter replaces it


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


def traced_client(
    make_settings: MakeSettings, exporter: InMemorySpanExporter, **overrides: Any
) -> TestClient:
    settings = make_settings(
        enable_tracing=True,
        tracing_otlp_endpoint=ENDPOINT,
        **{"tracing_sample_rate": 0.0, **overrides},
    )
    return TestClient(create_app(settings, span_exporter=exporter), client=("127.0.0.1", 50000))


def auth_for(client: TestClient) -> dict[str, str]:
    token = create_token("tester", ["read", "write"], settings=client.app.state.settings)  # type: ignore[attr-defined]
    return {"Authorization": f"Bearer {token}"}


def in_trace(spans: tuple[ReadableSpan, ...], trace_id: int) -> list[ReadableSpan]:
    return [s for s in spans if s.context is not None and s.context.trace_id == trace_id]


def middleware_chain(app: Any) -> list[str]:
    """Module:class of each layer of a started app's middleware stack, outermost first."""
    layers, layer = [], app.middleware_stack
    assert layer is not None, "the app has not served anything yet"
    while layer is not None and layer is not app.router:
        layers.append(f"{type(layer).__module__}:{type(layer).__qualname__}")
        layer = getattr(layer, "app", None)
    return layers


def descends_from(span: ReadableSpan, root: ReadableSpan, spans: list[ReadableSpan]) -> bool:
    by_id = {s.context.span_id: s for s in spans if s.context is not None}
    parent = span.parent
    while parent is not None:
        if root.context is not None and parent.span_id == root.context.span_id:
            return True
        above = by_id.get(parent.span_id)
        parent = above.parent if above is not None else None
    return False


def test_a_request_is_a_root_span_with_database_and_redis_children_in_the_callers_trace(
    make_settings: MakeSettings, exporter: InMemorySpanExporter
) -> None:
    with traced_client(make_settings, exporter) as client:
        pool = client.post("/api/v1/asset-pools", json=POOL, headers=auth_for(client)).json()
        exporter.clear()
        resp = client.post(
            f"/api/v1/asset-pools/{pool['id']}/cashflows",
            headers={"traceparent": TRACEPARENT, "X-Request-ID": "req-0123456789"},
        )
        assert resp.status_code == 200
        chain = middleware_chain(client.app)
    # Outermost but for Starlette's ServerErrorMiddleware (the instrumentation re-wraps it).
    assert chain[1] == "opentelemetry.instrumentation.asgi:OpenTelemetryMiddleware", chain
    # The service's provider is its own: the process-wide one stays the API's no-op proxy.
    assert isinstance(get_tracer_provider(), ProxyTracerProvider)
    spans = in_trace(exporter.get_finished_spans(), TRACE_ID)
    (root,) = [s for s in spans if s.kind is SpanKind.SERVER]
    assert root.parent is not None
    assert root.parent.span_id == PARENT_ID  # continues the caller's trace
    assert root.parent.is_remote
    assert root.attributes is not None
    assert root.attributes["app.request_id"] == "req-0123456789"
    assert root.attributes["http.route"] == "/api/v1/asset-pools/{pool_id}/cashflows"
    db = [s for s in spans if (s.attributes or {}).get("db.system") == "sqlite"]
    assert db, [s.name for s in spans]
    assert any("asset_pools" in str((s.attributes or {}).get("db.statement")) for s in db)
    cache = [s for s in spans if (s.attributes or {}).get("db.system") == "redis"]
    assert "GET" in [s.name for s in cache], [s.name for s in spans]
    for child in db + cache:
        assert descends_from(child, root, spans), child.name


def test_sample_rate_decides_for_new_traces(
    make_settings: MakeSettings, exporter: InMemorySpanExporter
) -> None:
    with traced_client(make_settings, exporter, tracing_sample_rate=0.0) as client:
        assert client.get("/api/v1/asset-classes").status_code == 200
    assert exporter.get_finished_spans() == ()
    kept = InMemorySpanExporter()  # a provider's shutdown stops its exporter
    with traced_client(make_settings, kept, tracing_sample_rate=1.0) as client:
        resp = client.get("/api/v1/asset-classes")  # no X-Request-ID: the service makes one
        assert resp.status_code == 200
    (root,) = [s for s in kept.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert root.parent is None  # a new trace
    assert root.attributes is not None
    assert root.attributes["http.route"] == "/api/v1/asset-classes"
    assert root.attributes["app.request_id"] == resp.headers["X-Request-ID"]


def test_probes_and_scrapes_are_not_traced(
    make_settings: MakeSettings, exporter: InMemorySpanExporter
) -> None:
    with traced_client(make_settings, exporter) as client:
        for path in ("/health", "/metrics"):
            assert client.get(path, headers={"traceparent": TRACEPARENT}).status_code == 200
    assert exporter.get_finished_spans() == ()


class Receiver(http.server.BaseHTTPRequestHandler):
    """A stand-in OTLP/HTTP collector: keeps each POSTed body."""

    bodies: list[tuple[str, str, bytes]] = []  # noqa: RUF012

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.bodies.append((self.path, self.headers["Content-Type"], body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[str]:
    Receiver.bodies = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1/traces"
    server.shutdown()
    server.server_close()


def test_spans_go_to_the_otlp_endpoint(make_settings: MakeSettings, receiver: str) -> None:
    """The production path: batch processor, OTLP/HTTP protobuf, flushed when the worker stops."""
    settings = make_settings(
        enable_tracing=True, tracing_otlp_endpoint=receiver, tracing_sample_rate=0.0
    )
    with TestClient(create_app(settings)) as client:
        resp = client.get("/api/v1/asset-classes/CRE", headers={"traceparent": TRACEPARENT})
        assert resp.status_code == 200
    assert Receiver.bodies, "nothing was exported"
    path, content_type, body = Receiver.bodies[0]
    assert (path, content_type) == ("/v1/traces", "application/x-protobuf")
    export = ExportTraceServiceRequest()
    export.ParseFromString(body)
    (resource_spans,) = export.resource_spans
    attrs = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
    assert attrs["service.name"] == "asset-classes-api"
    spans = [s for scope in resource_spans.scope_spans for s in scope.spans]
    assert {s.trace_id for s in spans} == {TRACE_ID.to_bytes(16, "big")}


def test_with_tracing_off_no_opentelemetry_code_runs_on_a_request(
    make_settings: MakeSettings,
) -> None:
    """Every Python call made while the app serves requests (in any thread) is recorded: none is
    in an opentelemetry module."""
    seen: set[str] = set()
    recording = threading.Event()

    def profile(frame: FrameType, event: str, _arg: object) -> None:
        if event == "call" and recording.is_set():
            seen.add(f"{frame.f_globals.get('__name__', '')}:{frame.f_code.co_name}")

    settings = make_settings()
    assert settings.enable_tracing is False
    app = create_app(settings)
    assert app.state.tracing is None
    # Engines of earlier tests that had tracing on carry the SQLAlchemy instrumentation's finalizer
    # (_dispose_of_event_listener); collected during the requests it would run, and be counted, in
    # the window. Collect them first and keep the collector off while recording.
    gc.collect()
    gc.disable()
    # Before the test client starts its event-loop thread (and that loop its worker threads), so
    # that every thread serving the requests is profiled.
    threading.setprofile(profile)  # type: ignore[arg-type]
    sys.setprofile(profile)  # type: ignore[arg-type]
    try:
        with TestClient(app) as client:
            token = create_token("tester", ["read", "write"], settings=settings)
            pool = client.post(
                "/api/v1/asset-pools", json=POOL, headers={"Authorization": f"Bearer {token}"}
            ).json()
            recording.set()
            for _ in range(2):  # a miss, then a hit
                resp = client.post(
                    f"/api/v1/asset-pools/{pool['id']}/cashflows",
                    headers={"traceparent": TRACEPARENT},
                )
                assert resp.status_code == 200
            assert client.get("/api/v1/asset-classes").status_code == 200
            recording.clear()
            chain = middleware_chain(app)
    finally:
        sys.setprofile(None)
        threading.setprofile(None)  # type: ignore[arg-type]
        gc.enable()
    assert "app.core.middleware:RequestContextMiddleware" in chain  # the walk saw the stack
    assert not [m for m in chain if m.startswith("opentelemetry")], chain
    assert isinstance(get_tracer_provider(), ProxyTracerProvider)  # untouched
    modules = {m.split(":")[0] for m in seen}
    assert "app.api.routes.asset_pools" in modules  # the profiler did see the requests
    assert "app.services.cashflow" in modules
    assert "fastapi.telemetry._api" in modules
    # FastAPI's router looks up its telemetry record in the OpenTelemetry context on every
    # request (fastapi.telemetry._api.get_telemetry_data), tracing or not: that lookup is all.
    assert {m for m in seen if m.startswith("opentelemetry")} <= FASTAPI_CONTEXT_LOOKUP


OFF_IN_A_FRESH_INTERPRETER = """
import json, sys
from fastapi.testclient import TestClient
from app.main import create_app
with TestClient(create_app()) as client:
    resp = client.get("/api/v1/asset-classes/CRE")
    assert resp.status_code == 200, resp.text
    assert "X-RateLimit-Remaining" in resp.headers  # the rate limiter's Redis call ran
    checks = client.get("/health").json()["checks"]
    assert checks["redis"]["status"] == checks["database"]["status"] == "ok", checks
print(json.dumps(sorted(m for m in sys.modules if m.startswith("opentelemetry"))))
"""


def test_with_tracing_off_no_sdk_or_instrumentation_is_even_imported(
    database_url: str, redis_server: RedisServer, tmp_path: Any
) -> None:
    """A fresh worker with the default settings (rate limiting on) serves requests that read
    Redis and the database without importing the trace SDK, an instrumentation or an exporter."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "ENABLE_", "TRACING_"))
    }
    env |= {
        "ENVIRONMENT": "test",
        "SECRET_KEY": SECRET,
        "DATABASE_URL": database_url,
        "REDIS_PORT": str(redis_server.port),
        "LOG_LEVEL": "WARNING",
    }
    out = subprocess.run(
        [sys.executable, "-c", OFF_IN_A_FRESH_INTERPRETER],
        cwd=tmp_path,  # no .env
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    imported = json.loads(out.splitlines()[-1])
    assert "opentelemetry.context" in imported  # FastAPI's telemetry lookup (README)
    # redis-py 8 imports opentelemetry.sdk.metrics itself when the SDK is installed
    # (redis/observability/providers.py); the trace SDK is another matter.
    tracing_modules = (
        "opentelemetry.sdk.trace",
        "opentelemetry.instrumentation",
        "opentelemetry.exporter",
    )
    assert not [m for m in imported if m.startswith(tracing_modules)], imported


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        ({"enable_tracing": True}, "ENABLE_TRACING needs TRACING_OTLP_ENDPOINT"),
        ({"tracing_otlp_endpoint": "collector:4318"}, "TRACING_OTLP_ENDPOINT: must be an http"),
        ({"tracing_otlp_endpoint": "http:///v1/traces"}, "TRACING_OTLP_ENDPOINT: must be an http"),
        ({"tracing_otlp_endpoint": "http://c:99999/v1"}, "TRACING_OTLP_ENDPOINT: must be an http"),
        (
            {"tracing_sample_rate": 1.5},
            "TRACING_SAMPLE_RATE: Input should be less than or equal to 1",
        ),
        (
            {"tracing_sample_rate": -0.1},
            "TRACING_SAMPLE_RATE: Input should be greater than or equal to 0",
        ),
        ({"tracing_service_name": ""}, "TRACING_SERVICE_NAME"),
    ],
)
def test_bad_tracing_settings_stop_start_up(overrides: dict[str, Any], says: str) -> None:
    with pytest.raises(SettingsError, match=f"^Invalid configuration: {says}"):
        load_settings(_env_file=None, environment="test", secret_key=SECRET, **overrides)
