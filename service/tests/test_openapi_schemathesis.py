"""Property-based run of every documented operation: no input may cause a server error."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import schemathesis
from alembic import command
from alembic.config import Config
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from app.core.config import load_settings
from app.core.security import create_token
from app.main import create_app
from tests.conftest import POOL, SECRET, RedisServer


def _build(tmp: Path) -> tuple[Any, RedisServer]:
    server = RedisServer(tmp)
    server.start()
    cfg = Config()
    cfg.set_main_option("script_location", "app:migrations")
    cfg.set_main_option("sqlalchemy.url", f"sqlite:///{tmp}/st.db")
    command.upgrade(cfg, "head")
    s = load_settings(
        _env_file=None,
        environment="test",
        secret_key=SECRET,
        database_url=f"sqlite:///{tmp}/st.db",
        redis_port=server.port,
        rate_limit_enabled=False,
        log_level="ERROR",
    )
    return create_app(s), server


_TMP = Path(__import__("tempfile").mkdtemp(prefix="schemathesis-"))
APP, SERVER = _build(_TMP)
TOKEN = create_token("fuzzer", ["read", "write", "admin"], settings=APP.state.settings)
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@pytest.fixture(scope="module", autouse=True)
def seeded() -> Iterator[None]:
    from fastapi.testclient import TestClient

    with TestClient(APP) as c:
        for _ in range(3):
            c.post("/api/v1/asset-pools", json=POOL, headers={"Authorization": f"Bearer {TOKEN}"})
    yield
    redis.Redis(port=SERVER.port).close()
    SERVER.stop()


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_error(case: Any) -> None:
    case.headers = {**(case.headers or {}), "Authorization": f"Bearer {TOKEN}"}
    response = case.call()
    case.validate_response(response, checks=[not_a_server_error])
    assert response.status_code < 500
