"""OpenTelemetry tracing, off unless ENABLE_TRACING.

When on, each request is a SERVER span (FastAPI instrumentation, outermost middleware) that
continues a W3C `traceparent` sent by the client or nginx and carries the request id
(`app.request_id`); the database reads (SQLAlchemy) and Redis commands are its child spans. Spans
go to TRACING_OTLP_ENDPOINT over OTLP/HTTP in batches; TRACING_SAMPLE_RATE is the share of new
traces kept (a sampled parent is always followed: ParentBased(TraceIdRatioBased)).

When off, nothing here runs: every OpenTelemetry import is inside `start_tracing`, and the hooks
it hands out are the only way the service's tracing reaches a request. (FastAPI itself reads one
OpenTelemetry context value per request, tracing or not; its own telemetry bridge is off.)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from app import __version__
from app.core.config import Settings

if TYPE_CHECKING:
    from fastapi import FastAPI
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from redis.asyncio import Redis
    from sqlalchemy import Engine

logger = logging.getLogger("app.api")
REQUEST_ID_ATTRIBUTE = "app.request_id"
SQLALCHEMY_SCOPE = "opentelemetry.instrumentation.sqlalchemy"


@dataclass(frozen=True, slots=True)
class Tracing:
    provider: TracerProvider
    on_request_id: Callable[[str], None]  # RequestContextMiddleware: tag the server span
    on_redis_client: Callable[[Redis], None]  # RedisManager: trace each client it makes
    shutdown: Callable[[], None]  # lifespan end: flush the spans


def start_tracing(
    app: FastAPI, settings: Settings, engine: Engine, exporter: SpanExporter | None = None
) -> Tracing:
    """Instrument `app` and `engine`; `exporter` replaces the OTLP exporter (tests)."""
    from opentelemetry import trace
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
    from opentelemetry.instrumentation.sqlalchemy.version import __version__ as sqlalchemy_version
    from opentelemetry.metrics import NoOpMeterProvider
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    resource = Resource.create(
        {
            "service.name": settings.tracing_service_name,
            "service.version": settings.app_release or __version__,
            "deployment.environment.name": settings.environment,
        }
    )
    provider = TracerProvider(
        resource=resource, sampler=ParentBased(TraceIdRatioBased(settings.tracing_sample_rate))
    )
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.tracing_otlp_endpoint))
        )
    else:
        provider.add_span_processor(SimpleSpanProcessor(exporter))

    FastAPIInstrumentor.instrument_app(
        app,
        tracer_provider=provider,
        excluded_urls="/health,/metrics",  # probes and scrapes: no traces
        exclude_spans=["receive", "send"],  # one span per request, not one per ASGI message
    )
    # The engine's own events, not SQLAlchemyInstrumentor: that one patches create_engine
    # process-wide (importing sqlalchemy.ext.asyncio, which needs greenlet) and, in 0.66b2,
    # declares sqlalchemy < 2.1 and refuses the service's 2.1.9. EngineTracer hooks
    # before/after_cursor_execute, unchanged in 2.1 (tests/core/test_tracing.py shows the spans).
    EngineTracer(  # type: ignore[no-untyped-call]
        trace.get_tracer(SQLALCHEMY_SCOPE, sqlalchemy_version, provider),
        engine,
        NoOpMeterProvider()
        .get_meter(SQLALCHEMY_SCOPE)
        .create_up_down_counter("db.client.connections.usage"),
    )

    def on_request_id(request_id: str) -> None:
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attribute(REQUEST_ID_ATTRIBUTE, request_id)

    def on_redis_client(client: Redis) -> None:
        RedisInstrumentor.instrument_client(client, tracer_provider=provider)

    def shutdown() -> None:
        provider.shutdown()  # flushes the batch; the engine (and its listeners) is disposed

    logger.info(
        "tracing on",
        extra={
            "endpoint": settings.tracing_otlp_endpoint,
            "sample_rate": settings.tracing_sample_rate,
        },
    )
    return Tracing(provider, on_request_id, on_redis_client, shutdown)
