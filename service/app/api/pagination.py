from __future__ import annotations

import math
from typing import Annotated
from urllib.parse import urlencode

from fastapi import Query, Request

PageNo = Annotated[int, Query(ge=1, le=1_000_000, description="Page number, from 1")]
PageSize = Annotated[int, Query(ge=1, le=100, description="Items per page, 1..100")]


def links(request: Request, page: int, size: int, total: int) -> dict[str, object]:
    pages = max(1, math.ceil(total / size))

    def url(p: int) -> str:
        params = dict(request.query_params)
        params.update(page=str(p), size=str(size))
        return f"{request.url.path}?{urlencode(params)}"

    return {
        "total": total,
        "page": page,
        "size": size,
        "pages": pages,
        "next": url(page + 1) if page < pages else None,
        "prev": url(min(page - 1, pages)) if page > 1 else None,
    }
