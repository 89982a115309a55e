"""Walk-forward evaluation: monthly folds, everything refit per fold, seeds chosen on validation only.

Fold k (of `n_folds` consecutive test months, the last months of the data): test = month T_k, validation =
the `val_months` before it, train = the `train_months` before that (rolling; all earlier months with
`expanding`). With an embargo of e trade dates, validation and test start e trade dates into their months,
so e dates separate train from validation and validation from test (`EvaluationWindows` checks it).

Per fold, `features_for(fold)` returns the feature rows with every fitted object (the HMM behind the regime
columns, ...) refit on the fold's train window only; N seeds are trained on the train window; the seed with
the best validation total return (defined on any window length, unlike Sharpe/Sortino) is backtested ONCE
on the test window, beside the tuned OFI rule (tuned on the same train window) and flat. The test windows'
daily returns are stitched across folds into one out-of-sample series per strategy.

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
from phoenix_rl.evaluation.metrics import compute_metrics
from phoenix_rl.train.pool import job_result, training_executor
from phoenix_rl.train.ray_pool import RayExecutor
from phoenix_rl.windows import EvaluationWindows

__all__ = [
    "Fold",
    "FoldResult",
    "WalkForwardResult",
    "daily_return_frame",
    "monthly_folds",
    "run_walk_forward",
    "run_walk_forwards",
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


def daily_return_frame(result: BacktestResult, capital: float) -> pl.DataFrame:
    """trade_date, ret: simple return of each trade date's end-of-day equity (first day from `capital`)."""
    eod = result.equity.group_by("trade_date", maintain_order=True).agg(pl.col("equity").last()).sort("trade_date")
    e = np.concatenate([[capital], eod["equity"].to_numpy()])
    return pl.DataFrame({"trade_date": eod["trade_date"], "ret": e[1:] / e[:-1] - 1.0})


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
    stitched: dict[str, pl.DataFrame] = field(default_factory=dict)  # strategy -> trade_date, ret (OOS)

    def overall_metrics(self) -> dict[str, dict[str, float | None]]:
        """Metrics of each strategy's stitched out-of-sample equity (compounded daily returns)."""
        out = {}
        for name, daily in self.stitched.items():
            equity = self.capital * np.cumprod(1.0 + daily["ret"].to_numpy())
            frame = pl.DataFrame(
                {
                    "trade_date": daily["trade_date"],
                    "equity": equity,
                    "position": np.zeros(len(equity)),
                    "cost": np.zeros(len(equity)),
                    "traded": np.zeros(len(equity)),
                }
            )
            trades = pl.concat([f.test[name].trades for f in self.folds if name in f.test])
            m = compute_metrics(frame, trades, self.capital)
            m["total_cost"] = float(sum(f.test[name].metrics["total_cost"] or 0.0 for f in self.folds))
            m["time_in_market"] = float(np.mean([f.test[name].metrics["time_in_market"] for f in self.folds]))
            m["turnover_contracts"] = float(sum(f.test[name].metrics["turnover_contracts"] for f in self.folds))
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
    model_path: Path, test_rows: pl.DataFrame, env_cfg: EnvConfig, capital: float, rule: TunedOfiRule
) -> tuple[dict[str, BacktestResult], float]:
    from stable_baselines3 import SAC

    t0 = time.perf_counter()
    model = SAC.load(model_path, device="cpu")
    test = {"agent": run_backtest(model, test_rows, env_cfg, capital=capital)}
    test |= run_baselines(test_rows, env_cfg, capital=capital, tuned_rule=rule)
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
                job = pool.submit(_test_job, models[chosen].model_path, test_rows, env_cfg, base.capital, rules[key])
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
                n: pl.concat([daily_return_frame(f.test[n], base.capital) for f in fold_results]) for n in sorted(names)
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
