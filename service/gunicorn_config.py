"""Gunicorn configuration, read from the environment with production defaults.

    gunicorn -c gunicorn_config.py app.main:app

GUNICORN_BIND            address or unix socket (unix:/run/asset-classes/blue.sock); default 127.0.0.1:8000
GUNICORN_WORKERS         default 2 x CPU + 1
GUNICORN_TIMEOUT         60          GUNICORN_GRACEFUL_TIMEOUT 30     GUNICORN_KEEPALIVE 5
GUNICORN_MAX_REQUESTS    1000        GUNICORN_MAX_REQUESTS_JITTER 50
GUNICORN_ACCESSLOG       "-" (stdout); a path, or "" to switch access logging off
GUNICORN_ERRORLOG        "-" (stderr) or a path
GUNICORN_LOGLEVEL        info
GUNICORN_PIDFILE         optional pid file (for logrotate's `kill -USR1`)
GUNICORN_PROC_NAME       process title prefix; default asset-classes-api
GUNICORN_ACCESS_LOG_TAG  appended to every access-log line after a space (the app role: the slot)
TRUSTED_PROXIES          addresses whose X-Forwarded-* headers are trusted (as the settings read it)
PROMETHEUS_MULTIPROC_DIR when set, metrics of all workers are aggregated (dir is cleaned at start)
Gunicorn reopens its own log files on SIGUSR1; the app's file handler is a WatchedFileHandler.

The app role deploys this file with each release (<release>/gunicorn_config.py) and drives it with
these variables from the slot unit's environment files; it has no Gunicorn configuration of its own.
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from app.core.config import split_csv


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        sys.exit(f"Invalid configuration: {name}: not an integer (got {raw!r})")
    if value < 0:
        sys.exit(f"Invalid configuration: {name}: must be >= 0 (got {raw!r})")
    return value


def _str(name: str, default: str | None) -> str | None:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return raw or None


bind = [_str("GUNICORN_BIND", "127.0.0.1:8000") or "127.0.0.1:8000"]
workers = _int("GUNICORN_WORKERS", 0) or multiprocessing.cpu_count() * 2 + 1
# uvicorn-worker's UvicornWorker, except that a recycling worker resets no request (app/core/worker.py).
# The stock one only for an app package without that module (a release built before it existed).
worker_class = (
    "app.core.worker.DrainingUvicornWorker"
    if importlib.util.find_spec("app.core.worker")
    else "uvicorn_worker.UvicornWorker"
)
max_requests = _int("GUNICORN_MAX_REQUESTS", 1000)
max_requests_jitter = _int("GUNICORN_MAX_REQUESTS_JITTER", 50)
timeout = _int("GUNICORN_TIMEOUT", 60)
graceful_timeout = _int("GUNICORN_GRACEFUL_TIMEOUT", 30)
keepalive = _int("GUNICORN_KEEPALIVE", 5)
accesslog = _str("GUNICORN_ACCESSLOG", "-")
errorlog = _str("GUNICORN_ERRORLOG", "-") or "-"
loglevel = os.environ.get("GUNICORN_LOGLEVEL", "info")
pidfile = _str("GUNICORN_PIDFILE", None)
access_log_format = '%(h)s %({x-request-id}o)s "%(r)s" %(s)s %(b)s %(M)sms "%(a)s"'
_access_log_tag = os.environ.get("GUNICORN_ACCESS_LOG_TAG", "").strip()
if _access_log_tag:
    # Literal text: a % in the tag must not read as a log atom.
    access_log_format += " " + _access_log_tag.replace("%", "%%")
proc_name = os.environ.get("GUNICORN_PROC_NAME", "asset-classes-api")
# The settings accept TRUSTED_PROXIES as "a,b" or as a JSON list; uvicorn wants "a,b".
forwarded_allow_ips = ",".join(split_csv(os.environ.get("TRUSTED_PROXIES", "127.0.0.1")))
preload_app = False  # each worker builds its own app, Redis pool and DB engine after fork


def on_starting(server: Any) -> None:
    """Validate settings once in the master: a bad value stops start-up with a readable line."""
    from app.core.config import SettingsError, get_settings

    try:
        get_settings()
    except SettingsError as exc:
        sys.stderr.write(f"{exc}\n")
        sys.exit(1)
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        path = Path(directory)
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True, exist_ok=True)


def child_exit(server: Any, worker: Any) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
