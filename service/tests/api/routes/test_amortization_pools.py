"""Pools of every amortization type through the API: the per-type fields, their validation, the
projection each type gets, and a cache that never answers for a pool whose type changed."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from tests.conftest import POOL

POOLS = "/api/v1/asset-pools"


def make(client: TestClient, auth: dict[str, str], **fields: Any) -> dict[str, Any]:
    resp = client.post(POOLS, json={**POOL, **fields}, headers=auth)
    assert resp.status_code == 201, resp.text
    body: dict[str, Any] = resp.json()
    return body


def refused(resp: Any, field: str) -> str:
    """The 422's message for `field`, which must be the only field named."""
    assert resp.status_code == 422, resp.text
    errors = resp.json()["detail"]
    assert [e["loc"] for e in errors] == [["body", field]], errors
    msg: str = errors[0]["msg"]
    return msg


def cashflows(client: TestClient, pool: dict[str, Any], **assumptions: Any) -> Any:
    return client.post(f"{POOLS}/{pool['id']}/cashflows", json=assumptions or None)


def test_asset_classes_show_their_type_and_term_defaults(client: TestClient) -> None:
    cre = client.get("/api/v1/asset-classes/CRE").json()
    card = client.get("/api/v1/asset-classes/CARD").json()
    clo = client.get("/api/v1/asset-classes/CLO").json()
    assert (cre["amortization_type"], cre["default_amortization_term"]) == ("balloon", 360)
    assert card["amortization_type"] == "revolving"
    assert (card["default_payment_rate"], card["default_revolving_months"]) == (0.2, 24)
    assert clo["amortization_type"] == "bullet"
    assert (clo["default_amortization_term"], clo["default_payment_rate"]) == (None, None)


def test_each_class_is_projected_by_its_own_type(client: TestClient, auth: dict[str, str]) -> None:
    quiet = {"cpr": 0, "cdr": 0, "recovery_lag": 0}
    balance = POOL["current_balance"]
    # CLO: bullet
    clo = cashflows(client, make(client, auth, asset_class_code="CLO", wam=60), **quiet).json()
    assert clo["amortization"] == {
        "type": "bullet",
        "amortization_term": None,
        "payment_rate": None,
        "revolving_months": None,
    }
    sched = [row["scheduled_principal"] for row in clo["cashflows"]]
    assert sched[:59] == [0.0] * 59
    assert sched[59] == pytest.approx(balance)
    # CRE: balloon over the class's 360 months, due at WAM 120
    cre = cashflows(client, make(client, auth, asset_class_code="CRE", wam=120), **quiet).json()
    assert cre["amortization"]["type"] == "balloon"
    assert cre["amortization"]["amortization_term"] == 360
    r = POOL["wac"] / 12
    due = balance * ((1 + r) ** 360 - (1 + r) ** 119) / ((1 + r) ** 360 - 1)
    assert cre["cashflows"][119]["scheduled_principal"] == pytest.approx(due)
    # CARD: revolving, the pool's own payment rate and the class's 24-month revolving period
    card = make(client, auth, asset_class_code="CARD", wam=48, payment_rate=0.25)
    body = cashflows(client, card, **quiet).json()
    assert body["amortization"] == {
        "type": "revolving",
        "amortization_term": None,
        "payment_rate": 0.25,
        "revolving_months": 24,
    }
    rows = body["cashflows"]
    assert [row["beginning_balance"] for row in rows[:25]] == pytest.approx([balance] * 25)
    assert rows[0]["reinvestment"] == pytest.approx(balance * 0.25)
    assert rows[24]["scheduled_principal"] == pytest.approx(balance * 0.25)
    assert body["summary"]["total_reinvestment"] == pytest.approx(24 * balance * 0.25)
    # RMBS: level pay, and no amortization field at all
    rmbs = cashflows(client, make(client, auth), **quiet).json()
    assert rmbs["amortization"]["type"] == "level_pay"
    assert rmbs["summary"]["total_reinvestment"] == 0


@pytest.mark.parametrize(
    ("fields", "field", "says"),
    [
        ({"asset_class_code": "RMBS", "payment_rate": 0.2}, "payment_rate", "only to revolving"),
        ({"asset_class_code": "CLO", "amortization_term": 360}, "amortization_term", "balloon"),
        ({"asset_class_code": "CRE", "revolving_months": 3}, "revolving_months", "CRE is balloon"),
        ({"asset_class_code": "CRE", "wam": 480}, "amortization_term", "the CRE default"),
        (
            {"asset_class_code": "CRE", "wam": 120, "amortization_term": 119},
            "amortization_term",
            "wam (120)",
        ),
        ({"asset_class_code": "CARD", "wam": 24}, "revolving_months", "the CARD default"),
        ({"asset_class_code": "CARD", "revolving_months": 360}, "revolving_months", "wam (360)"),
    ],
)
def test_fields_that_do_not_fit_the_type_are_refused_naming_the_field(
    client: TestClient, auth: dict[str, str], fields: dict[str, Any], field: str, says: str
) -> None:
    assert says in refused(client.post(POOLS, json={**POOL, **fields}, headers=auth), field)
    assert client.get(POOLS).json()["total"] == 0


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("payment_rate", 0),
        ("payment_rate", 1.5),
        ("amortization_term", 0),
        ("revolving_months", -1),
    ],
)
def test_out_of_range_fields_are_refused_by_the_schema(
    client: TestClient, auth: dict[str, str], field: str, value: float
) -> None:
    resp = client.post(POOLS, json={**POOL, "asset_class_code": "CARD", field: value}, headers=auth)
    refused(resp, field)


def test_patch_validates_the_pool_as_it_would_be(client: TestClient, auth: dict[str, str]) -> None:
    card = make(client, auth, asset_class_code="CARD", payment_rate=0.3, revolving_months=12)
    url = f"{POOLS}/{card['id']}"
    # a new class whose type does not use the pool's fields: each one is named
    resp = client.patch(url, json={"asset_class_code": "RMBS"}, headers=auth)
    assert resp.status_code == 422
    errors = {e["loc"][1]: e["msg"] for e in resp.json()["detail"]}
    assert set(errors) == {"payment_rate", "revolving_months"}
    assert "RMBS is level_pay" in errors["payment_rate"]
    # a shorter wam that the revolving period no longer fits
    refused(client.patch(url, json={"wam": 12}, headers=auth), "revolving_months")
    # null clears a field (the class default applies again); then the move is allowed
    cleared = {"payment_rate": None, "revolving_months": None, "asset_class_code": "RMBS"}
    resp = client.patch(url, json=cleared, headers=auth)
    assert resp.status_code == 200, resp.text
    assert (resp.json()["payment_rate"], resp.json()["asset_class_code"]) == (None, "RMBS")
    # other fields still may not be null
    refused(client.patch(url, json={"wam": None}, headers=auth), "wam")


def test_openapi_shows_the_per_type_fields(client: TestClient) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    create = schemas["AssetPoolCreate"]["properties"]
    for field, type_ in (
        ("amortization_term", "Balloon"),
        ("payment_rate", "Revolving"),
        ("revolving_months", "Revolving"),
    ):
        (variant, null) = create[field]["anyOf"]
        assert null == {"type": "null"}
        assert variant["description"].startswith(f"{type_} pools only")
        assert field in schemas["AssetPoolUpdate"]["properties"]
        assert field in schemas["AssetPoolOut"]["properties"]
    assert schemas["AssetClassOut"]["properties"]["amortization_type"]["enum"] == [
        "level_pay",
        "bullet",
        "balloon",
        "revolving",
    ]
    assert "amortization" in schemas["CashflowProjection"]["properties"]


def test_an_old_entry_never_answers_for_a_pool_whose_type_changed(
    client: TestClient,
    auth: dict[str, str],
    database_url: str,
    redis_client: redis.Redis,
) -> None:
    """The type is reference data: a migration (here: SQL) that turns CRE into bullet changes the
    reference-data hash in the key, so once the workers reload the reference data (after
    CACHE_TTL_STABLE, here at once) the balloon entry, still in Redis, cannot answer."""
    cre = make(client, auth, asset_class_code="CRE", wam=120)
    assert cashflows(client, cre).headers["x-cache"] == "MISS"
    assert cashflows(client, cre).headers["x-cache"] == "HIT"
    with sqlite3.connect(database_url.removeprefix("sqlite:///")) as db:
        db.execute("UPDATE asset_classes SET amortization_type = 'bullet' WHERE code = 'CRE'")
    client.app.state.reference.invalidate()  # type: ignore[attr-defined]
    assert len(redis_client.keys(f"cf:{cre['id']}:v1:*")) == 1  # the balloon entry is still there
    answer = cashflows(client, cre)
    assert answer.headers["x-cache"] == "MISS"
    assert answer.json()["amortization"]["type"] == "bullet"
    sched = [row["scheduled_principal"] for row in answer.json()["cashflows"][:119]]
    assert sched == [0.0] * 119
    assert cashflows(client, cre).headers["x-cache"] == "HIT"


def test_an_old_entry_never_answers_for_changed_terms_written_around_the_api(
    client: TestClient, auth: dict[str, str], database_url: str
) -> None:
    """A per-type field changed in SQL (no version bump, no invalidation) is in the pool row the
    key hashes: the old entry cannot answer."""
    card = make(client, auth, asset_class_code="CARD", wam=48, payment_rate=0.2)
    assert cashflows(client, card).headers["x-cache"] == "MISS"
    assert cashflows(client, card).headers["x-cache"] == "HIT"
    with sqlite3.connect(database_url.removeprefix("sqlite:///")) as db:
        db.execute("UPDATE asset_pools SET payment_rate = 0.5 WHERE id = ?", (card["id"],))
    answer = cashflows(client, card)
    assert answer.headers["x-cache"] == "MISS"
    assert answer.json()["amortization"]["payment_rate"] == 0.5


def test_a_stored_pool_that_no_longer_fits_its_type_is_a_409_naming_the_field(
    client: TestClient, auth: dict[str, str], database_url: str
) -> None:
    """A class default changed under existing pools (a migration) can leave a pool whose terms do
    not fit; the projection says so instead of failing with a 500."""
    card = make(client, auth, asset_class_code="CARD", wam=36)
    assert cashflows(client, card).status_code == 200
    with sqlite3.connect(database_url.removeprefix("sqlite:///")) as db:
        db.execute("UPDATE asset_classes SET default_revolving_months = 36 WHERE code = 'CARD'")
    client.app.state.reference.invalidate()  # type: ignore[attr-defined]
    resp = cashflows(client, card)
    assert resp.status_code == 409
    assert "revolving_months" in resp.json()["detail"]
