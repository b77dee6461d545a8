"""The README's "Run it" steps serve from a fresh checkout (the issue's acceptance line).

A copy of the service's tracked files stands in for the checkout; `.env` is the shipped
`.env.example`; then `alembic upgrade head` and `gunicorn -c gunicorn_config.py app.main:app`, run
there as the README says. Only the Redis port and the bind address are overridden (in the
environment, which wins over .env), so that the test does not need port 6379 or 8000.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

from tests.conftest import SERVICE, RedisServer, free_port, wait_for_health

BIN = Path(sys.executable).parent


def checkout(dest: Path) -> Path:
    tracked = subprocess.run(
        ["git", "ls-files", "-z", "."], cwd=SERVICE, check=True, capture_output=True
    ).stdout.decode()
    for name in filter(None, tracked.split("\0")):
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(SERVICE / name, dest / name)
    return dest


def get_json(port: int, path: str) -> dict[str, object]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
        assert resp.status == 200, path
        result: dict[str, object] = json.load(resp)
        return result


def test_readme_steps_serve_from_a_fresh_checkout(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    root = checkout(tmp_path / "service")
    assert not (root / "asset_classes.db").exists()
    shutil.copy(root / ".env.example", root / ".env")
    port = free_port()
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/root"),
        "REDIS_PORT": str(redis_server.port),
        "GUNICORN_BIND": f"127.0.0.1:{port}",
    }
    subprocess.run([str(BIN / "alembic"), "upgrade", "head"], cwd=root, env=env, check=True)
    assert (root / "asset_classes.db").exists()  # DATABASE_URL from .env, relative to the checkout

    log = (tmp_path / "gunicorn.log").open("wb")
    server = subprocess.Popen(
        [str(BIN / "gunicorn"), "-c", "gunicorn_config.py", "app.main:app"],
        cwd=root,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_health(server, port, tmp_path / "gunicorn.log")
        health = get_json(port, "/health")
        classes = get_json(port, "/api/v1/asset-classes")
    finally:
        server.terminate()
        server.wait(timeout=60)
        log.close()
    assert health["status"] == "ok", health
    assert health["environment"] == "development"  # read from the copied .env
    assert classes["total"] == 8  # the reference data the migration loads
