from __future__ import annotations

from typing import Any

import redis
import sqlalchemy as sa
from fastapi.testclient import TestClient

from app.core.config import Settings
from app.core.security import create_token
from app.models import AssetClass

FLUSH = "/api/v1/admin/cache"


def admin(settings: Settings) -> dict[str, str]:
    # The client fixture connects from 127.0.0.1, which ADMIN_ALLOWED_IPS allows by default.
    return {"Authorization": "Bearer " + create_token("ops", ["admin"], settings=settings)}


def test_flush_removes_projections_only(
    client: TestClient,
    settings: Settings,
    pool: dict[str, Any],
    redis_client: redis.Redis,
) -> None:
    """The flush drops cached projections (cf:*) and nothing else sharing the Redis database:
    rate-limit buckets and background-job state survive it."""
    client.post(f"/api/v1/asset-pools/{pool['id']}/cashflows")
    client.post(f"/api/v1/asset-pools/{pool['id']}/cashflows", json={"cpr": 0.2})
    cached = redis_client.keys("cf:*")
    assert len(cached) == 3  # two projections and the pool's index set
    redis_client.hset("rl:ip:203.0.113.5", mapping={"tokens": "0", "ts": "1"})
    redis_client.set("job:abc123", b'{"job_id": "abc123", "status": "running"}')
    resp = client.delete(FLUSH, headers=admin(settings))
    assert resp.status_code == 200
    assert resp.json() == {"removed": 3}
    assert redis_client.keys("cf:*") == []
    assert redis_client.hget("rl:ip:203.0.113.5", "tokens") == b"0"
    assert redis_client.get("job:abc123") == b'{"job_id": "abc123", "status": "running"}'
    again = client.post(f"/api/v1/asset-pools/{pool['id']}/cashflows")
    assert again.headers["x-cache"] == "MISS"


def test_flush_reloads_reference_data(
    client: TestClient, settings: Settings, database_url: str
) -> None:
    """Reference data is held in process memory; the admin flush is the way to make a worker
    see changed asset-class rows without a restart."""
    before = client.get("/api/v1/asset-classes/RMBS").json()
    assert before["default_cdr"] != 0.007
    engine = sa.create_engine(database_url)
    with engine.begin() as conn:
        conn.execute(
            sa.update(AssetClass).where(AssetClass.code == "RMBS").values(default_cdr=0.007)
        )
    engine.dispose()
    # Still the in-memory copy: the change is only picked up after a flush.
    assert client.get("/api/v1/asset-classes/RMBS").json() == before
    assert client.delete(FLUSH, headers=admin(settings)).status_code == 200
    after = client.get("/api/v1/asset-classes/RMBS").json()
    assert after["default_cdr"] == 0.007
    assert after == {**before, "default_cdr": 0.007}
