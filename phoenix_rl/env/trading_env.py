"""`MnqTradingEnv`: one MNQ futures position traded on 1-minute feature bars (`features_1m`).

Timeline of one step (decision index i, bars are 1-minute, ts = bar start):
    observe   the feature rows of bars i-L+1..i (all known at the close of bar i) + agent state
    decide    a target position q in [-1, 1] x max_contracts (action)
    fill      by the one fill model of backtest and paper (phoenix_rl.env.fills): a market order crossing the
              spread of the book at the decision, f = its ask for a buy, its bid for a sell (the frame's
              mid_close +- spread_ticks_close / 2 of bar i); without those columns f = the OPEN of bar i+1. Never
              at bar i's close price (the FinRL look-ahead bug, STYLE.md). Every contract traded pays
              commission + slippage per side on top.
    mark      PnL to the close of bar i+1:  point_value * (p * (f - close_i) + q * (close_{i+1} - f))
              (p = position held through bar i; = p * (close_{i+1} - close_i) + (q - p) * (close_{i+1} - f))
Reward = reward_scale * (pnl - cost - shaping) in $, then `phoenix_rl.env.rewards.RewardShaper` (EnvConfig's
win_bonus / loss_penalty on the bar a round trip closes, hold_penalty beyond hold_bars, or the differential
Sharpe/Sortino of that per-bar reward with `differential_reward`); every shaping term is OFF by default.

Sessions and forced flattening (only what is scheduled is known in advance)
    Scheduled: the CME halt (a trade date's session closes at 16:00 America/Chicago, `calendar.session_closes_ns`) and a
    roll (the calendar's, below). The position held
    through the session's last scheduled bar (15:59 CT) is forced to 0: a decision at the close of a bar
    whose next bar by the clock is that last bar, or at the last bar itself, is overridden to flat, so it
    fills before the halt and no decision reaches over it; the final bar of the data ends every position
    (the backtest end).
    The flattening pays costs like any fill. Rolls come from the one roll calendar
    (`phoenix_assets.lib.calendar.roll_date`: the quarterly expiration, a trade-date boundary), never from the
    data, so the env and paper (which cannot see a roll coming in its feed) flatten at the same moment: the roll
    eve's session close. A contract change the calendar did not announce (data off the calendar, or a hole over
    the roll eve's close) is seen only once it happened: the old contract's position exits at its last close
    (costs paid, no price gap between two contracts marked), and the first bar of the new contract is treated
    as after a hole.
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
            its features are non-null). Rows before the frame's first bar come from `history` (the bars
            before the window, as live trading sees them: `warmup_rows`); zeros with warm 0 where none is
            given. The window may reach into earlier sessions: every row is point-in-time, and the warm flag
            says which rows are incomplete.
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
broker. Slippage 1 tick (0.25 index points = $0.50 on MNQ at point_value $2) per side, on top of the crossed
spread where the frame carries the decision book (phoenix_rl.env.fills; before issue 24 the 1 tick stood for the
half-spread too, from the next open). Paper charges the same (one fill model): measured paper - backtest gap
+0.015 tick/side on a demo test day (benchmarks/bench_fill_gap.py).
All arrays are precomputed in __init__ (numpy); `step` does no polars work.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
import polars as pl
from gymnasium import spaces

from phoenix_assets.lib import calendar as cal
from phoenix_rl.config import EnvConfig
from phoenix_rl.env.fills import FillConfig, touch_prices
from phoenix_rl.env.rewards import RewardShaper

__all__ = [
    "AGENT_STATE_DIM",
    "EnvConfig",
    "MnqTradingEnv",
    "agent_state",
    "forced_flat",
    "observation_rows",
    "target_contracts",
    "warmup_rows",
]

AGENT_STATE_DIM = 3
REQUIRED_COLUMNS = ("ts", "trade_date", "instrument_id", "open", "close")
_NS_PER_MINUTE = 60_000_000_000


def trade_days(features: pl.DataFrame) -> np.ndarray:
    """The frame's trade dates as days since 1970 (a Datetime column is truncated to its date)."""
    dates = features["trade_date"]
    return cal.day_numbers(dates if dates.dtype == pl.Date else dates.cast(pl.Date))


def observation_rows(features: pl.DataFrame, cfg: EnvConfig) -> tuple[np.ndarray, np.ndarray]:
    """(rows, warm) of every bar: its observed window row (feature columns, null/NaN -> 0, clipped to
    +-obs_clip, then the warm flag) and the warm flag itself. Shared by the env and the live path."""
    feats = np.empty((features.height, len(cfg.feature_columns)))
    for k, c in enumerate(cfg.feature_columns):  # column by column: no query engine (the live path's every bar)
        feats[:, k] = features[c].cast(pl.Float64).to_numpy()
    finite = np.isfinite(feats)
    if cfg.warm_column is not None and cfg.warm_column in features.columns:
        flag = features[cfg.warm_column]
        warm = (flag if not flag.null_count() else flag.fill_null(False)).to_numpy().astype(bool)
    else:
        warm = finite.all(axis=1)
    x = np.clip(np.where(finite, feats, 0.0), -cfg.obs_clip, cfg.obs_clip)
    return np.column_stack([x, warm]).astype(np.float32), warm


def warmup_rows(history: pl.DataFrame | None, first_ts_ns: int, width: int, cfg: EnvConfig) -> np.ndarray:
    """The lookback - 1 window rows before a frame's first bar: the observation rows of the last bars of
    `history` (the bars before the window, e.g. the validation window's tail before a test window, as live
    trading sees them), zero rows (warm 0) only for what history does not cover. History must end before the
    frame starts (a point-in-time guard)."""
    pad = np.zeros((cfg.lookback - 1, width), dtype=np.float32)
    if history is None or history.height == 0 or cfg.lookback == 1:
        return pad
    tail = history.sort("ts").tail(cfg.lookback - 1)
    last = int(cal.ts_ns(tail["ts"])[-1])
    if last >= first_ts_ns:
        raise ValueError(
            f"MnqTradingEnv: history must end before the window's first bar (history's last ts {last} >= "
            f"{first_ts_ns}): pass only the bars before the window"
        )
    rows, _ = observation_rows(tail, cfg)
    pad[len(pad) - len(rows) :] = rows
    return pad


def forced_flat(
    features: pl.DataFrame, warm: np.ndarray, cfg: EnvConfig, *, data_ends: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """(flat_next, after_hole): is the decision at bar i forced flat (module doc), and does bar i follow a data
    hole. Scheduled halts and rolls are known in advance (the roll from the one roll calendar,
    `phoenix_assets.lib.calendar.roll_eve`, never from the data: paper cannot see a roll coming in its feed),
    holes only afterwards. `data_ends=False` is the live path: the newest bar is not the end of the data."""
    ts = cal.ts_ns(features["ts"])
    iid = features["instrument_id"].to_numpy()
    days = trade_days(features)
    last_before_halt = ts + 2 * _NS_PER_MINUTE >= cal.session_closes_ns(days)
    # a roll eve's session ends its contract: flat before its last scheduled bar (the halt's moment)
    roll_eve = cal.roll_eve(days.astype("datetime64[D]"))
    data_last = np.zeros(len(ts), dtype=bool)
    data_last[-1:] = data_ends
    contract_change = np.concatenate([[False], iid[1:] != iid[:-1]])  # seen only once it happened
    gap = np.concatenate([[0], np.diff(ts)]) > cfg.max_gap_minutes * _NS_PER_MINUTE
    after_hole = (gap | contract_change) & ~np.concatenate([[True], last_before_halt[:-1]])
    # decision at i is forced flat when bar i+1 is the last before a halt/roll/the data end, or bar i is
    flat_next = last_before_halt | (roll_eve & last_before_halt) | data_last | np.append(data_last[1:], data_ends)
    flat_next = flat_next | after_hole
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

    def __init__(self, features: pl.DataFrame, config: EnvConfig, history: pl.DataFrame | None = None) -> None:
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
        ts = cal.ts_ns(features["ts"])
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
        self._window_rows = np.concatenate([warmup_rows(history, int(ts[0]), rows.shape[1], cfg), rows])
        self.fill = FillConfig.from_env(cfg)
        self.buy_price, self.sell_price = touch_prices(features, self.fill)
        self._flat_next, self.after_hole = forced_flat(features, self.warm, cfg)
        iid = features["instrument_id"].to_numpy()
        self._contract_change = np.append(iid[1:] != iid[:-1], False)  # bar i+1 trades another contract

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
        # the fill price (phoenix_rl.env.fills): the decision book's ask / bid, else the next open
        o1 = float(self.buy_price[i] if target > p else self.sell_price[i] if target < p else self.open[i + 1])
        if self._contract_change[i]:  # off the roll calendar (module doc): the old contract exits at its last close
            target, o1 = 0.0, float(self.close[i])
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
