from __future__ import annotations

import time

from fastapi import APIRouter, HTTPException, Request, Response
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

from app import __version__
from app.api.deps import RedisDep, SessionsDep, SettingsDep
from app.core import metrics
from app.schemas.models import Health, HealthCheck

router = APIRouter(tags=["operations"])


@router.get(
    "/health",
    response_model=Health,
    responses={503: {"model": Health, "description": "The database is unreachable"}},
    summary="Liveness/readiness: Redis and database state, version and release",
)
async def health(
    settings: SettingsDep, redis: RedisDep, sessions: SessionsDep, response: Response
) -> Health:
    start = time.perf_counter()
    redis_ok = await redis.ping()
    redis_check = HealthCheck(
        status="ok" if redis_ok else "down",
        latency_ms=round((time.perf_counter() - start) * 1000, 3),
        detail=None
        if redis_ok
        else "cache bypassed, rate limiting "
        + ("open" if settings.rate_limit_fail_open else "closed"),
    )

    def db_ping() -> None:
        with sessions() as session:
            session.execute(text("SELECT 1"))

    start = time.perf_counter()
    try:
        await run_in_threadpool(db_ping)
        db_check = HealthCheck(
            status="ok", latency_ms=round((time.perf_counter() - start) * 1000, 3)
        )
    except Exception as exc:
        db_check = HealthCheck(status="down", detail=type(exc).__name__)
    if db_check.status != "ok":
        state = "unavailable"
        response.status_code = 503
    else:
        state = "ok" if redis_ok else "degraded"
    return Health(
        status=state,
        version=__version__,
        release=settings.app_release,
        environment=settings.environment,
        checks={"redis": redis_check, "database": db_check},
    )


@router.get("/metrics", include_in_schema=False)
async def prometheus_metrics(request: Request, settings: SettingsDep) -> Response:
    if not settings.enable_prometheus:
        raise HTTPException(status_code=404, detail="Not Found")
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)
