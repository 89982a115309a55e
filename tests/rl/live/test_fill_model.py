"""Issue 24 item 8: one fill model for the bar backtest and the paper venue. On a scripted book whose touch the
bar-closing record never moves, paper (NautilusTrader, latency 0) and the bar backtest fill every order at the
same price and pay the same costs, so their PnL agree to the cent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from feature_specs import load_catalog
from phoenix_assets.lib.features.compute import compute_features
from phoenix_assets.lib.features.hmm_regimes import filter_regimes, fit_regime_model
from phoenix_assets.lib.io.lake import Lake
from phoenix_assets.lib.market.bars import ofi_bars_1m, seconds_frame
from phoenix_assets.lib.market.book_kernel import BookArrays, book_ofi_1s
from phoenix_assets.lib.market.live_bars import LiveBars, LiveFeatures
from phoenix_assets.lib.schema import F_LAST
from phoenix_assets.lib.synthetic.market import write_day
from phoenix_rl.config import EnvConfig
from phoenix_rl.env.fills import BOOK_COLUMNS, FillConfig
from phoenix_rl.env.trading_env import MnqTradingEnv
from phoenix_rl.evaluation.backtest import run_backtest
from phoenix_rl.live.journal import OrderJournal
from phoenix_rl.live.nautilus.venue import PaperVenue
from phoenix_rl.live.risk import RiskEngine
from phoenix_rl.live.trader import PaperTrader
from tests.rl.live.test_trader import DAYS, LIVE_DAY, MARKET, RISK, RecordingRule, _records

NS_MIN = 60_000_000_000


def scripted(records: BookArrays) -> BookArrays:
    """The synthetic day with each minute's first record carrying the previous record's best level and F_LAST:
    the book the paper order meets (the record that closes the bar) has the touch of the bar's end book."""
    ts = records.ts_recv.astype(np.int64)
    first = np.flatnonzero(np.diff(ts // NS_MIN)) + 1
    out = BookArrays(*(np.array(a, copy=True) for a in records))
    for a in (out.bid_px, out.ask_px, out.bid_sz, out.ask_sz):
        a[first, 0] = a[first - 1, 0]
    out.flags[first] |= F_LAST
    out.flags[first - 1] |= F_LAST
    return out


@pytest.mark.slow
def test_paper_and_bar_backtest_fill_equal_on_a_scripted_book(tmp_path: Path) -> None:
    records = {d: scripted(_records(write_day(d, tmp_path / "landing", MARKET))) for d in DAYS}
    bars = pl.concat([ofi_bars_1m(seconds_frame(book_ofi_1s(iter([records[d]]))), symbol="MNQ.v.0") for d in DAYS])
    catalog = load_catalog()
    model = fit_regime_model(bars, catalog.hmm, DAYS[0], DAYS[1])
    feats = compute_features(bars, catalog, filter_regimes(model, bars, catalog.hmm))
    cfg = EnvConfig(
        feature_columns=tuple(catalog.sets["phase2_ofi"].columns), lookback=4, action_mode="deadband",
        trade_only_warm=False,
    )  # fmt: skip
    fill = FillConfig.from_env(cfg)
    live = records[LIVE_DAY]
    cut = int(np.searchsorted(live.ts_recv.astype(np.int64), int(live.ts_recv[0]) + 6 * 3600 * 10**9))
    live = live.slice(0, cut)  # a few hours of the day: enough round trips, a short test
    day_bars = ofi_bars_1m(seconds_frame(book_ofi_1s(iter([live]))), symbol="MNQ.v.0")
    day = (
        feats.filter(pl.col("trade_date") == LIVE_DAY)
        .join(day_bars.select("ts", "instrument_id", *BOOK_COLUMNS), on=["ts", "instrument_id"], how="inner")
        .sort("ts")
    )
    lake = Lake(str(tmp_path / "lake"))
    venue = PaperVenue(capital_usd=10_000.0, fill=fill)
    before = feats.filter(pl.col("trade_date") < LIVE_DAY).sort("ts").tail(cfg.lookback)
    policy = RecordingRule()
    trader = PaperTrader(
        policy=policy,
        warmup_rows=before, env_config=cfg, bars=LiveBars(symbol="MNQ.v.0"),
        features=LiveFeatures(bars.filter(pl.col("trade_date") < LIVE_DAY), catalog, model), venue=venue,
        risk=RiskEngine(RISK), journal=OrderJournal(lake), strategy="rule", session_id="t", capital_usd=10_000.0,
    )  # fmt: skip
    trader.on_records(live)
    trader.close()
    venue.close()
    orders = lake.scan("paper_orders").collect()
    paper = lake.scan("paper_fills").collect().join(orders.select("client_order_id", "bar_ts"), on="client_order_id")
    bar = run_backtest(RecordingRule(), day, cfg, capital=10_000.0, history=before)
    # warm-up from real history in both: the first observations see the previous day's last bars, not zeros
    env_windows = MnqTradingEnv(day, cfg, history=before).observation_windows()
    first = np.stack([o["window"] for o in policy.seen[: cfg.lookback]])
    np.testing.assert_array_equal(first, env_windows[: cfg.lookback])
    assert first[0, 0, -1] == 1.0  # the oldest row of the first window is the previous day's (warm), not padding
    bt = bar.equity.filter(pl.col("traded") != 0).select(
        (pl.col("ts") - pl.duration(minutes=1)).cast(pl.Datetime("us", "UTC")).alias("bar_ts"),
        pl.col("fill_price").alias("bar_fill"),
        pl.col("traded"),
    )
    both = paper.join(bt, on="bar_ts", how="inner")
    assert both.height > 10 and both.height >= paper.height - 1  # the stream's end flattens at its own moment
    assert (both["quantity"] == both["traded"]).all()
    np.testing.assert_array_equal(both["price"].to_numpy(), both["bar_fill"].to_numpy())  # the same touch
    per_side = fill.cost_per_contract_side
    assert paper["commission_usd"].to_list() == pytest.approx([per_side * abs(q) for q in paper["quantity"]])
    gap_ticks = ((both["price"] - both["bar_fill"]) * both["quantity"].sign()).mean() / cfg.tick_size
    assert gap_ticks == 0.0
