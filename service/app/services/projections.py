"""Glue between pools, reference data and the cashflow engine (shared by the route and jobs)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import orjson
from sqlalchemy import Row, select
from sqlalchemy.orm import Session, sessionmaker

from app.models import AssetPool
from app.schemas.models import AssumptionsIn
from app.services.cashflow import Assumptions, project, table_rows


@dataclass(frozen=True, slots=True)
class PoolSnapshot:
    id: int
    version: int
    asset_class_code: str
    current_balance: float
    wac: float
    wam: int
    servicing_fee: float


# Only the columns a projection needs: no ORM object, no join to the asset class (AssetPool loads
# it eagerly). This read runs on every cashflow request, cache hits included.
_COLUMNS = (
    AssetPool.id,
    AssetPool.version,
    AssetPool.asset_class_code,
    AssetPool.current_balance,
    AssetPool.wac,
    AssetPool.wam,
    AssetPool.servicing_fee,
)


def _snapshot(row: Row[int, int, str, float, float, int, float]) -> PoolSnapshot:
    return PoolSnapshot(
        id=row.id,
        version=row.version,
        asset_class_code=row.asset_class_code,
        current_balance=float(row.current_balance),
        wac=row.wac,
        wam=row.wam,
        servicing_fee=row.servicing_fee,
    )


def load_pool(sessions: sessionmaker[Session], pool_id: int) -> PoolSnapshot | None:
    with sessions() as session:
        row = session.execute(select(*_COLUMNS).where(AssetPool.id == pool_id)).first()
        return _snapshot(row) if row is not None else None


def load_pools(sessions: sessionmaker[Session], pool_ids: list[int]) -> list[PoolSnapshot]:
    with sessions() as session:
        rows = session.execute(select(*_COLUMNS).where(AssetPool.id.in_(pool_ids)))
        return [_snapshot(row) for row in rows]


def resolve(req: AssumptionsIn | None, asset_class: dict[str, object], wam: int) -> Assumptions:
    req = req or AssumptionsIn()
    return Assumptions(
        cpr=req.cpr if req.cpr is not None else float(asset_class["default_cpr"]),  # type: ignore[arg-type]
        cdr=req.cdr if req.cdr is not None else float(asset_class["default_cdr"]),  # type: ignore[arg-type]
        severity=(
            req.severity if req.severity is not None else float(asset_class["loss_severity"])  # type: ignore[arg-type]
        ),
        recovery_lag=(
            req.recovery_lag
            if req.recovery_lag is not None
            else int(asset_class["recovery_lag_months"])  # type: ignore[call-overload]
        ),
        months=min(req.months if req.months is not None else wam, wam),
    )


def render(pool: PoolSnapshot, a: Assumptions) -> bytes:
    proj = project(pool.current_balance, pool.wac, pool.wam, pool.servicing_fee, a)
    return orjson.dumps(
        {
            "pool_id": pool.id,
            "pool_version": pool.version,
            "asset_class_code": pool.asset_class_code,
            "assumptions": dataclasses.asdict(a),
            "summary": proj.summary,
            "cashflows": table_rows(proj.table),
        }
    )


def summarize(pool: PoolSnapshot, a: Assumptions) -> dict[str, float]:
    return project(pool.current_balance, pool.wac, pool.wam, pool.servicing_fee, a).summary
