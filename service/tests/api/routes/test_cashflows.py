from __future__ import annotations

from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from app.services.cashflow import Assumptions, project
from tests.conftest import POOL, metric_value


def url(pool: dict[str, Any]) -> str:
    return f"/api/v1/asset-pools/{pool['id']}/cashflows"


def test_projection_uses_asset_class_defaults(client: TestClient, pool: dict[str, Any]) -> None:
    body = client.post(url(pool)).json()
    rmbs = client.get("/api/v1/asset-classes/RMBS").json()
    a = body["assumptions"]
    assert a == {
        "cpr": rmbs["default_cpr"],
        "cdr": rmbs["default_cdr"],
        "severity": rmbs["loss_severity"],
        "recovery_lag": rmbs["recovery_lag_months"],
        "months": 360,
    }
    assert len(body["cashflows"]) == 360 + rmbs["recovery_lag_months"]
    expected = project(1_000_000, 0.06, 360, 0.0025, Assumptions(**a)).summary
    assert body["summary"] == pytest.approx(expected)
    assert body["pool_version"] == 1


def test_explicit_assumptions(client: TestClient, pool: dict[str, Any]) -> None:
    body = client.post(url(pool), json={"cpr": 0.1, "cdr": 0.0, "months": 12}).json()
    assert body["assumptions"]["cpr"] == 0.1
    assert len(body["cashflows"]) == 12 + body["assumptions"]["recovery_lag"]
    assert body["summary"]["total_losses"] == 0
    first = body["cashflows"][0]
    assert first["month"] == 1
    assert first["interest"] == pytest.approx(1_000_000 * 0.06 / 12)


def test_bad_assumptions_are_422(client: TestClient, pool: dict[str, Any]) -> None:
    resp = client.post(url(pool), json={"cpr": 2, "months": 0, "recovery_lag": -1})
    assert resp.status_code == 422
    assert {e["loc"][-1] for e in resp.json()["detail"]} == {"cpr", "months", "recovery_lag"}


def test_unknown_pool_is_404(client: TestClient) -> None:
    assert client.post("/api/v1/asset-pools/12345/cashflows").status_code == 404


def test_second_call_is_a_cache_hit_and_metrics_show_it(
    client: TestClient, pool: dict[str, Any]
) -> None:
    before = client.get("/metrics").text
    first = client.post(url(pool), json={"cpr": 0.05})
    second = client.post(url(pool), json={"cpr": 0.05})
    after = client.get("/metrics").text
    assert first.headers["x-cache"] == "MISS"
    assert second.headers["x-cache"] == "HIT"
    assert second.json() == first.json()
    hits = metric_value(after, "cache_hits_total", cache="cashflow") - metric_value(
        before, "cache_hits_total", cache="cashflow"
    )
    misses = metric_value(after, "cache_misses_total", cache="cashflow") - metric_value(
        before, "cache_misses_total", cache="cashflow"
    )
    assert (hits, misses) == (1, 1)


def test_same_assumptions_spelled_out_share_the_entry(
    client: TestClient, pool: dict[str, Any]
) -> None:
    implicit = client.post(url(pool))
    explicit = client.post(url(pool), json=implicit.json()["assumptions"])
    assert explicit.headers["x-cache"] == "HIT"


def test_ttl_follows_data_tier(
    client: TestClient, auth: dict[str, str], pool: dict[str, Any], redis_client: redis.Redis
) -> None:
    client.post(url(pool))  # RMBS: stable
    auto = client.post(
        "/api/v1/asset-pools", json={**POOL, "asset_class_code": "AUTO"}, headers=auth
    ).json()
    client.post(url(auto))  # AUTO: dynamic
    stable = [k for k in redis_client.keys(f"cf:{pool['id']}:v*")]
    dynamic = [k for k in redis_client.keys(f"cf:{auto['id']}:v*")]
    assert 86000 < redis_client.ttl(stable[0]) <= 86400
    assert 3500 < redis_client.ttl(dynamic[0]) <= 3600


def test_a_pool_change_invalidates_its_entries(
    client: TestClient, auth: dict[str, str], pool: dict[str, Any], redis_client: redis.Redis
) -> None:
    client.post(url(pool))
    client.post(url(pool), json={"cpr": 0.2})
    assert len(redis_client.keys(f"cf:{pool['id']}:v1:*")) == 2
    client.patch(
        f"/api/v1/asset-pools/{pool['id']}", json={"current_balance": 500_000}, headers=auth
    )
    assert redis_client.keys(f"cf:{pool['id']}:*") == []
    again = client.post(url(pool))
    assert again.headers["x-cache"] == "MISS"
    assert again.json()["pool_version"] == 2
    assert again.json()["cashflows"][0]["beginning_balance"] == 500_000


def test_stale_entry_is_never_served_even_if_invalidation_was_missed(
    client: TestClient, auth: dict[str, str], pool: dict[str, Any], redis_client: redis.Redis
) -> None:
    client.post(url(pool))
    keys = redis_client.keys(f"cf:{pool['id']}:*")
    saved = {k: redis_client.get(k) for k in keys}
    client.patch(f"/api/v1/asset-pools/{pool['id']}", json={"wac": 0.07}, headers=auth)
    for k, v in saved.items():  # as if the delete had been lost while Redis was away
        redis_client.set(k, v)
    again = client.post(url(pool))
    assert again.headers["x-cache"] == "MISS"
    assert again.json()["pool_version"] == 2


def test_caching_can_be_switched_off(make_settings: Any, pool: dict[str, Any]) -> None:
    from app.main import create_app

    with TestClient(create_app(make_settings(enable_caching=False))) as c:
        assert c.post(url(pool)).headers["x-cache"] == "MISS"
        assert c.post(url(pool)).headers["x-cache"] == "MISS"


def test_large_projection_is_gzipped(client: TestClient, pool: dict[str, Any]) -> None:
    resp = client.post(url(pool), headers={"Accept-Encoding": "gzip"})
    assert resp.headers["content-encoding"] == "gzip"
    assert len(resp.json()["cashflows"]) == 372
