"""Create asset_classes and asset_pools; load the asset-class reference data.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from importlib import resources

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    asset_classes = op.create_table(
        "asset_classes",
        sa.Column("code", sa.String(32), nullable=False),
        sa.Column("name", sa.String(120), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("default_cpr", sa.Float(), nullable=False),
        sa.Column("default_cdr", sa.Float(), nullable=False),
        sa.Column("loss_severity", sa.Float(), nullable=False),
        sa.Column("recovery_lag_months", sa.Integer(), nullable=False),
        sa.Column("amortization_type", sa.String(32), nullable=False),
        sa.Column("data_tier", sa.String(16), nullable=False),
        sa.CheckConstraint("data_tier IN ('stable', 'dynamic')", name="ck_asset_classes_data_tier"),
        sa.PrimaryKeyConstraint("code", name="pk_asset_classes"),
    )
    op.create_table(
        "asset_pools",
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
        sa.CheckConstraint("current_balance > 0", name="ck_asset_pools_balance_positive"),
        sa.CheckConstraint("wac >= 0 AND wac <= 1", name="ck_asset_pools_wac_range"),
        sa.CheckConstraint(
            "servicing_fee >= 0 AND servicing_fee <= 1", name="ck_asset_pools_fee_range"
        ),
        sa.CheckConstraint("wam >= 1 AND wam <= 480", name="ck_asset_pools_wam_range"),
        sa.ForeignKeyConstraint(
            ["asset_class_code"],
            ["asset_classes.code"],
            name="fk_asset_pools_asset_class_code_asset_classes",
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_asset_pools"),
    )
    op.create_index("ix_asset_pools_asset_class_code", "asset_pools", ["asset_class_code"])
    data = json.loads(resources.files("app.data").joinpath("asset_classes.json").read_text())
    # Only this revision's columns: later revisions fill the ones they add (0003).
    op.bulk_insert(
        asset_classes, [{c.name: item[c.name] for c in asset_classes.c} for item in data]
    )


def downgrade() -> None:
    op.drop_index("ix_asset_pools_asset_class_code", table_name="asset_pools")
    op.drop_table("asset_pools")
    op.drop_table("asset_classes")
