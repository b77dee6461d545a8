"""Console scripts: `asset-classes-migrate` and `asset-classes-token`."""

from __future__ import annotations

import argparse
import sys
from importlib import resources

from app.core.config import SettingsError, get_settings


def migrate(argv: list[str] | None = None) -> int:
    """Run `alembic upgrade <revision>` (default head) against settings' DATABASE_URL."""
    from alembic import command
    from alembic.config import Config

    parser = argparse.ArgumentParser(prog="asset-classes-migrate", description=migrate.__doc__)
    parser.add_argument("revision", nargs="?", default="head")
    parser.add_argument("--sql", action="store_true", help="print SQL instead of running it")
    args = parser.parse_args(argv)
    try:
        settings = get_settings()
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    ini = resources.files("app.migrations").joinpath("alembic.ini")
    with resources.as_file(ini) as ini_path:
        cfg = Config(str(ini_path))
        cfg.set_main_option("script_location", "app:migrations")
        cfg.set_main_option("sqlalchemy.url", settings.database_url.replace("%", "%%"))
        command.upgrade(cfg, args.revision, sql=args.sql)
    return 0


def mint_token(argv: list[str] | None = None) -> int:
    """Print a signed JWT for SUBJECT with SECRET_KEY from the settings."""
    from app.core.security import create_token

    parser = argparse.ArgumentParser(prog="asset-classes-token", description=mint_token.__doc__)
    parser.add_argument("subject")
    parser.add_argument(
        "--scope",
        action="append",
        default=None,
        help="scope to grant (repeatable): read, write, admin",
    )
    parser.add_argument("--ttl", type=int, default=None, help="lifetime in seconds")
    args = parser.parse_args(argv)
    try:
        settings = get_settings()
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.ttl is not None and args.ttl <= 0:
        parser.error("--ttl must be positive")
    print(
        create_token(args.subject, args.scope or ["read"], settings=settings, ttl_seconds=args.ttl)
    )
    return 0


def _main() -> None:  # pragma: no cover - module entry
    sys.exit(migrate())
