from __future__ import annotations

import sqlite3

import pytest
import redis
from fastapi.testclient import TestClient

from tests.conftest import POOL


@pytest.mark.parametrize("encoding", ["gzip", "identity"])
def test_a_write_that_bypasses_the_api_is_never_answered_from_the_cache(
    client: TestClient,
    auth: dict[str, str],
    database_url: str,
    redis_client: redis.Redis,
    encoding: str,
) -> None:
    """A restore or a fix in SQL changes a pool without bumping its version or invalidating its
    entries (the same happens to a deleted pool's id if a database reuses it). The cache key hashes
    the pool row read on every request, so the old entry cannot answer for the new row."""
    headers = {"Accept-Encoding": encoding}
    pool = client.post("/api/v1/asset-pools", json=POOL, headers=auth).json()
    cashflows = f"/api/v1/asset-pools/{pool['id']}/cashflows"
    assert client.post(cashflows, headers=headers).headers["x-cache"] == "MISS"
    assert client.post(cashflows, headers=headers).headers["x-cache"] == "HIT"

    with sqlite3.connect(database_url.removeprefix("sqlite:///")) as db:
        db.execute("UPDATE asset_pools SET current_balance = 5000 WHERE id = ?", (pool["id"],))
    assert client.get(f"/api/v1/asset-pools/{pool['id']}").json()["version"] == 1
    assert len(redis_client.keys(f"cf:{pool['id']}:v1:*")) == 1  # the old entry is still there

    answer = client.post(cashflows, headers=headers)
    assert answer.headers["x-cache"] == "MISS"
    assert answer.json()["cashflows"][0]["beginning_balance"] == 5000
    assert client.post(cashflows, headers=headers).headers["x-cache"] == "HIT"
