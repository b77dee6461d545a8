"""Name the CHECK constraints as the models do; on SQLite, never hand a deleted pool's id out again.

0001 gave full names (ck_asset_pools_wam_range) that the metadata's naming convention prefixed once
more (ck_asset_pools_ck_asset_pools_wam_range), so the database did not match the models. And a
SQLite INTEGER PRIMARY KEY without AUTOINCREMENT reuses the highest deleted id, so a client holding
a deleted pool's id would reach the next pool created. PostgreSQL's sequence never reuses ids.

PostgreSQL renames the constraints in place. SQLite cannot rename a constraint or add
AUTOINCREMENT, so batch mode rebuilds both tables (new table, copy rows, drop, rename), from the
table definitions written out below (frozen here: later model changes must not change this step).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHECKS = {
    "asset_classes": {"data_tier": "data_tier IN ('stable', 'dynamic')"},
    "asset_pools": {
        "balance_positive": "current_balance > 0",
        "wac_range": "wac >= 0 AND wac <= 1",
        "fee_range": "servicing_fee >= 0 AND servicing_fee <= 1",
        "wam_range": "wam >= 1 AND wam <= 480",
    },
}
PROPER = "ck_{table}_{name}"  # what the models' naming convention makes of their short names
DOUBLED = "ck_{table}_ck_{table}_{name}"  # what 0001 made


def tables(check_name: str, autoincrement: bool) -> tuple[sa.Table, sa.Table]:
    """Both tables as 0001 made them, with the CHECK constraints named by `check_name`."""
    meta = sa.MetaData()  # no naming convention: the names below are final

    def checks(table: str) -> list[sa.CheckConstraint]:
        return [
            sa.CheckConstraint(sql, name=op.f(check_name.format(table=table, name=name)))
            for name, sql in CHECKS[table].items()
        ]

    asset_classes = sa.Table(
        "asset_classes",
        meta,
        sa.Column("code", sa.String(32), nullable=False),
        sa.Column("name", sa.String(120), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("default_cpr", sa.Float(), nullable=False),
        sa.Column("default_cdr", sa.Float(), nullable=False),
        sa.Column("loss_severity", sa.Float(), nullable=False),
        sa.Column("recovery_lag_months", sa.Integer(), nullable=False),
        sa.Column("amortization_type", sa.String(32), nullable=False),
        sa.Column("data_tier", sa.String(16), nullable=False),
        sa.PrimaryKeyConstraint("code", name="pk_asset_classes"),
        *checks("asset_classes"),
    )
    asset_pools = sa.Table(
        "asset_pools",
        meta,
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("asset_class_code", sa.String(32), nullable=False),
        sa.Column("current_balance", sa.Numeric(20, 2), nullable=False),
        sa.Column("wac", sa.Float(), nullable=False),
        sa.Column("wam", sa.Integer(), nullable=False),
        sa.Column("servicing_fee", sa.Float(), nullable=False),
        sa.Column("as_of_date", sa.Date(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["asset_class_code"],
            ["asset_classes.code"],
            name="fk_asset_pools_asset_class_code_asset_classes",
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_asset_pools"),
        sa.Index("ix_asset_pools_asset_class_code", "asset_class_code"),
        *checks("asset_pools"),
        sqlite_autoincrement=autoincrement,
    )
    return asset_classes, asset_pools


def rebuild_sqlite(check_name: str, autoincrement: bool) -> None:
    for table in tables(check_name, autoincrement):
        with op.batch_alter_table(table.name, recreate="always", copy_from=table):
            pass  # the rebuild from `table` is the change


def rename_checks(old: str, new: str) -> None:
    for table, checks in CHECKS.items():
        for name in checks:
            op.execute(
                f"ALTER TABLE {table} RENAME CONSTRAINT "
                f"{old.format(table=table, name=name)} TO {new.format(table=table, name=name)}"
            )


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        rebuild_sqlite(PROPER, autoincrement=True)
    else:
        rename_checks(DOUBLED, PROPER)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        rebuild_sqlite(DOUBLED, autoincrement=False)
    else:
        rename_checks(PROPER, DOUBLED)
