"""Answers sent straight from ASGI middleware, before or instead of the application."""

from __future__ import annotations

from collections.abc import Sequence

import orjson
from starlette.types import Send


async def send_json(
    send: Send, status: int, body: object, headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    """Send a complete JSON response (start + body) on an ASGI `send`."""
    payload = orjson.dumps(body)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
