"""The train-tuned OFI rule baseline: hand-computed trades, grid choice, tuning sees the TRAIN rows only."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from phoenix_rl.evaluation.baselines import (
    HysteresisRule,
    ofi_rule_features,
    rule_backtest,
    run_baselines,
    tune_ofi_rule,
)
from tests.rl.evaluation.test_backtest import CFG, COST_SIDE, D1, two_sessions


def test_hysteresis_rule_trades_by_hand() -> None:
    # ofi: [0, 2, 0, 0, 0 | 0, -3, 0.5, 0, 0]; fills at the next bar's open, forced flat at bar 4 (halt)
    # entry 1, exit -0.5: long 101.00 (bar 2) -> 102.00 (bar 4, forced flat); short 104.00 (bar 7) -> 103.00
    # (bar 8: x = 0.5 is not below -exit = 0.5)
    res = rule_backtest("ofi_1min_zscore", 1.0, -0.5, two_sessions(), CFG, 10_000.0)
    assert res.equity["position"].to_list() == [0, 0, 1, 1, 0, 0, 0, -1, 0, 0]
    assert res.trades["pnl"].to_list() == pytest.approx([2.0 - 2 * COST_SIDE, 2.0 - 2 * COST_SIDE])
    # exit = entry is the plain threshold rule: the long is closed as soon as x falls to 0 (bar 3, 101.50)
    plain = rule_backtest("ofi_1min_zscore", 1.0, 1.0, two_sessions(), CFG, 10_000.0)
    assert plain.equity["position"].to_list() == [0, 0, 1, 0, 0, 0, 0, -1, 0, 0]
    assert plain.trades["pnl"].to_list() == pytest.approx([1.0 - 2 * COST_SIDE, 2.0 - 2 * COST_SIDE])


def test_rule_state_follows_the_observed_position() -> None:
    rule = HysteresisRule(0, entry=1.0, exit=0.0)

    def obs(x: float, position: float) -> dict[str, np.ndarray]:
        return {"window": np.array([[x]], dtype=np.float32), "agent": np.array([position, 0.0, 0.0], dtype=np.float32)}

    assert rule(obs(0.5, 1.0)) == 1.0 and rule(obs(-0.5, -1.0)) == -1.0  # held beyond exit
    assert rule(obs(0.5, 0.0)) == 0.0  # flat (e.g. forced flat by the env): no re-entry below `entry`
    assert rule(obs(-0.1, 1.0)) == 0.0 and rule(obs(1.5, -1.0)) == 1.0  # exit, and a flip past entry
    with pytest.raises(ValueError, match=r"exit 2\.0 must not exceed entry 1\.0"):
        HysteresisRule(0, entry=1.0, exit=2.0)


def test_grid_search_picks_the_best_train_return_by_hand() -> None:
    # entry 2.5 skips the long (x = 2 < 2.5) and keeps the short: +$2 - 2 sides = -$0.24, the best point;
    # its two exits tie (same trades) and the grid order breaks the tie.
    tuned = tune_ofi_rule(two_sessions(), CFG, entries=(1.0, 2.5), exits=(-0.5, 1.0))
    assert (tuned.feature, tuned.entry, tuned.exit) == ("ofi_1min_zscore", 2.5, -0.5)
    assert tuned.train_return == pytest.approx((2.0 - 2 * COST_SIDE) / 10_000.0)
    assert tuned.grid.height == 4 and tuned.tuned_on == (str(D1), "2024-03-13")
    assert tuned.train_trades == 1


def test_tuning_never_sees_rows_outside_the_training_window() -> None:
    frame = two_sessions()
    train = frame.filter(pl.col("trade_date") == D1)
    tuned = tune_ofi_rule(train, CFG)
    noisy = frame.with_columns(
        pl.when(pl.col("trade_date") == D1).then(pl.col("ofi_1min_zscore")).otherwise(-pl.col("ofi_1min_zscore") * 7)
    )
    again = tune_ofi_rule(noisy.filter(pl.col("trade_date") == D1), CFG)
    assert (again.feature, again.entry, again.exit) == (tuned.feature, tuned.entry, tuned.exit)
    assert tuned.tuned_on == (str(D1), str(D1))
    baselines = run_baselines(frame, CFG, tuned_rule=tuned)
    assert "tuned_ofi_rule" in baselines and baselines["tuned_ofi_rule"].equity.height == frame.height


def test_rule_features_and_clear_errors() -> None:
    assert ofi_rule_features(["ts", "ofi_1min_zscore", "ofi_l1", "spread_zscore", "ofi_15m_zscore"]) == [
        "ofi_1min_zscore",
        "ofi_15m_zscore",
    ]
    with pytest.raises(ValueError, match="no ofi_\\*zscore column"):
        tune_ofi_rule(two_sessions().drop("ofi_1min_zscore"), CFG)
