from __future__ import annotations

import pytest

from app.services.cashflow import COLUMNS, Assumptions, project, smm

COL = {name: i for i, name in enumerate(COLUMNS)}


def test_hand_computed_two_month_pool() -> None:
    """Worked from the issue's formulas with round inputs: SMM = 1 %, MDR = 2 %, r = 1 %."""
    cpr = 1 - 0.99**12  # so SMM = 1 - (1 - CPR)^(1/12) = 0.01
    cdr = 1 - 0.98**12  # so MDR = 0.02
    a = Assumptions(cpr=cpr, cdr=cdr, severity=0.4, recovery_lag=1, months=2)
    p = project(1000.0, 0.12, 2, 0.0, a)
    t = p.table
    # Month 1: B = 1000, n = 2
    d1 = 1000 * 0.02  # 20
    p1 = 1000 - d1  # 980
    pay1 = p1 * 0.01 / (1 - 1.01**-2)  # 497.362189...
    int1 = p1 * 0.01  # 9.8
    sp1 = pay1 - int1  # 487.562189...
    pp1 = (p1 - sp1) * 0.01  # 4.924378...
    e1 = p1 - sp1 - pp1  # 487.513433...
    assert pay1 == pytest.approx(497.362189, abs=1e-6)
    assert e1 == pytest.approx(487.513433, abs=1e-6)
    # Month 2: n = 1, the payment retires the performing balance; nothing is left to prepay.
    d2 = e1 * 0.02
    p2 = e1 - d2
    int2 = p2 * 0.01
    assert list(t[:, COL["month"]]) == [1, 2, 3]  # 2 months + 1 month of recovery lag
    assert t[0, COL["beginning_balance"]] == pytest.approx(1000)
    assert t[0, COL["defaults"]] == pytest.approx(d1)
    assert t[0, COL["interest"]] == pytest.approx(int1)
    assert t[0, COL["scheduled_principal"]] == pytest.approx(sp1)
    assert t[0, COL["prepayment"]] == pytest.approx(pp1)
    assert t[0, COL["ending_balance"]] == pytest.approx(e1)
    assert t[1, COL["beginning_balance"]] == pytest.approx(e1)
    assert t[1, COL["defaults"]] == pytest.approx(d2)
    assert t[1, COL["scheduled_principal"]] == pytest.approx(p2)
    assert t[1, COL["prepayment"]] == pytest.approx(0, abs=1e-9)
    assert t[1, COL["interest"]] == pytest.approx(int2)
    assert t[1, COL["ending_balance"]] == 0
    # Defaults are liquidated one month later: loss = 40 %, recovery = 60 %.
    assert t[0, COL["loss"]] == 0
    assert t[1, COL["loss"]] == pytest.approx(d1 * 0.4)
    assert t[1, COL["recovery"]] == pytest.approx(d1 * 0.6)
    assert t[2, COL["loss"]] == pytest.approx(d2 * 0.4)
    assert t[2, COL["recovery"]] == pytest.approx(d2 * 0.6)
    s = p.summary
    assert s["total_principal"] == pytest.approx(sp1 + pp1 + p2)
    assert s["total_interest"] == pytest.approx(int1 + int2)
    assert s["total_losses"] == pytest.approx((d1 + d2) * 0.4)
    assert s["total_recoveries"] == pytest.approx((d1 + d2) * 0.6)
    flows = [sp1 + pp1, p2 + d1 * 0.6, d2 * 0.6]
    wal = sum((i + 1) * f for i, f in enumerate(flows)) / sum(flows) / 12
    assert s["weighted_average_life"] == pytest.approx(wal)


def test_servicing_fee_net_interest_and_length_by_hand() -> None:
    """The fee is charged monthly on the performing balance: fee / 12 x (B - D); net interest is
    interest less that fee. The projection runs `months` plus the recovery lag."""
    a = Assumptions(cpr=0.0, cdr=1 - 0.98**12, severity=0.5, recovery_lag=3, months=2)
    p = project(1000.0, 0.12, 2, 0.006, a)
    t, s = p.table, p.summary
    perf1 = 1000 - 20  # MDR = 2 %
    perf2 = (perf1 - (perf1 * 0.01 / (1 - 1.01**-2) - perf1 * 0.01)) * 0.98
    fees = [perf1 * 0.0005, perf2 * 0.0005]  # 0.6 % a year = 0.05 % a month
    for i, fee in enumerate(fees):
        assert t[i, COL["servicing_fee"]] == pytest.approx(fee)
        assert t[i, COL["net_interest"]] == pytest.approx(t[i, COL["interest"]] - fee)
    assert s["total_servicing_fee"] == pytest.approx(sum(fees))
    assert s["total_net_interest"] == pytest.approx(perf1 * 0.01 + perf2 * 0.01 - sum(fees))
    assert s["months"] == 5  # 2 months of payments + 3 of recovery lag
    assert len(t) == 5


def loop_reference(
    balance: float, wac: float, wam: int, fee: float, a: Assumptions
) -> list[list[float]]:
    """Straight month-by-month loop of the issue's formulas, to check the vectorized engine."""
    s, mdr, r = smm(a.cpr), smm(a.cdr), wac / 12
    rows = []
    b = balance
    for t in range(min(a.months, wam)):
        n = wam - t
        d = b * mdr
        perf = b - d
        pay = perf * r / (1 - (1 + r) ** -n) if r else perf / n
        interest = perf * r
        sched = pay - interest
        prepay = (perf - sched) * s
        end = perf - sched - prepay
        rows.append([b, d, sched, prepay, interest, perf * fee / 12, end])
        b = end
    return rows


@pytest.mark.parametrize(
    ("balance", "wac", "wam", "fee", "a"),
    [
        (1_000_000, 0.06, 360, 0.0025, Assumptions(0.08, 0.005, 0.3, 12, 360)),
        (25_000, 0.0, 60, 0.01, Assumptions(0.015, 0.02, 0.55, 3, 60)),
        (5e8, 0.11, 480, 0.0, Assumptions(0.5, 0.3, 1.0, 0, 120)),
        (100, 0.99, 1, 0.5, Assumptions(0.0, 0.0, 0.0, 0, 1)),
    ],
)
def test_vectorized_engine_matches_month_by_month_loop(
    balance: float, wac: float, wam: int, fee: float, a: Assumptions
) -> None:
    t = project(balance, wac, wam, fee, a).table
    ref = loop_reference(balance, wac, wam, fee, a)
    cols = [
        "beginning_balance",
        "defaults",
        "scheduled_principal",
        "prepayment",
        "interest",
        "servicing_fee",
        "ending_balance",
    ]
    for i, row in enumerate(ref):
        for j, name in enumerate(cols):
            assert t[i, COL[name]] == pytest.approx(row[j], rel=1e-9, abs=1e-6 * balance), (i, name)


def test_balance_is_conserved() -> None:
    a = Assumptions(0.1, 0.04, 0.5, 6, 200)
    s = project(2_000_000, 0.07, 300, 0.0, a).summary
    assert s["total_principal"] + s["total_defaults"] + s["ending_balance"] == pytest.approx(
        2_000_000
    )
    assert s["total_losses"] + s["total_recoveries"] == pytest.approx(s["total_defaults"])
    assert s["ending_balance"] > 0  # 200 of 300 months projected


def test_zero_rate_pays_straight_line() -> None:
    t = project(1200, 0.0, 12, 0.0, Assumptions(0, 0, 0, 0, 12)).table
    assert list(t[:, COL["scheduled_principal"]]) == pytest.approx([100.0] * 12)
    assert t[-1, COL["ending_balance"]] == 0


def test_rejects_out_of_range_pool() -> None:
    with pytest.raises(ValueError, match="out of range"):
        project(0, 0.05, 12, 0, Assumptions(0, 0, 0, 0, 12))


def test_pool_that_defaults_entirely_with_full_severity_has_zero_wal() -> None:
    """CDR 100 % and severity 100 %: no principal cash at all, so WAL is 0 (no division by 0)."""
    s = project(1000.0, 0.06, 12, 0.0, Assumptions(0.0, 1.0, 1.0, 1, 12)).summary
    assert s["total_losses"] == pytest.approx(1000.0)
    assert s["weighted_average_life"] == 0.0
