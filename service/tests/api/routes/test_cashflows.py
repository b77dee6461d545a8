from __future__ import annotations

import gzip
import json
from typing import Any

import fastapi.dependencies.utils
import pytest
import redis
import redis.asyncio
import sqlalchemy as sa
from fastapi.testclient import TestClient

from app.core.compression import GZIP_MAGIC
from app.main import create_app
from app.models import AssetClass
from app.services.cashflow import Assumptions, project
from tests.conftest import POOL, metric_value

GZIP = {"Accept-Encoding": "gzip"}
IDENTITY = {"Accept-Encoding": "identity"}


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


def test_month_is_a_json_integer(client: TestClient, pool: dict[str, Any]) -> None:
    """The rows come from a float table; month is still written as 1, not 1.0."""
    body = client.post(url(pool), json={"months": 2}).text
    assert '"month":1,' in body
    assert '"month":1.0' not in body


def test_projection_names_the_pools_asset_class(client: TestClient, auth: dict[str, str]) -> None:
    auto = client.post(
        "/api/v1/asset-pools", json={**POOL, "asset_class_code": "AUTO"}, headers=auth
    ).json()
    assert client.post(url(auto)).json()["asset_class_code"] == "AUTO"


def test_months_beyond_wam_are_capped_and_share_the_wam_entry(
    client: TestClient, pool: dict[str, Any]
) -> None:
    """months > WAM projects WAM months, reports months = WAM and is the same cache entry."""
    assert client.post(url(pool), json={"months": 360}).headers["x-cache"] == "MISS"
    capped = client.post(url(pool), json={"months": 480})
    assert capped.json()["assumptions"]["months"] == 360
    assert capped.headers["x-cache"] == "HIT"


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


def project_stable_and_dynamic(
    client: TestClient, auth: dict[str, str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """An RMBS pool (stable tier) and an AUTO pool (dynamic tier), each projected once."""
    rmbs = client.post("/api/v1/asset-pools", json=POOL, headers=auth).json()
    auto = client.post(
        "/api/v1/asset-pools", json={**POOL, "asset_class_code": "AUTO"}, headers=auth
    ).json()
    for p in (rmbs, auto):
        assert client.post(url(p)).headers["x-cache"] == "MISS"
    return rmbs, auto


def entry_ttl(redis_client: redis.Redis, pool: dict[str, Any]) -> int:
    (key,) = redis_client.keys(f"cf:{pool['id']}:v*")
    return int(redis_client.ttl(key))


def test_ttl_follows_the_configured_tier_ttls(
    make_settings: Any, auth: dict[str, str], redis_client: redis.Redis
) -> None:
    settings = make_settings(cache_ttl_stable=5000, cache_ttl_dynamic=700)
    with TestClient(create_app(settings)) as c:
        rmbs, auto = project_stable_and_dynamic(c, auth)
    assert 4990 < entry_ttl(redis_client, rmbs) <= 5000
    assert 690 < entry_ttl(redis_client, auto) <= 700


@pytest.mark.parametrize(("stable", "dynamic"), [(86400, 3600), (600, 7200)])
def test_pool_index_lives_as_long_as_its_entries(
    make_settings: Any,
    auth: dict[str, str],
    redis_client: redis.Redis,
    stable: int,
    dynamic: int,
) -> None:
    """The index set cf:idx:{pool} is how a change finds the pool's entries: it must not expire
    before any of them, whichever tier TTL is the longer."""
    settings = make_settings(cache_ttl_stable=stable, cache_ttl_dynamic=dynamic)
    with TestClient(create_app(settings)) as c:
        rmbs, auto = project_stable_and_dynamic(c, auth)
    for p, ttl in ((rmbs, stable), (auto, dynamic)):
        index_ttl = int(redis_client.ttl(f"cf:idx:{p['id']}"))
        assert index_ttl >= entry_ttl(redis_client, p) > ttl - 10, (p["asset_class_code"], ttl)


def test_pool_index_outlives_entries_of_a_tier_the_pool_has_left(
    client: TestClient, pool: dict[str, Any], redis_client: redis.Redis
) -> None:
    """RMBS moves from the stable to the dynamic tier: the pool's new, short-lived entry must not
    cut the index's TTL below that of the older stable entry it still has to find."""
    client.post(url(pool))  # stable entry, 86400 s
    app: Any = client.app
    with app.state.sessions() as session:
        session.execute(
            sa.update(AssetClass).where(AssetClass.code == "RMBS").values(data_tier="dynamic")
        )
        session.commit()
    app.state.reference.invalidate()
    assert client.post(url(pool)).headers["x-cache"] == "MISS"  # dynamic entry, 3600 s
    index = f"cf:idx:{pool['id']}"
    entry_ttls = [int(redis_client.ttl(k)) for k in redis_client.smembers(index)]
    assert len(entry_ttls) == 2
    assert int(redis_client.ttl(index)) >= max(entry_ttls) > 86000


def test_changed_reference_data_is_never_answered_from_old_entries(
    make_settings: Any,
    client: TestClient,
    pool: dict[str, Any],
    database_url: str,
    redis_client: redis.Redis,
) -> None:
    """Cache keys digest the reference data as well as the assumptions: after the asset-class
    rows change (a migration; the deploy restarts the workers, which reload them), neither a
    projection on the defaults nor one whose assumptions are all explicit comes from an entry
    made with the old rows. Here RMBS gets a new default CDR and moves to the dynamic tier, so
    the explicit projection (same numbers) must be stored again with the dynamic TTL."""
    explicit = {"cpr": 0.1, "cdr": 0.01, "severity": 0.3, "recovery_lag": 12}
    before = {
        "defaults": client.post(url(pool)).json(),
        "explicit": client.post(url(pool), json=explicit).json(),
    }
    old_keys = set(redis_client.keys(f"cf:{pool['id']}:*"))
    assert len(old_keys) == 2
    engine = sa.create_engine(database_url)
    with engine.begin() as conn:
        conn.execute(
            sa.update(AssetClass)
            .where(AssetClass.code == "RMBS")
            .values(default_cdr=0.007, data_tier="dynamic")
        )
    engine.dispose()
    with TestClient(create_app(make_settings())) as restarted:
        defaults = restarted.post(url(pool))
        assert defaults.headers["x-cache"] == "MISS"
        assert defaults.json()["assumptions"]["cdr"] == 0.007
        assert defaults.json() != before["defaults"]
        again = restarted.post(url(pool), json=explicit)
        assert again.headers["x-cache"] == "MISS"
        assert again.json() == before["explicit"]
        assert restarted.post(url(pool), json=explicit).headers["x-cache"] == "HIT"
    new_keys = set(redis_client.keys(f"cf:{pool['id']}:*")) - old_keys
    assert len(new_keys) == 2
    for key in new_keys:
        assert 3500 < redis_client.ttl(key) <= 3600


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


@pytest.mark.parametrize("encoding", [GZIP, IDENTITY])
def test_stale_entry_is_never_served_even_if_invalidation_was_missed(
    client: TestClient,
    auth: dict[str, str],
    pool: dict[str, Any],
    redis_client: redis.Redis,
    encoding: dict[str, str],
) -> None:
    client.post(url(pool), headers=encoding)
    keys = redis_client.keys(f"cf:{pool['id']}:*")
    saved = {k: redis_client.get(k) for k in keys}
    client.patch(f"/api/v1/asset-pools/{pool['id']}", json={"wac": 0.07}, headers=auth)
    for k, v in saved.items():  # as if the delete had been lost while Redis was away
        redis_client.set(k, v)
    again = client.post(url(pool), headers=encoding)
    assert again.headers["x-cache"] == "MISS"
    assert again.json()["pool_version"] == 2
    assert client.post(url(pool), headers=encoding).json()["pool_version"] == 2


def test_a_failed_invalidation_is_harmless(
    make_settings: Any,
    auth: dict[str, str],
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Redis refuses the delete after the database commit: the old entries stay in Redis, and
    still the next projection is computed from the new pool version (a MISS), then cached."""
    with TestClient(create_app(make_settings(redis_down_backoff=0))) as c:
        pool = c.post("/api/v1/asset-pools", json=POOL, headers=auth).json()
        first = c.post(url(pool), headers=GZIP)
        assert (first.headers["x-cache"], first.json()["pool_version"]) == ("MISS", 1)
        assert c.post(url(pool), headers=GZIP).headers["x-cache"] == "HIT"

        async def refuse(*_a: object, **_k: object) -> int:
            raise redis.ConnectionError("Redis went away")

        with monkeypatch.context() as m:
            m.setattr(redis.asyncio.Redis, "delete", refuse)
            patched = c.patch(
                f"/api/v1/asset-pools/{pool['id']}", json={"current_balance": 400_000}, headers=auth
            )
        assert patched.status_code == 200
        assert len(redis_client.keys(f"cf:{pool['id']}:v1:*")) == 1  # the stale entry is there
        again = c.post(url(pool), headers=GZIP)
        assert again.headers["x-cache"] == "MISS"
        assert again.json()["pool_version"] == 2
        assert again.json()["cashflows"][0]["beginning_balance"] == 400_000
        for headers in (GZIP, IDENTITY):
            hit = c.post(url(pool), headers=headers)
            assert hit.headers["x-cache"] == "HIT"
            assert hit.json() == again.json()


def test_caching_can_be_switched_off(
    make_settings: Any, pool: dict[str, Any], redis_client: redis.Redis
) -> None:
    with TestClient(create_app(make_settings(enable_caching=False))) as c:
        assert c.post(url(pool)).headers["x-cache"] == "MISS"
        assert c.post(url(pool)).headers["x-cache"] == "MISS"
        identity = c.post(url(pool), headers=IDENTITY)
        assert "content-encoding" not in identity.headers
        gzipped = c.post(url(pool), headers=GZIP)
        assert gzipped.headers["content-encoding"] == "gzip"
        assert gzipped.json() == identity.json()
    assert redis_client.keys("cf:*") == []


def raw_post(client: TestClient, path: str, headers: dict[str, str]) -> tuple[Any, bytes]:
    """POST and return (headers, body as sent on the wire, not decoded)."""
    with client.stream("POST", path, headers=headers) as resp:
        assert resp.status_code == 200
        return resp.headers, b"".join(resp.iter_raw())


def test_hit_is_the_stored_gzip_sent_as_is(
    client: TestClient, pool: dict[str, Any], redis_client: redis.Redis
) -> None:
    miss_headers, miss_raw = raw_post(client, url(pool), GZIP)
    (key,) = redis_client.keys(f"cf:{pool['id']}:v1:gz:*")
    stored = redis_client.get(key)
    assert stored is not None
    assert stored.startswith(GZIP_MAGIC)
    assert len(stored) < 125_000 / 2  # the 125 kB body is stored compressed
    hit_headers, hit_raw = raw_post(client, url(pool), GZIP)
    for headers, raw, tag in ((miss_headers, miss_raw, "MISS"), (hit_headers, hit_raw, "HIT")):
        assert headers["x-cache"] == tag
        assert headers["content-encoding"] == "gzip"
        assert headers["content-type"] == "application/json"
        assert headers.get_list("vary") == ["Accept-Encoding"]
        assert int(headers["content-length"]) == len(raw)
        assert raw == stored  # compressed once, when computed; never again by the middleware
    body = json.loads(gzip.decompress(hit_raw))
    assert len(body["cashflows"]) == 372
    assert body["pool_version"] == 1


@pytest.mark.parametrize("accept", ["identity", "gzip;q=0", "br", ""])
def test_client_without_gzip_gets_the_same_json(
    client: TestClient, pool: dict[str, Any], accept: str
) -> None:
    gzipped = client.post(url(pool), headers=GZIP)  # MISS, stored compressed
    plain_headers, plain_raw = raw_post(client, url(pool), {"Accept-Encoding": accept})
    assert plain_headers["x-cache"] == "HIT"
    assert "content-encoding" not in plain_headers
    assert plain_headers.get_list("vary") == ["Accept-Encoding"]
    assert int(plain_headers["content-length"]) == len(plain_raw)
    assert json.loads(plain_raw) == gzipped.json()


@pytest.mark.parametrize("first", [GZIP, IDENTITY])
def test_miss_and_hit_answer_alike_for_both_kinds_of_client(
    client: TestClient, pool: dict[str, Any], first: dict[str, str]
) -> None:
    assumptions = {"cpr": 0.08, "months": 240}
    miss = client.post(url(pool), json=assumptions, headers=first)
    assert miss.headers["x-cache"] == "MISS"
    for headers in (GZIP, IDENTITY):
        hit = client.post(url(pool), json=assumptions, headers=headers)
        assert hit.headers["x-cache"] == "HIT"
        assert hit.json() == miss.json()
        assert ("content-encoding" in hit.headers) is (headers is GZIP)


def test_small_identity_answer_still_varies(client: TestClient, pool: dict[str, Any]) -> None:
    # Under the GZip middleware's 1 kB minimum it adds no Vary; the route does.
    small = {"months": 1, "recovery_lag": 0, "cpr": 0, "cdr": 0}  # round figures, short JSON
    for _ in ("miss", "hit"):
        resp = client.post(url(pool), json=small, headers=IDENTITY)
        assert len(resp.content) < 1024
        assert resp.headers.get_list("vary") == ["Accept-Encoding"]


def test_entry_that_is_not_gzip_is_a_miss_and_is_replaced(
    client: TestClient, pool: dict[str, Any], redis_client: redis.Redis
) -> None:
    first = client.post(url(pool), headers=GZIP)
    (key,) = redis_client.keys(f"cf:{pool['id']}:v1:gz:*")
    redis_client.set(key, first.content)  # plain JSON, e.g. written by an older release
    again = client.post(url(pool), headers=GZIP)
    assert again.headers["x-cache"] == "MISS"
    assert again.json() == first.json()
    stored = redis_client.get(key)
    assert stored is not None
    assert stored.startswith(GZIP_MAGIC)
    assert client.post(url(pool), headers=GZIP).headers["x-cache"] == "HIT"


def test_request_dependencies_do_not_use_the_thread_pool(
    client: TestClient, pool: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Settings, sessions, cache and reference data are plain attribute reads: as `def`
    dependencies FastAPI would run each in a worker thread (4 thread hops on every projection)."""
    calls: list[str] = []
    original = fastapi.dependencies.utils.run_in_threadpool

    async def counting(func: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(getattr(func, "__name__", repr(func)))
        return await original(func, *args, **kwargs)

    monkeypatch.setattr(fastapi.dependencies.utils, "run_in_threadpool", counting)
    assert client.post(url(pool)).status_code == 200
    assert client.get("/api/v1/asset-classes").status_code == 200
    assert calls == []


def test_explicit_zero_assumptions_are_not_replaced_by_defaults(
    client: TestClient, pool: dict[str, Any]
) -> None:
    """0 is a valid assumption (no prepayments, no defaults, no loss, immediate recovery): it
    must be used as sent, not mistaken for 'absent' and swapped for the asset-class default."""
    rmbs = client.get("/api/v1/asset-classes/RMBS").json()
    # Non-zero defaults, otherwise the test proves nothing.
    for default in ("default_cpr", "default_cdr", "loss_severity", "recovery_lag_months"):
        assert rmbs[default] > 0, default
    zeros = {"cpr": 0, "cdr": 0, "severity": 0, "recovery_lag": 0}
    body = client.post(url(pool), json=zeros).json()
    assert body["assumptions"] == {**zeros, "months": 360}
    assert len(body["cashflows"]) == 360
    expected = project(1_000_000, 0.06, 360, 0.0025, Assumptions(**body["assumptions"])).summary
    assert body["summary"] == pytest.approx(expected)
    assert body["summary"]["total_losses"] == 0
    for field in zeros:  # each one alone, the others left to their defaults
        alone = client.post(url(pool), json={field: 0}).json()
        assert alone["assumptions"][field] == 0, field
