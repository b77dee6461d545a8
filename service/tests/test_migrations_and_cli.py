from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import jwt
import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import CheckConstraint, create_engine, inspect, text
from sqlalchemy.exc import IntegrityError

from app.models import Base
from tests.conftest import SECRET

SERVICE = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
POSTGRES_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql+psycopg://asset_test:asset_test@127.0.0.1:5432/asset_test"
)


def alembic_cfg(url: str) -> Config:
    cfg = Config(str(SERVICE / "alembic.ini"))
    cfg.set_main_option("sqlalchemy.url", url)
    return cfg


def check_schema(url: str) -> None:
    engine = create_engine(url)
    try:
        insp = inspect(engine)
        assert {"asset_classes", "asset_pools", "alembic_version"} <= set(insp.get_table_names())
        with engine.connect() as conn:
            codes = (
                conn.execute(text("SELECT code FROM asset_classes ORDER BY code")).scalars().all()
            )
        assert codes == ["AUTO", "CARD", "CLO", "CONSUMER", "CRE", "EQUIPMENT", "RMBS", "STUDENT"]
        check_constraints(engine)
    finally:
        engine.dispose()


POOL_ROW = {
    "name": "p",
    "asset_class_code": "RMBS",
    "current_balance": 1000,
    "wac": 0.05,
    "wam": 360,
    "servicing_fee": 0.0025,
    "as_of_date": "2024-06-30",
    "version": 1,
    "amortization_term": None,
    "payment_rate": None,
    "revolving_months": None,
}
INSERT_POOL = text(
    "INSERT INTO asset_pools (name, asset_class_code, current_balance, wac, wam, servicing_fee,"
    " as_of_date, version, amortization_term, payment_rate, revolving_months) VALUES (:name,"
    " :asset_class_code, :current_balance, :wac, :wam, :servicing_fee, :as_of_date, :version,"
    " :amortization_term, :payment_rate, :revolving_months) RETURNING id"
)


def check_constraints(engine: Any) -> None:
    """The database's constraints are the models' (same names), and the database enforces them."""
    insp = inspect(engine)
    for table in ("asset_classes", "asset_pools"):
        want = {
            c.name
            for c in Base.metadata.tables[table].constraints
            if isinstance(c, CheckConstraint)
        }
        assert {c["name"] for c in insp.get_check_constraints(table)} == want
    (fk,) = insp.get_foreign_keys("asset_pools")
    assert (fk["referred_table"], fk["options"].get("ondelete")) == ("asset_classes", "RESTRICT")
    for bad in (
        {"current_balance": 0},
        {"wac": 1.5},
        {"servicing_fee": -0.1},
        {"wam": 0},
        {"wam": 481},
        {"amortization_term": 359},  # below wam (360)
        {"amortization_term": 481},
        {"payment_rate": 0},
        {"payment_rate": 1.01},
        {"revolving_months": -1},
        {"revolving_months": 360},  # not below wam
    ):
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(INSERT_POOL, {**POOL_ROW, **bad})
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(text("UPDATE asset_classes SET amortization_type = 'annuity'"))
    with engine.connect() as conn:  # 0003 filled the class defaults from the reference data
        defaults = conn.execute(
            text(
                "SELECT code, default_amortization_term, default_payment_rate,"
                " default_revolving_months FROM asset_classes WHERE code IN ('CARD', 'CRE', 'RMBS')"
                " ORDER BY code"
            )
        ).all()
    assert [tuple(row) for row in defaults] == [
        ("CARD", None, 0.2, 24),
        ("CRE", 360, None, None),
        ("RMBS", None, None, None),
    ]
    with engine.begin() as conn:  # a deleted pool's id is never handed out again
        first = conn.execute(INSERT_POOL, POOL_ROW).scalar_one()
        conn.execute(text("DELETE FROM asset_pools WHERE id = :id"), {"id": first})
        second = conn.execute(INSERT_POOL, POOL_ROW).scalar_one()
        conn.execute(text("DELETE FROM asset_pools"))
    assert second != first


def roundtrip(url: str) -> None:
    cfg = alembic_cfg(url)
    command.upgrade(cfg, "head")
    check_schema(url)
    command.downgrade(cfg, "base")
    engine = create_engine(url)
    assert "asset_pools" not in inspect(engine).get_table_names()
    engine.dispose()
    command.upgrade(cfg, "head")
    check_schema(url)


def test_migrations_sqlite(tmp_path: Path) -> None:
    roundtrip(f"sqlite:///{tmp_path}/m.db")


def test_migrations_postgresql() -> None:
    engine = create_engine(POSTGRES_URL)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    roundtrip(POSTGRES_URL)


def run(cmd: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    full = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"), **env}
    return subprocess.run(cmd, env=full, capture_output=True, text=True, check=False, cwd="/")


def test_migrate_console_script_uses_settings_url(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/cli.db"
    proc = run([str(BIN / "asset-classes-migrate")], DATABASE_URL=url)
    assert proc.returncode == 0, proc.stderr
    check_schema(url)


def test_migrate_console_script_accepts_a_percent_in_the_url(tmp_path: Path) -> None:
    """A percent-escape in DATABASE_URL (here `%20`, a space in a directory name) must reach
    SQLAlchemy intact, not trip Alembic's ini-style `%` interpolation."""
    (tmp_path / "my dbs").mkdir()
    url = f"sqlite:///{tmp_path}/my%20dbs/cli.db"
    proc = run([str(BIN / "asset-classes-migrate")], DATABASE_URL=url)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "my dbs" / "cli.db").is_file()
    check_schema(url)


def test_migrate_refuses_bad_settings() -> None:
    proc = run([str(BIN / "asset-classes-migrate")], REDIS_PORT="x")
    assert proc.returncode == 2
    assert "REDIS_PORT" in proc.stderr


def test_token_console_script_mints_a_verifiable_jwt() -> None:
    proc = run(
        [
            str(BIN / "asset-classes-token"),
            "healthcheck",
            "--scope",
            "read",
            "--scope",
            "admin",
            "--ttl",
            "120",
        ],
        SECRET_KEY=SECRET,
    )
    assert proc.returncode == 0, proc.stderr
    claims = jwt.decode(proc.stdout.strip(), SECRET, algorithms=["HS256"])
    assert claims["sub"] == "healthcheck"
    assert claims["scopes"] == ["admin", "read"]
    assert claims["exp"] - claims["iat"] == 120


def test_token_console_script_defaults_to_read_scope_only() -> None:
    proc = run([str(BIN / "asset-classes-token"), "reporter"], SECRET_KEY=SECRET)
    assert proc.returncode == 0, proc.stderr
    claims = jwt.decode(proc.stdout.strip(), SECRET, algorithms=["HS256"])
    assert claims["sub"] == "reporter"
    assert claims["scopes"] == ["read"]


def test_wheel_carries_migrations_and_data(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(SERVICE),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    import zipfile

    (wheel,) = tmp_path.glob("asset_classes_api-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in (
        "app/migrations/env.py",
        "app/migrations/versions/0001_initial.py",
        "app/migrations/script.py.mako",
        "app/migrations/alembic.ini",
        "app/data/asset_classes.json",
        "app/py.typed",
    ):
        assert needed in names
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    text_ = zipfile.ZipFile(wheel).read(entry).decode()
    assert "asset-classes-migrate = app.cli:migrate" in text_
    assert "asset-classes-token = app.cli:mint_token" in text_


@pytest.mark.parametrize("ttl", ["0", "-5"])
def test_token_rejects_non_positive_ttl(ttl: str) -> None:
    proc = run([str(BIN / "asset-classes-token"), "x", "--ttl", ttl], SECRET_KEY=SECRET)
    assert proc.returncode != 0
