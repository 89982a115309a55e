"""Walk-forward evaluation: monthly folds, everything refit per fold, seeds chosen on validation only.

Fold k (of `n_folds` consecutive test months, the last months of the data): test = month T_k, validation =
the `val_months` before it, train = the `train_months` before that (rolling; all earlier months with
`expanding`). With an embargo of e trade dates, validation and test start e trade dates into their months,
so e dates separate train from validation and validation from test (`EvaluationWindows` checks it).

Per fold, `features_for(fold)` returns the feature rows with every fitted object (the HMM behind the regime
columns, ...) refit on the fold's train window only; N seeds are trained on the train window; the seed with
the best validation total return (defined on any window length, unlike Sharpe/Sortino) is backtested ONCE
on the test window, beside the tuned OFI rule (tuned on the same train window) and flat. The test windows are
stitched across folds in dollars on a fixed capital: each fold's test starts at the capital, the strategy trades
1 contract, so the out-of-sample total is the sum of every test day's $ PnL over the capital (no compounding
across folds or days) and the drawdown is taken per bar on the stitched $ equity (`stitch_fixed_capital`).

The trainings of a walk-forward (or of several on the same folds: the ablation's arms x seeds,
`run_walk_forwards`) run in a pool of `workers` processes, one torch thread each: two trainings at once on 2
cores each run at 0.94-1.01x a solo one (benchmarks/bench_training.py). Results do not depend on `workers`.
With a Ray address (`ray_address`, else $RAY_ADDRESS) every training and test backtest is a Ray task on that
cluster instead (phoenix_rl.train.ray_pool), with the same results (tests/rl/train/test_ray_cluster.py).
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from phoenix_rl.config import EnvConfig, TrainConfig
from phoenix_rl.evaluation.backtest import BacktestResult, run_backtest
from phoenix_rl.evaluation.baselines import TunedOfiRule, run_baselines, tune_ofi_rule
from phoenix_rl.evaluation.metrics import compute_metrics, daily_pnl
from phoenix_rl.train.pool import job_result, training_executor
from phoenix_rl.train.ray_pool import RayExecutor
from phoenix_rl.windows import EvaluationWindows

__all__ = [
    "Fold",
    "FoldResult",
    "WalkForwardResult",
    "daily_pnl_frame",
    "monthly_folds",
    "run_walk_forward",
    "run_walk_forwards",
    "stitch_fixed_capital",
]

FeaturesFor = Callable[["Fold"], pl.DataFrame]


@dataclass(frozen=True)
class Fold:
    index: int
    windows: EvaluationWindows

    def train_config(self, base: TrainConfig, seed: int) -> TrainConfig:
        return replace(base, **self.windows.train_fields(), seed=seed)  # type: ignore[arg-type]


def monthly_folds(
    trade_dates: Sequence[dt.date],
    *,
    train_months: int = 2,
    val_months: int = 1,
    test_months: int = 1,
    n_folds: int = 3,
    embargo_days: int = 0,
    expanding: bool = False,
) -> list[Fold]:
    """The folds of the module doc over the trade dates present in the data."""
    dates = sorted(set(trade_dates))
    months = sorted({d.replace(day=1) for d in dates})
    by_month = {m: [d for d in dates if d.replace(day=1) == m] for m in months}
    need = train_months + val_months + test_months + (n_folds - 1) * test_months
    if len(months) < need:
        raise ValueError(
            f"walk-forward needs {need} months of data ({train_months} train + {val_months} val + {n_folds} x "
            f"{test_months} test), the data hold {len(months)} ({months[0]:%Y-%m}..{months[-1]:%Y-%m})"
            if months
            else "walk-forward: no trade dates"
        )
    folds = []
    for k in range(n_folds):
        test_first = len(months) - (n_folds - k) * test_months
        val_first = test_first - val_months
        train_first = 0 if expanding else val_first - train_months

        def days(first: int, count: int) -> list[dt.date]:
            return [d for m in months[first : first + count] for d in by_month[m]]

        train = days(train_first, val_first - train_first)
        val = days(val_first, val_months)[embargo_days:]
        test = days(test_first, test_months)[embargo_days:]
        if not (train and val and test):
            raise ValueError(f"fold {k}: a window is empty after the {embargo_days}-day embargo")
        windows = EvaluationWindows((train[0], train[-1]), (val[0], val[-1]), (test[0], test[-1]), embargo_days)
        folds.append(Fold(k, windows.validate()))
    return folds


def daily_pnl_frame(result: BacktestResult, capital: float) -> pl.DataFrame:
    """trade_date, pnl_usd (net of costs), cost_usd, round_trips (closed that trade date) of one backtest window,
    in $ per contract (`phoenix_rl.evaluation.metrics.daily_pnl`)."""
    days = daily_pnl(result.equity, capital)
    exits = (
        result.trades.select(pl.col("exit_ts").alias("ts"))
        .join(result.equity.select("ts", "trade_date"), on="ts", how="left")
        .group_by("trade_date")
        .agg(pl.len().cast(pl.Int64).alias("round_trips"))
    )
    return days.join(exits, on="trade_date", how="left").with_columns(pl.col("round_trips").fill_null(0))


def stitch_fixed_capital(windows: Sequence[BacktestResult], capital: float) -> pl.DataFrame:
    """The per-bar equity of consecutive test windows on ONE fixed capital: each window's bar-to-bar $ changes
    (its first bar from `capital`, where it restarted) added onto the previous windows' end. A constant $x a day
    over n days of three folds ends at capital + n x, not at the product of the folds' growth factors."""
    frames = []
    for r in windows:
        eq = r.equity.select("ts", "trade_date", "position", "cost", "traded", "equity")
        frames.append(eq.with_columns(pl.col("equity").diff().fill_null(pl.col("equity") - capital).alias("delta")))
    if not frames:
        raise ValueError("stitch_fixed_capital: no test windows to stitch")
    joined = pl.concat(frames).sort("ts")
    return joined.with_columns((capital + pl.col("delta").cum_sum()).alias("equity")).drop("delta")


@dataclass
class FoldResult:
    fold: Fold
    val_scores: dict[int, float]  # seed -> validation total return (empty with one seed: no choice)
    chosen_seed: int
    test: dict[str, BacktestResult]  # agent, tuned_ofi_rule, flat, ... on the test window
    tuned_rule: dict[str, object]
    seconds: dict[str, float] = field(default_factory=dict)  # wall time: features, train_seed<N>, test


@dataclass
class WalkForwardResult:
    folds: list[FoldResult]
    capital: float
    # strategy -> fold, trade_date, pnl_usd, cost_usd, round_trips: the OOS test days in $ per contract
    stitched: dict[str, pl.DataFrame] = field(default_factory=dict)

    def overall_metrics(self) -> dict[str, dict[str, float | None]]:
        """Metrics of each strategy's out-of-sample test windows stitched per bar on the fixed capital
        (`stitch_fixed_capital`): total = sum of $ PnL / capital, drawdown per bar, plus $ totals."""
        out = {}
        for name in self.stitched:
            windows = [f.test[name] for f in self.folds if name in f.test]
            frame = stitch_fixed_capital(windows, self.capital)
            m = compute_metrics(frame, pl.concat([w.trades for w in windows]), self.capital)
            eq = frame["equity"].to_numpy()
            m["total_pnl_usd"] = float(eq[-1] - self.capital)
            m["max_drawdown_usd"] = float(np.max(np.maximum.accumulate(np.concatenate([[self.capital], eq]))[1:] - eq))
            out[name] = m
        return out

    def fold_table(self) -> pl.DataFrame:
        rows = []
        for f in self.folds:
            w = f.fold.windows
            for name, r in f.test.items():
                rows.append(
                    {
                        "fold": f.fold.index,
                        "test_start": str(w.test[0]),
                        "test_end": str(w.test[1]),
                        "strategy": name,
                        "chosen_seed": f.chosen_seed,
                        "total_return": r.metrics["total_return"],
                        "pnl_usd": float(r.equity["equity"][-1] - self.capital) if r.equity.height else 0.0,
                        "total_cost": r.metrics["total_cost"],
                        "max_drawdown_pct": r.metrics["max_drawdown_pct"],
                        "n_trades": r.metrics["n_trades"],
                    }
                )
        return pl.DataFrame(rows)


RuleCache = dict[tuple[int, str], TunedOfiRule]


def _train_job(cfg: TrainConfig, frame: pl.DataFrame, out_dir: Path) -> tuple[Any, float]:
    from phoenix_rl.train.trainer import train

    t0 = time.perf_counter()
    result = train(cfg, frame, out_dir)
    return result, time.perf_counter() - t0  # training (+ its validation backtest)


def _test_job(
    model_path: Path,
    test_rows: pl.DataFrame,
    env_cfg: EnvConfig,
    capital: float,
    rule: TunedOfiRule,
    history: pl.DataFrame | None = None,
) -> tuple[dict[str, BacktestResult], float]:
    from stable_baselines3 import SAC

    t0 = time.perf_counter()
    model = SAC.load(model_path, device="cpu")
    test = {"agent": run_backtest(model, test_rows, env_cfg, capital=capital, history=history)}
    test |= run_baselines(test_rows, env_cfg, capital=capital, tuned_rule=rule, history=history)
    return test, time.perf_counter() - t0


def run_walk_forwards(
    features_for: FeaturesFor,
    folds: list[Fold],
    runs: Mapping[str, tuple[TrainConfig, Sequence[int]]],
    out_dir: str | Path,
    *,
    workers: int = 1,
    log: Callable[[str], None] = print,
    rule_cache: RuleCache | None = None,
    ray_address: str | None = None,
) -> dict[str, WalkForwardResult]:
    """Several walk-forwards on the same folds (run name -> base config, seeds), their trainings spread over
    `workers` processes, or over a Ray cluster (`ray_address`, else $RAY_ADDRESS: `training_executor`; `out_dir`
    must then be on storage every node sees); each run is `run_walk_forward`'s, in `out_dir/<run name>`.

    Every fold's features are built first (`features_for`, in this process), then every (run, fold, seed)
    training is queued; each fold's test backtests are queued once its seeds are trained and one is chosen. The
    results do not depend on `workers` (tests/rl/research/test_walk_forward.py): each training seeds itself and
    runs with its config's torch threads. With one seed there is nothing to choose, so no validation backtest is run (a
    month of bars; benchmarks/bench_backtest.py); `val_scores` is then empty. `rule_cache` (fold, env
    settings but the agent's feature columns -> tuned rule) tunes the rule once per fold for all runs: the grid
    search is deterministic and the rule observes only its own feature.
    """
    from phoenix_rl.train.trainer import select_window

    empty = [name for name, (_, seeds) in runs.items() if not seeds]
    if empty:
        raise ValueError(f"run_walk_forward: at least one seed (runs {empty} have none)")
    if workers < 1:  # before any fold's features are built
        raise ValueError(f"walk-forward: workers must be >= 1, got {workers}")
    rules: RuleCache = {} if rule_cache is None else rule_cache
    frames, features_s = {}, {}
    for fold in folds:
        t0 = time.perf_counter()
        frames[fold.index] = features_for(fold)
        features_s[fold.index] = time.perf_counter() - t0
    n_jobs = sum(len(seeds) for _, seeds in runs.values()) * len(folds)
    with training_executor(workers, ray_address, log=log) as pool:
        where = "Ray tasks" if isinstance(pool, RayExecutor) else f"{workers} worker(s)"
        log(f"walk-forward: {n_jobs} trainings ({len(runs)} run(s) x {len(folds)} folds x seeds) on {where}")
        trainings = {}
        for name, (base, seeds) in runs.items():
            for fold in folds:
                for seed in seeds:
                    cfg = fold.train_config(base, seed)
                    if len(seeds) == 1:
                        cfg = replace(cfg, val_start=None, val_end=None)
                    out = Path(out_dir) / name / f"fold{fold.index}" / f"seed{seed}"
                    trainings[name, fold.index, seed] = pool.submit(_train_job, cfg, frames[fold.index], out)
        pending, done = {}, 0
        for name, (base, seeds) in runs.items():
            for fold in folds:
                scores, models, seconds = {}, {}, {"features": features_s[fold.index]}
                for seed in seeds:
                    what = f"{name + ' ' if name else ''}fold {fold.index} seed {seed}"
                    job = trainings[name, fold.index, seed]
                    res, seconds[f"train_seed{seed}"] = job_result(job, f"walk-forward training {what}")
                    done += 1
                    log(f"trained {what} in {seconds[f'train_seed{seed}']:.0f} s ({done}/{n_jobs})")
                    if len(seeds) > 1:
                        if res.val_metrics is None:
                            raise ValueError(f"fold {fold.index}: no validation rows in {fold.windows.val}")
                        scores[seed] = float(res.val_metrics["total_return"] or 0.0)
                    models[seed] = res
                chosen = max(seeds, key=lambda s: (scores.get(s, 0.0), -s))  # validation only; ties: smaller seed
                t0 = time.perf_counter()
                saved = json.loads(models[chosen].config_path.read_text())
                env_cfg = EnvConfig(**saved["env_config"])
                w = fold.windows
                key = (fold.index, repr(env_cfg.replace(feature_columns=())))
                if key not in rules:
                    train_rows = select_window(frames[fold.index], str(w.train[0]), str(w.train[1]))
                    rules[key] = tune_ofi_rule(train_rows, env_cfg, capital=base.capital)
                seconds["test"] = time.perf_counter() - t0  # rule tuning (unless cached); + the backtests, below
                test_rows = select_window(frames[fold.index], str(w.test[0]), str(w.test[1]))
                # warm-up from the real bars before the test window (the validation tail), as live trading sees them
                history = frames[fold.index].filter(pl.col("trade_date") < w.test[0]).sort("ts").tail(env_cfg.lookback)
                job = pool.submit(
                    _test_job, models[chosen].model_path, test_rows, env_cfg, base.capital, rules[key], history
                )
                pending[name, fold.index] = (job, scores, chosen, rules[key], seconds)
        results: dict[str, WalkForwardResult] = {}
        for name, (base, _) in runs.items():
            fold_results = []
            for fold in folds:
                job, scores, chosen, rule, seconds = pending[name, fold.index]
                test, seconds_test = job_result(job, f"walk-forward test backtest {name} fold {fold.index}")
                seconds["test"] += seconds_test
                log(
                    f"{name + ': ' if name else ''}fold {fold.index} ({fold.windows.describe()}): validation total "
                    f"return by seed {scores or 'n/a (one seed)'}, chose seed {chosen}; test agent "
                    f"{test['agent'].metrics['total_return']:+.4f}, tuned rule "
                    f"{test['tuned_ofi_rule'].metrics['total_return']:+.4f}"
                )
                fold_results.append(FoldResult(fold, scores, chosen, test, rule.summary(), seconds))
            names = set.intersection(*(set(f.test) for f in fold_results))
            stitched = {
                n: pl.concat(
                    [
                        daily_pnl_frame(f.test[n], base.capital).with_columns(fold=pl.lit(f.fold.index, pl.Int64))
                        for f in fold_results
                    ]
                ).select("fold", "trade_date", "pnl_usd", "cost_usd", "round_trips")
                for n in sorted(names)
            }
            results[name] = WalkForwardResult(fold_results, base.capital, stitched)
    return results


def run_walk_forward(
    features_for: FeaturesFor,
    folds: list[Fold],
    base: TrainConfig,
    seeds: Sequence[int],
    out_dir: str | Path,
    *,
    workers: int = 1,
    log: Callable[[str], None] = print,
    rule_cache: RuleCache | None = None,
    ray_address: str | None = None,
) -> WalkForwardResult:
    """Train `seeds` per fold on its train window, pick on validation, test once; stitch the test returns
    (`run_walk_forwards` with one run)."""
    runs = {"": (base, seeds)}
    return run_walk_forwards(
        features_for, folds, runs, out_dir, workers=workers, log=log, rule_cache=rule_cache, ray_address=ray_address
    )[""]
