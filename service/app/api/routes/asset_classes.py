from __future__ import annotations

import orjson
from fastapi import APIRouter, HTTPException, Request, Response

from app.api.deps import ReferenceDep
from app.api.pagination import PageNo, PageSize, links
from app.schemas.models import AssetClassOut, Page

router = APIRouter(prefix="/api/v1/asset-classes", tags=["asset-classes"])


@router.get("", response_model=Page[AssetClassOut], summary="List asset classes (paginated)")
async def list_asset_classes(
    request: Request, reference: ReferenceDep, page: PageNo = 1, size: PageSize = 20
) -> Response:
    data = await reference.get()
    start = (page - 1) * size
    body = {
        "items": data.items[start : start + size],
        **links(request, page, size, len(data.items)),
    }
    return Response(orjson.dumps(body), media_type="application/json")


@router.get(
    "/{code}",
    response_model=AssetClassOut,
    summary="One asset class",
    responses={404: {"description": "Unknown asset class code"}},
)
async def get_asset_class(code: str, reference: ReferenceDep) -> Response:
    data = await reference.get()
    item = data.by_code.get(code.upper())
    if item is None:
        raise HTTPException(status_code=404, detail=f"Unknown asset class {code!r}")
    return Response(orjson.dumps(item), media_type="application/json")
