"""Monthly cashflow projection of a pool, by its amortization type (vectorized with NumPy).

Conventions (so that results can be checked by hand; the service README has them too):
  SMM = 1 - (1 - CPR)^(1/12), MDR = 1 - (1 - CDR)^(1/12), r = WAC / 12.
  Month t (1-based), beginning balance B: defaults D = B * MDR; performing P = B - D;
  interest = P * r; servicing fee = P * fee / 12; net interest = interest - servicing fee;
  ending balance = P - scheduled principal - prepayment. Then by amortization type:
    level_pay: n = WAM - t + 1 months left, payment = P * r / (1 - (1 + r)^-n) (P / n when r = 0),
      scheduled principal = payment - interest, prepayment = (P - scheduled principal) * SMM.
    balloon: as level_pay with n = N - t + 1, N the amortization term (>= WAM); in month WAM the
      whole performing balance is scheduled principal (the balloon).
    bullet: interest only: scheduled principal = 0, prepayment = P * SMM; in month WAM the whole
      performing balance is scheduled principal.
    revolving: MPR (monthly payment rate) = principal collections / P; CPR is not used (the payment
      rate is all principal collections), prepayment = 0. Months 1..R (the revolving period):
      collections P * MPR buy new receivables (`reinvestment`), scheduled principal = 0, so the
      balance only falls by defaults. Months R + 1..WAM: scheduled principal = P * MPR, and in
      month WAM the whole performing balance.
  Every month: beginning = scheduled principal + prepayment + defaults + ending.
  D is liquidated `recovery_lag` months later: loss = D * severity, recovery = D * (1 - severity).
The projection has `months` amortization periods (capped at WAM) plus `recovery_lag` tail months
that carry only liquidations, so every default inside the horizon shows up as loss + recovery.

The only recursion (the beginning balance) has a closed form, B_t = B_0 * q^(t-1) * S(t-1):
level_pay and balloon: q = (1 - MDR)(1 - SMM) and S(k) the scheduled-balance factor of a level-pay
loan of term WAM (or N) after k payments; bullet: the same q and S = 1; revolving: q = 1 - MDR and
S(k) = (1 - MPR)^max(0, k - R). So the whole table is computed without a Python loop.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import numpy.typing as npt

logger = logging.getLogger("app.services")

FloatArray = npt.NDArray[np.float64]

COLUMNS = (
    "month",
    "beginning_balance",
    "defaults",
    "scheduled_principal",
    "prepayment",
    "interest",
    "servicing_fee",
    "net_interest",
    "loss",
    "recovery",
    "ending_balance",
    "reinvestment",
)

AmortizationType = Literal["level_pay", "bullet", "balloon", "revolving"]
AMORTIZATION_TYPES: tuple[str, ...] = get_args(AmortizationType)
MAX_TERM = 480  # longest amortization term (months) of a balloon pool


@dataclass(frozen=True, slots=True)
class Assumptions:
    cpr: float
    cdr: float
    severity: float
    recovery_lag: int
    months: int


@dataclass(frozen=True, slots=True)
class Amortization:
    """How the pool pays down: its type and the terms that type uses (None where unused)."""

    type: str = "level_pay"
    amortization_term: int | None = None  # balloon: months the level payment is computed on
    payment_rate: float | None = None  # revolving: monthly principal collections / balance
    revolving_months: int | None = None  # revolving: months of the revolving period


LEVEL_PAY = Amortization()


@dataclass(frozen=True, slots=True)
class Projection:
    table: FloatArray  # shape (rows, len(COLUMNS))
    summary: dict[str, float]


def smm(cpr: float) -> float:
    return float(1.0 - (1.0 - cpr) ** (1.0 / 12.0))


class AmortizationError(ValueError):
    """The pool's amortization terms do not fit its type (names the field at fault)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def check_terms(t: Amortization, wam: int) -> None:
    """Raise AmortizationError unless `t` is a complete, consistent set for its type."""
    if t.type not in AMORTIZATION_TYPES:
        raise AmortizationError("amortization_type", f"unknown amortization type {t.type!r}")
    if t.type == "balloon":
        if t.amortization_term is None:
            raise AmortizationError("amortization_term", "required for a balloon pool")
        if not wam <= t.amortization_term <= MAX_TERM:
            raise AmortizationError(
                "amortization_term",
                f"must be at least the pool's wam ({wam}) and at most {MAX_TERM}, "
                f"is {t.amortization_term}",
            )
    if t.type == "revolving":
        if t.payment_rate is None:
            raise AmortizationError("payment_rate", "required for a revolving pool")
        if not 0 < t.payment_rate <= 1:
            raise AmortizationError("payment_rate", f"must be in (0, 1], is {t.payment_rate}")
        if t.revolving_months is None:
            raise AmortizationError("revolving_months", "required for a revolving pool")
        if not 0 <= t.revolving_months < wam:
            raise AmortizationError(
                "revolving_months",
                f"must be at least 0 and less than the pool's wam ({wam}), is {t.revolving_months}",
            )


def _level_factor(term: int, r: float, k: FloatArray) -> FloatArray:
    """Scheduled-balance factor of a level-pay loan of `term` months after k payments."""
    if r > 0:
        growth = (1.0 + r) ** term
        return np.asarray((growth - (1.0 + r) ** k) / (growth - 1.0), dtype=np.float64)
    return np.asarray((term - k) / term, dtype=np.float64)


def project(
    balance: float,
    wac: float,
    wam: int,
    servicing_fee: float,
    a: Assumptions,
    terms: Amortization | None = None,
) -> Projection:
    if balance <= 0 or not 1 <= wam <= 480 or not 0 <= wac <= 1:
        raise ValueError("pool attributes out of range")
    terms = terms or LEVEL_PAY
    check_terms(terms, wam)
    kind = terms.type
    m = min(a.months, wam)
    lag = a.recovery_lag
    s, mdr, r = smm(a.cpr), smm(a.cdr), wac / 12.0
    k = np.arange(m + 1, dtype=np.float64)  # payments made so far: 0..m
    kb = k[:-1]  # payments made before each projected month
    if kind == "revolving":
        mpr, rev = float(terms.payment_rate or 0.0), int(terms.revolving_months or 0)
        begin = balance * (1.0 - mdr) ** kb * (1.0 - mpr) ** np.maximum(kb - rev, 0.0)
    else:
        q = (1.0 - mdr) * (1.0 - s)
        if kind == "bullet":
            factor = np.ones_like(kb)
        else:
            term = wam if kind == "level_pay" else int(terms.amortization_term or wam)
            factor = _level_factor(term, r, kb)
        begin = balance * q**kb * factor
    defaults = begin * mdr
    perf = begin - defaults
    interest = perf * r
    reinvest = np.zeros_like(perf)
    if kind == "revolving":
        revolving = kb < rev
        sched = np.where(revolving, 0.0, perf * mpr)
        reinvest = np.where(revolving, perf * mpr, 0.0)
        prepay = np.zeros_like(perf)  # the payment rate is all principal collections
    else:
        if kind == "bullet":
            sched = np.zeros_like(perf)
        else:
            n = (wam if kind == "level_pay" else int(terms.amortization_term or wam)) - kb
            if r > 0:
                payment = perf * r / (1.0 - (1.0 + r) ** -n)
            else:
                payment = perf / n
            sched = payment - interest
    if kind != "level_pay" and m == wam:
        sched[-1] = perf[-1]  # the balance due at maturity
    if kind != "revolving":
        prepay = (perf - sched) * s
    ending = perf - sched - prepay
    ending[np.abs(ending) < balance * 1e-12] = 0.0  # rounding dust at maturity
    servicing = perf * servicing_fee / 12.0

    rows = m + lag
    table = np.zeros((rows, len(COLUMNS)), dtype=np.float64)
    table[:, 0] = np.arange(1, rows + 1)
    for col, values in (
        (1, begin),
        (2, defaults),
        (3, sched),
        (4, prepay),
        (5, interest),
        (6, servicing),
        (7, interest - servicing),
        (10, ending),
        (11, reinvest),
    ):
        table[:m, col] = values
    table[lag:, 8] = defaults * a.severity
    table[lag:, 9] = defaults * (1.0 - a.severity)

    principal = table[:, 3] + table[:, 4]
    cash_principal = principal + table[:, 9]
    total_cash_principal = float(cash_principal.sum())
    wal = (
        float((table[:, 0] * cash_principal).sum()) / total_cash_principal / 12.0
        if total_cash_principal > 0
        else 0.0
    )
    summary = {
        "weighted_average_life": wal,
        "total_principal": float(principal.sum()),
        "total_scheduled_principal": float(table[:, 3].sum()),
        "total_prepayment": float(table[:, 4].sum()),
        "total_interest": float(table[:, 5].sum()),
        "total_servicing_fee": float(table[:, 6].sum()),
        "total_net_interest": float(table[:, 7].sum()),
        "total_defaults": float(defaults.sum()),
        "total_losses": float(table[:, 8].sum()),
        "total_recoveries": float(table[:, 9].sum()),
        "total_reinvestment": float(reinvest.sum()),
        "ending_balance": float(ending[-1]) if m else balance,
        "months": float(rows),
    }
    return Projection(table=table, summary=summary)


def table_rows(table: FloatArray) -> list[dict[str, float | int]]:
    out: list[dict[str, float | int]] = []
    for row in table.tolist():
        item: dict[str, float | int] = dict(zip(COLUMNS, row, strict=True))
        item["month"] = int(row[0])
        out.append(item)
    return out
