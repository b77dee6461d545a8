from __future__ import annotations

import dataclasses
import logging
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Request, Response, status
from fastapi.exceptions import RequestValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError
from starlette.concurrency import run_in_threadpool

from app.api.deps import (
    AUTH_RESPONSES,
    CacheDep,
    ReferenceDep,
    SessionsDep,
    SettingsDep,
    WriteToken,
)
from app.api.pagination import PageNo, PageSize, links
from app.core.compression import accepts_gzip, gunzip_bytes, gzip_bytes
from app.models import AssetClass, AssetPool
from app.schemas.models import (
    AssetPoolCreate,
    AssetPoolOut,
    AssetPoolUpdate,
    AssumptionsIn,
    CashflowProjection,
    Page,
)
from app.services.cache import cache_key, ttl_for
from app.services.cashflow import AmortizationError
from app.services.projections import (
    ALL_TERM_FIELDS,
    load_pool,
    render,
    resolve,
    snapshot_terms,
    term_errors,
)
from app.services.reference import FIELDS as REFERENCE_FIELDS

logger = logging.getLogger("app.api")
router = APIRouter(prefix="/api/v1/asset-pools", tags=["asset-pools"])
PoolId = Annotated[int, Path(ge=1, le=2**31 - 1, description="Pool id")]
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No such pool"}}
NULLABLE = frozenset(ALL_TERM_FIELDS)  # PATCH null: the asset class default applies again


def _unknown_class(code: str) -> RequestValidationError:
    return RequestValidationError(
        [
            {
                "type": "value_error",
                "loc": ("body", "asset_class_code"),
                "msg": f"Unknown asset class {code!r}",
                "input": code,
            }
        ]
    )


def _check_terms(values: dict[str, Any], asset_class: AssetClass) -> None:
    """422 naming each amortization field the pool may not have (see `term_errors`)."""
    errors = term_errors(values, {c: getattr(asset_class, c) for c in REFERENCE_FIELDS})
    if errors:
        raise RequestValidationError(
            [
                {"type": "value_error", "loc": ("body", field), "msg": msg, "input": values[field]}
                for field, msg in errors
            ]
        )


def _out(pool: AssetPool) -> AssetPoolOut:
    return AssetPoolOut.model_validate(pool)


def _get(session: Session, pool_id: int) -> AssetPool:
    pool = session.get(AssetPool, pool_id)
    if pool is None:
        raise HTTPException(status_code=404, detail=f"Pool {pool_id} not found")
    return pool


@router.post(
    "",
    response_model=AssetPoolOut,
    status_code=status.HTTP_201_CREATED,
    summary="Create a pool",
    responses=AUTH_RESPONSES,
)
async def create_pool(
    body: AssetPoolCreate, sessions: SessionsDep, token: WriteToken, response: Response
) -> AssetPoolOut:
    def work() -> AssetPoolOut:
        with sessions() as session:
            asset_class = session.get(AssetClass, body.asset_class_code)
            if asset_class is None:
                raise _unknown_class(body.asset_class_code)
            values = body.model_dump()
            _check_terms(values, asset_class)
            pool = AssetPool(**values)
            session.add(pool)
            session.commit()
            return _out(pool)

    out = await run_in_threadpool(work)
    response.headers["Location"] = f"/api/v1/asset-pools/{out.id}"
    logger.info("pool created", extra={"pool_id": out.id, "subject": token.subject})
    return out


@router.get("", response_model=Page[AssetPoolOut], summary="List pools (paginated)")
def list_pools(
    request: Request,
    sessions: SessionsDep,
    page: PageNo = 1,
    size: PageSize = 20,
    asset_class: str | None = None,
) -> dict[str, object]:
    with sessions() as session:
        query = select(AssetPool)
        count = select(func.count()).select_from(AssetPool)
        if asset_class:
            query = query.where(AssetPool.asset_class_code == asset_class)
            count = count.where(AssetPool.asset_class_code == asset_class)
        total = session.scalar(count) or 0
        rows = session.scalars(query.order_by(AssetPool.id).offset((page - 1) * size).limit(size))
        items = [_out(p) for p in rows.unique()]
    return {"items": items, **links(request, page, size, total)}


@router.get("/{pool_id}", response_model=AssetPoolOut, responses=NOT_FOUND, summary="One pool")
def get_pool(pool_id: PoolId, sessions: SessionsDep) -> AssetPoolOut:
    with sessions() as session:
        return _out(_get(session, pool_id))


@router.patch(
    "/{pool_id}",
    response_model=AssetPoolOut,
    summary="Change a pool",
    responses={**NOT_FOUND, **AUTH_RESPONSES, 409: {"description": "Concurrent change"}},
)
async def update_pool(
    pool_id: PoolId, body: AssetPoolUpdate, sessions: SessionsDep, cache: CacheDep, _t: WriteToken
) -> AssetPoolOut:
    changes = body.model_dump(exclude_unset=True)
    if any(v is None for k, v in changes.items() if k not in NULLABLE):
        raise RequestValidationError(
            [
                {"type": "value_error", "loc": ("body", k), "msg": "may not be null", "input": None}
                for k, v in changes.items()
                if v is None and k not in NULLABLE
            ]
        )

    def work() -> AssetPoolOut:
        with sessions() as session:
            pool = _get(session, pool_id)
            code = changes.get("asset_class_code", pool.asset_class_code)
            asset_class = session.get(AssetClass, code)
            if asset_class is None:
                raise _unknown_class(code)
            merged = {**_out(pool).model_dump(), **changes}
            _check_terms(merged, asset_class)
            for key, value in changes.items():
                setattr(pool, key, value)
            try:
                session.commit()
            except StaleDataError:
                raise HTTPException(status_code=409, detail="Pool changed concurrently") from None
            return _out(pool)

    out = await run_in_threadpool(work)
    await cache.invalidate(pool_id)
    return out


@router.delete(
    "/{pool_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a pool",
    responses={**NOT_FOUND, **AUTH_RESPONSES},
)
async def delete_pool(
    pool_id: PoolId, sessions: SessionsDep, cache: CacheDep, _t: WriteToken
) -> Response:
    def work() -> None:
        with sessions() as session:
            session.delete(_get(session, pool_id))
            session.commit()

    await run_in_threadpool(work)
    await cache.invalidate(pool_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def _projection(body: bytes, cache: str, *, gzipped: bool) -> Response:
    headers = {"X-Cache": cache, "Vary": "Accept-Encoding"}
    if gzipped:
        # Encoded here, so the GZip middleware passes it through; Content-Length is len(body).
        headers["Content-Encoding"] = "gzip"
    return Response(body, media_type="application/json", headers=headers)


@router.post(
    "/{pool_id}/cashflows",
    response_model=CashflowProjection,
    responses={
        **NOT_FOUND,
        409: {
            "description": "The stored pool's amortization terms do not fit its asset class's "
            "type (a row written around the API, or a changed class default)"
        },
        200: {
            "description": "The projection; gzip-encoded when the request's Accept-Encoding "
            "allows gzip (a cached projection is stored compressed and sent as stored)",
            "headers": {
                "X-Cache": {
                    "description": "HIT when served from the Redis cache, MISS otherwise",
                    "schema": {"type": "string"},
                },
                "Vary": {
                    "description": "Accept-Encoding",
                    "schema": {"type": "string"},
                },
            },
        },
    },
    summary="Project monthly cashflows (cached in Redis)",
)
async def project_cashflows(
    pool_id: PoolId,
    request: Request,
    sessions: SessionsDep,
    reference: ReferenceDep,
    cache: CacheDep,
    settings: SettingsDep,
    assumptions: AssumptionsIn | None = None,
) -> Response:
    # The pool is read from the database on every call, hits included: the cache key covers it,
    # which is what makes a missed invalidation harmless (see app/services/cache.py).
    pool = await run_in_threadpool(load_pool, sessions, pool_id)
    if pool is None:
        raise HTTPException(status_code=404, detail=f"Pool {pool_id} not found")
    ref = await reference.get()
    asset_class = ref.by_code[pool.asset_class_code]
    resolved = resolve(assumptions, asset_class, pool.wam)
    try:
        terms = snapshot_terms(pool, asset_class)
    except AmortizationError as exc:  # a row written around the API, or a changed class default
        raise HTTPException(
            status_code=409,
            detail=f"Pool {pool_id} cannot be projected as {asset_class['amortization_type']}: "
            f"{exc}",
        ) from None
    key = cache_key(
        pool,
        {**dataclasses.asdict(resolved), "amortization": dataclasses.asdict(terms)},
        ref.ref_hash,
    )
    wants_gzip = accepts_gzip(request.headers.get("accept-encoding"))
    packed = await cache.get(key)
    if packed is not None:
        if wants_gzip:
            return _projection(packed, "HIT", gzipped=True)
        return _projection(gunzip_bytes(packed), "HIT", gzipped=False)
    payload = render(pool, resolved, terms)
    if not (wants_gzip or cache.enabled):
        return _projection(payload, "MISS", gzipped=False)
    packed = gzip_bytes(payload)
    await cache.set(pool.id, key, packed, ttl_for(str(asset_class["data_tier"]), settings))
    if wants_gzip:
        return _projection(packed, "MISS", gzipped=True)
    return _projection(payload, "MISS", gzipped=False)
