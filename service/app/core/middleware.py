"""Outermost request middleware (pure ASGI, cheap): request id, timeout, metrics, access log,
and a JSON 500 for unhandled errors."""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.asgi import send_json
from app.core.logging import request_id_var
from app.core.metrics import ERRORS, LATENCY, REQUESTS

logger = logging.getLogger("app.api")
_VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class RequestContextMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        timeout: float,
        metrics: bool,
        on_request_id: Callable[[str], None] | None = None,
    ) -> None:
        self.app = app
        self.timeout = timeout
        self.metrics = metrics
        self.on_request_id = on_request_id  # tracing: tag the server span (None when off)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = None
        for key, value in scope.get("headers", ()):
            if key == b"x-request-id":
                candidate = value.decode("latin-1")
                if _VALID_ID.match(candidate):
                    request_id = candidate
                break
        if request_id is None:
            request_id = uuid.uuid4().hex
        token = request_id_var.set(request_id)
        if self.on_request_id is not None:
            self.on_request_id(request_id)
        rid = request_id.encode()
        status = 500
        started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid)]
            await send(message)

        start = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout):
                await self.app(scope, receive, send_wrapper)
        except TimeoutError:
            ERRORS.labels("timeout").inc()
            logger.error(
                "request timed out after %.1fs", self.timeout, extra={"path": scope["path"]}
            )
            if not started:
                await send_json(
                    send_wrapper, 504, {"detail": "Request timed out", "request_id": request_id}
                )
        except Exception:
            ERRORS.labels("exception").inc()
            logger.exception("unhandled error", extra={"path": scope["path"]})
            if not started:
                await send_json(
                    send_wrapper, 500, {"detail": "Internal Server Error", "request_id": request_id}
                )
        finally:
            elapsed = time.perf_counter() - start
            route = scope.get("route")
            template = getattr(route, "path", None) or "<unmatched>"
            if self.metrics:
                label = (scope["method"], template, str(status))
                REQUESTS.labels(*label).inc()
                LATENCY.labels(*label).observe(elapsed)
            if logger.isEnabledFor(logging.INFO):
                logger.info(
                    "request",
                    extra={
                        "method": scope["method"],
                        "path": scope["path"],
                        "route": template,
                        "status": status,
                        "duration_ms": round(elapsed * 1000, 3),
                    },
                )
            request_id_var.reset(token)
