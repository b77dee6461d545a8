"""The worker's Redis pool is built from the settings: size, timeouts, retries and TLS."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app.core.config import Settings, load_settings
from app.core.redis import RedisManager
from app.services.cache import ProjectionCache
from tests.conftest import MakeSettings, free_port


def build(**overrides: Any) -> Settings:
    return load_settings(_env_file=None, environment="test", **overrides)


def test_pool_follows_the_settings() -> None:
    manager = RedisManager(
        build(
            redis_host="redis.internal",
            redis_port=6380,
            redis_database=3,
            redis_timeout=0.75,
            redis_max_connections=7,
            redis_connection_pool_size=2,
        )
    )
    assert isinstance(manager.pool, aioredis.BlockingConnectionPool)
    assert manager.pool.max_connections == 7
    assert manager.pool.timeout == 0.75  # how long a request waits for a free connection
    conn = manager.pool.make_connection()  # not connected: only the configuration is read
    assert type(conn) is aioredis.Connection
    assert (conn.host, conn.port, conn.db) == ("redis.internal", 6380, 3)
    assert conn.socket_timeout == 0.75
    assert conn.socket_connect_timeout == 0.75


def test_commands_are_retried_on_connection_errors_and_timeouts() -> None:
    manager = RedisManager(build(redis_retry_count=3, redis_retry_delay=0.01))
    retry = manager.pool.make_connection().retry
    assert retry._retries == 3
    assert set(retry._supported_errors) >= {RedisConnectionError, RedisTimeoutError}


def test_redis_ssl_uses_tls_connections_with_the_ca_bundle() -> None:
    manager = RedisManager(build(redis_ssl=True, redis_ssl_ca_certs="/etc/redis/ca.pem"))
    conn = manager.pool.make_connection()
    assert isinstance(conn, aioredis.SSLConnection)
    assert conn.ssl_context.ca_certs == "/etc/redis/ca.pem"


def test_max_connections_caps_the_pool(make_settings: MakeSettings) -> None:
    """A real server: the pool hands out REDIS_MAX_CONNECTIONS connections, then the next caller
    waits REDIS_TIMEOUT and gets an error rather than a new connection."""
    manager = RedisManager(
        make_settings(redis_max_connections=2, redis_connection_pool_size=0, redis_timeout=0.2)
    )

    async def scenario() -> None:
        manager.client  # noqa: B018 - binds the pool to this loop
        first = await manager.pool.get_connection()  # type: ignore[no-untyped-call]
        second = await manager.pool.get_connection()  # type: ignore[no-untyped-call]
        with pytest.raises(RedisConnectionError, match="No connection available"):
            await manager.pool.get_connection()  # type: ignore[no-untyped-call]
        await manager.pool.release(first)
        await manager.pool.release(second)
        await manager.close()

    asyncio.run(scenario())


async def _use_cache(manager: RedisManager, cache: ProjectionCache, operation: str) -> None:
    if operation == "get":
        assert await cache.get("cf:1") is None
    elif operation == "set":
        await cache.set(1, "cf:1", b"\x1f\x8b", 60)
    else:
        assert await cache.invalidate(1) == 0
    await manager.close()


@pytest.mark.parametrize("operation", ["get", "set", "invalidate"])
def test_connection_error_opens_the_breaker(make_settings: MakeSettings, operation: str) -> None:
    """Redis unreachable: the failed cache call opens the breaker for REDIS_DOWN_BACKOFF."""
    settings = make_settings(redis_port=free_port(), redis_retry_count=0, redis_down_backoff=60)
    manager = RedisManager(settings)
    asyncio.run(_use_cache(manager, ProjectionCache(manager, settings), operation))
    assert not manager.available


@pytest.mark.parametrize("operation", ["get", "set", "invalidate"])
def test_error_reply_from_redis_keeps_the_breaker_closed(
    make_settings: MakeSettings, redis_client: redis.Redis, operation: str
) -> None:
    """Redis answers with an error (WRONGTYPE here): it is up, so the breaker stays closed."""
    redis_client.rpush("cf:1", "not a string")  # GET on a list: WRONGTYPE
    redis_client.set("cf:idx:1", "not a set")  # SADD/SMEMBERS on a string: WRONGTYPE
    settings = make_settings(redis_down_backoff=60)
    manager = RedisManager(settings)
    asyncio.run(_use_cache(manager, ProjectionCache(manager, settings), operation))
    assert manager.available
