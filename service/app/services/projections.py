"""Glue between pools, reference data and the cashflow engine (shared by the route and jobs)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Row, select
from sqlalchemy.orm import Session, sessionmaker

from app.models import AssetPool
from app.schemas.models import AssumptionsIn
from app.services.cashflow import (
    AMORTIZATION_TYPES,
    Amortization,
    AmortizationError,
    Assumptions,
    check_terms,
    project,
    table_rows,
)

# The pool fields each amortization type uses, with the asset-class column holding their default.
TERM_FIELDS: dict[str, dict[str, str]] = {
    "level_pay": {},
    "bullet": {},
    "balloon": {"amortization_term": "default_amortization_term"},
    "revolving": {
        "payment_rate": "default_payment_rate",
        "revolving_months": "default_revolving_months",
    },
}
ALL_TERM_FIELDS = ("amortization_term", "payment_rate", "revolving_months")


def terms_for(pool: Mapping[str, Any], asset_class: Mapping[str, Any]) -> Amortization:
    """The amortization a pool is projected with: its class's type, and for each field that type
    uses the pool's value, else the class default. Fields the type does not use are ignored here
    (the API refuses them on writes, see `term_errors`). Raises AmortizationError when the result
    is incomplete or does not fit the pool's wam."""
    kind = str(asset_class["amortization_type"])
    if kind not in AMORTIZATION_TYPES:
        raise AmortizationError("amortization_type", f"unknown amortization type {kind!r}")
    values: dict[str, Any] = {}
    for field, default in TERM_FIELDS[kind].items():
        value = pool.get(field)
        values[field] = value if value is not None else asset_class.get(default)
    terms = Amortization(type=kind, **values)
    check_terms(terms, int(pool["wam"]))
    return terms


def term_errors(pool: Mapping[str, Any], asset_class: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(field, message) for each amortization field a write may not store: a field the class's
    type does not use, or an effective set (pool value or class default) that does not fit."""
    kind = str(asset_class["amortization_type"])
    used = TERM_FIELDS.get(kind, {})
    errors = [
        (
            field,
            f"{field} applies only to {' or '.join(t for t, f in TERM_FIELDS.items() if field in f)}"
            f" pools; asset class {asset_class['code']} is {kind}",
        )
        for field in ALL_TERM_FIELDS
        if pool.get(field) is not None and field not in used
    ]
    if errors:
        return errors
    try:
        terms_for(pool, asset_class)
    except AmortizationError as exc:
        default = used.get(exc.field)
        source = (
            f" (the {asset_class['code']} default)"
            if default is not None and pool.get(exc.field) is None
            else ""
        )
        return [(exc.field, exc.message + source)]
    return []


def snapshot_terms(pool: PoolSnapshot, asset_class: Mapping[str, Any]) -> Amortization:
    return terms_for(dataclasses.asdict(pool), asset_class)


@dataclass(frozen=True, slots=True)
class PoolSnapshot:
    id: int
    version: int
    asset_class_code: str
    current_balance: float
    wac: float
    wam: int
    servicing_fee: float
    amortization_term: int | None = None
    payment_rate: float | None = None
    revolving_months: int | None = None


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
    AssetPool.amortization_term,
    AssetPool.payment_rate,
    AssetPool.revolving_months,
)


def _snapshot(
    row: Row[int, int, str, float, float, int, float, int | None, float | None, int | None],
) -> PoolSnapshot:
    return PoolSnapshot(
        id=row.id,
        version=row.version,
        asset_class_code=row.asset_class_code,
        current_balance=float(row.current_balance),
        wac=row.wac,
        wam=row.wam,
        servicing_fee=row.servicing_fee,
        amortization_term=row.amortization_term,
        payment_rate=row.payment_rate,
        revolving_months=row.revolving_months,
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


def render(pool: PoolSnapshot, a: Assumptions, terms: Amortization) -> bytes:
    proj = project(pool.current_balance, pool.wac, pool.wam, pool.servicing_fee, a, terms)
    return orjson.dumps(
        {
            "pool_id": pool.id,
            "pool_version": pool.version,
            "asset_class_code": pool.asset_class_code,
            "assumptions": dataclasses.asdict(a),
            "amortization": dataclasses.asdict(terms),
            "summary": proj.summary,
            "cashflows": table_rows(proj.table),
        }
    )


def summarize(pool: PoolSnapshot, a: Assumptions, terms: Amortization) -> dict[str, float]:
    return project(pool.current_balance, pool.wac, pool.wam, pool.servicing_fee, a, terms).summary
