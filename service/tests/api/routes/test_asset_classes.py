from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from app.main import create_app
from app.models import AssetClass
from app.services import reference
from tests.conftest import metric_value


def test_list_is_paginated_with_links(client: TestClient) -> None:
    first = client.get("/api/v1/asset-classes", params={"page": 1, "size": 3}).json()
    assert first["total"] == 8
    assert first["pages"] == 3
    assert [i["code"] for i in first["items"]] == ["AUTO", "CARD", "CLO"]
    assert first["prev"] is None
    assert first["next"] == "/api/v1/asset-classes?page=2&size=3"
    second = client.get(first["next"]).json()
    assert second["prev"] == "/api/v1/asset-classes?page=1&size=3"
    last = client.get("/api/v1/asset-classes?page=3&size=3").json()
    assert [i["code"] for i in last["items"]] == ["RMBS", "STUDENT"]
    assert last["next"] is None
    seen = {i["code"] for p in (first, second, last) for i in p["items"]}
    assert seen == {"AUTO", "CARD", "CLO", "CONSUMER", "CRE", "EQUIPMENT", "RMBS", "STUDENT"}


def test_page_beyond_the_end_is_empty(client: TestClient) -> None:
    body = client.get("/api/v1/asset-classes?page=9&size=5").json()
    assert body["items"] == []
    assert body["prev"] == "/api/v1/asset-classes?page=2&size=5"


def test_page_parameters_are_validated(client: TestClient) -> None:
    resp = client.get("/api/v1/asset-classes?page=0&size=101")
    assert resp.status_code == 422
    assert {tuple(e["loc"]) for e in resp.json()["detail"]} == {
        ("query", "page"),
        ("query", "size"),
    }


def test_one_asset_class_with_reference_data(client: TestClient) -> None:
    body = client.get("/api/v1/asset-classes/clo").json()
    assert body["code"] == "CLO"
    assert body["name"] == "Corporate loans (CLO)"
    assert body["data_tier"] == "dynamic"
    assert 0 < body["default_cdr"] < 1
    assert isinstance(body["recovery_lag_months"], int)


def test_unknown_asset_class_is_404(client: TestClient) -> None:
    assert client.get("/api/v1/asset-classes/NOPE").status_code == 404


def test_default_page_size_is_20(client: TestClient) -> None:
    body = client.get("/api/v1/asset-classes").json()
    assert (body["page"], body["size"], body["pages"], body["total"]) == (1, 20, 1, 8)
    assert len(body["items"]) == 8
    assert body["next"] is None
    second = client.get("/api/v1/asset-classes?page=2").json()
    assert second["items"] == []
    assert second["prev"] == "/api/v1/asset-classes?page=1&size=20"


def test_reference_data_is_reread_once_its_ttl_has_passed(
    make_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A row changed in the database shows after CACHE_TTL_STABLE seconds, not before."""
    now = [1000.0]
    monkeypatch.setattr(reference, "time", SimpleNamespace(monotonic=lambda: now[0]))
    app = create_app(make_settings(cache_ttl_stable=600))
    with TestClient(app) as c:

        def cpr() -> float:
            value: float = c.get("/api/v1/asset-classes/RMBS").json()["default_cpr"]
            return value

        loaded = cpr()
        with app.state.sessions() as session:
            session.execute(
                update(AssetClass).where(AssetClass.code == "RMBS").values(default_cpr=0.42)
            )
            session.commit()
        now[0] += 599
        assert cpr() == loaded != 0.42
        now[0] += 1
        assert cpr() == 0.42


def test_reference_reads_count_as_cache_hits(client: TestClient) -> None:
    """Requests answered from the in-memory copy count as hits of the "reference" cache."""
    client.get("/api/v1/asset-classes/RMBS")  # loaded by now
    before = client.get("/metrics").text
    client.get("/api/v1/asset-classes/RMBS")
    client.get("/api/v1/asset-classes")
    after = client.get("/metrics").text
    for name, delta in (("cache_hits_total", 2), ("cache_misses_total", 0)):
        assert (
            metric_value(after, name, cache="reference")
            - metric_value(before, name, cache="reference")
            == delta
        ), name


def test_a_load_queued_behind_another_reuses_its_result(client: TestClient) -> None:
    """load() rechecks under its lock: a thread that waited for it does not read the DB again."""
    app: Any = client.app
    cache = reference.ReferenceCache(app.state.sessions, ttl=600)
    first = cache.load()
    assert cache.load() is first
