"""Run a study (one process or several workers), its selection-bias statistics, the one test look, its plots, and
the command line `python -m phoenix_rl.research.hpo`."""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import polars as pl
from optuna.trial import TrialState

from phoenix_rl.config import TrainConfig
from phoenix_rl.evaluation.backtest import run_backtest
from phoenix_rl.evaluation.metrics import daily_pnl
from phoenix_rl.research.hpo import objective
from phoenix_rl.research.hpo.objective import Log, make_objective, train_only, validation_returns
from phoenix_rl.research.hpo.settings import StudySettings, check_settings, load_settings
from phoenix_rl.research.hpo.storage import STORAGE_ENV, optuna_storage, storage_url
from phoenix_rl.research.search_space import trial_config
from phoenix_rl.research.statistics import deflated_sharpe_ratio, pbo_cscv, sharpe_columns, total_columns
from phoenix_rl.train.trainer import select_window

TEST_ATTR = "test_result"


FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def finished_trials(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def run_study(
    settings: StudySettings,
    features: pl.DataFrame,
    study_name: str,
    storage: optuna.storages.BaseStorage | str,
    n_trials: int,
    timeout: float | None = None,
    worker: int = 0,
    log: Log | None = None,
) -> optuna.Study:
    """Create or resume the study and run trials until it holds `n_trials` finished ones (or `timeout` s).

    `features` may hold every window: the objective selects the train and validation rows and nothing else.
    Several calls (processes, machines) on one storage share the work; each passes its own `worker` index.
    """
    study = optuna.create_study(
        study_name=study_name,
        storage=storage,
        sampler=settings.sampler(worker),
        pruner=settings.make_pruner(),
        direction="maximize",
        load_if_exists=True,
    )
    check_settings(study, settings)
    study.sampler = settings.sampler(worker, len(study.trials))
    remaining = n_trials - finished_trials(study)
    if log is not None:
        log(f"study {study_name}: {len(study.trials)} trials so far; running up to {max(remaining, 0)} more")
    if remaining > 0:
        study.optimize(
            make_objective(settings, features, worker),
            n_trials=remaining,
            timeout=timeout,
            callbacks=[optuna.study.MaxTrialsCallback(n_trials, states=FINISHED)],
            catch=(ValueError,),  # a configuration the data cannot hold (e.g. a lookback longer than a session)
            gc_after_trial=True,
        )
    return study


def _study_worker(
    settings: StudySettings,
    features: pl.DataFrame,
    study_name: str,
    lake_root: str | None,
    n_trials: int,
    timeout: float | None,
    worker: int,
    url: str | None = None,
) -> None:
    """One worker process (or Ray task) of `run_study_workers`: opens the storage itself (storages do not
    pickle) from the URL resolved by the caller (a Ray worker does not see the caller's environment)."""
    storage, _ = optuna_storage(study_name, lake_root=lake_root, url=url)
    run_study(settings, features, study_name, storage, n_trials, timeout, worker, log=print)


def run_study_workers(
    settings: StudySettings,
    features: pl.DataFrame,
    study_name: str,
    lake_root: str | None,
    n_trials: int,
    timeout: float | None = None,
    workers: int = 1,
    log: Log | None = None,
    ray_address: str | None = None,
) -> optuna.Study:
    """`run_study` on `optuna_storage(study_name, lake_root)` in `workers` processes at once (phoenix_rl.train.pool:
    spawned, one torch thread each; 1: in this process), worker indices 0..workers-1. The study is created and
    its settings checked here first, so the workers only join it. With several workers the trial sequence
    depends on their timing (constant-liar TPE), so a seeded study repeats exactly only with one.

    With a Ray address (`ray_address`, else $RAY_ADDRESS) the workers are `workers` Ray tasks on that cluster
    (a GPU each where it has GPUs), each running trials until the study holds `n_trials`; a task whose node is
    lost is resubmitted and joins the study again (an RDB heartbeat marks the lost trial FAIL). They share the
    study through its RDB storage ($PHOENIX_OPTUNA_STORAGE, e.g. PostgreSQL): a journal file on this machine's
    disk is refused as soon as the cluster has more than one node."""
    from phoenix_rl.train.pool import job_result, training_executor
    from phoenix_rl.train.ray_pool import RayExecutor

    url = storage_url()
    storage, label = optuna_storage(study_name, lake_root=lake_root, url=url)
    study = run_study(settings, features, study_name, storage, 0)  # create or check; no trial
    with training_executor(workers, ray_address, gpus_per_job=None, log=log) as pool:
        if isinstance(pool, RayExecutor) and url is None and pool.alive_nodes() > 1:
            raise ValueError(
                f"hpo: study {study_name!r} is stored in {label}, a file on this machine, but its workers would run "
                f"on a {pool.alive_nodes()}-node Ray cluster: set {STORAGE_ENV} to a database every node reaches "
                "(e.g. postgresql://user@host/optuna)"
            )
        if log is not None:
            remaining = max(n_trials - finished_trials(study), 0)
            where = "Ray task(s)" if isinstance(pool, RayExecutor) else "worker(s)"
            log(f"study {study_name}: {len(study.trials)} trials so far; up to {remaining} more on {workers} {where}")
        jobs = [
            pool.submit(_study_worker, settings, features, study_name, lake_root, n_trials, timeout, k, url)
            for k in range(workers)
        ]
        for k, job in enumerate(jobs):
            job_result(job, f"HPO worker {k} of study {study_name!r}")
    return optuna.load_study(study_name=study_name, storage=storage)


def _returns_matrix(study: optuna.Study, states: tuple[TrialState, ...] = FINISHED) -> tuple[np.ndarray, list[int]]:
    """T validation days x N trials in `states` (complete and pruned by default, each with its last evaluation):
    daily $ PnL over the fixed capital (phoenix_rl.evaluation.metrics.daily_returns)."""
    cols, numbers, days = [], [], None
    for t in study.get_trials(deepcopy=False, states=states):
        r, d = t.user_attrs.get("val_daily_returns"), t.user_attrs.get("val_trade_dates")
        if r is None:
            continue
        if days is None:
            days = d
        if d != days:  # cannot happen within one study (same validation window), refuse rather than misalign
            raise ValueError(f"hpo: trial {t.number} was validated on other days than the study's first trial")
        cols.append(r)
        numbers.append(t.number)
    return (np.asarray(cols, dtype=float).T if cols else np.zeros((0, 0))), numbers


def study_statistics(study: optuna.Study, n_splits: int = 16) -> dict[str, Any]:
    """Trial counts, and the selection-bias statistics of the best trial's validation returns:

    deflated Sharpe ratio (statistics.deflated_sharpe_ratio: per-day Sharpe ratios of ALL finished trials,
    pruned included, N = their number plus the failed trials, raw kurtosis) and PBO by CSCV with the study's
    own selection: its candidates (the COMPLETE trials, the only ones `best_trial` can pick) ranked by its own
    metric (total return on the fixed capital = the sum of the fixed-capital daily returns, `total_columns`),
    over the T days x N complete trials matrix with the largest even number of splits <= min(n_splits, T). A
    statistic that is undefined here (fewer than 3 days, constant returns, fewer than 2 trials) is None with
    the reason in `<name>_note`.
    """
    states = [t.state for t in study.get_trials(deepcopy=False)]
    out: dict[str, Any] = {
        "n_trials": len(states),
        "n_complete": states.count(TrialState.COMPLETE),
        "n_pruned": states.count(TrialState.PRUNED),
        "n_failed": states.count(TrialState.FAIL),
        "n_running": states.count(TrialState.RUNNING),
        "dsr": None,
        "dsr_note": "",
        "pbo": None,
        "pbo_note": "",
    }
    matrix, numbers = _returns_matrix(study)
    out["n_trials_in_statistics"] = len(numbers)
    if out["n_complete"] == 0:
        out["dsr_note"] = out["pbo_note"] = "no complete trial"
        return out
    best = study.best_trial
    try:
        if matrix.shape[0] < 3:
            raise ValueError(f"{matrix.shape[0]} validation day(s); the DSR needs >= 3 daily returns")
        # N counts every trial tried, the failed ones too (they were tried and lost): fewer trials would deflate
        # the best trial's Sharpe ratio less; the Sharpe ratios' variance comes from the trials with returns
        out["dsr_n_trials"] = len(numbers) + out["n_failed"]
        dsr = deflated_sharpe_ratio(best.user_attrs["val_daily_returns"], sharpe_columns(matrix), out["dsr_n_trials"])
        out["dsr"] = float(dsr["dsr"])
        out["dsr_detail"] = {k: float(v) for k, v in dsr.items()}
    except (ValueError, KeyError) as exc:
        out["dsr_note"] = f"n/a: {exc}"
    candidates, _ = _returns_matrix(study, (TrialState.COMPLETE,))
    splits = min(n_splits, candidates.shape[0]) // 2 * 2
    try:
        pbo = pbo_cscv(candidates, n_splits=splits, metric=total_columns)
        out["pbo"] = float(pbo["pbo"])
        out["pbo_detail"] = {
            "n_splits": splits,
            "n_combinations": pbo["n_combinations"],
            "n_candidates": candidates.shape[1],
            "metric": "validation total return on fixed capital (the study's objective), complete trials",
        }
    except ValueError as exc:
        out["pbo_note"] = f"n/a: {exc}"
    return out


def score_best_on_test(
    study: optuna.Study,
    settings: StudySettings,
    features: pl.DataFrame,
    out_dir: str | Path | None = None,
    log: Log | None = None,
) -> dict[str, Any]:
    """Retrain the best trial's config on the TRAIN window (same seed) and backtest it once on the TEST window.

    The result is stored in the study (`test_result`) and returned as stored while the best trial is the same:
    the test window is looked at once per selected model, never while searching. With `out_dir`, the
    retrained model.zip and config.json stay there.
    """
    from stable_baselines3 import SAC

    from phoenix_rl.env.trading_env import EnvConfig

    best = study.best_trial
    stored = study.user_attrs.get(TEST_ATTR)
    if stored is not None and stored.get("trial") == best.number:
        if log is not None:
            log(f"best trial {best.number} was scored on the test window before: reusing that result")
        return stored
    base = settings.base
    cfg = trial_config(base, best.user_attrs["params"])
    test_rows = select_window(features, base.test_start, base.test_end)
    val_rows = select_window(features, base.val_start, base.val_end)
    if test_rows.height < 2:
        raise ValueError(f"hpo: the test window {base.test_start}..{base.test_end} has {test_rows.height} rows")
    with tempfile.TemporaryDirectory(prefix="phoenix-hpo-best-") as tmp:
        out = Path(out_dir) if out_dir is not None else Path(tmp)
        result = objective.train(train_only(cfg), select_window(features, base.train_start, base.train_end), out)
        saved = json.loads(result.config_path.read_text())
        env_cfg = EnvConfig(**saved["env_config"])
        model = SAC.load(result.model_path, device="cpu")
        val = run_backtest(model, val_rows, env_cfg, capital=cfg.capital)
        test = run_backtest(model, test_rows, env_cfg, capital=cfg.capital)
    test_returns, test_days = validation_returns(test, cfg.capital)
    test_pnl = daily_pnl(test.equity, cfg.capital)  # $ per contract: what fixed-capital totals add up
    record = {
        "trial": best.number,
        "params": best.params,
        "train_config": cfg.to_dict(),
        "val_value_search": best.value,
        "val_value_retrained": float(val.metrics["total_return"]),
        "test_metrics": test.metrics,
        "test_daily_returns": test_returns,
        "test_trade_dates": test_days,
        "test_daily_pnl_usd": [float(x) for x in test_pnl["pnl_usd"]],
        "test_daily_cost_usd": [float(x) for x in test_pnl["cost_usd"]],
    }
    study.set_user_attr(TEST_ATTR, record)
    if log is not None:
        log(f"best trial {best.number} retrained; test total return {test.metrics['total_return']:.4%}")
    return record


def study_plots(study: optuna.Study) -> dict[str, bytes]:
    """PNG bytes of Optuna's matplotlib plots: optimization history, and parameter importances with >= 2
    complete trials (an importance that cannot be computed, e.g. all values equal, is left out)."""
    import matplotlib
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    plots: dict[str, bytes] = {}
    n_complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    makers: dict[str, Callable[[optuna.Study], Any]] = {"optimization_history": ovm.plot_optimization_history}
    if n_complete >= 2:
        makers["param_importances"] = ovm.plot_param_importances
    with warnings.catch_warnings(), matplotlib.rc_context():  # experimental warnings; Optuna sets a global style
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for name, make in makers.items():
            try:
                ax = make(study)
            except (ValueError, RuntimeError, ZeroDivisionError, ImportError):
                continue
            fig = ax.figure
            fig.set_size_inches(9, 5)
            fig.tight_layout()
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=90)
            plt.close(fig)
            plots[name] = buf.getvalue()
    return plots


def _read_features(args: argparse.Namespace, base: TrainConfig) -> pl.DataFrame:
    if args.features:
        return pl.read_parquet(args.features)
    from phoenix_assets.lib.io.artifacts import trading_rows  # the lake reader (no Dagster import)
    from phoenix_assets.lib.io.lake import Lake

    starts = [s for s, _ in base.windows().values() if s]
    ends = [e for _, e in base.windows().values() if e]
    return trading_rows(Lake(args.lake), min(starts), max(ends))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m phoenix_rl.research.hpo", description=__doc__.splitlines()[0])
    parser.add_argument("--study", required=True, help="study name")
    parser.add_argument("--lake", help="local lake root: journal storage (unless $PHOENIX_OPTUNA_STORAGE) and features")
    parser.add_argument("--features", help="features_1m rows as one parquet file (instead of reading --lake)")
    parser.add_argument("--storage", help=f"storage URL (default ${STORAGE_ENV}, else the lake's journal)")
    parser.add_argument("--settings", help="StudySettings JSON to create the study with (joining: read from it)")
    parser.add_argument("--n-trials", type=int, required=True, help="finished trials the study should hold")
    parser.add_argument("--timeout", type=float, default=None, help="seconds this worker may run")
    parser.add_argument("--worker", type=int, default=0, help="worker index (seeds its sampler differently)")
    args = parser.parse_args(argv)
    if not (args.lake or args.features):
        parser.error("give --lake or --features")
    storage, label = optuna_storage(args.study, args.lake, args.storage)
    if args.settings:
        settings = StudySettings.from_dict(json.loads(Path(args.settings).read_text()))
    else:
        settings = load_settings(args.study, storage)
    features = _read_features(args, settings.base)
    study = run_study(settings, features, args.study, storage, args.n_trials, args.timeout, args.worker, log=print)
    stats = study_statistics(study)
    summary = {k: v for k, v in stats.items() if not isinstance(v, dict)}
    print(json.dumps({"storage": label, "worker": args.worker, **summary}, default=str), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
