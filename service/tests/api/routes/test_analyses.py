from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import redis
from fastapi.testclient import TestClient

from app.main import create_app
from app.services import jobs
from app.services.cashflow import Assumptions, project
from tests.conftest import POOL


def wait_done(client: TestClient, url: str) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        body: dict[str, Any] = client.get(url).json()
        if body["status"] in ("done", "failed"):
            return body
        time.sleep(0.02)
    raise AssertionError("job did not finish")


def test_background_analysis_of_many_pools(
    make_settings: Any, client: TestClient, auth: dict[str, str]
) -> None:
    ids = [
        client.post(
            "/api/v1/asset-pools", json={**POOL, "current_balance": 1000.0 * (i + 1)}, headers=auth
        ).json()["id"]
        for i in range(250)
    ]
    resp = client.post(
        "/api/v1/analyses",
        json={"pool_ids": [*ids, 99999], "assumptions": {"cpr": 0.1}},
        headers=auth,
    )
    assert resp.status_code == 202
    accepted = resp.json()
    assert resp.headers["location"] == accepted["status_url"]
    body = wait_done(client, accepted["status_url"])
    assert body["status"] == "done"
    assert body["completed"] == body["total"] == 251
    result = body["result"]
    assert result["missing_pool_ids"] == [99999]
    assert len(result["pools"]) == 250
    rmbs = client.get("/api/v1/asset-classes/RMBS").json()
    a = Assumptions(
        0.1, rmbs["default_cdr"], rmbs["loss_severity"], rmbs["recovery_lag_months"], 360
    )
    one = project(1000.0, 0.06, 360, 0.0025, a).summary
    assert result["portfolio"]["total_principal"] == pytest.approx(
        one["total_principal"] * sum(range(1, 251))
    )
    # Another worker (another app, same Redis) answers the same status URL.
    with TestClient(create_app(make_settings())) as other:
        assert other.get(accepted["status_url"]).json()["status"] == "done"


def test_duplicate_pool_ids_are_analysed_once(client: TestClient, auth: dict[str, str]) -> None:
    ids = [
        client.post("/api/v1/asset-pools", json=POOL, headers=auth).json()["id"] for _ in range(2)
    ]
    first, second = ids
    resp = client.post(
        "/api/v1/analyses", json={"pool_ids": [first, second, first, first]}, headers=auth
    )
    assert resp.status_code == 202
    body = wait_done(client, resp.json()["status_url"])
    assert body["status"] == "done"
    assert body["completed"] == body["total"] == 2
    assert sorted(p["pool_id"] for p in body["result"]["pools"]) == sorted(ids)
    assert body["result"]["portfolio"]["balance"] == pytest.approx(2 * POOL["current_balance"])


def test_analysis_needs_a_token_and_valid_body(client: TestClient, auth: dict[str, str]) -> None:
    assert client.post("/api/v1/analyses", json={"pool_ids": [1]}).status_code == 401
    assert client.post("/api/v1/analyses", json={"pool_ids": []}, headers=auth).status_code == 422


def test_unknown_job_is_404(client: TestClient) -> None:
    assert client.get("/api/v1/analyses/nope").status_code == 404


def test_job_id_longer_than_64_characters_is_422(client: TestClient) -> None:
    """The id is bounded before it is used to build a Redis key."""
    assert client.get("/api/v1/analyses/" + "a" * 64).status_code == 404
    assert client.get("/api/v1/analyses/" + "a" * 65).status_code == 422


@pytest.fixture
def held_jobs(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """Analysis work waits (in its worker thread) until the test sets the returned event, so a
    job can be seen while it is still queued or running. Released at teardown at the latest."""
    release = threading.Event()
    original = jobs._analyse_chunk

    def held(*args: Any, **kwargs: Any) -> Any:
        release.wait(timeout=5)
        return original(*args, **kwargs)

    monkeypatch.setattr(jobs, "_analyse_chunk", held)
    try:
        yield release
    finally:
        release.set()


def test_job_runs_after_the_answer_and_is_not_lost_meanwhile(
    client: TestClient, auth: dict[str, str], pool: dict[str, Any], held_jobs: threading.Event
) -> None:
    resp = client.post("/api/v1/analyses", json={"pool_ids": [pool["id"]]}, headers=auth)
    assert resp.status_code == 202
    accepted = resp.json()
    assert accepted["status"] == "queued"  # answered before the work, not after it
    assert accepted["status_url"] == f"/api/v1/analyses/{accepted['job_id']}"
    first = client.get(accepted["status_url"]).json()
    assert first["status"] in ("queued", "running")  # neither "done" nor "lost"
    assert (first["completed"], first["total"], first["result"]) == (0, 1, None)
    held_jobs.set()
    body = wait_done(client, accepted["status_url"])
    assert body["status"] == "done"
    assert body["completed"] == 1


def test_job_reads_lost_only_after_five_minutes_without_update(
    client: TestClient,
    auth: dict[str, str],
    pool: dict[str, Any],
    held_jobs: threading.Event,
    redis_client: redis.Redis,
) -> None:
    """As if the worker running it had died: the stored state stops being updated."""
    resp = client.post("/api/v1/analyses", json={"pool_ids": [pool["id"]]}, headers=auth)
    accepted = resp.json()
    key = f"job:{accepted['job_id']}"
    deadline = time.monotonic() + 5
    while (status := client.get(accepted["status_url"]).json()["status"]) == "queued":
        assert time.monotonic() < deadline, "job did not start"
        time.sleep(0.01)
    assert status == "running"
    for age, expected in ((240, "running"), (360, "lost")):
        raw = redis_client.get(key)
        assert raw is not None
        state = orjson.loads(raw)
        state["updated_at"] = time.time() - age
        redis_client.set(key, orjson.dumps(state))
        assert client.get(accepted["status_url"]).json()["status"] == expected, age


def test_portfolio_wal_is_weighted_by_balance(client: TestClient, auth: dict[str, str]) -> None:
    """Pools of different terms and coupons (not scaled copies of one another), so their WALs
    differ and a simple mean of them is not the balance-weighted one."""
    specs = [
        {"current_balance": 2_000_000.0, "wac": 0.06, "wam": 360},
        {"current_balance": 50_000.0, "wac": 0.03, "wam": 60, "asset_class_code": "AUTO"},
        {"current_balance": 300_000.0, "wac": 0.09, "wam": 120},
    ]
    ids = [
        client.post("/api/v1/asset-pools", json={**POOL, **spec}, headers=auth).json()["id"]
        for spec in specs
    ]
    resp = client.post("/api/v1/analyses", json={"pool_ids": ids}, headers=auth)
    result = wait_done(client, resp.json()["status_url"])["result"]
    pools = result["pools"]
    assert sorted(p["pool_id"] for p in pools) == sorted(ids)
    assert sorted(p["balance"] for p in pools) == sorted(s["current_balance"] for s in specs)
    wals = [p["summary"]["weighted_average_life"] for p in pools]
    balance = sum(p["balance"] for p in pools)
    weighted = sum(p["summary"]["weighted_average_life"] * p["balance"] for p in pools) / balance
    simple = sum(wals) / len(wals)
    assert abs(weighted - simple) > 1.0  # the pools really tell the two apart
    portfolio = result["portfolio"]
    assert portfolio["balance"] == pytest.approx(balance)
    assert portfolio["weighted_average_life"] == pytest.approx(weighted)


@pytest.mark.parametrize(
    ("status", "age", "expected"),
    [("queued", 295, "queued"), ("queued", 305, "lost"), ("done", 3600, "done")],
)
def test_queued_job_of_a_dead_worker_reads_lost_after_five_minutes(
    client: TestClient, redis_client: redis.Redis, status: str, age: int, expected: str
) -> None:
    """A job left "queued" (its worker died) reads "lost" once not updated for 300 s."""
    then = time.time() - age
    state = {
        "job_id": "abandoned",
        "status": status,
        "total": 1,
        "completed": 0,
        "created_at": then,
        "updated_at": then,
        "error": None,
        "result": None,
    }
    redis_client.set("job:abandoned", orjson.dumps(state))
    assert client.get("/api/v1/analyses/abandoned").json()["status"] == expected


def test_running_job_is_tracked_for_shutdown_until_it_ends(
    client: TestClient, auth: dict[str, str], pool: dict[str, Any], held_jobs: threading.Event
) -> None:
    """The job's task sits in app.state.tasks (which shutdown cancels) until it has finished."""
    tasks = client.app.state.tasks  # type: ignore[attr-defined]
    resp = client.post("/api/v1/analyses", json={"pool_ids": [pool["id"]]}, headers=auth)
    assert len(tasks) == 1
    held_jobs.set()
    assert wait_done(client, resp.json()["status_url"])["status"] == "done"
    deadline = time.monotonic() + 20
    while tasks:
        assert time.monotonic() < deadline, "finished task was not removed"
        time.sleep(0.01)


def test_failed_job_reports_failed_and_only_the_error_type(
    client: TestClient, auth: dict[str, str], pool: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception in the work ends the job as "failed" with its class name, not its text."""

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("could not connect to db-internal.example:5432")

    monkeypatch.setattr(jobs, "_analyse_chunk", broken)
    resp = client.post("/api/v1/analyses", json={"pool_ids": [pool["id"]]}, headers=auth)
    body = wait_done(client, resp.json()["status_url"])
    assert (body["status"], body["error"], body["result"]) == ("failed", "RuntimeError", None)


def test_job_state_expires_after_cache_ttl(
    client: TestClient,
    auth: dict[str, str],
    pool: dict[str, Any],
    settings: Any,
    redis_client: redis.Redis,
) -> None:
    """The job:{id} key carries a TTL of CACHE_TTL, so finished jobs do not pile up in Redis."""
    resp = client.post("/api/v1/analyses", json={"pool_ids": [pool["id"]]}, headers=auth)
    wait_done(client, resp.json()["status_url"])
    ttl = redis_client.ttl(f"job:{resp.json()['job_id']}")
    assert 0 < ttl <= settings.cache_ttl


def test_analysis_of_only_unknown_pools_is_done_with_an_empty_portfolio(
    client: TestClient, auth: dict[str, str]
) -> None:
    """No pool found: a zero balance gives a WAL of 0, not a division by zero."""
    resp = client.post("/api/v1/analyses", json={"pool_ids": [99998, 99999]}, headers=auth)
    body = wait_done(client, resp.json()["status_url"])
    assert body["status"] == "done"
    assert body["result"]["missing_pool_ids"] == [99998, 99999]
    assert body["result"]["pools"] == []
    assert set(body["result"]["portfolio"].values()) == {0.0}


def test_progress_is_saved_after_each_chunk(
    client: TestClient, auth: dict[str, str], pool: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With chunks of one pool, the status shows 1 of 2 done while the second chunk still runs."""
    release = threading.Event()
    original = jobs._analyse_chunk
    calls: list[int] = []

    def second_waits(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:
            release.wait(timeout=20)
        return original(*args, **kwargs)

    monkeypatch.setattr(jobs, "CHUNK", 1)
    monkeypatch.setattr(jobs, "_analyse_chunk", second_waits)
    other = client.post("/api/v1/asset-pools", json=POOL, headers=auth).json()["id"]
    resp = client.post("/api/v1/analyses", json={"pool_ids": [pool["id"], other]}, headers=auth)
    url = resp.json()["status_url"]
    try:
        deadline = time.monotonic() + 20
        while (body := client.get(url).json())["completed"] == 0:
            assert time.monotonic() < deadline, "progress was not saved"
            time.sleep(0.01)
        assert (body["status"], body["completed"], body["total"]) == ("running", 1, 2)
    finally:
        release.set()
    assert wait_done(client, url)["completed"] == 2


def test_portfolio_totals_are_the_sums_over_pools(client: TestClient, auth: dict[str, str]) -> None:
    """Every summed field of the portfolio (principal, interest, defaults, ...) adds up."""
    ids = [
        client.post("/api/v1/asset-pools", json={**POOL, **spec}, headers=auth).json()["id"]
        for spec in ({"current_balance": 2_000_000.0}, {"current_balance": 50_000.0, "wam": 60})
    ]
    resp = client.post("/api/v1/analyses", json={"pool_ids": ids}, headers=auth)
    result = wait_done(client, resp.json()["status_url"])["result"]
    for field in jobs.SUM_FIELDS:
        assert result["portfolio"][field] == pytest.approx(
            sum(p["summary"][field] for p in result["pools"])
        ), field


def test_analysis_projects_each_pool_by_its_type(client: TestClient, auth: dict[str, str]) -> None:
    """With no prepayments or defaults a bullet pool returns all its principal in month WAM, so
    its WAL is WAM / 12 years; a level-pay pool of the same WAM returns it sooner."""
    clo = client.post(
        "/api/v1/asset-pools", json={**POOL, "asset_class_code": "CLO", "wam": 60}, headers=auth
    ).json()
    rmbs = client.post("/api/v1/asset-pools", json={**POOL, "wam": 60}, headers=auth).json()
    resp = client.post(
        "/api/v1/analyses",
        json={"pool_ids": [clo["id"], rmbs["id"]], "assumptions": {"cpr": 0, "cdr": 0}},
        headers=auth,
    )
    body = wait_done(client, resp.json()["status_url"])
    assert body["status"] == "done", body
    wal = {p["pool_id"]: p["summary"]["weighted_average_life"] for p in body["result"]["pools"]}
    assert wal[clo["id"]] == pytest.approx(5.0)
    assert wal[rmbs["id"]] < 3.0
