from __future__ import annotations

import http.client
import importlib.util
import multiprocessing
import os
import re
import runpy
from pathlib import Path
from types import SimpleNamespace

import pytest

from app.core.config import SettingsError
from tests.conftest import RedisServer, gunicorn

CONFIG = Path(__file__).resolve().parents[1] / "gunicorn_config.py"
ACCESS_LOG_FORMAT = '%(h)s %({x-request-id}o)s "%(r)s" %(s)s %(b)s %(M)sms "%(a)s"'


def load(monkeypatch: pytest.MonkeyPatch, **env: str) -> dict[str, object]:
    """Run the config with exactly `env` as its GUNICORN_* variables (the caller's are removed)."""
    for key in list(os.environ):
        if key.startswith("GUNICORN_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return runpy.run_path(str(CONFIG))


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load(monkeypatch)
    assert cfg["workers"] == 2 * multiprocessing.cpu_count() + 1
    assert cfg["worker_class"] == "app.core.worker.DrainingUvicornWorker"
    assert (cfg["max_requests"], cfg["max_requests_jitter"]) == (1000, 50)
    assert (cfg["timeout"], cfg["keepalive"]) == (60, 5)
    assert cfg["bind"] == ["127.0.0.1:8000"]
    assert (cfg["graceful_timeout"], cfg["loglevel"], cfg["pidfile"]) == (30, "info", None)
    assert cfg["accesslog"] == "-"
    assert cfg["errorlog"] == "-"
    assert cfg["proc_name"] == "asset-classes-api"
    assert cfg["access_log_format"] == ACCESS_LOG_FORMAT


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load(
        monkeypatch,
        GUNICORN_BIND="unix:/run/asset-classes/blue.sock",
        GUNICORN_WORKERS="3",
        GUNICORN_TIMEOUT="30",
        GUNICORN_MAX_REQUESTS="500",
        GUNICORN_MAX_REQUESTS_JITTER="25",
        GUNICORN_GRACEFUL_TIMEOUT="15",
        GUNICORN_KEEPALIVE="2",
        GUNICORN_ACCESSLOG="/var/log/asset-classes/access.log",
        GUNICORN_ERRORLOG="/var/log/asset-classes/error.log",
        GUNICORN_LOGLEVEL="warning",
        GUNICORN_PIDFILE="/run/asset-classes/gunicorn.pid",
        GUNICORN_PROC_NAME="asset-classes-blue",
        GUNICORN_ACCESS_LOG_TAG="blue",
    )
    assert cfg["bind"] == ["unix:/run/asset-classes/blue.sock"]
    assert cfg["workers"] == 3
    assert cfg["timeout"] == 30
    assert cfg["max_requests"] == 500
    assert cfg["max_requests_jitter"] == 25
    assert cfg["graceful_timeout"] == 15
    assert cfg["keepalive"] == 2
    assert cfg["accesslog"] == "/var/log/asset-classes/access.log"
    assert cfg["errorlog"] == "/var/log/asset-classes/error.log"
    assert cfg["loglevel"] == "warning"
    assert cfg["pidfile"] == "/run/asset-classes/gunicorn.pid"
    assert cfg["proc_name"] == "asset-classes-blue"
    assert cfg["access_log_format"] == ACCESS_LOG_FORMAT + " blue"


def test_a_slot_unit_environment_drives_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the app role's slot unit gives Gunicorn (shared/gunicorn.env, slots/<slot>.env and the
    unit's own lines, in systemd's KEY=value form) is what the config reads."""
    unit_env = """
# shared/gunicorn.env
GUNICORN_WORKERS=0
GUNICORN_TIMEOUT=60
GUNICORN_GRACEFUL_TIMEOUT=31
GUNICORN_KEEPALIVE=5
GUNICORN_MAX_REQUESTS=1000
GUNICORN_MAX_REQUESTS_JITTER=50
GUNICORN_ACCESSLOG=/var/log/asset-classes-api/access.log
GUNICORN_ERRORLOG=/var/log/asset-classes-api/error.log
GUNICORN_LOGLEVEL=info
TRUSTED_PROXIES=127.0.0.1,10.0.0.10
# slots/green.env
APP_RELEASE=1.0.0-gabc1234
GUNICORN_BIND=0.0.0.0:8002
# the unit
GUNICORN_PROC_NAME=asset-classes-api-green
GUNICORN_ACCESS_LOG_TAG=green
"""
    pairs = [line.split("=", 1) for line in unit_env.splitlines() if line and line[0] != "#"]
    cfg = load(monkeypatch, **dict(pairs))
    assert cfg["bind"] == ["0.0.0.0:8002"]
    assert cfg["workers"] == 2 * multiprocessing.cpu_count() + 1  # 0: the default
    assert (cfg["timeout"], cfg["graceful_timeout"], cfg["keepalive"]) == (60, 31, 5)
    assert (cfg["max_requests"], cfg["max_requests_jitter"]) == (1000, 50)
    assert cfg["accesslog"] == "/var/log/asset-classes-api/access.log"
    assert cfg["errorlog"] == "/var/log/asset-classes-api/error.log"
    assert cfg["proc_name"] == "asset-classes-api-green"
    assert cfg["access_log_format"] == ACCESS_LOG_FORMAT + " green"
    assert cfg["forwarded_allow_ips"] == "127.0.0.1,10.0.0.10"
    assert cfg["worker_class"] == "app.core.worker.DrainingUvicornWorker"


@pytest.mark.parametrize(
    ("tag", "suffix"), [("", ""), ("  ", ""), ("blue", " blue"), ("5%", " 5%%")]
)
def test_access_log_tag_is_appended_as_literal_text(
    monkeypatch: pytest.MonkeyPatch, tag: str, suffix: str
) -> None:
    """No tag, no trailing space; a % in the tag is escaped, so it is not read as a log atom."""
    assert load(monkeypatch, GUNICORN_ACCESS_LOG_TAG=tag)["access_log_format"] == (
        ACCESS_LOG_FORMAT + suffix
    )


def test_empty_accesslog_switches_access_logging_off(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load(monkeypatch, GUNICORN_ACCESSLOG="", GUNICORN_ERRORLOG="")
    assert cfg["accesslog"] is None
    assert cfg["errorlog"] == "-"


def test_defaults_ignore_the_callers_gunicorn_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GUNICORN_MAX_REQUESTS_JITTER", "7")
    monkeypatch.setenv("GUNICORN_LOGLEVEL", "debug")
    test_defaults(monkeypatch)


def test_an_app_without_the_draining_worker_gets_the_stock_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A release built before app.core.worker existed still starts (uvicorn-worker's own class)."""
    real = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None) -> object:
        return None if name == "app.core.worker" else real(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    assert load(monkeypatch)["worker_class"] == "uvicorn_worker.UvicornWorker"


def test_invalid_number_stops_with_the_variable_name(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SystemExit, match="GUNICORN_WORKERS"):
        load(monkeypatch, GUNICORN_WORKERS="many")


@pytest.mark.parametrize(
    "value",
    ["10.0.0.1, 10.0.0.0/24", '["10.0.0.1", "10.0.0.0/24"]', '  ["10.0.0.1","10.0.0.0/24"] '],
)
def test_trusted_proxies_reach_uvicorn_in_either_form_the_settings_accept(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    cfg = load(monkeypatch, TRUSTED_PROXIES=value)
    hosts = [h.strip() for h in str(cfg["forwarded_allow_ips"]).split(",")]
    assert hosts == ["10.0.0.1", "10.0.0.0/24"]


def test_on_starting_empties_the_prometheus_multiprocess_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """At start the master deletes the previous run's metric files and (re)creates the dir."""
    stale, missing = tmp_path / "stale", tmp_path / "missing" / "prom"
    stale.mkdir()
    (stale / "counter_4242.db").write_bytes(b"old counts")
    on_starting = load(monkeypatch)["on_starting"]
    monkeypatch.setattr(
        "app.core.config.get_settings", lambda: None
    )  # settings are not tested here
    for directory in (stale, missing):
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(directory))
        on_starting(None)  # type: ignore[operator]
        assert directory.is_dir()
        assert list(directory.iterdir()) == []


def test_child_exit_removes_only_the_dead_workers_live_gauge_files(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """When a worker exits its live-gauge files go; its counters and other workers' files stay."""
    files = [
        "gauge_livesum_101.db",
        "gauge_liveall_101.db",
        "counter_101.db",
        "gauge_livesum_202.db",
    ]
    for name in files:
        (tmp_path / name).write_bytes(b"")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    child_exit = load(monkeypatch)["child_exit"]
    child_exit(None, SimpleNamespace(pid=101))  # type: ignore[operator]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["counter_101.db", "gauge_livesum_202.db"]


def test_access_log_line_has_request_id_and_duration(
    tmp_path: Path, template_db: Path, redis_server: RedisServer
) -> None:
    """Gunicorn's access.log follows access_log_format: client, request id, request, status,
    bytes, duration in ms, user agent, and the tag (the app role's slot)."""
    access_log = tmp_path / "access.log"
    with gunicorn(
        tmp_path,
        template_db,
        redis_server,
        GUNICORN_WORKERS="1",
        GUNICORN_ACCESSLOG=str(access_log),
        GUNICORN_ACCESS_LOG_TAG="blue",
    ) as port:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request(
            "GET",
            "/api/v1/asset-classes/RMBS?x=1",
            headers={"X-Request-ID": "trace-7", "User-Agent": "probe/1"},
        )
        body = conn.getresponse().read()
        conn.close()
    expected = (
        r'127\.0\.0\.1 trace-7 "GET /api/v1/asset-classes/RMBS\?x=1 HTTP/1\.1" '
        rf'200 {len(body)} \d+ms "probe/1" blue'
    )
    lines = [x for x in access_log.read_text().splitlines() if "/asset-classes/RMBS" in x]
    assert len(lines) == 1, lines  # one line per request, in that format
    assert re.fullmatch(expected, lines[0]), lines[0]


@pytest.mark.parametrize("name", ["GUNICORN_MAX_REQUESTS", "GUNICORN_MAX_REQUESTS_JITTER"])
def test_zero_is_a_valid_number_and_negative_is_refused(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """0 is meaningful to Gunicorn (GUNICORN_MAX_REQUESTS=0 turns worker recycling off)."""
    key = name.removeprefix("GUNICORN_").lower()
    assert load(monkeypatch, **{name: "0"})[key] == 0
    with pytest.raises(SystemExit, match=name):
        load(monkeypatch, **{name: "-1"})


def test_empty_bind_falls_back_to_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """GUNICORN_BIND="" (say, an empty template variable) binds the default, not [None]."""
    assert load(monkeypatch, GUNICORN_BIND="")["bind"] == ["127.0.0.1:8000"]


def test_forwarded_headers_are_trusted_only_from_loopback_by_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without TRUSTED_PROXIES uvicorn takes X-Forwarded-For only from 127.0.0.1."""
    monkeypatch.delenv("TRUSTED_PROXIES", raising=False)
    assert load(monkeypatch)["forwarded_allow_ips"] == "127.0.0.1"


def test_app_is_not_preloaded_in_the_master(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each worker builds its own app, Redis pool and DB engine after fork (none shared)."""
    assert load(monkeypatch)["preload_app"] is False


def test_child_exit_without_multiprocess_metrics_does_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without PROMETHEUS_MULTIPROC_DIR there are no metric files to clean up."""
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    child_exit = load(monkeypatch)["child_exit"]
    child_exit(None, SimpleNamespace(pid=101))  # type: ignore[operator]


def test_on_starting_stops_the_master_on_invalid_settings(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad setting stops Gunicorn before any worker starts, with the readable message."""

    def invalid() -> None:
        raise SettingsError("Invalid configuration: SECRET_KEY: too short")

    on_starting = load(monkeypatch)["on_starting"]
    monkeypatch.setattr("app.core.config.get_settings", invalid)
    with pytest.raises(SystemExit) as stopped:
        on_starting(None)  # type: ignore[operator]
    assert stopped.value.code == 1
    assert capsys.readouterr().err == "Invalid configuration: SECRET_KEY: too short\n"
