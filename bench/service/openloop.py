"""Open-loop HTTP/1.1 load generator (constant arrival rate), for latency at a fixed request rate.

How it works: request i is *scheduled* at start + i / rate, whatever happened to earlier requests.
At its time it takes an idle keep-alive connection, or opens a new one (up to --max-connections)
when all are busy, so a slow response never holds back the requests behind it. Latency is measured
from the scheduled time, not from when the request was actually written: if the generator or the
server falls behind, that delay is counted (no coordinated omission). Requests that could not get a
connection at all are counted as 'dropped' and reported.

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


async def request(conn: Conn, raw: bytes) -> int:
    conn.writer.write(raw)
    head = await conn.reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    if length:
        await conn.reader.readexactly(length)
    return status


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

    idle: list[Conn] = []
    opened = 0
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors = dropped = 0
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.2
    total = int(args.rate * args.duration)
    warm_until = start + args.warmup
    pending: set[asyncio.Task[None]] = set()

    async def one(scheduled: float) -> None:
        nonlocal opened, errors, dropped
        conn = idle.pop() if idle else None
        if conn is None:
            if opened >= args.max_connections:
                dropped += 1
                return
            opened += 1
            try:
                conn = Conn(*await asyncio.open_connection(host, port))
            except OSError:
                opened -= 1
                errors += 1
                return
        try:
            status = await request(conn, raw)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            errors += 1
            opened -= 1
            conn.writer.close()
            return
        done = loop.time()
        idle.append(conn)
        if scheduled >= warm_until:
            latencies.append(done - scheduled)
            statuses[status] = statuses.get(status, 0) + 1

    for i in range(total):
        scheduled = start + i / args.rate
        delay = scheduled - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.ensure_future(one(scheduled))
        pending.add(task)
        task.add_done_callback(pending.discard)
    if pending:
        await asyncio.wait(pending, timeout=30)
    elapsed = loop.time() - warm_until
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1000 if latencies else float("nan")

    print(json.dumps({
        "target_rate": args.rate, "achieved_rate": round(len(latencies) / elapsed, 1),
        "measured": len(latencies), "p50_ms": round(pct(50), 2), "p95_ms": round(pct(95), 2),
        "p99_ms": round(pct(99), 2), "max_ms": round(latencies[-1] * 1000, 2) if latencies else None,
        "statuses": statuses, "errors": errors, "dropped": dropped, "connections": opened,
    }))
    for conn in idle:
        conn.writer.close()


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main())
