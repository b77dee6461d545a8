from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy import (
    CheckConstraint,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    Numeric,
    String,
    Text,
    func,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.models.base import Base
from app.services.cashflow import AMORTIZATION_TYPES, MAX_TERM

AMORTIZATION_TYPE_CHECK = f"amortization_type IN ({', '.join(repr(t) for t in AMORTIZATION_TYPES)})"
# NULL passes a CHECK, so an unset field (the class default applies) is always allowed.
POOL_TERM_CHECKS = {
    "amortization_term_range": f"amortization_term >= wam AND amortization_term <= {MAX_TERM}",
    "payment_rate_range": "payment_rate > 0 AND payment_rate <= 1",
    "revolving_months_range": "revolving_months >= 0 AND revolving_months < wam",
}

logger = logging.getLogger("app.models")


class AssetClass(Base):
    """Reference data for one collateral type (loaded by the initial migration)."""

    __tablename__ = "asset_classes"

    code: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(120))
    description: Mapped[str] = mapped_column(Text)
    default_cpr: Mapped[float] = mapped_column(Float)
    default_cdr: Mapped[float] = mapped_column(Float)
    loss_severity: Mapped[float] = mapped_column(Float)
    recovery_lag_months: Mapped[int] = mapped_column(Integer)
    amortization_type: Mapped[str] = mapped_column(String(32))
    data_tier: Mapped[str] = mapped_column(String(16))
    # Defaults of the pool fields that only some amortization types use (None: no default).
    default_amortization_term: Mapped[int | None] = mapped_column(Integer)
    default_payment_rate: Mapped[float | None] = mapped_column(Float)
    default_revolving_months: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (
        CheckConstraint("data_tier IN ('stable', 'dynamic')", name="data_tier"),
        CheckConstraint(AMORTIZATION_TYPE_CHECK, name="amortization_type"),
    )


class AssetPool(Base):
    __tablename__ = "asset_pools"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    asset_class_code: Mapped[str] = mapped_column(
        ForeignKey("asset_classes.code", ondelete="RESTRICT"), index=True
    )
    current_balance: Mapped[float] = mapped_column(Numeric(20, 2, asdecimal=False))
    wac: Mapped[float] = mapped_column(Float)
    wam: Mapped[int] = mapped_column(Integer)
    servicing_fee: Mapped[float] = mapped_column(Float)
    as_of_date: Mapped[dt.date] = mapped_column(Date)
    # Used by some amortization types only; None takes the asset class default.
    amortization_term: Mapped[int | None] = mapped_column(Integer)  # balloon
    payment_rate: Mapped[float | None] = mapped_column(Float)  # revolving
    revolving_months: Mapped[int | None] = mapped_column(Integer)  # revolving
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    updated_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )

    asset_class: Mapped[AssetClass] = relationship(lazy="joined")

    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012

    __table_args__ = (
        CheckConstraint("current_balance > 0", name="balance_positive"),
        CheckConstraint("wac >= 0 AND wac <= 1", name="wac_range"),
        CheckConstraint("servicing_fee >= 0 AND servicing_fee <= 1", name="fee_range"),
        CheckConstraint("wam >= 1 AND wam <= 480", name="wam_range"),
        *(CheckConstraint(sql, name=name) for name, sql in POOL_TERM_CHECKS.items()),
        {"sqlite_autoincrement": True},  # a deleted pool's id is never handed out again
    )
