from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app import __version__
from app.core.security import create_token
from app.main import create_app
from tests.conftest import POOL, RedisServer, metric_value


def test_health_ok_with_version_and_release(make_settings: Any) -> None:
    with TestClient(create_app(make_settings(app_release="1.0.0-abc123"))) as c:
        resp = c.get("/health")
    body = resp.json()
    assert resp.status_code == 200
    assert body["status"] == "ok"
    assert body["version"] == __version__
    assert body["release"] == "1.0.0-abc123"
    assert body["checks"]["redis"]["status"] == "ok"
    assert body["checks"]["database"]["status"] == "ok"


@pytest.fixture
def own_redis(tmp_path: Path) -> Any:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.mark.parametrize("fail_open", [True, False])
def test_redis_down_keeps_serving_and_health_degrades(
    make_settings: Any, own_redis: RedisServer, fail_open: bool
) -> None:
    settings = make_settings(
        redis_port=own_redis.port,
        rate_limit_enabled=True,
        rate_limit_fail_open=fail_open,
        redis_down_backoff=0.2,
        redis_retry_count=1,
    )
    with TestClient(create_app(settings), client=("127.0.0.1", 1)) as c:
        auth = {"Authorization": "Bearer " + create_token("t", ["write"], settings=settings)}
        pool = c.post("/api/v1/asset-pools", json=POOL, headers=auth).json()
        assert c.post(f"/api/v1/asset-pools/{pool['id']}/cashflows").headers["x-cache"] == "MISS"
        before = c.get("/metrics").text
        own_redis.stop()
        health = c.get("/health")
        assert health.status_code == 200
        assert health.json()["status"] == "degraded"
        assert health.json()["checks"]["redis"]["status"] == "down"
        assert health.json()["checks"]["redis"]["detail"] == "cache bypassed, rate limiting " + (
            "open" if fail_open else "closed"
        )
        listing = c.get("/api/v1/asset-classes")
        projection = c.post(f"/api/v1/asset-pools/{pool['id']}/cashflows")
        if fail_open:
            assert listing.status_code == 200
            assert projection.status_code == 200
            assert projection.headers["x-cache"] == "MISS"  # cache bypassed, still answered
            assert "x-ratelimit-remaining" not in listing.headers
        else:
            assert listing.status_code == 503
            assert listing.headers["retry-after"] == "1"
            assert projection.status_code == 503
        # /metrics is exempt from the limiter, so it answers with Redis down.
        metrics = c.get("/metrics").text
        refused = metric_value(metrics, "rate_limited_requests_total", reason="backend_down")
        refused -= metric_value(before, "rate_limited_requests_total", reason="backend_down")
        # Fail-closed refuses the listing and the projection; fail-open refuses nothing.
        assert refused == (0 if fail_open else 2)
        limited = metric_value(metrics, "rate_limited_requests_total", reason="limit")
        assert limited == metric_value(before, "rate_limited_requests_total", reason="limit")
        own_redis.start()
        import time

        time.sleep(0.25)
        assert c.get("/health").json()["status"] == "ok"
        assert c.get("/api/v1/asset-classes").status_code == 200


def test_cache_bypassed_when_redis_down_without_rate_limit(
    make_settings: Any, own_redis: RedisServer
) -> None:
    settings = make_settings(redis_port=own_redis.port, redis_retry_count=0)
    with TestClient(create_app(settings)) as c:
        auth = {"Authorization": "Bearer " + create_token("t", ["write"], settings=settings)}
        pool = c.post("/api/v1/asset-pools", json=POOL, headers=auth).json()
        own_redis.stop()
        # Writes still work: invalidation is skipped, the version in the key protects readers.
        patched = c.patch(f"/api/v1/asset-pools/{pool['id']}", json={"wam": 120}, headers=auth)
        assert patched.status_code == 200
        resp = c.post(f"/api/v1/asset-pools/{pool['id']}/cashflows")
        assert resp.status_code == 200
        assert len(resp.json()["cashflows"]) == 120 + resp.json()["assumptions"]["recovery_lag"]
        assert (
            c.post("/api/v1/analyses", json={"pool_ids": [pool["id"]]}, headers=auth).status_code
            == 503
        )


@pytest.mark.parametrize(
    ("method", "url", "body", "detail"),
    [
        ("DELETE", "/api/v1/admin/cache", None, "Redis unavailable"),
        ("POST", "/api/v1/analyses", {"pool_ids": [1]}, "Job store unavailable"),
        ("GET", "/api/v1/analyses/some-job", None, "Job store unavailable"),
    ],
    ids=["admin-flush", "start-job", "job-status"],
)
def test_redis_callers_answer_503_and_open_the_breaker(
    make_settings: Any,
    own_redis: RedisServer,
    method: str,
    url: str,
    body: dict[str, Any] | None,
    detail: str,
) -> None:
    """An admin flush, starting a job or reading its status without Redis answers 503 and marks
    Redis down, like any other caller."""
    settings = make_settings(redis_port=own_redis.port, redis_retry_count=0, redis_down_backoff=60)
    app = create_app(settings)
    token = create_token("ops", ["write", "admin"], settings=settings)
    with TestClient(app, client=("127.0.0.1", 1)) as c:
        own_redis.stop()
        assert app.state.redis.available
        resp = c.request(method, url, json=body, headers={"Authorization": f"Bearer {token}"})
        assert resp.status_code == 503
        assert resp.json()["detail"] == detail
        assert not app.state.redis.available


def test_database_down_is_503(make_settings: Any, tmp_path: Path) -> None:
    settings = make_settings(database_url=f"sqlite:///{tmp_path}/missing/dir/x.db")
    with TestClient(create_app(settings)) as c:
        resp = c.get("/health")
    assert resp.status_code == 503
    assert resp.json()["status"] == "unavailable"
    assert resp.json()["checks"]["database"]["status"] == "down"


def test_database_down_does_not_leak_the_error_text(make_settings: Any, tmp_path: Path) -> None:
    """/health is public: when the database fails it names the exception class only, never the
    driver's message (which can carry the DATABASE_URL's host, path or user)."""
    settings = make_settings(database_url=f"sqlite:///{tmp_path}/secret-dir/missing/x.db")
    with TestClient(create_app(settings)) as c:
        resp = c.get("/health")
    assert resp.status_code == 503
    detail = resp.json()["checks"]["database"]["detail"]
    assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", detail), detail
    assert detail == "OperationalError"
    for fragment in (str(tmp_path), "secret-dir", "x.db", "sqlite", "unable to open"):
        assert fragment not in resp.text


def test_logs_in_as_a_redis_acl_user(make_settings: Any, tmp_path: Path) -> None:
    """The redis role gives the app its own ACL user; REDIS_USERNAME + REDIS_PASSWORD log in as it."""
    import redis as sync_redis

    server = RedisServer(tmp_path)
    server.start()
    try:
        admin = sync_redis.Redis(port=server.port)
        admin.execute_command(
            "ACL", "SETUSER", "app", "on", ">app-secret", "~*", "&*", "+@all", "-@dangerous"
        )
        admin.execute_command("ACL", "SETUSER", "default", "off")
        as_app = make_settings(
            redis_port=server.port, redis_username="app", redis_password="app-secret"
        )
        with TestClient(create_app(as_app)) as c:
            assert c.get("/health").json()["checks"]["redis"]["status"] == "ok"
        wrong = make_settings(redis_port=server.port, redis_username="app", redis_password="wrong")
        with TestClient(create_app(wrong)) as c:
            assert c.get("/health").json()["checks"]["redis"]["status"] == "down"
    finally:
        server.stop()


def test_failed_cache_read_counts_one_cache_error(
    make_settings: Any, own_redis: RedisServer
) -> None:
    """A projection whose cache GET fails (Redis down) counts one cache error and one miss."""
    settings = make_settings(redis_port=own_redis.port, redis_retry_count=0, redis_down_backoff=60)
    with TestClient(create_app(settings)) as c:
        auth = {"Authorization": "Bearer " + create_token("t", ["write"], settings=settings)}
        pool = c.post("/api/v1/asset-pools", json=POOL, headers=auth).json()
        before = c.get("/metrics").text
        own_redis.stop()
        assert c.post(f"/api/v1/asset-pools/{pool['id']}/cashflows").status_code == 200
        after = c.get("/metrics").text
    for name in ("cache_errors_total", "cache_misses_total"):
        counted = metric_value(after, name, cache="cashflow") - metric_value(
            before, name, cache="cashflow"
        )
        assert counted == 1, name


def test_while_the_breaker_is_open_the_cache_does_not_try_redis(
    make_settings: Any, own_redis: RedisServer
) -> None:
    """Once Redis is marked down, a pool write skips invalidation and a projection skips the
    cache: no Redis call, so no cache error counted."""
    settings = make_settings(redis_port=own_redis.port, redis_retry_count=0, redis_down_backoff=60)
    app = create_app(settings)
    with TestClient(app) as c:
        auth = {"Authorization": "Bearer " + create_token("t", ["write"], settings=settings)}
        pool = c.post("/api/v1/asset-pools", json=POOL, headers=auth).json()
        own_redis.stop()
        app.state.redis.mark_down(ConnectionError("down"))
        before = c.get("/metrics").text
        patched = c.patch(f"/api/v1/asset-pools/{pool['id']}", json={"wam": 120}, headers=auth)
        projected = c.post(f"/api/v1/asset-pools/{pool['id']}/cashflows")
        after = c.get("/metrics").text
    assert (patched.status_code, projected.status_code) == (200, 200)
    errors = metric_value(after, "cache_errors_total", cache="cashflow")
    assert errors == metric_value(before, "cache_errors_total", cache="cashflow")
