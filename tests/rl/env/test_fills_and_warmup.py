"""The one fill model in the env (touch of the decision book + slippage + fees) and warm-up from real history."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from phoenix_rl.env.fills import FillConfig, touch_prices
from phoenix_rl.env.trading_env import MnqTradingEnv
from tests.rl.env.test_trading_env import COST_SIDE, cfg, run, tiny_frame


def book_frame(opens, closes, mids, spreads, **kw) -> pl.DataFrame:
    return tiny_frame(opens, closes, **kw).with_columns(
        mid_close=pl.Series(mids, dtype=pl.Float64), spread_ticks_close=pl.Series(spreads, dtype=pl.Float64)
    )


def test_touch_fill_pnl_and_costs_by_hand() -> None:
    """Buy at bar 0's ask, sell at bar 2's bid: mid 100.125 +- 1 tick/2 and 101.0 +- 2 ticks/2."""
    frame = book_frame(
        [100.0, 100.5, 101.25, 101.0, 101.0],
        [100.25, 101.0, 101.0, 101.0, 101.0],
        [100.125, 100.875, 101.0, 101.0, 101.0],
        [1.0, 1.0, 2.0, 1.0, 1.0],
    )
    infos = run(MnqTradingEnv(frame, cfg()), [1.0, 1.0, 0.0, 0.0])
    buy, sell = 100.125 + 0.125, 101.0 - 0.25  # ask of bar 0's book, bid of bar 2's book
    assert infos[0]["fill_price"] == buy and infos[2]["fill_price"] == sell
    # marked: bar 1 close 101.0 - buy, bar 2 close 101.0 -> 101.0, exit carry: sell - close 101.0
    assert [i["pnl"] for i in infos[:3]] == pytest.approx([2 * (101.0 - buy), 0.0, 2 * (sell - 101.0)])
    assert sum(i["pnl"] - i["cost"] for i in infos) == pytest.approx(2 * (sell - buy) - 2 * COST_SIDE)


def test_touch_falls_back_to_the_next_open_where_the_book_is_not_the_one_met() -> None:
    frame = book_frame([1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0], [1.0, None, 3.0, 4.0], [1.0, 1.0, 0.0, 1.0])
    frame = frame.with_columns(ts=pl.col("ts") + pl.Series([0, 0, 0, 5]).cast(pl.Duration("ms")) * 60_000)
    fill = FillConfig.from_env(cfg())
    buy, sell = touch_prices(frame, fill)
    # bar 0: the book; bar 1: null mid -> open 3.0; bar 2: zero spread (locked) -> open of bar 3; bar 3: none
    assert buy[:3].tolist() == [1.125, 3.0, 4.0] and sell[:3].tolist() == [0.875, 3.0, 4.0] and np.isnan(buy[3])
    # a silent gap after bar 0: the order meets the next record's book, the next open
    gap = frame.with_columns(ts=pl.col("ts") + pl.Series([0, 3, 3, 3]).cast(pl.Duration("ms")) * 60_000)
    assert touch_prices(gap, fill)[0][0] == 2.0
    assert touch_prices(frame.drop("mid_close"), fill)[0][:3].tolist() == [2.0, 3.0, 4.0]
    assert touch_prices(frame, FillConfig.from_env(cfg(fill_at="open")))[0][0] == 2.0


def test_fill_config_reads_the_env_defaults() -> None:
    fill = FillConfig.from_env(cfg(fill_latency_ms=2.5))
    assert fill.latency_ns == 2_500_000 and fill.cost_per_contract_side == pytest.approx(COST_SIDE)
    with pytest.raises(ValueError, match="fill_at"):
        cfg(fill_at="close")


def _history_and_window(n_hist: int = 5, n: int = 6) -> tuple[pl.DataFrame, pl.DataFrame]:
    whole = tiny_frame(
        [100.0] * (n_hist + n), [100.0] * (n_hist + n), feature=[float(k + 1) for k in range(n_hist + n)]
    )
    return whole.head(n_hist), whole.tail(n)


def test_first_observations_see_the_real_preceding_bars() -> None:
    history, window = _history_and_window()
    env = MnqTradingEnv(window, cfg(lookback=4), history=history)
    obs, _ = env.reset(seed=0)
    # lookback 4: bar 0 sees history's last 3 rows (features 3, 4, 5) then its own (6), all warm
    assert obs["window"][:, 0].tolist() == [3.0, 4.0, 5.0, 6.0] and obs["window"][:, 1].tolist() == [1.0] * 4
    no_history = MnqTradingEnv(window, cfg(lookback=4)).reset(seed=0)[0]
    assert no_history["window"][:, 0].tolist() == [0.0, 0.0, 0.0, 6.0]
    # short history: zeros (warm 0) only for what it does not cover
    short = MnqTradingEnv(window, cfg(lookback=4), history=history.tail(1)).reset(seed=0)[0]
    assert short["window"][:, 0].tolist() == [0.0, 0.0, 5.0, 6.0] and short["window"][:, 1].tolist() == [0, 0, 1, 1]


def test_perturbing_history_changes_the_first_observations_and_the_future_never_the_past() -> None:
    history, window = _history_and_window()
    base = MnqTradingEnv(window, cfg(lookback=4), history=history).observation_windows().copy()
    shaken = history.with_columns(f=pl.col("f") * -3.0)
    moved = MnqTradingEnv(window, cfg(lookback=4), history=shaken).observation_windows()
    changed = np.flatnonzero((moved != base).any(axis=(1, 2)))
    assert changed.tolist() == [0, 1, 2]  # the first lookback - 1 bars, and only those
    future = window.with_columns(f=pl.when(pl.int_range(pl.len()) >= 4).then(-2.0).otherwise(pl.col("f")))
    later = MnqTradingEnv(future, cfg(lookback=4), history=history).observation_windows()
    assert np.array_equal(later[:4], base[:4]) and not np.array_equal(later[4:], base[4:])


def test_history_that_overlaps_the_window_is_refused() -> None:
    history, window = _history_and_window()
    with pytest.raises(ValueError, match="history must end before the window's first bar"):
        MnqTradingEnv(window, cfg(lookback=4), history=pl.concat([history, window.head(1)]))


def test_backtest_passes_history(monkeypatch) -> None:
    from phoenix_rl.evaluation.backtest import run_backtest

    history, window = _history_and_window()
    seen: list[float] = []

    def policy(obs):
        seen.append(float(obs["window"][0, 0]))
        return 0.0

    run_backtest(policy, window, cfg(lookback=4), history=history)
    assert seen[0] == 3.0


def test_history_before_a_test_window_date() -> None:
    """Warm-up rows may come from an earlier trade date (the validation day's tail)."""
    day1 = tiny_frame(
        [1.0] * 3,
        [1.0] * 3,
        feature=[7.0, 8.0, 9.0],
        trade_dates=[dt.date(2024, 3, 11)] * 3,
        t0=dt.datetime(2024, 3, 11, 14, 0, tzinfo=dt.UTC),
    )
    day2 = tiny_frame([1.0] * 3, [1.0] * 3, feature=[1.0, 2.0, 3.0])
    obs, _ = MnqTradingEnv(day2, cfg(lookback=3), history=day1).reset(seed=0)
    assert obs["window"][:, 0].tolist() == [8.0, 9.0, 1.0]
