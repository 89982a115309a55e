"""The baselines an agent is judged against, through the same env and costs as the agent (`run_backtest`).

    flat          always 0: zero PnL, zero cost.
    buy_and_hold  always long max_contracts. Forced flat before each 16:00 CT halt like every policy (the env
                  never carries a position over the halt), so it re-enters at each session's first bar and
                  pays one round trip per session; with trade_only_warm it is also flat on non-warm bars.
    random        i.i.d. uniform actions in [-1, 1] from a seeded generator.
    ofi_threshold long when ofi_1min_zscore > k, short when < -k, else flat, read from the observation's
                  last window row (the feature must be one of the env's feature columns).
    tuned_ofi_rule  a hysteresis OFI rule whose feature/entry/exit were tuned on the TRAIN window only; pass it
                  as `tuned_rule` wherever the agent is judged.

The tuned OFI rule: the simple baseline an agent must beat, tuned on the TRAIN window only.

A hysteresis threshold rule on one order-flow feature x (a trailing z-score, known at the bar close):
go long when x > entry, short when x < -entry; hold a long while x > exit (a short while x < -exit),
otherwise go flat (exit < entry; exit = entry is the plain threshold rule). Its feature, entry and exit
are chosen by a grid search on the training window's rows alone, by total return after costs (ties:
fewer round trips, then the grid order), so the held-out windows never influence it. The backtest runs
through `MnqTradingEnv` with the agent's env config (same costs, next-bar fills, forced flats); only the
observation differs (the rule's feature, lookback 1), so an agent without OFI features still faces it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import polars as pl

from phoenix_rl.env.trading_env import EnvConfig
from phoenix_rl.evaluation.backtest import BacktestResult, Observation, Policy, run_backtest

__all__ = [
    "DEFAULT_ENTRIES",
    "DEFAULT_EXITS",
    "HysteresisRule",
    "OfiThresholdPolicy",
    "RandomPolicy",
    "TunedOfiRule",
    "buy_and_hold_policy",
    "flat_policy",
    "ofi_rule_features",
    "rule_backtest",
    "run_baselines",
    "tune_ofi_rule",
]

DEFAULT_ENTRIES = (0.5, 1.0, 1.5, 2.0, 2.5)
DEFAULT_EXITS = (-0.5, 0.0, 0.5, 1.0)


class HysteresisRule:
    """+1 above `entry`, -1 below `-entry`; an open position is held while the feature stays beyond `exit`.

    The current position is read from the observation (`agent[0]`), so the env's forced flats are seen.
    """

    def __init__(self, feature_index: int, entry: float, exit: float) -> None:
        if exit > entry:
            raise ValueError(f"HysteresisRule: exit {exit} must not exceed entry {entry}")
        self.feature_index, self.entry, self.exit = feature_index, entry, exit

    def __call__(self, obs: Observation) -> float:
        x = float(obs["window"][-1, self.feature_index])
        position = float(obs["agent"][0])
        if x > self.entry:
            return 1.0
        if x < -self.entry:
            return -1.0
        if position > 0 and x > self.exit:
            return 1.0
        if position < 0 and x < -self.exit:
            return -1.0
        return 0.0


def rule_backtest(
    feature: str, entry: float, exit: float, features: pl.DataFrame, config: EnvConfig, capital: float
) -> BacktestResult:
    """The rule through the agent's env, observing only its feature (costs and forced flats unchanged; lookback 1,
    so it needs no history)."""
    env = config.replace(feature_columns=(feature,), lookback=1, episode_mode="whole", max_steps=None)
    return run_backtest(HysteresisRule(0, entry, exit), features, env, capital=capital, name="tuned_ofi_rule")


def ofi_rule_features(columns: list[str] | tuple[str, ...]) -> list[str]:
    """The order-flow z-scores a rule may trade on: columns named ofi_*zscore, in frame order."""
    return [c for c in columns if c.startswith("ofi_") and c.endswith("zscore")]


@dataclass(frozen=True)
class TunedOfiRule:
    """The chosen rule, where it was tuned, and the whole grid (for the record)."""

    feature: str
    entry: float
    exit: float
    tuned_on: tuple[str, str]  # first and last trade date of the training rows
    train_return: float
    train_trades: int
    grid: pl.DataFrame  # feature, entry, exit, total_return, n_trades per grid point

    def backtest(self, features: pl.DataFrame, config: EnvConfig, capital: float) -> BacktestResult:
        return rule_backtest(self.feature, self.entry, self.exit, features, config, capital)

    def summary(self) -> dict[str, object]:
        fields = ("feature", "entry", "exit", "tuned_on", "train_return", "train_trades")
        return {f: getattr(self, f) for f in fields} | {"grid_points": self.grid.height}


def tune_ofi_rule(
    train: pl.DataFrame,
    config: EnvConfig,
    *,
    capital: float = 10_000.0,
    features: list[str] | None = None,
    entries: tuple[float, ...] = DEFAULT_ENTRIES,
    exits: tuple[float, ...] = DEFAULT_EXITS,
) -> TunedOfiRule:
    """Grid-search feature x entry x exit (exit <= entry) on `train` alone; see the module doc."""
    candidates = features if features is not None else ofi_rule_features(train.columns)
    if not candidates:
        raise ValueError("tune_ofi_rule: no ofi_*zscore column in the training rows to build the rule on")
    if train.height < 2:
        raise ValueError(f"tune_ofi_rule: {train.height} training rows; need at least 2")
    rows = []
    for feature, entry, exit in itertools.product(candidates, entries, exits):
        if exit > entry:
            continue
        m = rule_backtest(feature, entry, exit, train, config, capital).metrics
        point = {"feature": feature, "entry": entry, "exit": exit}
        rows.append(point | {k: m[k] for k in ("total_return", "n_trades")})
    grid = pl.DataFrame(rows)
    order = np.lexsort((np.arange(grid.height), grid["n_trades"].to_numpy(), -grid["total_return"].to_numpy()))
    best = grid.row(int(order[0]), named=True)
    dates = train["trade_date"].cast(pl.Date)
    return TunedOfiRule(
        feature=best["feature"],
        entry=float(best["entry"]),
        exit=float(best["exit"]),
        tuned_on=(str(dates.min()), str(dates.max())),
        train_return=float(best["total_return"]),
        train_trades=int(best["n_trades"]),
        grid=grid,
    )


def flat_policy(obs: Observation) -> float:
    return 0.0


def buy_and_hold_policy(obs: Observation) -> float:
    return 1.0


class RandomPolicy:
    """Uniform actions in [-1, 1] from `numpy.random.default_rng(seed)`."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)

    def __call__(self, obs: Observation) -> float:
        return float(self.rng.uniform(-1.0, 1.0))


class OfiThresholdPolicy:
    """+1 when the feature at the last window row > k, -1 when < -k, else 0."""

    def __init__(self, feature_index: int, k: float = 1.0) -> None:
        self.feature_index, self.k = feature_index, k

    def __call__(self, obs: Observation) -> float:
        x = float(obs["window"][-1, self.feature_index])
        return 1.0 if x > self.k else (-1.0 if x < -self.k else 0.0)


def run_baselines(
    features: pl.DataFrame,
    config: EnvConfig,
    *,
    capital: float = 10_000.0,
    seed: int = 0,
    ofi_threshold: float = 1.0,
    ofi_feature: str = "ofi_1min_zscore",
    tuned_rule: TunedOfiRule | None = None,
    history: pl.DataFrame | None = None,
) -> dict[str, BacktestResult]:
    """flat, buy_and_hold, random, (when `ofi_feature` is a feature column) ofi_threshold, and the
    train-tuned OFI rule when given (it needs its own feature column in `features`); `history` as `run_backtest`."""
    policies: dict[str, Policy] = {
        "flat": flat_policy,
        "buy_and_hold": buy_and_hold_policy,
        "random": RandomPolicy(seed),
    }
    if ofi_feature in config.feature_columns:
        policies["ofi_threshold"] = OfiThresholdPolicy(config.feature_columns.index(ofi_feature), ofi_threshold)
    results = {
        name: run_backtest(p, features, config, capital=capital, name=name, history=history)
        for name, p in policies.items()
    }
    if tuned_rule is not None:
        results["tuned_ofi_rule"] = tuned_rule.backtest(features, config, capital)
    return results
