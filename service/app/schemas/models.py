from __future__ import annotations

import datetime as dt
from typing import Annotated, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from app.services.cashflow import AmortizationType

Rate = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
AmortizationTerm = Annotated[
    int,
    Field(
        ge=1,
        le=480,
        description="Balloon pools only: months the level payment is computed on (>= wam); the "
        "rest of the balance is due at wam. Left out: the asset class default "
        "(default_amortization_term)",
    ),
]
PaymentRate = Annotated[
    float,
    Field(
        gt=0,
        le=1,
        allow_inf_nan=False,
        description="Revolving pools only: monthly payment rate, principal collections as a "
        "fraction of the balance, (0, 1]. Left out: the asset class default (default_payment_rate)",
    ),
]
RevolvingMonths = Annotated[
    int,
    Field(
        ge=0,
        le=479,
        description="Revolving pools only: months of the revolving period (collections buy new "
        "receivables), < wam; amortization follows. Left out: the asset class default "
        "(default_revolving_months)",
    ),
]
Code = Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[A-Z0-9_]+$")]


class AssetClassOut(BaseModel):
    code: str
    name: str
    description: str
    default_cpr: float
    default_cdr: float
    loss_severity: float
    recovery_lag_months: int
    amortization_type: AmortizationType
    data_tier: Literal["stable", "dynamic"]
    default_amortization_term: int | None = Field(
        description="Balloon classes: the amortization term (months) of a pool that sets none"
    )
    default_payment_rate: float | None = Field(
        description="Revolving classes: the monthly payment rate of a pool that sets none"
    )
    default_revolving_months: int | None = Field(
        description="Revolving classes: the revolving period (months) of a pool that sets none"
    )


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    page: int
    size: int
    pages: int
    next: str | None = Field(description="URL of the next page, null on the last one")
    prev: str | None = Field(description="URL of the previous page, null on the first one")


class AssetPoolBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    asset_class_code: Code
    current_balance: float = Field(
        gt=0, le=1e13, allow_inf_nan=False, description="Current pool balance, > 0"
    )
    wac: Rate = Field(description="Gross coupon (weighted average coupon), 0..1")
    wam: int = Field(ge=1, le=480, description="Remaining term in months (WAM), 1..480")
    servicing_fee: Rate = Field(default=0.0, description="Annual servicing fee rate, 0..1")
    as_of_date: dt.date
    amortization_term: AmortizationTerm | None = None
    payment_rate: PaymentRate | None = None
    revolving_months: RevolvingMonths | None = None


class AssetPoolCreate(AssetPoolBase):
    pass


class AssetPoolUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    asset_class_code: Code | None = None
    current_balance: float | None = Field(default=None, gt=0, le=1e13, allow_inf_nan=False)
    wac: Rate | None = None
    wam: int | None = Field(default=None, ge=1, le=480)
    servicing_fee: Rate | None = None
    as_of_date: dt.date | None = None
    # null clears the field (the asset class default applies again)
    amortization_term: AmortizationTerm | None = None
    payment_rate: PaymentRate | None = None
    revolving_months: RevolvingMonths | None = None


class AssetPoolOut(AssetPoolBase):
    model_config = ConfigDict(from_attributes=True, extra="ignore")

    id: int
    version: int


class AssumptionsIn(BaseModel):
    """Projection assumptions; any field left out takes the asset class default
    (months defaults to the pool's WAM)."""

    model_config = ConfigDict(extra="forbid")

    cpr: Rate | None = Field(default=None, description="Annual conditional prepayment rate")
    cdr: Rate | None = Field(default=None, description="Annual conditional default rate")
    severity: Rate | None = Field(default=None, description="Loss severity of defaults")
    recovery_lag: int | None = Field(
        default=None, ge=0, le=120, description="Months from default to liquidation"
    )
    months: int | None = Field(
        default=None, ge=1, le=480, description="Amortization months to project (capped at WAM)"
    )


class AssumptionsOut(BaseModel):
    cpr: float
    cdr: float
    severity: float
    recovery_lag: int
    months: int


class AmortizationOut(BaseModel):
    """The amortization the projection used: the asset class's type and, for the fields that
    type uses, the pool's value or the class default (null where the type uses none)."""

    type: AmortizationType
    amortization_term: int | None
    payment_rate: float | None
    revolving_months: int | None


class CashflowRow(BaseModel):
    month: int
    beginning_balance: float
    defaults: float
    scheduled_principal: float
    prepayment: float
    interest: float
    servicing_fee: float
    net_interest: float
    loss: float
    recovery: float
    ending_balance: float
    reinvestment: float = Field(
        description="Revolving pools, revolving period: collections spent on new receivables"
    )


class CashflowSummary(BaseModel):
    weighted_average_life: float = Field(
        description="Years; weights are scheduled principal + prepayment + recovery per month"
    )
    total_principal: float
    total_scheduled_principal: float
    total_prepayment: float
    total_interest: float
    total_servicing_fee: float
    total_net_interest: float
    total_defaults: float
    total_losses: float
    total_recoveries: float
    total_reinvestment: float
    ending_balance: float
    months: float


class CashflowProjection(BaseModel):
    pool_id: int
    pool_version: int
    asset_class_code: str
    assumptions: AssumptionsOut
    amortization: AmortizationOut
    summary: CashflowSummary
    cashflows: list[CashflowRow]


class AnalysisRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pool_ids: list[Annotated[int, Field(ge=1, le=2**31 - 1)]] = Field(min_length=1, max_length=5000)
    assumptions: AssumptionsIn | None = None


class AnalysisAccepted(BaseModel):
    job_id: str
    status: str
    status_url: str


class AnalysisStatus(BaseModel):
    job_id: str
    status: Literal["queued", "running", "done", "failed", "lost"]
    total: int
    completed: int
    created_at: float
    updated_at: float
    error: str | None = None
    result: dict[str, object] | None = None


class HealthCheck(BaseModel):
    status: Literal["ok", "down", "disabled"]
    latency_ms: float | None = None
    detail: str | None = None


class Health(BaseModel):
    status: Literal["ok", "degraded", "unavailable"]
    version: str
    release: str | None
    environment: str
    checks: dict[str, HealthCheck]


class Message(BaseModel):
    detail: str
