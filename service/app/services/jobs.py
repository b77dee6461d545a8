"""Background analyses of many pools. Job state lives in Redis (job:{id}) so that any Gunicorn
worker can answer the status URL; the work runs as an asyncio task in the worker that accepted it,
with the CPU part in a thread. A job whose worker died (no update for JOB_STALE_SECONDS) reports
"lost" instead of "running" forever."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

import orjson
from sqlalchemy.orm import Session, sessionmaker

from app.core.redis import RedisManager
from app.schemas.models import AssumptionsIn
from app.services.projections import load_pools, resolve, snapshot_terms, summarize
from app.services.reference import ReferenceCache

logger = logging.getLogger("app.services")
JOB_STALE_SECONDS = 300
CHUNK = 200
SUM_FIELDS = (
    "total_principal",
    "total_interest",
    "total_net_interest",
    "total_defaults",
    "total_losses",
    "total_recoveries",
)


class JobStore:
    def __init__(self, redis: RedisManager, ttl: int) -> None:
        self.redis = redis
        self.ttl = ttl

    async def save(self, state: dict[str, Any]) -> None:
        state["updated_at"] = time.time()
        await self.redis.client.set(f"job:{state['job_id']}", orjson.dumps(state), ex=self.ttl)

    async def get(self, job_id: str) -> dict[str, Any] | None:
        raw = await self.redis.client.get(f"job:{job_id}")
        if raw is None:
            return None
        state: dict[str, Any] = orjson.loads(raw)
        if state["status"] in ("queued", "running") and (
            time.time() - state["updated_at"] > JOB_STALE_SECONDS
        ):
            state["status"] = "lost"
        return state

    async def create(self, total: int) -> dict[str, Any]:
        now = time.time()
        state: dict[str, Any] = {
            "job_id": uuid.uuid4().hex,
            "status": "queued",
            "total": total,
            "completed": 0,
            "created_at": now,
            "updated_at": now,
            "error": None,
            "result": None,
        }
        await self.save(state)
        return state


def _analyse_chunk(
    sessions: sessionmaker[Session],
    reference: ReferenceCache,
    pool_ids: list[int],
    req: AssumptionsIn | None,
) -> tuple[list[dict[str, Any]], list[int]]:
    ref = reference.peek() or reference.load()
    pools = load_pools(sessions, pool_ids)
    found = {p.id for p in pools}
    results = []
    for pool in pools:
        asset_class = ref.by_code[pool.asset_class_code]
        a = resolve(req, asset_class, pool.wam)
        terms = snapshot_terms(pool, asset_class)
        results.append(
            {
                "pool_id": pool.id,
                "pool_version": pool.version,
                "balance": pool.current_balance,
                "summary": summarize(pool, a, terms),
            }
        )
    return results, [i for i in pool_ids if i not in found]


async def run_analysis(
    store: JobStore,
    state: dict[str, Any],
    sessions: sessionmaker[Session],
    reference: ReferenceCache,
    pool_ids: list[int],
    req: AssumptionsIn | None,
) -> None:
    try:
        state["status"] = "running"
        await store.save(state)
        pools: list[dict[str, Any]] = []
        missing: list[int] = []
        unique = list(dict.fromkeys(pool_ids))
        for start in range(0, len(unique), CHUNK):
            chunk = unique[start : start + CHUNK]
            done, absent = await asyncio.to_thread(_analyse_chunk, sessions, reference, chunk, req)
            pools.extend(done)
            missing.extend(absent)
            state["completed"] = min(len(unique), start + len(chunk))
            await store.save(state)
        balance = sum(p["balance"] for p in pools)
        portfolio: dict[str, float] = {f: sum(p["summary"][f] for p in pools) for f in SUM_FIELDS}
        portfolio["balance"] = balance
        portfolio["weighted_average_life"] = (
            sum(p["summary"]["weighted_average_life"] * p["balance"] for p in pools) / balance
            if balance
            else 0.0
        )
        state["result"] = {"pools": pools, "missing_pool_ids": missing, "portfolio": portfolio}
        state["status"] = "done"
        await store.save(state)
    except Exception as exc:
        logger.exception("analysis %s failed", state["job_id"])
        state["status"] = "failed"
        state["error"] = type(exc).__name__
        try:
            await store.save(state)
        except Exception:
            logger.exception("could not record failure of job %s", state["job_id"])
