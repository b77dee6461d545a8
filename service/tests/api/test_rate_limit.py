from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from app.core.net import client_ip, parse_networks
from app.core.security import create_token
from app.main import create_app
from tests.conftest import metric_value, with_peer


def test_burst_then_429_then_recovery(make_settings: Any) -> None:
    settings = make_settings(
        rate_limit_enabled=True, rate_limit_default="1/second", rate_limit_burst=5
    )  # a token a second: the six requests have a whole second before a refill could hide the 429
    with TestClient(create_app(settings), client=("127.0.0.1", 1)) as c:
        before = metric_value(c.get("/metrics").text, "rate_limited_requests_total")
        statuses = [c.get("/api/v1/asset-classes") for _ in range(6)]
        assert [r.status_code for r in statuses[:5]] == [200] * 5
        assert statuses[0].headers["x-ratelimit-limit"] == "1"
        assert statuses[0].headers["x-ratelimit-burst"] == "5"
        assert statuses[0].headers["x-ratelimit-remaining"] == "4"
        refused = statuses[5]
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "1"
        assert refused.headers["x-ratelimit-remaining"] == "0"
        assert "x-ratelimit-reset" in refused.headers
        after = metric_value(c.get("/metrics").text, "rate_limited_requests_total")
        assert after - before == 1
        time.sleep(1.1)  # refills one token
        assert c.get("/api/v1/asset-classes").status_code == 200


def test_default_is_100_per_minute_with_burst_150(make_settings: Any) -> None:
    settings = make_settings(rate_limit_enabled=True)
    with TestClient(create_app(settings), client=("127.0.0.1", 1)) as c:
        started = time.monotonic()
        codes = [c.get("/api/v1/asset-classes/RMBS").status_code for _ in range(160)]
        elapsed = time.monotonic() - started
    first_refusal = codes.index(429)
    # 150 at once, then one more every 0.6 s: a slow machine may earn a few during the loop.
    assert 150 <= first_refusal <= 150 + int(elapsed / 0.6)
    assert codes[:first_refusal] == [200] * first_refusal


def test_buckets_are_per_ip_and_per_token(make_settings: Any) -> None:
    settings = make_settings(
        rate_limit_enabled=True, rate_limit_default="1/minute", rate_limit_burst=1
    )
    app = create_app(settings)
    alice = {"Authorization": "Bearer " + create_token("alice", ["read"], settings=settings)}
    bob = {"Authorization": "Bearer " + create_token("bob", ["read"], settings=settings)}
    p1, p2 = {"X-Test-Peer": "10.0.0.1"}, {"X-Test-Peer": "10.0.0.2"}
    with TestClient(with_peer(app)) as c:
        assert c.get("/api/v1/asset-classes", headers=p1).status_code == 200
        assert c.get("/api/v1/asset-classes", headers=p1).status_code == 429
        assert c.get("/api/v1/asset-classes", headers=p2).status_code == 200
        assert c.get("/api/v1/asset-classes", headers={**p1, **alice}).status_code == 200
        assert c.get("/api/v1/asset-classes", headers={**p1, **alice}).status_code == 429
        assert c.get("/api/v1/asset-classes", headers={**p1, **bob}).status_code == 200


@pytest.fixture
def behind_proxy(make_settings: Any) -> Iterator[TestClient]:
    """One request a minute (burst 1), X-Forwarded-For trusted from 127.0.0.1 only; each request
    picks its TCP peer with X-Test-Peer."""
    settings = make_settings(
        rate_limit_enabled=True,
        rate_limit_default="1/minute",
        rate_limit_burst=1,
        trusted_proxies="127.0.0.1",
    )
    with TestClient(with_peer(create_app(settings))) as client:
        yield client


def test_forwarded_for_is_trusted_only_from_the_proxy(behind_proxy: TestClient) -> None:
    def get(peer: str, xff: str) -> int:
        headers = {"X-Test-Peer": peer, "X-Forwarded-For": xff}
        return behind_proxy.get("/api/v1/asset-classes", headers=headers).status_code

    assert get("127.0.0.1", "198.51.100.1") == 200
    assert get("127.0.0.1", "198.51.100.2") == 200
    assert get("127.0.0.1", "198.51.100.1") == 429
    # A direct client cannot escape its bucket by inventing X-Forwarded-For.
    assert get("203.0.113.9", "1.1.1.1") == 200
    assert get("203.0.113.9", "2.2.2.2") == 429


def test_client_ip_resolution() -> None:
    trusted = parse_networks(("127.0.0.1", "10.0.0.0/8"))

    def scope(peer: str, xff: str | None) -> dict[str, Any]:
        headers = [(b"x-forwarded-for", xff.encode())] if xff else []
        return {"client": (peer, 1), "headers": headers}

    assert client_ip(scope("127.0.0.1", "5.5.5.5, 10.0.0.7"), trusted) == "5.5.5.5"
    assert client_ip(scope("127.0.0.1", "6.6.6.6, 5.5.5.5"), trusted) == "5.5.5.5"
    assert client_ip(scope("8.8.8.8", "5.5.5.5"), trusted) == "8.8.8.8"
    assert client_ip(scope("127.0.0.1", None), trusted) == "127.0.0.1"
    assert client_ip(scope("127.0.0.1", "not-an-ip"), trusted) == "127.0.0.1"


def test_reset_is_the_seconds_until_the_bucket_is_full(make_settings: Any) -> None:
    # 6/minute refills one token every 10 s: after n requests the bucket is n tokens short.
    settings = make_settings(
        rate_limit_enabled=True, rate_limit_default="6/minute", rate_limit_burst=3
    )
    with TestClient(create_app(settings), client=("127.0.0.1", 1)) as c:
        responses = [c.get("/api/v1/asset-classes") for _ in range(4)]
    assert [r.status_code for r in responses] == [200, 200, 200, 429]
    assert [r.headers["x-ratelimit-remaining"] for r in responses] == ["2", "1", "0", "0"]
    assert [r.headers["x-ratelimit-reset"] for r in responses] == ["10", "20", "30", "30"]
    assert responses[3].headers["retry-after"] == "10"


def test_health_and_metrics_are_not_limited(make_settings: Any) -> None:
    settings = make_settings(
        rate_limit_enabled=True,
        rate_limit_default="1/minute",
        rate_limit_burst=1,
        enable_prometheus=True,
    )
    with TestClient(create_app(settings), client=("127.0.0.1", 1)) as c:
        assert c.get("/api/v1/asset-classes").status_code == 200
        assert c.get("/api/v1/asset-classes").status_code == 429  # the bucket is empty
        for _ in range(3):
            health = c.get("/health")
            metrics = c.get("/metrics")
            assert health.status_code == 200
            assert metrics.status_code == 200
            assert "x-ratelimit-remaining" not in health.headers
            assert "x-ratelimit-remaining" not in metrics.headers
        assert c.get("/api/v1/asset-classes").status_code == 429  # still empty


def test_429_is_documented_in_openapi(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    op = spec["paths"]["/api/v1/asset-classes"]["get"]
    assert "Retry-After" in op["responses"]["429"]["headers"]
    assert "X-RateLimit-Remaining" in op["responses"]["429"]["headers"]


def test_forged_token_counts_against_the_ip_bucket(make_settings: Any) -> None:
    """A bearer token that does not verify is no identity: the caller stays in its IP bucket,
    so sending a fresh random token with every request does not escape the limit."""
    settings = make_settings(
        rate_limit_enabled=True, rate_limit_default="1/minute", rate_limit_burst=1
    )
    with TestClient(create_app(settings), client=("127.0.0.1", 1)) as c:

        def get(token: str) -> int:
            headers = {"Authorization": f"Bearer {token}"}
            return c.get("/api/v1/asset-classes", headers=headers).status_code

        assert c.get("/api/v1/asset-classes").status_code == 200  # spends the IP's one token
        assert get("garbage-1") == 429
        assert get("garbage-2") == 429
        assert get("a.b.c") == 429


def test_bucket_outlives_a_short_idle(make_settings: Any, redis_client: Any) -> None:
    """The bucket key must live until it would have refilled (burst / rate, plus a margin): if it
    expired sooner, an emptied bucket would come back full after a short pause."""
    settings = make_settings(
        rate_limit_enabled=True, rate_limit_default="1/minute", rate_limit_burst=2
    )
    with TestClient(create_app(settings), client=("127.0.0.1", 1)) as c:
        codes = [c.get("/api/v1/asset-classes").status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        # 2 tokens at 1/minute refill in 120 s; the key lives that long plus 1 s.
        assert 120_000 < redis_client.pttl("rl:ip:127.0.0.1") <= 121_000
        time.sleep(1.2)
        refused = c.get("/api/v1/asset-classes")
        assert refused.status_code == 429
        assert refused.headers["x-ratelimit-remaining"] == "0"


def test_last_forwarded_for_header_is_the_proxys(behind_proxy: TestClient) -> None:
    """With two X-Forwarded-For headers, the first was sent by the client and the last one was
    added by our proxy: the client address comes from the last, so it cannot be spoofed."""
    trusted = parse_networks(("127.0.0.1",))
    scope = {
        "client": ("127.0.0.1", 1),
        "headers": [(b"x-forwarded-for", b"6.6.6.6"), (b"x-forwarded-for", b"5.5.5.5")],
    }
    assert client_ip(scope, trusted) == "5.5.5.5"

    def get(spoofed: str) -> int:
        headers = [
            ("X-Test-Peer", "127.0.0.1"),
            ("X-Forwarded-For", spoofed),
            ("X-Forwarded-For", "198.51.100.7"),
        ]
        return behind_proxy.get("/api/v1/asset-classes", headers=headers).status_code

    assert get("1.1.1.1") == 200
    assert get("2.2.2.2") == 429
    assert get("3.3.3.3") == 429


def test_lua_script_error_does_not_open_the_breaker(
    make_settings: Any, redis_client: redis.Redis
) -> None:
    """A script failing inside Redis is an error reply, not an outage: Redis stays in use."""
    settings = make_settings(rate_limit_enabled=True, redis_down_backoff=60)
    app = create_app(settings)
    with TestClient(app, client=("127.0.0.1", 1)) as c:
        redis_client.rpush("rl:ip:127.0.0.1", "x")  # the script's HMGET fails: WRONGTYPE
        resp = c.get("/api/v1/asset-classes")
        assert resp.status_code == 200  # fail-open, as with Redis down
        assert "x-ratelimit-remaining" not in resp.headers
        assert app.state.redis.available


def test_noscript_reloads_the_script_without_opening_the_breaker(
    make_settings: Any, redis_client: redis.Redis
) -> None:
    """After SCRIPT FLUSH (or a Redis restart) the limiter loads its script again and counts."""
    settings = make_settings(
        rate_limit_enabled=True,
        rate_limit_default="1/minute",
        rate_limit_burst=5,
        redis_down_backoff=60,
    )
    app = create_app(settings)
    with TestClient(app, client=("127.0.0.1", 1)) as c:
        assert c.get("/api/v1/asset-classes").headers["x-ratelimit-remaining"] == "4"
        redis_client.script_flush()
        assert c.get("/api/v1/asset-classes").headers["x-ratelimit-remaining"] == "3"
        assert app.state.redis.available
