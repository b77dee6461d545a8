from __future__ import annotations

from typing import Any

import pytest
import redis
import redis.asyncio
from fastapi.testclient import TestClient

from app.main import create_app
from tests.conftest import POOL

GZIP = {"Accept-Encoding": "gzip"}


def test_a_deleted_pools_entries_never_answer_for_a_new_pool(
    make_settings: Any,
    auth: dict[str, str],
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SQLite hands a deleted pool's id to the next pool, and the new pool starts at version 1
    again. If the delete's invalidation was lost (Redis refused it), the old entries must still
    not answer for the new pool: the key covers every input of the projection."""
    with TestClient(create_app(make_settings(redis_down_backoff=0))) as c:
        old = c.post("/api/v1/asset-pools", json=POOL, headers=auth).json()
        cashflows = f"/api/v1/asset-pools/{old['id']}/cashflows"
        assert c.post(cashflows, headers=GZIP).headers["x-cache"] == "MISS"

        async def refuse(*_a: object, **_k: object) -> int:
            raise redis.ConnectionError("Redis went away")

        with monkeypatch.context() as m:
            m.setattr(redis.asyncio.Redis, "delete", refuse)
            assert c.delete(f"/api/v1/asset-pools/{old['id']}", headers=auth).status_code == 204
        assert redis_client.keys(f"cf:{old['id']}:v1:*")  # the old entry is still there

        new = c.post(
            "/api/v1/asset-pools", json={**POOL, "current_balance": 5_000}, headers=auth
        ).json()
        assert (new["id"], new["version"]) == (old["id"], 1)  # what makes the old key collide
        for headers in (GZIP, {"Accept-Encoding": "identity"}):
            answer = c.post(cashflows, headers=headers)
            assert answer.json()["cashflows"][0]["beginning_balance"] == 5_000
        assert c.post(cashflows, headers=GZIP).headers["x-cache"] == "HIT"
