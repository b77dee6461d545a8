"""Projection cache in Redis.

Key: cf:{pool_id}:v{pool_version}:gz:{digest(pool row, assumptions, reference data)}. The digest
covers every input of the answer: the pool as read from the database on every request (hits
included), the resolved assumptions and the reference data. So an entry can only ever answer for the
very inputs it was computed from: not after an invalidation missed while Redis was down, nor after a
write that bypassed the API and its version bump (a restore, a fix in SQL). Each pool also has an
index set cf:idx:{pool_id} so that a change deletes its entries at once (no SCAN).
Values are the response body already gzip-compressed (`app.core.compression.gzip_bytes`): a hit is
sent as stored to clients that accept gzip. `gz` in the key keeps these apart from entries of the
earlier format (plain JSON) while both releases share one Redis during a blue/green switch, and a
value that is not gzip is treated as a miss.
TTL by data tier of the pool's asset class: CACHE_TTL_STABLE or CACHE_TTL_DYNAMIC.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging

import orjson

from app.core.compression import GZIP_MAGIC
from app.core.config import Settings
from app.core.metrics import CACHE_ERRORS, CACHE_HITS, CACHE_MISSES
from app.core.redis import REDIS_ERRORS, RedisManager
from app.services.projections import PoolSnapshot

logger = logging.getLogger("app.services")
CACHE_NAME = "cashflow"


def cache_key(pool: PoolSnapshot, assumptions: dict[str, object], ref_hash: str) -> str:
    inputs = {"pool": dataclasses.asdict(pool), "assumptions": assumptions}
    digest = hashlib.sha256(
        orjson.dumps(inputs, option=orjson.OPT_SORT_KEYS) + ref_hash.encode()
    ).hexdigest()[:32]
    return f"cf:{pool.id}:v{pool.version}:gz:{digest}"


def ttl_for(tier: str, settings: Settings) -> int:
    return settings.cache_ttl_stable if tier == "stable" else settings.cache_ttl_dynamic


class ProjectionCache:
    def __init__(self, redis: RedisManager, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings

    @property
    def enabled(self) -> bool:
        return self.settings.enable_caching and self.redis.available

    async def get(self, key: str) -> bytes | None:
        """The stored gzip body, or None (miss, caching off, Redis unavailable)."""
        if not self.enabled:
            CACHE_MISSES.labels(CACHE_NAME).inc()
            return None
        try:
            value = await self.redis.client.get(key)
        except REDIS_ERRORS as exc:
            self.redis.mark_down(exc)
            CACHE_ERRORS.labels(CACHE_NAME).inc()
            CACHE_MISSES.labels(CACHE_NAME).inc()
            return None
        if isinstance(value, str):
            value = value.encode()
        if value is not None and not value.startswith(GZIP_MAGIC):
            logger.warning("cache entry is not gzip, ignored", extra={"key": key})
            value = None
        (CACHE_HITS if value is not None else CACHE_MISSES).labels(CACHE_NAME).inc()
        return value

    async def set(self, pool_id: int, key: str, value: bytes, ttl: int) -> None:
        """Store a gzip body (see `get`) and index it under its pool."""
        if not self.enabled:
            return
        index = f"cf:idx:{pool_id}"
        try:
            async with self.redis.client.pipeline(transaction=True) as pipe:
                pipe.set(key, value, ex=ttl)
                pipe.sadd(index, key)
                pipe.expire(index, max(self.settings.cache_ttl_stable, ttl))
                await pipe.execute()
        except REDIS_ERRORS as exc:
            self.redis.mark_down(exc)
            CACHE_ERRORS.labels(CACHE_NAME).inc()

    async def invalidate(self, pool_id: int) -> int:
        """Delete every cached projection of a pool; returns the number of keys removed."""
        if not self.redis.available:
            return 0
        index = f"cf:idx:{pool_id}"
        try:
            keys = await self.redis.client.smembers(index)
            removed = int(await self.redis.client.delete(index, *keys))
        except REDIS_ERRORS as exc:
            self.redis.mark_down(exc)
            CACHE_ERRORS.labels(CACHE_NAME).inc()
            return 0
        logger.info("cache invalidated", extra={"pool_id": pool_id, "keys": removed})
        return removed

    async def flush(self) -> int:
        removed = 0
        async for key in self.redis.client.scan_iter(match="cf:*", count=500):
            removed += int(await self.redis.client.delete(key))
        return removed
