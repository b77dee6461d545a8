"""One Redis connection pool per worker process, with a short circuit breaker.

When a command fails (Redis down, timeout after the configured retries), the manager marks Redis
unavailable for REDIS_DOWN_BACKOFF seconds: callers then skip Redis immediately instead of paying a
connect timeout on every request. /health always tries a real PING, which closes the breaker again.
An error reply (ResponseError: a failing Lua script, WRONGTYPE, NOPERM, OOM) does not open it: Redis
is up and answered at once, and opening would switch the cache and the rate limiter off for every
request because of one failing command.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ConstantBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app.core.config import Settings

logger = logging.getLogger("app.services")

REDIS_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError)


class RedisManager:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        pool_kwargs: dict[str, Any] = {
            "host": settings.redis_host,
            "port": settings.redis_port,
            "db": settings.redis_database,
            "username": settings.redis_username or None,
            "password": (
                settings.redis_password.get_secret_value() if settings.redis_password else None
            ),
            "socket_timeout": settings.redis_timeout,
            "socket_connect_timeout": settings.redis_timeout,
            "retry": Retry(
                ConstantBackoff(settings.redis_retry_delay),
                settings.redis_retry_count,
                supported_errors=(RedisConnectionError, RedisTimeoutError),
            ),
            "max_connections": settings.redis_max_connections,
            "timeout": settings.redis_timeout,
            "health_check_interval": 30,
        }
        if settings.redis_ssl:
            pool_kwargs["connection_class"] = aioredis.SSLConnection
            if settings.redis_ssl_ca_certs:
                pool_kwargs["ssl_ca_certs"] = settings.redis_ssl_ca_certs
        self._pool_kwargs = pool_kwargs
        self._loop: asyncio.AbstractEventLoop | None = None
        self.pool = aioredis.BlockingConnectionPool(**pool_kwargs)
        self._client: aioredis.Redis = aioredis.Redis(connection_pool=self.pool)
        self._down_until = 0.0
        self._on_client: Callable[[aioredis.Redis], None] | None = None

    def trace_clients(self, hook: Callable[[aioredis.Redis], None]) -> None:
        """Call `hook` on the client now and on each one made later (tracing instruments them)."""
        self._on_client = hook
        hook(self._client)

    @property
    def client(self) -> aioredis.Redis:
        """The worker's client. Connections belong to one event loop: a worker has exactly one,
        but test clients may run each request in a fresh loop, so a new loop gets a new pool."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            if self._loop is not None:
                self.pool = aioredis.BlockingConnectionPool(**self._pool_kwargs)
                self._client = aioredis.Redis(connection_pool=self.pool)
                if self._on_client is not None:
                    self._on_client(self._client)
            self._loop = loop
        return self._client

    def register_script(self, source: str) -> AsyncScript:
        return self._client.register_script(source)

    @property
    def available(self) -> bool:
        return time.monotonic() >= self._down_until

    def mark_down(self, exc: BaseException) -> None:
        """Open the breaker after a failed command, unless Redis answered it with an error."""
        if isinstance(exc, ResponseError):
            logger.warning("redis command refused: %s", exc)
            return
        if self.available:
            logger.warning(
                "redis unavailable, bypassing for %.1fs: %s", self.settings.redis_down_backoff, exc
            )
        self._down_until = time.monotonic() + self.settings.redis_down_backoff

    def mark_up(self) -> None:
        self._down_until = 0.0

    async def ping(self) -> bool:
        try:
            await self.client.ping()
        except REDIS_ERRORS as exc:
            self.mark_down(exc)
            return False
        self.mark_up()
        return True

    async def warm_up(self) -> None:
        """Open REDIS_CONNECTION_POOL_SIZE connections now rather than on the first requests."""
        self.client  # noqa: B018 - binds the pool to the running loop
        conns = []
        try:
            for _ in range(self.settings.redis_connection_pool_size):
                conn = await self.pool.get_connection()  # type: ignore[no-untyped-call]
                conns.append(conn)
        except REDIS_ERRORS as exc:
            self.mark_down(exc)
        finally:
            for conn in conns:
                await self.pool.release(conn)

    async def close(self) -> None:
        if self._loop is asyncio.get_running_loop():
            await self._client.aclose()
            await self.pool.disconnect()
