"""Deterministic backtests of a policy and of baselines, through `MnqTradingEnv` itself.

One execution/cost engine: the backtest steps the env in "whole" mode (bar 0 to the end of the data, no
max_steps) and records what the env reports (fills by the one fill model of
phoenix_rl.env.fills, costs per side, mark to close, forced
flat before every halt / gap / roll and at the data end), so the agent and every baseline are charged
identically. Only the bookkeeping (equity curve, round-trip table) lives here.

The baselines every agent is judged against run through this same engine (phoenix_rl.evaluation.baselines).

Round trip: a maximal run of non-zero positions of one sign. Its `pnl` is the marked-to-market PnL of the
bars it was open (including the close->open gap of the bar it was exited at) minus its `costs`: every fill
that opens, adds to, reduces or closes it; a flip's cost is split in proportion to the contracts closed and
opened. entry_price / exit_price are volume-weighted raw fill prices (the crossed touch, or the bar opens where
the frame carries no book; slippage and fees are in costs).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from phoenix_rl.env.trading_env import EnvConfig, MnqTradingEnv
from phoenix_rl.evaluation.metrics import compute_metrics

__all__ = [
    "BacktestResult",
    "Policy",
    "as_policy",
    "round_trips",
    "run_backtest",
]

Observation = dict[str, np.ndarray]
Policy = Callable[[Observation], Any]

TRADE_SCHEMA = {
    "entry_ts": pl.Datetime("ns", "UTC"),
    "exit_ts": pl.Datetime("ns", "UTC"),
    "side": pl.Int8,
    "contracts": pl.Float64,
    "entry_price": pl.Float64,
    "exit_price": pl.Float64,
    "bars": pl.Int64,
    "gross_pnl": pl.Float64,
    "costs": pl.Float64,
    "pnl": pl.Float64,
}


@dataclass(frozen=True)
class BacktestResult:
    """equity: per bar ts, trade_date, position (held through the bar), traded, fill_price, pnl, cost, equity;
    trades: the round-trip table (TRADE_SCHEMA); metrics: `phoenix_rl.evaluation.metrics.compute_metrics`."""

    name: str
    equity: pl.DataFrame
    trades: pl.DataFrame
    metrics: dict[str, float | None]


def as_policy(policy: Policy | Any) -> Policy:
    """An SB3 model (anything with .predict) -> its deterministic action; a callable stays as it is."""
    if hasattr(policy, "predict"):
        model = policy
        return lambda obs: model.predict(obs, deterministic=True)[0]
    if not callable(policy):
        raise TypeError(f"run_backtest: policy must be callable or have .predict (got {type(policy).__name__})")
    return policy


def run_backtest(
    policy: Policy | Any,
    features: pl.DataFrame,
    config: EnvConfig,
    *,
    capital: float = 10_000.0,
    name: str = "agent",
    history: pl.DataFrame | None = None,
) -> BacktestResult:
    """Step `policy` through the whole frame once (deterministic for a deterministic policy). A SAC model with
    the Mamba extractor acts through `phoenix_rl.agent.batched_policy` (its sequence pass batched over the bars).
    `history`: the bars before the frame (e.g. the validation window's tail before a test window): the first
    lookback - 1 observations see them, as live trading would, instead of zeros (`MnqTradingEnv`)."""
    from phoenix_rl.agent.batched_policy import batched_policy

    env = MnqTradingEnv(features, config.replace(episode_mode="whole", max_steps=None), history=history)
    act = batched_policy(policy, env) or as_policy(policy)
    obs, _ = env.reset(seed=0)
    n = env.n_bars
    position, traded, fill, pnl, cost = (np.zeros(n) for _ in range(5))
    pos_before, carry, hold = np.zeros(n), np.zeros(n), np.zeros(n)
    fill[:] = math.nan
    while True:
        obs, _, terminated, truncated, info = env.step(act(obs))
        b = info["bar"]
        position[b], traded[b], pnl[b], cost[b] = info["position"], info["traded"], info["pnl"], info["cost"]
        pos_before[b], carry[b], hold[b] = info["position_before"], info["pnl_carry"], info["pnl_hold"]
        if info["traded"] != 0.0:
            fill[b] = info["fill_price"]
        if terminated or truncated:
            break
    ts = pl.Series("ts", env.ts_ns).cast(pl.Datetime("ns", "UTC"))
    equity = pl.DataFrame(
        {
            "ts": ts,
            "trade_date": features["trade_date"].cast(pl.Date),
            "position": position,
            "traded": traded,
            "fill_price": fill,
            "pnl": pnl,
            "cost": cost,
            "equity": capital + np.cumsum(pnl - cost),
        }
    )
    trades = round_trips(env.ts_ns, pos_before, position, fill, carry, hold, cost)
    return BacktestResult(name, equity, trades, compute_metrics(equity, trades, capital))


def round_trips(
    ts_ns: np.ndarray,
    pos_before: np.ndarray,
    pos_after: np.ndarray,
    fill_price: np.ndarray,
    pnl_carry: np.ndarray,
    pnl_hold: np.ndarray,
    cost: np.ndarray,
) -> pl.DataFrame:
    """Round-trip table (module doc) from per-bar env records: bar b's fill happened at its open."""
    rows: list[dict[str, Any]] = []
    trip: dict[str, Any] | None = None

    def open_trip(b: int, q: float, share: float) -> dict[str, Any]:
        return {
            "entry_b": b,
            "side": 1 if q > 0 else -1,
            "contracts": abs(q),
            "in_qty": abs(q),
            "in_val": abs(q) * fill_price[b],
            "out_qty": 0.0,
            "out_val": 0.0,
            "gross": 0.0,
            "costs": share,
        }

    def close_trip(t: dict[str, Any], b: int) -> None:
        rows.append(
            {
                "entry_ts": int(ts_ns[t["entry_b"]]),
                "exit_ts": int(ts_ns[b]),
                "side": t["side"],
                "contracts": t["contracts"],
                "entry_price": t["in_val"] / t["in_qty"],
                "exit_price": t["out_val"] / t["out_qty"] if t["out_qty"] else math.nan,
                "bars": b - t["entry_b"],
                "gross_pnl": t["gross"],
                "costs": t["costs"],
                "pnl": t["gross"] - t["costs"],
            }
        )

    for b in np.flatnonzero((pos_before != 0) | (pos_after != 0)):
        p, q = float(pos_before[b]), float(pos_after[b])
        if trip is not None:
            trip["gross"] += pnl_carry[b]
        if q != p:
            dq = abs(q - p)
            if p != 0 and (q == 0 or (q > 0) != (p > 0)):  # close (and maybe flip)
                assert trip is not None
                trip["costs"] += cost[b] * abs(p) / dq
                trip["out_qty"] += abs(p)
                trip["out_val"] += abs(p) * fill_price[b]
                close_trip(trip, b)
                trip = open_trip(b, q, cost[b] * abs(q) / dq) if q != 0 else None
            elif p == 0:
                trip = open_trip(b, q, cost[b])
            else:
                assert trip is not None
                trip["costs"] += cost[b]
                if abs(q) > abs(p):  # scale in
                    trip["in_qty"] += dq
                    trip["in_val"] += dq * fill_price[b]
                    trip["contracts"] = max(trip["contracts"], abs(q))
                else:  # scale out
                    trip["out_qty"] += dq
                    trip["out_val"] += dq * fill_price[b]
        if trip is not None:
            trip["gross"] += pnl_hold[b]
    if trip is not None:  # unreachable in "whole" mode (the env flattens at the data end)
        close_trip(trip, len(ts_ns) - 1)
    frame = pl.DataFrame(rows, schema={k: (pl.Int64 if k.endswith("_ts") else v) for k, v in TRADE_SCHEMA.items()})
    return frame.with_columns(pl.col("entry_ts", "exit_ts").cast(pl.Datetime("ns", "UTC")))
