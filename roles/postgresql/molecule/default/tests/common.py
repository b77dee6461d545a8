"""Helpers shared by the scenario's tests."""

import os
import shlex
from pathlib import Path

TLS_SERVER = "postgresql-debian13"
PLAIN_SERVER = "postgresql-debian12"
VERSION = {"postgresql-debian12": "15", "postgresql-debian13": "17"}


def secret(name):
    return (Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / name).read_text().split()[0]


def connect(host, server, *, sslmode, password=None, sql="SELECT 1"):
    """psql from `host` to `server` as the app user; returns (rc, stdout+stderr)."""
    password = password if password is not None else secret("postgresql_app_password")
    dsn = f"host={server} port=5432 dbname=asset_classes user=asset_classes sslmode={sslmode} connect_timeout=5"
    result = host.run(f"PGPASSWORD={shlex.quote(password)} psql -XAtq {shlex.quote(dsn)} -c {shlex.quote(sql)}")
    return result.rc, (result.stdout + result.stderr).strip()
