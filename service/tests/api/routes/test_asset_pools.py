from __future__ import annotations

from typing import Any

import redis
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, event, text
from sqlalchemy.orm import Session

from tests.conftest import POOL


def test_create_get_list_update_delete(
    client: TestClient, auth: dict[str, str], pool: dict[str, Any]
) -> None:
    assert pool["version"] == 1
    assert pool["current_balance"] == 1_000_000.0
    got = client.get(f"/api/v1/asset-pools/{pool['id']}").json()
    assert got == pool
    listed = client.get("/api/v1/asset-pools").json()
    assert listed["total"] == 1
    assert listed["items"][0]["id"] == pool["id"]
    changed = client.patch(f"/api/v1/asset-pools/{pool['id']}", json={"wac": 0.055}, headers=auth)
    assert changed.status_code == 200
    assert changed.json()["wac"] == 0.055
    assert changed.json()["version"] == 2
    assert client.delete(f"/api/v1/asset-pools/{pool['id']}", headers=auth).status_code == 204
    assert client.get(f"/api/v1/asset-pools/{pool['id']}").status_code == 404


def test_create_answers_location(client: TestClient, auth: dict[str, str]) -> None:
    resp = client.post("/api/v1/asset-pools", json=POOL, headers=auth)
    assert resp.headers["location"] == f"/api/v1/asset-pools/{resp.json()['id']}"


def test_validation_names_every_failing_field(client: TestClient, auth: dict[str, str]) -> None:
    bad = {**POOL, "current_balance": 0, "wac": 1.5, "servicing_fee": -0.1, "wam": 481}
    resp = client.post("/api/v1/asset-pools", json=bad, headers=auth)
    assert resp.status_code == 422
    fields = {e["loc"][-1] for e in resp.json()["detail"]}
    assert fields == {"current_balance", "wac", "servicing_fee", "wam"}


def test_term_bounds(client: TestClient, auth: dict[str, str]) -> None:
    for wam, expected in ((0, 422), (1, 201), (480, 201), (481, 422)):
        resp = client.post("/api/v1/asset-pools", json={**POOL, "wam": wam}, headers=auth)
        assert resp.status_code == expected, (wam, resp.text)


def test_unknown_asset_class_is_422_on_that_field(client: TestClient, auth: dict[str, str]) -> None:
    resp = client.post(
        "/api/v1/asset-pools", json={**POOL, "asset_class_code": "ZZZ"}, headers=auth
    )
    assert resp.status_code == 422
    assert resp.json()["detail"][0]["loc"] == ["body", "asset_class_code"]


def test_patch_validates_and_rejects_null(
    client: TestClient, auth: dict[str, str], pool: dict[str, Any]
) -> None:
    url = f"/api/v1/asset-pools/{pool['id']}"
    assert client.patch(url, json={"wam": 0}, headers=auth).status_code == 422
    resp = client.patch(url, json={"name": None}, headers=auth)
    assert resp.status_code == 422
    assert resp.json()["detail"][0]["loc"] == ["body", "name"]
    assert client.get(url).json()["version"] == 1


def test_patch_rejects_unknown_fields(
    client: TestClient, auth: dict[str, str], pool: dict[str, Any]
) -> None:
    """A typo in a field name is a 422 on that field, not a silent no-op that bumps the version."""
    url = f"/api/v1/asset-pools/{pool['id']}"
    resp = client.patch(url, json={"curent_balance": 5.0}, headers=auth)
    assert resp.status_code == 422, resp.text
    assert [e["loc"] for e in resp.json()["detail"]] == [["body", "curent_balance"]]
    assert client.get(url).json() == pool


def test_patch_that_loses_a_concurrent_update_is_409(
    client: TestClient, auth: dict[str, str], pool: dict[str, Any], database_url: str
) -> None:
    """Another writer commits between this PATCH's read of the row and its write: the versioned
    UPDATE matches no row, and the answer is 409, not a 500 or a lost update."""
    url = f"/api/v1/asset-pools/{pool['id']}"
    other_writer = create_engine(database_url)
    sessions = client.app.state.sessions  # type: ignore[attr-defined]

    bumped: list[int] = []

    def concurrent_change(session: Session, *_: Any) -> None:
        if bumped:
            return
        bumped.append(pool["id"])
        with other_writer.begin() as conn:
            conn.execute(
                text("UPDATE asset_pools SET wam = 240, version = version + 1 WHERE id = :id"),
                {"id": pool["id"]},
            )

    event.listen(sessions, "before_flush", concurrent_change)
    try:
        resp = client.patch(url, json={"wac": 0.055}, headers=auth)
    finally:
        event.remove(sessions, "before_flush", concurrent_change)
        other_writer.dispose()
    assert bumped == [pool["id"]]
    assert resp.status_code == 409, resp.text
    assert resp.json()["detail"] == "Pool changed concurrently"
    now = client.get(url).json()
    assert (now["wac"], now["wam"], now["version"]) == (pool["wac"], 240, 2)


def test_patch_term_bounds_match_create(
    client: TestClient, auth: dict[str, str], pool: dict[str, Any]
) -> None:
    """PATCH validates WAM like POST (1..480): 481 is a 422 on that field, not a database
    constraint error (500), and the pool is left as it was."""
    url = f"/api/v1/asset-pools/{pool['id']}"
    resp = client.patch(url, json={"wam": 481}, headers=auth)
    assert resp.status_code == 422, resp.text
    assert [e["loc"] for e in resp.json()["detail"]] == [["body", "wam"]]
    assert client.get(url).json() == pool
    resp = client.patch(url, json={"wam": 480}, headers=auth)
    assert resp.status_code == 200, resp.text
    assert (resp.json()["wam"], resp.json()["version"]) == (480, 2)


def test_delete_drops_the_pools_cached_projections(
    client: TestClient, auth: dict[str, str], pool: dict[str, Any], redis_client: redis.Redis
) -> None:
    other = client.post("/api/v1/asset-pools", json=POOL, headers=auth).json()
    for p in (pool, other):
        client.post(f"/api/v1/asset-pools/{p['id']}/cashflows")
    client.post(f"/api/v1/asset-pools/{pool['id']}/cashflows", json={"cpr": 0.2})
    assert len(redis_client.keys(f"cf:{pool['id']}:*")) == 2
    assert redis_client.scard(f"cf:idx:{pool['id']}") == 2
    assert client.delete(f"/api/v1/asset-pools/{pool['id']}", headers=auth).status_code == 204
    assert redis_client.keys(f"cf:{pool['id']}:*") == []
    assert not redis_client.exists(f"cf:idx:{pool['id']}")
    # The other pool's entries are untouched.
    assert len(redis_client.keys(f"cf:{other['id']}:*")) == 1
    assert redis_client.scard(f"cf:idx:{other['id']}") == 1


def test_list_filters_by_asset_class(client: TestClient, auth: dict[str, str]) -> None:
    client.post("/api/v1/asset-pools", json=POOL, headers=auth)
    client.post("/api/v1/asset-pools", json={**POOL, "asset_class_code": "AUTO"}, headers=auth)
    body = client.get("/api/v1/asset-pools?asset_class=AUTO").json()
    assert body["total"] == 1
    assert body["items"][0]["asset_class_code"] == "AUTO"


def test_list_page_links_keep_the_asset_class_filter_and_size(
    client: TestClient, auth: dict[str, str]
) -> None:
    """next/prev of a filtered listing stay on that asset class and page size."""
    auto = []
    for _ in range(3):
        client.post("/api/v1/asset-pools", json=POOL, headers=auth)
        created = client.post(
            "/api/v1/asset-pools", json={**POOL, "asset_class_code": "AUTO"}, headers=auth
        )
        auto.append(created.json()["id"])
    body = client.get("/api/v1/asset-pools?asset_class=AUTO&page=2&size=1").json()
    assert (body["total"], body["pages"]) == (3, 3)
    assert body["next"] == "/api/v1/asset-pools?asset_class=AUTO&page=3&size=1"
    assert body["prev"] == "/api/v1/asset-pools?asset_class=AUTO&page=1&size=1"
    pages = [client.get(body["prev"]).json(), body, client.get(body["next"]).json()]
    assert [p["items"][0]["id"] for p in pages] == auto


def test_empty_listing_has_one_empty_page(client: TestClient) -> None:
    """No pools: one page (not zero), no next; page 2 points back to page 1, never page 0."""
    body = client.get("/api/v1/asset-pools?size=5").json()
    assert (body["items"], body["total"], body["pages"]) == ([], 0, 1)
    assert (body["next"], body["prev"]) == (None, None)
    beyond = client.get("/api/v1/asset-pools?page=2&size=5").json()
    assert (beyond["items"], beyond["pages"]) == ([], 1)
    assert beyond["prev"] == "/api/v1/asset-pools?page=1&size=5"


def test_missing_pool_is_404(client: TestClient, auth: dict[str, str]) -> None:
    assert client.get("/api/v1/asset-pools/999").status_code == 404
    assert client.patch("/api/v1/asset-pools/999", json={"wam": 2}, headers=auth).status_code == 404
    assert client.delete("/api/v1/asset-pools/999", headers=auth).status_code == 404
