"""Open-loop HTTP/1.1 load generator (constant arrival rate), for latency at a fixed request rate.

How it works: request i is *scheduled* at start + i / rate, whatever happened to earlier requests.
At its time it takes an idle keep-alive connection, or opens a new one (up to --max-connections)
when all are busy, so a slow response never holds back the requests behind it. Latency is measured
from the scheduled time, not from when the request was actually written: if the generator or the
server falls behind, that delay is counted (no coordinated omission). Requests that could not get a
connection at all are counted as 'dropped' and reported.

Idle connections are handled as real HTTP clients do (urllib3, browsers, nginx's upstream pool): one
the server has already closed (its keep-alive timeout, 5 s for Gunicorn) is thrown away when it is
taken ('stale_closed'), and a request that fails on a reused connection before any byte of the answer
arrived is sent once more on a new one ('retried', its latency still counted from the scheduled
time). 'errors' are the requests that still failed.

    python openloop.py --url http://127.0.0.1:8000/api/v1/asset-classes --rate 1000 --duration 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from urllib.parse import urlsplit


class Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer


class NoAnswer(Exception):
    """The connection ended before the first byte of the answer: the request can be sent again."""


async def request(conn: Conn, raw: bytes) -> int:
    conn.writer.write(raw)
    try:
        head = await conn.reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            raise NoAnswer from exc
        raise
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    if length:
        await conn.reader.readexactly(length)
    return status


class Client:
    """A pool of keep-alive connections and the counts the report gives."""

    def __init__(self, host: str, port: int, raw: bytes, max_connections: int, warm_until: float) -> None:
        self.host, self.port, self.raw = host, port, raw
        self.max_connections, self.warm_until = max_connections, warm_until
        self.idle: list[Conn] = []  # a stack: the most recently used connection is reused first
        self.opened = self.errors = self.dropped = self.stale_closed = self.retried = 0
        self.latencies: list[float] = []
        self.statuses: dict[int, int] = {}

    def discard(self, conn: Conn) -> None:
        self.opened -= 1
        conn.writer.close()

    def take_idle(self) -> Conn | None:
        while self.idle:
            conn = self.idle.pop()
            if not conn.reader.at_eof():
                return conn
            self.stale_closed += 1  # closed by the server while it sat idle
            self.discard(conn)
        return None

    async def connect(self) -> Conn | None:
        if self.opened >= self.max_connections:
            self.dropped += 1
            return None
        self.opened += 1
        try:
            return Conn(*await asyncio.open_connection(self.host, self.port))
        except OSError:
            self.opened -= 1
            self.errors += 1
            return None

    async def send(self, conn: Conn, reused: bool) -> tuple[Conn, int] | None:
        try:
            try:
                return conn, await request(conn, self.raw)
            except (NoAnswer, ConnectionResetError, BrokenPipeError):
                if not reused:
                    raise
            self.retried += 1  # the server closed it as we wrote: what an HTTP client retries
            self.discard(conn)
            if (fresh := await self.connect()) is None:
                return None
            conn = fresh
            return conn, await request(conn, self.raw)
        except (OSError, asyncio.IncompleteReadError, ValueError, NoAnswer):
            self.errors += 1
            self.discard(conn)
            return None

    async def one(self, scheduled: float) -> None:
        sent = time.perf_counter()
        conn = self.take_idle()
        reused = conn is not None
        if conn is None and (conn := await self.connect()) is None:
            return
        if (answer := await self.send(conn, reused)) is None:
            return
        conn, status = answer
        done = time.perf_counter()
        self.idle.append(conn)
        if scheduled >= self.warm_until:
            # A late start counts against the server (no coordinated omission); a timer that fired
            # early must not shorten the figure below the time the request actually took.
            self.latencies.append(done - max(scheduled, sent))
            self.statuses[status] = self.statuses.get(status, 0) + 1


def percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(p / 100 * len(sorted_values)))] * 1000


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--method", default="GET")
    ap.add_argument("--body", default="")
    ap.add_argument("--rate", type=float, required=True, help="requests per second")
    ap.add_argument("--duration", type=float, default=20)
    ap.add_argument("--warmup", type=float, default=2, help="seconds excluded from the figures")
    ap.add_argument("--max-connections", type=int, default=256)
    args = ap.parse_args()

    u = urlsplit(args.url)
    host, port = u.hostname or "127.0.0.1", u.port or 80
    path = (u.path or "/") + (f"?{u.query}" if u.query else "")
    body = args.body.encode()
    raw = (
        f"{args.method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: openloop\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body

    # time.perf_counter, not loop.time(): uvloop's clock ticks in whole milliseconds.
    start = time.perf_counter() + 0.2
    client = Client(host, port, raw, args.max_connections, warm_until=start + args.warmup)
    pending: set[asyncio.Task[None]] = set()
    for i in range(int(args.rate * args.duration)):
        scheduled = start + i / args.rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.ensure_future(client.one(scheduled))
        pending.add(task)
        task.add_done_callback(pending.discard)
    if pending:
        await asyncio.wait(pending, timeout=30)
    elapsed = time.perf_counter() - client.warm_until
    lat = sorted(client.latencies)
    print(json.dumps({
        "target_rate": args.rate, "achieved_rate": round(len(lat) / elapsed, 1),
        "measured": len(lat), "p50_ms": round(percentile(lat, 50), 2), "p95_ms": round(percentile(lat, 95), 2),
        "p99_ms": round(percentile(lat, 99), 2), "max_ms": round(lat[-1] * 1000, 2) if lat else None,
        "statuses": client.statuses, "errors": client.errors, "dropped": client.dropped,
        "connections": client.opened, "stale_closed": client.stale_closed, "retried": client.retried,
    }))
    for conn in client.idle:
        conn.writer.close()


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main())
