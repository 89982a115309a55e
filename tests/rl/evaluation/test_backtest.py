"""Backtests through the env: baselines under identical costs, hand-computed buy-and-hold, trades table."""

from __future__ import annotations

import base64
import datetime as dt
import math

import numpy as np
import polars as pl
import pytest

from phoenix_rl.env.trading_env import EnvConfig
from phoenix_rl.evaluation.backtest import run_backtest
from phoenix_rl.evaluation.baselines import OfiThresholdPolicy, RandomPolicy, run_baselines
from phoenix_rl.evaluation.plots import equity_curve_png, equity_markdown, markdown_image
from phoenix_rl.testing import synthetic_features

COST_SIDE = 0.62 + 0.25 * 2.0
D1, D2 = dt.date(2024, 3, 12), dt.date(2024, 3, 13)


def two_sessions() -> pl.DataFrame:
    """Session 1: bars at minutes 0..4, session 2 (next trade date, after the halt): minutes 65..69."""
    t0 = dt.datetime(2024, 3, 12, 20, 55, tzinfo=dt.UTC)
    minutes = [0, 1, 2, 3, 4, 65, 66, 67, 68, 69]
    return pl.DataFrame(
        {
            "ts": [t0 + dt.timedelta(minutes=m) for m in minutes],
            "trade_date": [D1] * 5 + [D2] * 5,
            "instrument_id": [1] * 10,
            "open": [100.0, 100.25, 101.0, 101.5, 102.0, 105.0, 104.5, 104.0, 103.0, 103.25],
            "close": [100.25, 101.0, 101.5, 102.0, 102.5, 104.5, 104.0, 103.0, 103.25, 103.5],
            "ofi_1min_zscore": [0.0, 2.0, 0.0, 0.0, 0.0, 0.0, -3.0, 0.5, 0.0, 0.0],
            "warm": [True] * 10,
        }
    )


CFG = EnvConfig(("ofi_1min_zscore",), lookback=2)


def test_buy_and_hold_equals_hand_computation() -> None:
    res = run_baselines(two_sessions(), CFG)["buy_and_hold"]
    # session 1: long from open of bar 1 (100.25) to open of bar 4 (102.00, forced flat before the halt);
    # session 2: long from open of bar 6 (104.50) to open of bar 9 (103.25, forced flat at the data end)
    gross = (102.00 - 100.25) * 2.0 + (103.25 - 104.50) * 2.0  # 3.50 - 2.50 = $1.00
    costs = 4 * COST_SIDE  # $4.48
    assert res.equity["equity"][-1] == pytest.approx(10_000.0 + gross - costs)
    assert res.equity["position"].to_list() == [0, 1, 1, 1, 0, 0, 1, 1, 1, 0]
    t = res.trades
    assert t.height == 2
    assert t["entry_price"].to_list() == [100.25, 104.5] and t["exit_price"].to_list() == [102.0, 103.25]
    assert t["pnl"].to_list() == pytest.approx([3.5 - 2 * COST_SIDE, -2.5 - 2 * COST_SIDE])
    assert t["entry_ts"][0] == res.equity["ts"][1] and t["exit_ts"][1] == res.equity["ts"][9]
    assert res.metrics["total_cost"] == pytest.approx(costs) and res.metrics["n_trades"] == 2


def test_flat_has_zero_pnl_and_zero_cost() -> None:
    res = run_baselines(two_sessions(), CFG)["flat"]
    assert res.equity["equity"].to_list() == [10_000.0] * 10
    assert res.metrics["total_cost"] == 0.0 and res.metrics["n_trades"] == 0.0 and res.trades.height == 0
    assert all(v is None or math.isfinite(v) for v in res.metrics.values())


def test_ofi_rule_reads_the_observation_and_fills_next_open() -> None:
    res = run_baselines(two_sessions(), CFG, ofi_threshold=1.0)["ofi_threshold"]
    # z > 1 at bar 1 -> long through bar 2; z < -1 at bar 6 -> short through bar 7
    assert res.equity["position"].to_list() == [0, 0, 1, 0, 0, 0, 0, -1, 0, 0]
    assert res.trades["entry_price"].to_list() == [101.0, 104.0]
    assert res.trades["side"].to_list() == [1, -1]
    expected = (101.5 - 101.0) * 2 + (104.0 - 103.0) * 2 - 4 * COST_SIDE
    assert res.equity["equity"][-1] - 10_000.0 == pytest.approx(expected)


def test_baselines_share_the_cost_engine_and_trades_reconcile() -> None:
    f = synthetic_features(("ofi_1min_zscore", "g"), n_sessions=3, bars_per_session=200, seed=3)
    cfg = EnvConfig(("ofi_1min_zscore", "g"), lookback=4)
    results = run_baselines(f, cfg, seed=5)
    assert set(results) == {"flat", "buy_and_hold", "random", "ofi_threshold"}
    for r in results.values():
        m = r.metrics
        assert m["total_cost"] == pytest.approx(m["turnover_contracts"] * COST_SIDE)
        # the round trips account for every $ of the equity curve
        assert r.trades["pnl"].sum() == pytest.approx(r.equity["equity"][-1] - 10_000.0)
        assert r.trades["costs"].sum() == pytest.approx(m["total_cost"])
        assert r.equity["position"][-1] == 0.0
        assert all(v is None or math.isfinite(v) for v in m.values())
    again = run_backtest(RandomPolicy(5), f, cfg, name="random")
    assert again.equity.equals(results["random"].equity)  # seeded: deterministic


def test_flips_and_scaling_in_the_trades_table() -> None:
    f = synthetic_features(("ofi_1min_zscore",), n_sessions=1, bars_per_session=12, seed=1)
    cfg = EnvConfig(("ofi_1min_zscore",), lookback=2, max_contracts=2, trade_only_warm=False)
    script = iter([1.0, 1.0, 0.4, -1.0, -1.0, 0.0] + [0.0] * 20)  # +2, +2, +1, -2, -2, 0
    res = run_backtest(lambda obs: next(script), f, cfg)
    t = res.trades
    assert t["side"].to_list() == [1, -1] and t["contracts"].to_list() == [2.0, 2.0]
    opens = f["open"].to_list()
    assert t["entry_price"][0] == opens[1]
    assert t["exit_price"][0] == pytest.approx((opens[3] + opens[4]) / 2)  # 1 contract out at bar 3, 1 at bar 4
    assert t["entry_price"][1] == opens[4] and t["exit_price"][1] == opens[6]
    # the flip at bar 4 costs 3 contracts: 1 closes the long, 2 open the short
    assert t["costs"].to_list() == pytest.approx([(2 + 1 + 1) * COST_SIDE, (2 + 2) * COST_SIDE])
    assert t["pnl"].sum() == pytest.approx(res.equity["equity"][-1] - 10_000.0)


def test_plot_png_and_markdown(tmp_path) -> None:
    results = run_baselines(two_sessions(), CFG)
    path = tmp_path / "eq.png"
    png = equity_curve_png(results, path=path)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and path.read_bytes() == png
    md = equity_markdown(results, title="Agent vs baselines")
    assert "data:image/png;base64," in md and "| buy_and_hold |" in md
    b64 = markdown_image(png).split("base64,")[1].rstrip(")")
    assert base64.b64decode(b64) == png
    assert OfiThresholdPolicy(0, 1.0)({"window": np.array([[2.0]])}) == 1.0
