"""Amortization by type: the pool fields some types use, and their asset-class defaults.

asset_pools gets amortization_term (balloon), payment_rate and revolving_months (revolving), all
nullable (NULL: the asset class default applies), with CHECK constraints; asset_classes gets
default_amortization_term, default_payment_rate and default_revolving_months, filled from
app/data/asset_classes.json, and a CHECK on amortization_type. On SQLite, batch mode rebuilds
the tables to add the constraints (asset_pools keeps AUTOINCREMENT).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from importlib import resources

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen here (later model changes must not change this step).
POOL_COLUMNS: dict[str, type[sa.Integer] | type[sa.Float[float]]] = {
    "amortization_term": sa.Integer,
    "payment_rate": sa.Float,
    "revolving_months": sa.Integer,
}
POOL_CHECKS = {
    "amortization_term_range": "amortization_term >= wam AND amortization_term <= 480",
    "payment_rate_range": "payment_rate > 0 AND payment_rate <= 1",
    "revolving_months_range": "revolving_months >= 0 AND revolving_months < wam",
}
CLASS_COLUMNS: dict[str, type[sa.Integer] | type[sa.Float[float]]] = {
    "default_amortization_term": sa.Integer,
    "default_payment_rate": sa.Float,
    "default_revolving_months": sa.Integer,
}
# The SQLite rebuild does not reflect AUTOINCREMENT (0002 added it): say it again.
KEEP_AUTOINCREMENT = {"sqlite_autoincrement": True}
CLASS_CHECK = (
    "amortization_type",
    "amortization_type IN ('level_pay', 'bullet', 'balloon', 'revolving')",
)


def upgrade() -> None:
    with op.batch_alter_table("asset_classes") as batch:
        for name, type_ in CLASS_COLUMNS.items():
            batch.add_column(sa.Column(name, type_(), nullable=True))
        batch.create_check_constraint(op.f(f"ck_asset_classes_{CLASS_CHECK[0]}"), CLASS_CHECK[1])
    with op.batch_alter_table("asset_pools", table_kwargs=KEEP_AUTOINCREMENT) as batch:
        for name, type_ in POOL_COLUMNS.items():
            batch.add_column(sa.Column(name, type_(), nullable=True))
        for name, sql in POOL_CHECKS.items():
            batch.create_check_constraint(op.f(f"ck_asset_pools_{name}"), sql)
    data = json.loads(resources.files("app.data").joinpath("asset_classes.json").read_text())
    classes = sa.table("asset_classes", sa.column("code"), *(sa.column(c) for c in CLASS_COLUMNS))
    for item in data:
        values = {c: item.get(c) for c in CLASS_COLUMNS}
        if any(v is not None for v in values.values()):
            op.execute(classes.update().where(classes.c.code == item["code"]).values(**values))


def downgrade() -> None:
    with op.batch_alter_table("asset_pools", table_kwargs=KEEP_AUTOINCREMENT) as batch:
        for name in POOL_CHECKS:
            batch.drop_constraint(op.f(f"ck_asset_pools_{name}"), type_="check")
        for name in POOL_COLUMNS:
            batch.drop_column(name)
    with op.batch_alter_table("asset_classes") as batch:
        batch.drop_constraint(op.f(f"ck_asset_classes_{CLASS_CHECK[0]}"), type_="check")
        for name in CLASS_COLUMNS:
            batch.drop_column(name)
