"""Shared fixtures: a private redis-server per test session, a migrated SQLite database per test,
and an app built from explicit settings (never from the developer's .env)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
from alembic import command
from alembic.config import Config
from fastapi.testclient import TestClient

from app.core.config import Settings, load_settings
from app.core.security import create_token
from app.main import create_app

SECRET = "test-secret-key-that-is-long-enough-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.tmp = tmp
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        exe = shutil.which("redis-server")
        assert exe, "redis-server is not installed (scripts/test.sh installs it)"
        self.proc = subprocess.Popen(
            [
                exe,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.tmp),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis(port=redis_server.port)
    client.flushdb()
    yield client
    client.close()


def migrate(url: str) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", "app:migrations")
    cfg.set_main_option("sqlalchemy.url", url)
    command.upgrade(cfg, "head")


@pytest.fixture(scope="session")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("db") / "template.db"
    migrate(f"sqlite:///{path}")
    return path


@pytest.fixture
def database_url(tmp_path: Path, template_db: Path) -> str:
    path = tmp_path / "test.db"
    shutil.copy(template_db, path)
    return f"sqlite:///{path}"


MakeSettings = Callable[..., Settings]


@pytest.fixture
def make_settings(
    database_url: str, redis_server: RedisServer, redis_client: redis.Redis
) -> MakeSettings:
    def factory(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "_env_file": None,
            "environment": "test",
            "secret_key": SECRET,
            "database_url": database_url,
            "redis_port": redis_server.port,
            "rate_limit_enabled": False,
            "log_level": "WARNING",
        }
        values.update(overrides)
        return load_settings(**values)

    return factory


@pytest.fixture
def settings(make_settings: MakeSettings) -> Settings:
    return make_settings()


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), client=("127.0.0.1", 50000)) as c:
        yield c


@pytest.fixture
def auth(settings: Settings) -> dict[str, str]:
    token = create_token("tester", ["read", "write"], settings=settings)
    return {"Authorization": f"Bearer {token}"}


POOL = {
    "name": "Prime RMBS 2024-1",
    "asset_class_code": "RMBS",
    "current_balance": 1_000_000.0,
    "wac": 0.06,
    "wam": 360,
    "servicing_fee": 0.0025,
    "as_of_date": "2024-06-30",
}


@pytest.fixture
def pool(client: TestClient, auth: dict[str, str]) -> dict[str, Any]:
    resp = client.post("/api/v1/asset-pools", json=POOL, headers=auth)
    assert resp.status_code == 201, resp.text
    body: dict[str, Any] = resp.json()
    return body


def metric_value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels` (0 when absent)."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        metric, _, label_text = head.partition("{")
        if metric != name:
            continue
        if all(f'{k}="{v}"' in label_text for k, v in labels.items()):
            total += float(value)
    return total


os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)


def with_peer(app: Any) -> Any:
    """Wrap an ASGI app so a test can choose the TCP peer address with an X-Test-Peer header
    (one TestClient = one event loop, so one client must serve several 'addresses')."""

    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            for key, value in scope["headers"]:
                if key == b"x-test-peer":
                    scope["client"] = (value.decode(), 1)
        await app(scope, receive, send)

    return wrapped


SERVICE = Path(__file__).resolve().parents[1]


def wait_for_health(
    server: subprocess.Popen[bytes], port: int, log: Path, limit: float = 60
) -> None:
    """Return once /health answers on `port`; fail with `log` if the server exits first."""
    deadline = time.monotonic() + limit
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).close()
            return
        except OSError:
            assert server.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"Gunicorn did not answer within {limit:.0f} s"
            time.sleep(0.2)


@contextmanager
def gunicorn(tmp_path: Path, template_db: Path, redis: RedisServer, **env: str) -> Iterator[int]:
    """Real Gunicorn with the shipped gunicorn_config.py (and `env`) on a free port, serving a copy
    of the template database; yields the port once /health answers. Its error log is
    tmp_path/error.log."""
    shutil.copy(template_db, tmp_path / "app.db")
    port = free_port()
    error_log = tmp_path / "error.log"
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "gunicorn"),
            "-c",
            str(SERVICE / "gunicorn_config.py"),
            "app.main:app",
        ],
        cwd=SERVICE,
        env={
            "PATH": os.environ["PATH"],
            "HOME": os.environ.get("HOME", "/root"),
            "ENVIRONMENT": "test",
            "SECRET_KEY": SECRET,
            "DATABASE_URL": f"sqlite:///{tmp_path}/app.db",
            "REDIS_PORT": str(redis.port),
            "RATE_LIMIT_ENABLED": "false",
            "LOG_LEVEL": "WARNING",
            "GUNICORN_BIND": f"127.0.0.1:{port}",
            "GUNICORN_ERRORLOG": str(error_log),
            **env,
        },
    )
    try:
        wait_for_health(server, port, error_log)
        yield port
    finally:
        server.terminate()
        server.wait(timeout=60)
