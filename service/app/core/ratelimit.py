"""Redis-backed token-bucket rate limiting (pure ASGI middleware).

Each client key (the bearer token's subject when a valid token is sent, else the client IP) owns a
bucket of RATE_LIMIT_BURST tokens refilled at RATE_LIMIT_DEFAULT (e.g. 100/minute). The bucket lives
in Redis and is updated by one Lua script using Redis' clock, so all workers and hosts share it.
When Redis is unavailable the limiter fails open (requests pass) or closed (503), per
RATE_LIMIT_FAIL_OPEN.
"""

from __future__ import annotations

import logging
import math

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.asgi import send_json
from app.core.config import Settings
from app.core.metrics import RATE_LIMITED
from app.core.net import client_ip, parse_networks
from app.core.redis import REDIS_ERRORS, RedisManager
from app.core.security import TokenError, decode_token

logger = logging.getLogger("app.api")

BUCKET_SCRIPT = """
local burst = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local data = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(data[1])
local ts = tonumber(data[2])
if tokens == nil then tokens = burst; ts = now end
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local allowed = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {allowed, tostring(tokens)}
"""

EXEMPT_PATHS = frozenset({"/health", "/metrics"})


class RateLimitMiddleware:
    def __init__(self, app: ASGIApp, settings: Settings, redis: RedisManager) -> None:
        self.app = app
        self.settings = settings
        self.redis = redis
        self.limit, self.period = settings.rate_limit
        self.burst = settings.rate_limit_burst
        self.rate = self.limit / self.period
        self.trusted = parse_networks(tuple(settings.trusted_proxies))
        self.script = redis.register_script(BUCKET_SCRIPT)

    def _identity(self, scope: Scope) -> str:
        for key, value in scope.get("headers", ()):
            if key == b"authorization":
                scheme, _, token = value.decode("latin-1").partition(" ")
                if scheme.lower() == "bearer" and token:
                    try:
                        return "sub:" + decode_token(token.strip(), self.settings).subject
                    except TokenError:
                        break
        return "ip:" + client_ip(scope, self.trusted)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        key = "rl:" + self._identity(scope)
        allowed: bool
        remaining: float
        if not self.redis.available:
            await self._unavailable(scope, receive, send)
            return
        try:
            result = await self.script(
                keys=[key], args=[self.burst, self.rate], client=self.redis.client
            )
            allowed, remaining = bool(int(result[0])), float(result[1])
        except REDIS_ERRORS as exc:
            self.redis.mark_down(exc)
            await self._unavailable(scope, receive, send)
            return
        reset = math.ceil((self.burst - remaining) / self.rate)
        headers = [
            (b"x-ratelimit-limit", str(self.limit).encode()),
            (b"x-ratelimit-burst", str(self.burst).encode()),
            (b"x-ratelimit-remaining", str(max(0, math.floor(remaining))).encode()),
            (b"x-ratelimit-reset", str(reset).encode()),
        ]
        if not allowed:
            RATE_LIMITED.labels("limit").inc()
            retry_after = max(1, math.ceil((1 - remaining) / self.rate))
            logger.info("rate limited", extra={"client_key": key, "path": scope["path"]})
            await send_json(
                send,
                429,
                {"detail": "Too Many Requests", "retry_after": retry_after},
                [*headers, (b"retry-after", str(retry_after).encode())],
            )
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *headers]
            await send(message)

        await self.app(scope, receive, send_with_headers)

    async def _unavailable(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.settings.rate_limit_fail_open:
            await self.app(scope, receive, send)
            return
        RATE_LIMITED.labels("backend_down").inc()
        await send_json(send, 503, {"detail": "Rate limiter unavailable"}, [(b"retry-after", b"1")])
