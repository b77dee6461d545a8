"""Each amortization type against numbers worked out independently of the engine: by hand, from
closed forms, or from a plain month-by-month loop written here from the README's conventions."""

from __future__ import annotations

import numpy as np
import pytest

from app.services.cashflow import (
    COLUMNS,
    Amortization,
    AmortizationError,
    Assumptions,
    check_terms,
    project,
    smm,
)

COL = {name: i for i, name in enumerate(COLUMNS)}
QUIET = Assumptions(cpr=0.0, cdr=0.0, severity=0.0, recovery_lag=0, months=480)
BULLET = Amortization("bullet")


def col(table: np.ndarray, name: str) -> list[float]:
    return [float(v) for v in table[:, COL[name]]]


def remaining(balance: float, r: float, term: int, k: int) -> float:
    """Closed form: balance of a level-pay loan of `term` months after k payments."""
    return balance * ((1 + r) ** term - (1 + r) ** k) / ((1 + r) ** term - 1)


# --- bullet -----------------------------------------------------------------------------------


def test_bullet_by_hand() -> None:
    """1,000 at 12 % (1 % a month) for 3 months: interest 10 a month, the whole 1,000 in month 3."""
    t = project(1000.0, 0.12, 3, 0.0, QUIET, BULLET).table
    assert col(t, "beginning_balance") == pytest.approx([1000, 1000, 1000])
    assert col(t, "interest") == pytest.approx([10, 10, 10])
    assert col(t, "scheduled_principal") == [0, 0, pytest.approx(1000)]
    assert col(t, "prepayment") == [0, 0, 0]
    assert col(t, "ending_balance") == [pytest.approx(1000), pytest.approx(1000), 0]


def test_bullet_pays_no_principal_until_maturity() -> None:
    p = project(5e6, 0.07, 360, 0.0, QUIET, BULLET)
    sched = col(p.table, "scheduled_principal")
    assert sched[:359] == [0.0] * 359
    assert sched[359] == pytest.approx(5e6)
    assert col(p.table, "interest") == pytest.approx([5e6 * 0.07 / 12] * 360)
    assert p.summary["weighted_average_life"] == pytest.approx(30.0)  # all principal in month 360


def test_bullet_with_prepayments_and_defaults_closed_form() -> None:
    """Interest only, so B_t = B_0 * ((1 - MDR)(1 - SMM))^(t-1); maturity takes what performs."""
    cpr, cdr, b0, wam = 0.2, 0.025, 1e6, 60
    s, mdr = smm(cpr), smm(cdr)
    t = project(b0, 0.08, wam, 0.0, Assumptions(cpr, cdr, 0.4, 9, wam), BULLET).table
    q = (1 - mdr) * (1 - s)
    begin = [b0 * q ** (k - 1) for k in range(1, wam + 1)]
    assert col(t, "beginning_balance")[:wam] == pytest.approx(begin, rel=1e-12)
    assert col(t, "scheduled_principal")[: wam - 1] == [0.0] * (wam - 1)
    assert t[wam - 1, COL["scheduled_principal"]] == pytest.approx(begin[-1] * (1 - mdr))
    assert t[0, COL["prepayment"]] == pytest.approx(b0 * (1 - mdr) * s)
    assert t[wam - 1, COL["prepayment"]] == 0
    assert t[wam - 1, COL["ending_balance"]] == 0


# --- balloon ----------------------------------------------------------------------------------


def test_balloon_by_hand() -> None:
    """1,000 at 1 % a month amortizing over 4 months, due after 2: payment
    1000 * 0.01 / (1 - 1.01^-4) = 256.2811; month 1 principal 246.2811, leaving 753.7189, all of
    which is due in month 2 (with 7.5372 of interest)."""
    balloon = Amortization("balloon", amortization_term=4)
    t = project(1000.0, 0.12, 2, 0.0, QUIET, balloon).table
    assert t[0, COL["scheduled_principal"]] == pytest.approx(246.281094, abs=1e-6)
    assert t[0, COL["ending_balance"]] == pytest.approx(753.718906, abs=1e-6)
    assert t[1, COL["interest"]] == pytest.approx(7.537189, abs=1e-6)
    assert t[1, COL["scheduled_principal"]] == pytest.approx(753.718906, abs=1e-6)
    assert t[1, COL["ending_balance"]] == 0


def test_balloon_last_principal_is_the_remaining_balance_at_wam() -> None:
    """30-year amortization, 10 years to maturity: level payments for 119 months, then the
    balance the 360-month schedule still has after 119 payments."""
    b0, wac, term, wam = 1e6, 0.06, 360, 120
    r = wac / 12
    t = project(b0, wac, wam, 0.0, QUIET, Amortization("balloon", amortization_term=term)).table
    level = b0 * r / (1 - (1 + r) ** -term)
    payments = [
        s + i for s, i in zip(col(t, "scheduled_principal"), col(t, "interest"), strict=True)
    ]
    assert payments[: wam - 1] == pytest.approx([level] * (wam - 1), rel=1e-10)
    balloon = t[wam - 1, COL["scheduled_principal"]]
    assert balloon == pytest.approx(remaining(b0, r, term, wam - 1), rel=1e-10)
    # the same, as the last level payment's principal plus what the schedule leaves after it
    assert balloon == pytest.approx(
        (level - remaining(b0, r, term, wam - 1) * r) + remaining(b0, r, term, wam), rel=1e-10
    )
    assert balloon == pytest.approx(838_659.46, abs=0.01)  # ~84 % of the loan is still owed
    assert t[wam - 1, COL["ending_balance"]] == 0


def test_balloon_with_zero_coupon_is_straight_line_then_the_rest() -> None:
    t = project(3600.0, 0.0, 12, 0.0, QUIET, Amortization("balloon", amortization_term=36)).table
    assert col(t, "scheduled_principal") == pytest.approx([100.0] * 11 + [2500.0])


# --- revolving --------------------------------------------------------------------------------


def test_revolving_by_hand() -> None:
    """1,000, payment rate 10 %, 2 revolving months, WAM 5, 12 % a year: months 1-2 collect 100
    and buy 100 of new receivables; months 3-4 pay down 100 then 90; month 5 pays the 810 left."""
    rev = Amortization("revolving", payment_rate=0.1, revolving_months=2)
    t = project(1000.0, 0.12, 5, 0.0, QUIET, rev).table
    assert col(t, "beginning_balance") == pytest.approx([1000, 1000, 1000, 900, 810])
    assert col(t, "reinvestment") == pytest.approx([100, 100, 0, 0, 0])
    assert col(t, "scheduled_principal") == pytest.approx([0, 0, 100, 90, 810])
    assert col(t, "interest") == pytest.approx([10, 10, 10, 9, 8.1])
    assert col(t, "ending_balance") == pytest.approx([1000, 1000, 900, 810, 0])


def test_revolving_balance_is_level_through_the_revolving_period() -> None:
    """No defaults: the balance stays put for 24 months whatever the CPR (unused: the payment
    rate is all principal collections), then falls by (1 - MPR) a month."""
    b0, mpr, rev, wam = 2e8, 0.2, 24, 60
    terms = Amortization("revolving", payment_rate=mpr, revolving_months=rev)
    t = project(b0, 0.18, wam, 0.02, Assumptions(0.3, 0.0, 0.9, 6, wam), terms).table
    begin = col(t, "beginning_balance")
    assert begin[: rev + 1] == pytest.approx([b0] * (rev + 1), rel=1e-12)
    assert col(t, "ending_balance")[:rev] == pytest.approx([b0] * rev, rel=1e-12)
    assert col(t, "reinvestment")[:rev] == pytest.approx([b0 * mpr] * rev)
    assert col(t, "scheduled_principal")[:rev] == [0.0] * rev
    assert col(t, "prepayment") == [0.0] * len(t)
    after = [b0 * (1 - mpr) ** (k - rev - 1) for k in range(rev + 1, wam + 1)]
    assert begin[rev:wam] == pytest.approx(after, rel=1e-12)
    assert t[wam - 1, COL["scheduled_principal"]] == pytest.approx(after[-1])


def test_revolving_with_defaults_replaces_only_collections() -> None:
    """Collections are reinvested, defaults are not: B_t = B_0 * (1 - MDR)^(t-1) while revolving."""
    b0, cdr, rev = 1e6, 0.06, 12
    mdr = smm(cdr)
    terms = Amortization("revolving", payment_rate=0.15, revolving_months=rev)
    t = project(b0, 0.2, 36, 0.0, Assumptions(0.0, cdr, 0.9, 6, 36), terms).table
    assert col(t, "beginning_balance")[: rev + 1] == pytest.approx(
        [b0 * (1 - mdr) ** k for k in range(rev + 1)], rel=1e-12
    )
    assert t[6, COL["loss"]] == pytest.approx(b0 * mdr * 0.9)  # month 1's default, 6 months on


def test_revolving_with_no_revolving_period_amortizes_at_once() -> None:
    rev = Amortization("revolving", payment_rate=0.25, revolving_months=0)
    t = project(1000.0, 0.0, 3, 0.0, QUIET, rev).table
    assert col(t, "scheduled_principal") == pytest.approx([250, 187.5, 562.5])


# --- every type -------------------------------------------------------------------------------

TYPES = [
    Amortization("level_pay"),
    BULLET,
    Amortization("balloon", amortization_term=360),
    Amortization("revolving", payment_rate=0.18, revolving_months=24),
]
CASES = [
    (1e6, 0.065, 120, 0.0025, Assumptions(0.1, 0.02, 0.35, 18, 120)),
    (5e7, 0.0, 84, 0.01, Assumptions(0.2, 0.04, 0.9, 6, 60)),
    (25_000.0, 0.21, 36, 0.0, Assumptions(0.5, 0.3, 1.0, 0, 36)),
]


def loop_reference(
    balance: float, wac: float, wam: int, fee: float, a: Assumptions, terms: Amortization
) -> list[dict[str, float]]:
    """Month by month, straight from the README's conventions (no closed form)."""
    s, mdr, r = smm(a.cpr), smm(a.cdr), wac / 12
    rows = []
    b = balance
    for t in range(1, min(a.months, wam) + 1):
        d = b * mdr
        perf = b - d
        interest = perf * r
        reinvest = prepay = 0.0
        if terms.type == "revolving":
            assert terms.payment_rate is not None
            assert terms.revolving_months is not None
            collected = perf * terms.payment_rate
            if t <= terms.revolving_months:
                sched, reinvest = 0.0, collected
            else:
                sched = perf if t == wam else collected
        else:
            if terms.type == "bullet":
                sched = 0.0
            else:
                n = (terms.amortization_term or wam) - t + 1
                pay = perf * r / (1 - (1 + r) ** -n) if r else perf / n
                sched = pay - interest
            if t == wam:
                sched = perf
            prepay = (perf - sched) * s
        end = perf - sched - prepay  # reinvested collections bought receivables: still in
        rows.append(
            {
                "beginning_balance": b,
                "defaults": d,
                "scheduled_principal": sched,
                "prepayment": prepay,
                "interest": interest,
                "servicing_fee": perf * fee / 12,
                "reinvestment": reinvest,
                "ending_balance": end,
            }
        )
        b = end
    return rows


@pytest.mark.parametrize("terms", TYPES, ids=[t.type for t in TYPES])
@pytest.mark.parametrize(("balance", "wac", "wam", "fee", "a"), CASES)
def test_vectorized_engine_matches_month_by_month_loop(
    terms: Amortization, balance: float, wac: float, wam: int, fee: float, a: Assumptions
) -> None:
    if terms.type == "revolving" and wam <= 24:
        terms = Amortization("revolving", payment_rate=0.18, revolving_months=wam // 2)
    t = project(balance, wac, wam, fee, a, terms).table
    for i, row in enumerate(loop_reference(balance, wac, wam, fee, a, terms)):
        for name, value in row.items():
            assert t[i, COL[name]] == pytest.approx(value, rel=1e-9, abs=1e-6 * balance), (i, name)


@pytest.mark.parametrize("terms", TYPES, ids=[t.type for t in TYPES])
@pytest.mark.parametrize(("balance", "wac", "wam", "fee", "a"), CASES)
def test_balance_is_conserved_every_month(
    terms: Amortization, balance: float, wac: float, wam: int, fee: float, a: Assumptions
) -> None:
    """beginning = scheduled principal + prepayment + defaults + ending, each month, and each
    month begins where the last one ended; defaults are all liquidated as loss + recovery."""
    if terms.type == "revolving" and wam <= 24:
        terms = Amortization("revolving", payment_rate=0.18, revolving_months=wam // 2)
    p = project(balance, wac, wam, fee, a, terms)
    m = min(a.months, wam)
    t = p.table[:m]
    out = (
        t[:, COL["scheduled_principal"]]
        + t[:, COL["prepayment"]]
        + t[:, COL["defaults"]]
        + t[:, COL["ending_balance"]]
    )
    assert list(out) == pytest.approx(list(t[:, COL["beginning_balance"]]), rel=1e-12)
    assert list(t[1:, COL["beginning_balance"]]) == pytest.approx(
        list(t[:-1, COL["ending_balance"]]), rel=1e-12
    )
    s = p.summary
    assert s["total_principal"] + s["total_defaults"] + s["ending_balance"] == pytest.approx(
        balance
    )
    assert s["total_losses"] + s["total_recoveries"] == pytest.approx(s["total_defaults"])
    if m == wam:
        assert s["ending_balance"] == 0


@pytest.mark.parametrize(
    ("terms", "wam", "field"),
    [
        (Amortization("balloon"), 120, "amortization_term"),
        (Amortization("balloon", amortization_term=119), 120, "amortization_term"),
        (Amortization("balloon", amortization_term=481), 120, "amortization_term"),
        (Amortization("revolving", revolving_months=12), 60, "payment_rate"),
        (Amortization("revolving", payment_rate=0.0, revolving_months=12), 60, "payment_rate"),
        (Amortization("revolving", payment_rate=0.2), 60, "revolving_months"),
        (Amortization("revolving", payment_rate=0.2, revolving_months=60), 60, "revolving_months"),
        (Amortization("annuity"), 60, "amortization_type"),
    ],
)
def test_terms_that_do_not_fit_are_refused_naming_the_field(
    terms: Amortization, wam: int, field: str
) -> None:
    with pytest.raises(AmortizationError) as info:
        check_terms(terms, wam)
    assert info.value.field == field
    with pytest.raises(AmortizationError):
        project(1000.0, 0.05, wam, 0.0, QUIET, terms)


def test_balloon_with_term_equal_to_wam_is_level_pay() -> None:
    """A balloon that amortizes over its own maturity leaves nothing to balloon."""
    a = Assumptions(0.1, 0.02, 0.3, 12, 240)
    balloon = project(1e6, 0.05, 240, 0.0, a, Amortization("balloon", amortization_term=240))
    level = project(1e6, 0.05, 240, 0.0, a)
    assert list(balloon.table.ravel()) == pytest.approx(
        list(level.table.ravel()), rel=1e-9, abs=1e-6
    )
