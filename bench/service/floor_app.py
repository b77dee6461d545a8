"""The least any cache hit can cost on this stack: a bare ASGI app, no framework, no middleware, no
Redis, no database, that answers every request with the bytes of one stored cashflow answer.

cache_ratio.py times it next to the real service (same Gunicorn config, same uvicorn worker class,
same access log, same client), so floor / uncached is the best cached / uncached ratio that a
perfect cache could reach here, and cached - floor is what the service's own hit path costs.

FLOOR_BODY_FILE holds a cached answer exactly as a gzip client received it (run.sh saves it).
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

Message = MutableMapping[str, Any]

GZIPPED = Path(os.environ["FLOOR_BODY_FILE"]).read_bytes()
PLAIN = gzip.decompress(GZIPPED)


async def app(
    scope: MutableMapping[str, Any],
    receive: Callable[[], Awaitable[Message]],
    send: Callable[[Message], Awaitable[None]],
) -> None:
    if scope["type"] == "lifespan":
        await receive()  # lifespan.startup
        await send({"type": "lifespan.startup.complete"})
        await receive()  # lifespan.shutdown
        await send({"type": "lifespan.shutdown.complete"})
        return
    more = True
    while more:  # read the request body, as the service must
        more = (await receive()).get("more_body", False)
    accepts_gzip = b"gzip" in dict(scope["headers"]).get(b"accept-encoding", b"")
    body = GZIPPED if accepts_gzip else PLAIN
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"x-cache", b"FLOOR"),
    ]
    if accepts_gzip:
        headers.append((b"content-encoding", b"gzip"))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
