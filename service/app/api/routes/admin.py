from __future__ import annotations

import logging

from fastapi import APIRouter, HTTPException

from app.api.deps import AUTH_RESPONSES, AdminToken, CacheDep, RedisDep, ReferenceDep
from app.core.redis import REDIS_ERRORS

logger = logging.getLogger("app.api")
router = APIRouter(prefix="/api/v1/admin", tags=["admin"])


@router.delete(
    "/cache",
    summary="Drop every cached projection and reload reference data",
    responses={
        **AUTH_RESPONSES,
        403: {"description": "Scope missing or address not allowed"},
        503: {"description": "Redis unavailable"},
    },
)
async def flush_cache(
    token: AdminToken, cache: CacheDep, redis: RedisDep, reference: ReferenceDep
) -> dict[str, int]:
    reference.invalidate()
    try:
        removed = await cache.flush()
    except REDIS_ERRORS as exc:
        redis.mark_down(exc)
        raise HTTPException(status_code=503, detail="Redis unavailable") from None
    logger.warning("cache flushed by %s", token.subject, extra={"keys": removed})
    return {"removed": removed}
