from __future__ import annotations

import multiprocessing
import runpy
from pathlib import Path

import pytest

CONFIG = Path(__file__).resolve().parents[1] / "gunicorn_config.py"


def load(monkeypatch: pytest.MonkeyPatch, **env: str) -> dict[str, object]:
    for key in ("GUNICORN_BIND", "GUNICORN_WORKERS", "GUNICORN_TIMEOUT"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return runpy.run_path(str(CONFIG))


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load(monkeypatch)
    assert cfg["workers"] == 2 * multiprocessing.cpu_count() + 1
    assert cfg["worker_class"] == "uvicorn_worker.UvicornWorker"
    assert (cfg["max_requests"], cfg["max_requests_jitter"]) == (1000, 50)
    assert (cfg["timeout"], cfg["keepalive"]) == (60, 5)
    assert cfg["bind"] == ["127.0.0.1:8000"]
    assert cfg["accesslog"] == "-"
    assert cfg["errorlog"] == "-"


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load(
        monkeypatch,
        GUNICORN_BIND="unix:/run/asset-classes/blue.sock",
        GUNICORN_WORKERS="3",
        GUNICORN_TIMEOUT="30",
    )
    assert cfg["bind"] == ["unix:/run/asset-classes/blue.sock"]
    assert cfg["workers"] == 3
    assert cfg["timeout"] == 30


def test_invalid_number_stops_with_the_variable_name(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SystemExit, match="GUNICORN_WORKERS"):
        load(monkeypatch, GUNICORN_WORKERS="many")
