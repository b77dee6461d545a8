"""ASGI entry point: `app.main:app`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from sqlalchemy.orm import sessionmaker
from starlette.middleware.trustedhost import TrustedHostMiddleware

from app import __version__
from app.api.routes import admin, analyses, asset_classes, asset_pools, health
from app.core.compression import GZipMiddleware
from app.core.config import Settings, get_settings
from app.core.db import make_engine
from app.core.logging import configure_logging
from app.core.middleware import RequestContextMiddleware
from app.core.ratelimit import RateLimitMiddleware
from app.core.redis import RedisManager
from app.core.tracing import Tracing, start_tracing
from app.services.cache import ProjectionCache
from app.services.jobs import JobStore
from app.services.reference import ReferenceCache

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

logger = logging.getLogger("app.api")

RATE_LIMIT_HEADERS = {
    "X-RateLimit-Limit": "Sustained requests allowed per period (RATE_LIMIT_DEFAULT)",
    "X-RateLimit-Burst": "Bucket size (RATE_LIMIT_BURST)",
    "X-RateLimit-Remaining": "Requests left in the bucket now",
    "X-RateLimit-Reset": "Seconds until the bucket is full again",
}
RATE_LIMIT_RESPONSES: dict[int | str, dict[str, Any]] = {
    429: {
        "description": "Rate limit exceeded (per token subject, else per client IP)",
        "headers": {
            "Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}},
            **{
                k: {"description": v, "schema": {"type": "integer"}}
                for k, v in RATE_LIMIT_HEADERS.items()
            },
        },
    },
}


def _init_sentry(settings: Settings) -> bool:
    if not (settings.enable_sentry and settings.sentry_dsn):
        return False
    import sentry_sdk

    sentry_sdk.init(
        dsn=settings.sentry_dsn.get_secret_value(),
        environment=settings.sentry_environment or settings.environment,
        release=settings.app_release or __version__,
        traces_sample_rate=settings.sentry_traces_sample_rate,
    )
    return True


def create_app(
    settings: Settings | None = None, span_exporter: SpanExporter | None = None
) -> FastAPI:
    """`span_exporter` replaces the OTLP exporter when ENABLE_TRACING (tests)."""
    settings = settings or get_settings()
    configure_logging(settings.log_level, settings.log_config)
    engine = make_engine(settings)
    redis = RedisManager(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await redis.warm_up()
        logger.info(
            "worker started", extra={"version": __version__, "release": settings.app_release}
        )
        yield
        for task in list(app.state.tasks):
            task.cancel()
        await redis.close()
        engine.dispose()
        if tracing is not None:
            tracing.shutdown()

    show_docs = not settings.is_production or settings.debug
    app = FastAPI(
        title="Asset Classes API",
        version=__version__,
        description="Structured-credit collateral reference data and cashflow projections.",
        debug=settings.debug,
        lifespan=lifespan,
        # Production publishes neither the docs page nor the schema it reads, unless DEBUG.
        docs_url="/docs" if show_docs else None,
        openapi_url="/openapi.json" if show_docs else None,
        redoc_url=None,
        # FastAPI's own OpenTelemetry bridge stays off, on or off: when off, it would still ask
        # the OpenTelemetry API for the global providers on every request; when on, the
        # contrib instrumentation (app.core.tracing) makes the spans.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessions = sessionmaker(bind=engine, expire_on_commit=False)
    app.state.redis = redis
    app.state.cache = ProjectionCache(redis, settings)
    app.state.reference = ReferenceCache(app.state.sessions, settings.cache_ttl_stable)
    app.state.jobs = JobStore(redis, settings.cache_ttl)
    app.state.tasks = set[asyncio.Task[None]]()
    app.state.sentry = _init_sentry(settings)
    tracing: Tracing | None = None
    if settings.enable_tracing:
        tracing = start_tracing(app, settings, engine, span_exporter)
        redis.trace_clients(tracing.on_redis_client)
    app.state.tracing = tracing

    # Routers carry their full /api/v1/... prefix so that the route template in metrics and logs
    # is the whole path.
    for module in (asset_classes, asset_pools, analyses, admin):
        app.include_router(module.router, responses=RATE_LIMIT_RESPONSES)
    app.include_router(health.router)

    # Added innermost first: the last one added runs first.
    if settings.rate_limit_enabled:
        app.add_middleware(RateLimitMiddleware, settings=settings, redis=redis)
    app.add_middleware(GZipMiddleware, minimum_size=1024)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
            expose_headers=["X-Request-ID", "Retry-After", *RATE_LIMIT_HEADERS],
        )
    if settings.allowed_hosts != ["*"]:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=settings.allowed_hosts)
    app.add_middleware(
        RequestContextMiddleware,
        timeout=settings.request_timeout,
        metrics=settings.enable_prometheus,
        on_request_id=tracing.on_request_id if tracing is not None else None,
    )
    return app


def __getattr__(name: str) -> Any:
    # Build the app lazily so `import app.main` (tests, tools) does not read the environment.
    if name == "app":
        application = create_app()
        globals()["app"] = application
        return application
    raise AttributeError(name)
