"""A worker that Gunicorn recycles (max_requests) must not reset the requests that reached it.

Real Gunicorn with the shipped gunicorn_config.py, a low max_requests, and a client that sends every
request on a new connection, many at once: the connections a stopping worker has accepted but not
yet read from are the ones the stock uvicorn worker resets (see app/core/worker.py).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.conftest import RedisServer, gunicorn

REQUESTS, CONCURRENCY, MAX_REQUESTS = 2400, 32, 200


async def one_request(port: int) -> str:
    """'ok', or what went wrong: a reset or an empty answer is what a proxy turns into a 502."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"GET /api/v1/asset-classes/RMBS HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        )
        answer = await reader.read()
        writer.close()
    except OSError as exc:
        return type(exc).__name__
    return "ok" if answer.startswith(b"HTTP/1.1 200 ") else f"answer {answer[:12]!r}"


async def hammer(port: int) -> dict[str, int]:
    outcomes: dict[str, int] = {}
    gate = asyncio.Semaphore(CONCURRENCY)

    async def worker() -> None:
        async with gate:
            outcome = await one_request(port)
            outcomes[outcome] = outcomes.get(outcome, 0) + 1

    await asyncio.gather(*(worker() for _ in range(REQUESTS)))
    return outcomes


def test_recycled_workers_reset_no_request(
    tmp_path: Path, template_db: Path, redis_server: RedisServer
) -> None:
    with gunicorn(
        tmp_path,
        template_db,
        redis_server,
        GUNICORN_WORKERS="2",
        GUNICORN_MAX_REQUESTS=str(MAX_REQUESTS),
        GUNICORN_MAX_REQUESTS_JITTER="0",
        GUNICORN_ACCESSLOG="",
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prom"),
    ) as port:
        outcomes = asyncio.run(hammer(port))
    booted = (tmp_path / "error.log").read_text().count("Booting worker")
    assert booted - 2 >= 5, f"only {booted - 2} recycles: the test did not exercise recycling"
    assert outcomes == {"ok": REQUESTS}
