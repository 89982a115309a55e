"""`MnqTradingEnv`: one MNQ futures position traded on 1-minute feature bars (`features_1m`).

Timeline of one step (decision index i, bars are 1-minute, ts = bar start):
    observe   the feature rows of bars i-L+1..i (all known at the close of bar i) + agent state
    decide    a target position q in [-1, 1] x max_contracts (action)
    fill      at the OPEN of bar i+1, never at the close of bar i (the FinRL look-ahead bug, STYLE.md);
              every contract traded pays commission + slippage per side
    mark      PnL to the close of bar i+1:  point_value * (p * (open_{i+1} - close_i) + q * (close_{i+1} - open_{i+1}))
              (p = position held through bar i; the first term is the close->open gap of the old position)
Reward = reward_scale * (pnl - cost - shaping) in $, then `phoenix_rl.env.rewards.RewardShaper` (EnvConfig's
win_bonus / loss_penalty on the bar a round trip closes, hold_penalty beyond hold_bars, or the differential
Sharpe/Sortino of that per-bar reward with `differential_reward`); every shaping term is OFF by default.

Sessions and forced flattening (only what is scheduled is known in advance)
    Scheduled: the CME halt (a trade date's session closes at 16:00 America/Chicago, `SESSION_CLOSE`) and a
    roll (the instrument_id changes; continuous symbols roll on a published schedule). The position held
    through the session's last scheduled bar (15:59 CT) is forced to 0: a decision at the close of a bar
    whose next bar by the clock is that last bar, or at the last bar itself, is overridden to flat, so it
    fills at a bar open before the halt and no decision reaches over it. The same holds for the last bar
    of an instrument before a roll, and the final bar of the data ends every position (the backtest end).
    The flattening pays costs like any fill.
    Unscheduled: a data hole (a gap longer than `max_gap_minutes` that the schedule does not explain) is
    not known before it happens. A position open when the data stop is held through the hole and marked
    across it (the close->open gap term of the next bar); if a hole swallows the session's last minutes,
    the position rides the halt to the next session's first bar. After a hole the env reacts, knowing only
    the past: the decision at the first bar after it is forced flat (a feed-gap risk rule).
    A session's first position opens at its second bar at the earliest.
    With `trade_only_warm`, a decision at a non-warm bar is forced flat as well (features incomplete).

Observation (Dict)
    window  (L, n_features + 1) float32: the last L rows of the feature columns, null/NaN -> 0, clipped to
            +-obs_clip, plus a last column `warm` (1.0 when the row is warm, from `warm_column`, else when all
            its features are non-null). Rows before the start of the data are zeros with warm 0. The window
            may reach into earlier sessions: every row is point-in-time, and the warm flag says which rows
            are incomplete.
    agent   (3,) float32: position / max_contracts, unrealised PnL of the open position at the close of
            bar i in units of point_value * max_contracts * upnl_scale_points (clipped), and bars held in
            the current position / time_scale_bars (clipped).

Action Box([-1], [1]): target position as a fraction of max_contracts.
    "continuous": q = a * max_contracts (fractional contracts; a smooth relaxation for research).
    "deadband":   whole contracts: 0 when |a| < deadband, else sign(a) * max(1, ceil((|a| - deadband) /
                  (1 - deadband) * max_contracts)) (clamped to max_contracts); use this for realistic runs.

Episodes: "random" starts at a uniformly drawn decision index (from self.np_random, so `reset(seed=s)` is
deterministic) and runs `max_steps` steps or to the end of the data; "whole" starts at bar 0 (or
options["start"]) and runs to the end. Running out of data or hitting max_steps is `truncated`; the env
never reports `terminated` (there is no terminal state in a market). A max_steps truncation leaves the
position open (the market goes on); only the end of the data forces flat.

Costs (defaults, per contract per side): commission_per_side_usd 0.62 = broker commission + CME exchange
and clearing fees + NFA fee for Micro E-mini Nasdaq-100, a typical all-in retail rate (e.g. Interactive
Brokers' tiered schedule, 2024: ~$0.25 commission + ~$0.35 exchange + ~$0.02 regulatory); check your
broker. Slippage 1 tick (0.25 index points = $0.50 on MNQ at point_value $2) per side: the spread is mostly
1 tick and a market order crosses it, so ~half-spread plus a little impact per side.
All arrays are precomputed in __init__ (numpy); `step` does no polars work.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
import polars as pl
from gymnasium import spaces

from phoenix_rl.config import EnvConfig
from phoenix_rl.env.rewards import RewardShaper

__all__ = [
    "AGENT_STATE_DIM",
    "EnvConfig",
    "MnqTradingEnv",
    "agent_state",
    "forced_flat",
    "observation_rows",
    "target_contracts",
]

AGENT_STATE_DIM = 3
REQUIRED_COLUMNS = ("ts", "trade_date", "instrument_id", "open", "close")
_NS_PER_MINUTE = 60_000_000_000
SESSION_TZ = "America/Chicago"
SESSION_CLOSE = "16h"  # CME Globex equity futures: trade date D closes at 16:00 CT on D (halt to 17:00)


def session_close_ns(trade_date: pl.Series) -> np.ndarray:
    """UTC ns of each trade date's scheduled close (16:00 America/Chicago, DST-aware)."""
    close = (
        trade_date.cast(pl.Date)
        .cast(pl.Datetime("ns"))
        .dt.offset_by(SESSION_CLOSE)
        .dt.replace_time_zone(SESSION_TZ)
        .dt.convert_time_zone("UTC")
    )
    return close.dt.epoch("ns").to_numpy()


def observation_rows(features: pl.DataFrame, cfg: EnvConfig) -> tuple[np.ndarray, np.ndarray]:
    """(rows, warm) of every bar: its observed window row (feature columns, null/NaN -> 0, clipped to
    +-obs_clip, then the warm flag) and the warm flag itself. Shared by the env and the live path."""
    feats = features.select(pl.col(list(cfg.feature_columns)).cast(pl.Float64)).to_numpy()
    finite = np.isfinite(feats)
    if cfg.warm_column is not None and cfg.warm_column in features.columns:
        warm = features[cfg.warm_column].fill_null(False).to_numpy().astype(bool)
    else:
        warm = finite.all(axis=1)
    x = np.clip(np.where(finite, feats, 0.0), -cfg.obs_clip, cfg.obs_clip)
    return np.column_stack([x, warm]).astype(np.float32), warm


def forced_flat(
    features: pl.DataFrame, warm: np.ndarray, cfg: EnvConfig, *, data_ends: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """(flat_next, after_hole): is the decision at bar i forced flat (module doc), and does bar i follow a data
    hole. Scheduled halts are known in advance, holes only afterwards; a roll is known from the data here (the
    env's published schedule). `data_ends=False` is the live path: the newest bar is not the end of the data
    and its instrument's next bar is unknown."""
    ts = features["ts"].cast(pl.Datetime("ns", "UTC")).cast(pl.Int64).to_numpy()
    iid = features["instrument_id"].to_numpy()
    last_before_halt = ts + 2 * _NS_PER_MINUTE >= session_close_ns(features["trade_date"])
    roll_last = np.append(iid[1:] != iid[:-1], data_ends)  # bar i is its instrument's last bar (or the data's)
    gap = np.concatenate([[0], np.diff(ts)]) > cfg.max_gap_minutes * _NS_PER_MINUTE
    after_hole = gap & ~np.concatenate([[True], last_before_halt[:-1] | roll_last[:-1]])
    # decision at i is forced flat when bar i+1 is the last before a halt/roll/the data end, or bar i is
    flat_next = last_before_halt | roll_last | np.append(roll_last[1:], data_ends) | after_hole
    if cfg.trade_only_warm:
        flat_next = flat_next | ~warm
    return flat_next, after_hole


def target_contracts(action: float, cfg: EnvConfig) -> float:
    """Action in [-1, 1] -> target position in contracts (module doc, `action_mode`)."""
    a = min(max(action, -1.0), 1.0)
    if cfg.action_mode == "continuous":
        return a * cfg.max_contracts
    if abs(a) < cfg.deadband:
        return 0.0
    k = math.ceil((abs(a) - cfg.deadband) / (1.0 - cfg.deadband) * cfg.max_contracts)
    return math.copysign(float(min(max(k, 1), cfg.max_contracts)), a)


def agent_state(position: float, entry: float, close: float, held: int, cfg: EnvConfig) -> np.ndarray:
    """The observation's agent part: position / max_contracts, unrealised PnL at `close` in units of
    point_value * max_contracts * upnl_scale_points, bars held / time_scale_bars (both clipped)."""
    upnl = position * (close - entry) * cfg.point_value if position != 0.0 else 0.0
    unit = cfg.point_value * cfg.max_contracts * cfg.upnl_scale_points
    lim = cfg.obs_clip
    return np.array(
        [position / cfg.max_contracts, min(max(upnl / unit, -lim), lim), min(held / cfg.time_scale_bars, lim)],
        dtype=np.float32,
    )


class MnqTradingEnv(gym.Env):
    """Gymnasium env over a `features_1m` frame (one instrument per ts); see the module doc."""

    metadata = {"render_modes": []}  # noqa: RUF012 (gymnasium's class attribute)

    def __init__(self, features: pl.DataFrame, config: EnvConfig) -> None:
        super().__init__()
        self.config = cfg = config
        if not cfg.feature_columns:
            raise ValueError("MnqTradingEnv: config.feature_columns is empty (name the observed feature columns)")
        missing = [c for c in (*REQUIRED_COLUMNS, *cfg.feature_columns) if c not in features.columns]
        if missing:
            raise ValueError(f"MnqTradingEnv: the feature frame lacks columns {missing}")
        n = features.height
        if n < 2:
            raise ValueError(f"MnqTradingEnv: need at least 2 bars, got {n}")
        ts = features["ts"].cast(pl.Datetime("ns", "UTC")).cast(pl.Int64).to_numpy()
        if np.any(np.diff(ts) <= 0):
            raise ValueError(
                "MnqTradingEnv: ts must be strictly increasing (one instrument per minute): sort by ts and keep "
                "one contract (front month) per bar before building the env"
            )
        prices = features.select(pl.col("open", "close").cast(pl.Float64)).to_numpy()
        if not np.all(np.isfinite(prices)):
            bad = np.flatnonzero(~np.isfinite(prices).all(axis=1))[:5]
            raise ValueError(f"MnqTradingEnv: open/close null or non-finite at rows {bad.tolist()} (drop them)")
        self.ts_ns = ts
        self.trade_date = features["trade_date"].cast(pl.Date).to_numpy()
        self.open = np.ascontiguousarray(prices[:, 0])
        self.close = np.ascontiguousarray(prices[:, 1])
        self.n_bars = n

        rows, self.warm = observation_rows(features, cfg)
        pad = np.zeros((cfg.lookback - 1, rows.shape[1]), dtype=np.float32)
        self._window_rows = np.concatenate([pad, rows])
        self._flat_next, self.after_hole = forced_flat(features, self.warm, cfg)

        self.feature_index = {c: k for k, c in enumerate(cfg.feature_columns)}
        lim = np.float32(cfg.obs_clip)
        self.observation_space = spaces.Dict(
            {
                "window": spaces.Box(-lim, lim, shape=(cfg.lookback, len(cfg.feature_columns) + 1), dtype=np.float32),
                "agent": spaces.Box(-lim, lim, shape=(AGENT_STATE_DIM,), dtype=np.float32),
            }
        )
        self.action_space = spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
        self._shaper = RewardShaper(cfg.reward_config())
        self._reset_state(0)

    # --- state ------------------------------------------------------------------------------------------

    def _reset_state(self, start: int) -> None:
        self._shaper.reset()
        self._trip = 0.0  # net $ of the open round trip so far (fills' costs included)
        self._i = start
        self._start = start
        self._steps = 0
        self._pos = 0.0
        self._entry = math.nan
        self._held = 0
        self._equity = 0.0
        self._peak = 0.0

    def _obs(self) -> dict[str, np.ndarray]:
        i, cfg = self._i, self.config
        agent = agent_state(self._pos, self._entry, float(self.close[i]), self._held, cfg)
        return {"window": self._window_rows[i : i + cfg.lookback].copy(), "agent": agent}

    @property
    def bar(self) -> int:
        """The bar the current observation was taken at the close of."""
        return self._i

    def observation_windows(self) -> np.ndarray:
        """(n_bars, L, n_features + 1): the window of every bar's observation, a read-only view (no copy)."""
        rows = np.lib.stride_tricks.sliding_window_view(self._window_rows, self.config.lookback, axis=0)
        return rows.transpose(0, 2, 1)

    def target_contracts(self, action: float) -> float:
        """Action in [-1, 1] -> target position in contracts (module doc, `action_mode`)."""
        return target_contracts(action, self.config)

    # --- gymnasium API ----------------------------------------------------------------------------------

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        last = self.n_bars - 2  # the last index that can still fill at a next open
        if options and "start" in options:
            start = int(options["start"])
            if not 0 <= start <= last:
                raise ValueError(f"MnqTradingEnv.reset: start must lie in [0, {last}] (got {start})")
        elif self.config.episode_mode == "whole":
            start = 0
        else:
            start = int(self.np_random.integers(min(self.config.lookback - 1, last), last + 1))
        self._reset_state(start)
        return self._obs(), {"bar": start}

    def step(self, action: np.ndarray | float) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        cfg, i = self.config, self._i
        if i >= self.n_bars - 1:
            raise RuntimeError("MnqTradingEnv.step called after the end of the data: call reset()")
        a = float(np.asarray(action, dtype=np.float64).reshape(-1)[0])
        target = 0.0 if self._flat_next[i] else self.target_contracts(a)
        p = self._pos
        o1 = float(self.open[i + 1])
        traded = abs(target - p)
        cost = traded * cfg.cost_per_contract_side
        pnl_carry = p * (o1 - float(self.close[i])) * cfg.point_value
        pnl_hold = target * (float(self.close[i + 1]) - o1) * cfg.point_value
        pnl = pnl_carry + pnl_hold

        closed: float | None = None  # net $ of a round trip that this fill closes (flips split the cost)
        if p != 0.0 and (target == 0.0 or (target > 0) != (p > 0)):
            closed = self._trip + pnl_carry - cost * abs(p) / traded
            self._trip = pnl_hold - cost * abs(target) / traded
        elif target != 0.0:
            self._trip += pnl - cost

        if target == 0.0:
            self._entry, self._held = math.nan, 0
        elif p == 0.0 or (target > 0) != (p > 0):
            self._entry, self._held = o1, 1
        else:
            if abs(target) > abs(p):  # scale in: volume-weighted entry
                self._entry = (self._entry * abs(p) + o1 * (abs(target) - abs(p))) / abs(target)
            self._held += 1
        self._pos = target

        prev_dd = self._peak - self._equity
        self._equity += pnl - cost
        self._peak = max(self._peak, self._equity)
        shaping = cfg.turnover_penalty_usd * traded + cfg.drawdown_penalty * max(
            self._peak - self._equity - prev_dd, 0.0
        )
        reward = self._shaper.step(cfg.reward_scale * (pnl - cost - shaping), closed, target, self._held)

        self._i = i + 1
        self._steps += 1
        end_of_data = self._i >= self.n_bars - 1
        truncated = end_of_data or (
            cfg.max_steps is not None and cfg.episode_mode == "random" and self._steps >= cfg.max_steps
        )
        info = {
            "bar": self._i,
            "position_before": p,
            "position": target,
            "fill_price": o1,
            "traded": target - p,
            "cost": cost,
            "pnl": pnl,
            "pnl_carry": pnl_carry,
            "pnl_hold": pnl_hold,
            "equity": self._equity,
            "closed_trade_pnl": closed,
            "end_of_data": end_of_data,
        }
        return self._obs(), float(reward), False, bool(truncated), info
