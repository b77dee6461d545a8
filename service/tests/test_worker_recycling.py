"""A worker that Gunicorn recycles (max_requests) must not reset the requests that reached it.

Real Gunicorn with the shipped gunicorn_config.py, a low max_requests, and a client that sends every
request on a new connection, many at once: the connections a stopping worker has accepted but not
yet read from are the ones the stock uvicorn worker resets (see app/core/worker.py).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.conftest import SECRET, RedisServer, free_port

SERVICE = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
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
    shutil.copy(template_db, tmp_path / "app.db")
    port = free_port()
    error_log = tmp_path / "error.log"
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/root"),
        "ENVIRONMENT": "test",
        "SECRET_KEY": SECRET,
        "DATABASE_URL": f"sqlite:///{tmp_path}/app.db",
        "REDIS_PORT": str(redis_server.port),
        "RATE_LIMIT_ENABLED": "false",
        "LOG_LEVEL": "WARNING",
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "GUNICORN_WORKERS": "2",
        "GUNICORN_MAX_REQUESTS": str(MAX_REQUESTS),
        "GUNICORN_MAX_REQUESTS_JITTER": "0",
        "GUNICORN_ACCESSLOG": "",
        "GUNICORN_ERRORLOG": str(error_log),
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom"),
    }
    server = subprocess.Popen(
        [str(BIN / "gunicorn"), "-c", str(SERVICE / "gunicorn_config.py"), "app.main:app"],
        cwd=SERVICE,
        env=env,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).close()
                break
            except OSError:
                assert server.poll() is None, error_log.read_text()
                assert time.monotonic() < deadline, "Gunicorn did not answer within 30 s"
                time.sleep(0.2)
        outcomes = asyncio.run(hammer(port))
    finally:
        server.terminate()
        server.wait(timeout=60)
    booted = error_log.read_text().count("Booting worker")
    assert booted - 2 >= 5, f"only {booted - 2} recycles: the test did not exercise recycling"
    assert outcomes == {"ok": REQUESTS}
