"""Metrics on a hand-made equity curve and trade list, against values worked out by hand."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import polars as pl
import pytest

from phoenix_rl.evaluation.metrics import (
    MIN_DAYS_FOR_RATIOS,
    RATIO_CAP,
    compute_metrics,
    daily_pnl,
    daily_returns,
    format_metric,
    max_drawdown_pct,
    profit_factor,
    ratio_for_ranking,
    sharpe_ratio,
    sortino_ratio,
)

D1, D2, D3 = dt.date(2024, 3, 12), dt.date(2024, 3, 13), dt.date(2024, 3, 14)


def equity_frame(dates: list[dt.date], equity: list[float], position: list[float], cost: list[float]) -> pl.DataFrame:
    traded = np.abs(np.diff(np.concatenate([[0.0], position])))
    return pl.DataFrame({"trade_date": dates, "equity": equity, "position": position, "cost": cost, "traded": traded})


def trades_frame(pnl: list[float]) -> pl.DataFrame:
    return pl.DataFrame({"pnl": pnl}, schema={"pnl": pl.Float64})


def test_daily_sharpe_sortino_by_hand() -> None:
    # end-of-day equity 10100, 9999, 10198.98 from 10,000: $ +100, -101, +199.98 on a fixed $10k
    eq = equity_frame(
        [D1, D1, D2, D2, D3], [10_050.0, 10_100.0, 10_000.0, 9_999.0, 10_198.98], [1, 0, 1, 0, 0], [0] * 5
    )
    r = daily_returns(eq, 10_000.0)
    np.testing.assert_allclose(r, [0.01, -0.0101, 0.019998], atol=1e-12)  # on the capital, not the day's equity
    mean = (0.01 - 0.0101 + 0.019998) / 3
    sd = math.sqrt(((0.01 - mean) ** 2 + (-0.0101 - mean) ** 2 + (0.019998 - mean) ** 2) / 2)
    downside = math.sqrt((0.0 + 0.0101**2 + 0.0) / 3)  # all days count, target 0
    assert sharpe_ratio(r) == pytest.approx(mean / sd * math.sqrt(252))
    assert sortino_ratio(r) == pytest.approx(mean / downside * math.sqrt(252))
    assert sortino_ratio(r) == pytest.approx(0.0066326667 / 0.0058312378 * math.sqrt(252), rel=1e-6)
    m = compute_metrics(eq, trades_frame([]), 10_000.0, min_days=3)
    assert m["sharpe"] == pytest.approx(sharpe_ratio(r)) and m["sortino"] == pytest.approx(sortino_ratio(r))
    assert m["total_return"] == pytest.approx(0.019898)
    assert m["annualised_return"] == pytest.approx(0.019898 / 3 * 252)  # arithmetic: 1 contract does not compound
    assert m["time_in_market"] == pytest.approx(2 / 5)
    assert m["turnover_contracts"] == 4.0


def test_daily_pnl_is_dollars_per_day_with_costs() -> None:
    eq = equity_frame([D1, D1, D2, D3], [10_050.0, 10_100.0, 9_999.0, 10_198.98], [1, 0, 1, 0], [1.0, 2.0, 0.5, 0.0])
    d = daily_pnl(eq, 10_000.0)
    assert d["trade_date"].to_list() == [D1, D2, D3]
    np.testing.assert_allclose(d["pnl_usd"].to_numpy(), [100.0, -101.0, 199.98], atol=1e-9)
    np.testing.assert_allclose(d["cost_usd"].to_numpy(), [3.0, 0.5, 0.0])


def test_max_drawdown_by_hand() -> None:
    eq = np.array([10_000.0, 10_100.0, 10_200.0, 9_996.0, 10_300.0])
    assert max_drawdown_pct(eq, 10_000.0) == pytest.approx((1 - 9_996 / 10_200) * 100)  # 2.0 %
    assert max_drawdown_pct(np.array([9_500.0, 9_800.0]), 10_000.0) == pytest.approx(5.0)  # peak is the capital


def test_trade_statistics_by_hand() -> None:
    eq = equity_frame([D1] * 4, [10_010.0, 10_005.0, 10_025.0, 10_015.0], [1, -1, 1, 0], [1.12, 2.24, 2.24, 1.12])
    m = compute_metrics(eq, trades_frame([10.0, -5.0, 20.0, -10.0]), 10_000.0)
    assert m["profit_factor"] == pytest.approx(30.0 / 15.0)
    assert m["win_rate"] == 0.5
    assert m["average_trade"] == pytest.approx(3.75)
    assert m["n_trades"] == 4.0
    assert m["total_cost"] == pytest.approx(6.72)
    assert m["turnover_contracts"] == 1 + 2 + 2 + 1


def test_zero_denominators_follow_the_cap_rule() -> None:
    assert profit_factor(np.array([5.0, 1.0])) == RATIO_CAP  # no losing trade
    assert profit_factor(np.array([-5.0])) == 0.0
    assert profit_factor(np.array([])) == 0.0
    assert sortino_ratio(np.array([0.01, 0.02])) == RATIO_CAP  # no down day
    assert sharpe_ratio(np.array([0.01, 0.01])) == RATIO_CAP  # constant positive returns
    assert sharpe_ratio(np.array([0.01])) == 0.0  # one day: undefined


def test_everything_finite_with_zero_trades() -> None:
    eq = equity_frame([D1, D1, D2], [10_000.0] * 3, [0, 0, 0], [0, 0, 0])
    m = compute_metrics(eq, trades_frame([]), 10_000.0, min_days=2)
    assert m["sharpe"] is None and m["sortino"] is None  # flat: zero deviation, undefined
    assert all(math.isfinite(v) for v in m.values() if v is not None)
    assert m["max_drawdown_pct"] == m["win_rate"] == m["n_trades"] == 0.0
    assert m["total_return"] == m["annualised_return"] == 0.0


def _days(returns: list[float]) -> pl.DataFrame:
    """One bar per trade date whose equity moves by `returns` x 10,000 $ a day (fixed capital)."""
    dates = [dt.date(2024, 1, 1) + dt.timedelta(days=i) for i in range(len(returns))]
    equity = list(10_000.0 * (1.0 + np.cumsum(returns)))
    return equity_frame(dates, equity, [0.0] * len(returns), [0.0] * len(returns))


def test_ratios_are_na_below_the_minimum_days_and_never_ranked_on() -> None:
    rng = np.random.default_rng(3)
    returns = list(rng.normal(0.001, 0.01, 25))
    short = compute_metrics(_days(returns[:19]), trades_frame([]))  # default MIN_DAYS_FOR_RATIOS = 20
    assert MIN_DAYS_FOR_RATIOS == 20 and short["sharpe"] is None and short["sortino"] is None
    one_day = compute_metrics(_days([0.01]), trades_frame([]))  # used to report Sortino +15.87
    assert one_day["sortino"] is None and format_metric(one_day["sortino"]) == "n/a"
    with pytest.raises(ValueError, match="validation fold 3: sortino is n/a \\(19 days; at least 20"):
        ratio_for_ranking(short, "sortino", "validation fold 3")
    full = compute_metrics(_days(returns[:20]), trades_frame([]))
    r = np.array(returns[:20])
    assert full["sharpe"] == pytest.approx(sharpe_ratio(r)) and full["sortino"] == pytest.approx(sortino_ratio(r))
    assert ratio_for_ranking(full, "sortino", "x") == full["sortino"]


def test_no_losing_day_is_na_not_capped() -> None:
    m = compute_metrics(_days([0.001 * (1 + i % 3) for i in range(30)]), trades_frame([]))
    assert m["sortino"] is None  # was RATIO_CAP = 100: a number that ranks first on nothing
    assert m["sharpe"] is not None and m["sharpe"] > 0
