"""The one fill model of the bar backtest and the paper venue (issue 24 item 8).

Convention (a market order for a target position decided at the close of bar i):
    latency   the order reaches the venue `latency_ns` after the decision (the record that closes bar i);
    book      it fills at the first tradeable book at or after decision + latency;
    price     it crosses the spread: a buy at that book's best ask, a sell at its best bid (one contract; paper's
              L2 venue walks the levels for more);
    costs     every contract pays `slippage_ticks` ticks + `commission_per_side_usd` per side, on top of the
              crossed spread (the default 1 tick + $0.62 is the env's cost before this model).

Who implements it
    paper     NautilusTrader's simulated exchange: `LatencyModel(base_latency_nanos=latency_ns)`, book type L2_MBP
              (the cross), `PerContractFeeModel(cost_per_contract_side)` (fees + slippage, so the venue's balance is
              the journal's PnL); `phoenix_rl.live.nautilus.venue.PaperVenue` reads this config.
    backtest  `MnqTradingEnv` on 1-minute bars: the bars carry the book at the decision (the end-of-minute book of
              bar i: `mid_close`, `spread_ticks_close`), not the book `latency` later, so the bar fill is that
              book's touch (`touch_prices`). With latency 0 the two differ by the one record that closes the bar;
              with latency > 0 by the mid's move over the latency (measured: benchmarks/bench_fill_gap.py). A frame
              without the two book columns falls back to the next bar's open; every reader of training, HPO and
              backtest rows joins them (`phoenix_assets.lib.io.artifacts.trading_rows`, the walk-forward's folds).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from phoenix_assets.lib import calendar as cal
from phoenix_assets.lib.schema import DECISION_BOOK_COLUMNS
from phoenix_rl.config import EnvConfig

__all__ = ["BOOK_COLUMNS", "FillConfig", "touch_prices"]

NS_PER_MINUTE = 60_000_000_000
BOOK_COLUMNS = DECISION_BOOK_COLUMNS  # ofi_bars_1m: the end-of-minute (decision) book


@dataclass(frozen=True)
class FillConfig:
    """The fill model's parameters; `from_env` reads them from `EnvConfig` (their one default)."""

    latency_ns: int
    slippage_ticks: float
    commission_per_side_usd: float
    tick_size: float
    point_value: float
    fill_at: str = "touch"

    @classmethod
    def from_env(cls, cfg: EnvConfig) -> FillConfig:
        return cls(
            latency_ns=round(cfg.fill_latency_ms * 1e6),
            slippage_ticks=cfg.slippage_ticks_per_side,
            commission_per_side_usd=cfg.commission_per_side_usd,
            tick_size=cfg.tick_size,
            point_value=cfg.point_value,
            fill_at=cfg.fill_at,
        )

    @property
    def cost_per_contract_side(self) -> float:
        """$ per contract per side beyond the crossed spread: fees + slippage ticks."""
        return self.commission_per_side_usd + self.slippage_ticks * self.tick_size * self.point_value


def touch_prices(features: pl.DataFrame, cfg: FillConfig) -> tuple[np.ndarray, np.ndarray]:
    """(buy, sell) fill price of a decision at the close of each bar: the decision book's ask and bid
    (mid_close +- spread_ticks_close x tick / 2, module doc); the next bar's open where that book is not the
    one the order meets (no book columns, a null or crossed book, a silent minute before the next bar,
    `fill_at="open"`). Entry n-1 is the open of nothing: NaN."""
    n = features.height
    nxt = np.append(features["open"].cast(pl.Float64).to_numpy()[1:], np.nan)
    if cfg.fill_at == "open" or any(c not in features.columns for c in BOOK_COLUMNS):
        return nxt.copy(), nxt.copy()
    mid = features["mid_close"].cast(pl.Float64).fill_null(np.nan).to_numpy()
    half = features["spread_ticks_close"].cast(pl.Float64).fill_null(np.nan).to_numpy() * cfg.tick_size / 2.0
    ts = cal.ts_ns(features["ts"])
    # a silent minute after bar i: the bar closes at the next record, whose book the order meets (the next open)
    adjacent = np.append(np.diff(ts) <= NS_PER_MINUTE, False)
    ok = adjacent & np.isfinite(mid) & np.isfinite(half) & (half > 0)
    buy = np.where(ok, mid + np.where(ok, half, 0.0), nxt)
    sell = np.where(ok, mid - np.where(ok, half, 0.0), nxt)
    buy[n - 1 :] = sell[n - 1 :] = np.nan
    return buy, sell
