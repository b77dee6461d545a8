"""Monthly cashflow projection of an amortizing pool (vectorized with NumPy).

Conventions (so that results can be checked by hand):
  SMM = 1 - (1 - CPR)^(1/12), MDR = 1 - (1 - CDR)^(1/12), r = WAC / 12.
  Month t (1-based), beginning balance B, n = WAM - t + 1 months left:
    defaults D = B * MDR; performing P = B - D
    payment = P * r / (1 - (1 + r)^-n)   (P / n when r = 0)
    interest = P * r; scheduled principal = payment - interest
    prepayment = (P - scheduled principal) * SMM
    ending balance = P - scheduled principal - prepayment
    servicing fee = P * fee / 12; net interest = interest - servicing fee
  D is liquidated `recovery_lag` months later: loss = D * severity, recovery = D * (1 - severity).
The projection has `months` amortization periods (capped at WAM) plus `recovery_lag` tail months
that carry only liquidations, so every default inside the horizon shows up as loss + recovery.

The only recursion (the beginning balance) has a closed form, B_t = B_0 * q^(t-1) * S(t-1) with
q = (1 - MDR)(1 - SMM) and S(k) the scheduled-balance factor of a level-pay loan after k payments,
so the whole table is computed without a Python loop.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

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
)


@dataclass(frozen=True, slots=True)
class Assumptions:
    cpr: float
    cdr: float
    severity: float
    recovery_lag: int
    months: int


@dataclass(frozen=True, slots=True)
class Projection:
    table: FloatArray  # shape (rows, len(COLUMNS))
    summary: dict[str, float]


def smm(cpr: float) -> float:
    return float(1.0 - (1.0 - cpr) ** (1.0 / 12.0))


def project(
    balance: float, wac: float, wam: int, servicing_fee: float, a: Assumptions
) -> Projection:
    if balance <= 0 or not 1 <= wam <= 480 or not 0 <= wac <= 1:
        raise ValueError("pool attributes out of range")
    m = min(a.months, wam)
    lag = a.recovery_lag
    s, mdr, r = smm(a.cpr), smm(a.cdr), wac / 12.0
    k = np.arange(m + 1, dtype=np.float64)  # payments made so far: 0..m
    if r > 0:
        growth = (1.0 + r) ** wam
        factor = (growth - (1.0 + r) ** k) / (growth - 1.0)
    else:
        factor = (wam - k) / wam
    q = (1.0 - mdr) * (1.0 - s)
    begin = balance * q ** k[:-1] * factor[:-1]
    defaults = begin * mdr
    perf = begin - defaults
    n = wam - k[:-1]  # months left including this one
    if r > 0:
        payment = perf * r / (1.0 - (1.0 + r) ** -n)
    else:
        payment = perf / n
    interest = perf * r
    sched = payment - interest
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
