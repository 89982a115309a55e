"""Hyper-parameter search of SAC + Mamba with Optuna, judged on the validation window only.

    python -m phoenix_rl.hpo --study NAME --lake LAKE_ROOT --n-trials 40 --worker 1   # join an existing study
    python -m phoenix_rl.hpo --study NAME --features f.parquet --settings s.json --n-trials 20   # create one

A trial is the study's base `TrainConfig` (phoenix_rl/config.py, the one definition of every setting) with the
sampled values replaced in it (`trial_config`): it trains on the TRAIN window only (`train` never sees the
validation or test rows) and a callback backtests the policy on the VALIDATION window every `eval_every` steps
and at the end. The objective is the validation total return after costs, not a Sharpe or Sortino ratio: those
are n/a on windows shorter than 20 trade dates (phoenix_rl/metrics.py), and validation windows usually are. The
intermediate validation returns are reported to the pruner (MedianPruner), and every evaluation stores the
trial's validation daily returns as user attributes, so pruned trials, which were draws of the search as much
as completed ones, enter the deflated Sharpe ratio and the PBO (`study_statistics`).

Sampler: multivariate TPE (Falkner et al. 2018 via Optuna's TPESampler(multivariate=True); constant liar for
parallel workers). Search space: `SearchSpace`, ranges as rl-baselines3-zoo's SAC sampler
(`rl_zoo3/hyperparams_opt.py`: gamma, tau, batch and train_freq categorical lists with gradient_steps =
train_freq, net_arch small [64, 64] / medium [256, 256]) with a log-uniform learning rate in [1e-5, 1e-2],
plus the Mamba extractor, the lookback, the action mode and the reward shaping: the weights of
`phoenix_rl.rewards` (recorded under `params["reward"]`, user attribute `reward`) go into the trial's EnvConfig
(win_bonus, loss_penalty, hold_penalty, hold_bars, differential_reward), beside the env's turnover and
drawdown penalties.

Storage (`optuna_storage`): `$PHOENIX_OPTUNA_STORAGE` (an SQLAlchemy URL such as postgresql://user@host/db) when
set, so workers on several machines share one study; else a journal file `<lake>/optuna/<study>.log`, which
processes of one machine share. Studies are created with load_if_exists, so a re-run resumes: it runs trials
until the study holds `n_trials` finished (complete or pruned) ones. With an RDB storage a heartbeat marks a
killed worker's trial FAIL; a journal study reports such a trial as still running.

The study's settings (base config, search space, evaluation cadence, pruner, seed) are stored in the study at
creation; a worker joining it reads them from there, and a re-run with different settings is refused (use a
new study name). The best trial is retrained and scored on the TEST window once (`score_best_on_test`): the
result is stored in the study and reused by every later call while the best trial stays the same.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import io
import json
import os
import socket
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import polars as pl
from optuna.trial import TrialState
from stable_baselines3.common.callbacks import BaseCallback

from phoenix_rl.backtest import run_backtest
from phoenix_rl.config import TrainConfig
from phoenix_rl.metrics import daily_returns
from phoenix_rl.research_stats import deflated_sharpe_ratio, pbo_cscv, sharpe_columns
from phoenix_rl.search_space import NET_ARCHS, SearchSpace, sample_params, trial_config
from phoenix_rl.train import select_window, train

__all__ = [
    "NET_ARCHS",
    "OBJECTIVE",
    "STORAGE_ENV",
    "SearchSpace",
    "StudySettings",
    "ValidationCallback",
    "journal_storage",
    "make_objective",
    "optuna_storage",
    "run_study",
    "run_study_workers",
    "sample_params",
    "score_best_on_test",
    "study_plots",
    "study_statistics",
    "trial_config",
]

STORAGE_ENV = "PHOENIX_OPTUNA_STORAGE"
STUDY_DIR = "optuna"
OBJECTIVE = "validation total return after costs (maximised)"
SETTINGS_ATTR = "settings"
TEST_ATTR = "test_result"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
Log = Callable[[str], None]


@dataclass(frozen=True)
class StudySettings:
    """What defines a study besides its name; stored in the study so every worker runs the same search."""

    base: TrainConfig
    space: SearchSpace = field(default_factory=SearchSpace)
    eval_every: int = 1_000  # environment steps between validation backtests; 0: only at the end
    pruner: str = "median"  # "median" or "none"
    seed: int = 1  # TPE seed (offset per worker and per resumption); every trial trains with base.seed

    def __post_init__(self) -> None:
        problems = []
        windows = self.base.windows()
        unset = [f"{w}_{e}" for w, (s, t) in windows.items() for e, v in (("start", s), ("end", t)) if v is None]
        if unset:  # their order and embargo are checked by TrainConfig itself (phoenix_rl.windows)
            problems.append(f"the windows {unset} must be set (ISO trade dates, inclusive)")
        if self.eval_every < 0:
            problems.append(f"eval_every must be >= 0 (got {self.eval_every})")
        if self.pruner not in ("median", "none"):
            problems.append(f"pruner must be 'median' or 'none' (got {self.pruner!r})")
        if problems:
            raise ValueError("StudySettings: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return {
            "base": self.base.to_dict(),
            "space": self.space.to_dict(),
            "eval_every": self.eval_every,
            "pruner": self.pruner,
            "seed": self.seed,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StudySettings:
        return cls(
            base=TrainConfig.from_dict(d["base"]),
            space=SearchSpace.from_dict(d["space"]),
            eval_every=int(d["eval_every"]),
            pruner=str(d["pruner"]),
            seed=int(d["seed"]),
        )

    def sampler(self, worker: int = 0, trials_before: int = 0) -> optuna.samplers.BaseSampler:
        """Multivariate TPE seeded per worker and per resumption (a resumed study must not redraw the random
        start-up points it already tried), deterministic for a given worker and study state."""
        seed = self.seed + 1000 * worker + 1_000_003 * trials_before
        return optuna.samplers.TPESampler(multivariate=True, seed=seed, constant_liar=True, n_startup_trials=5)

    def make_pruner(self) -> optuna.pruners.BasePruner:
        if self.pruner == "none":
            return optuna.pruners.NopPruner()
        # as rl-baselines3-zoo: no pruning before a third of the training (early returns are mostly noise)
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=self.base.total_timesteps // 3)


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _with_driver(url: str) -> str:
    """postgresql://... without a driver -> postgresql+psycopg2://... (SQLAlchemy 2.1 defaults to psycopg 3;
    Phoenix depends on psycopg2-binary). Any other URL as given."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        return parsed.set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)
    return url


def optuna_storage(
    study_name: str, lake_root: str | None = None, url: str | None = None
) -> tuple[optuna.storages.BaseStorage, str]:
    """(storage, label with any password redacted). `url`, else $PHOENIX_OPTUNA_STORAGE (read now, not at
    import), else the journal file <lake_root>/optuna/<study_name>.log (a local lake only)."""
    url = url or os.environ.get(STORAGE_ENV) or None
    if url:
        # heartbeat: a trial whose worker died is marked FAIL when a worker next starts optimising
        with warnings.catch_warnings():  # heartbeat_interval is "experimental" in Optuna 5.0
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            storage = optuna.storages.RDBStorage(
                _with_driver(url), engine_kwargs={"pool_pre_ping": True}, heartbeat_interval=60, grace_period=180
            )
        return storage, _redact(url)
    return journal_storage(study_name, lake_root)


def journal_storage(study_name: str, lake_root: str | None) -> tuple[optuna.storages.BaseStorage, str]:
    """The journal file <lake_root>/optuna/<study_name>.log (processes of one machine share it)."""
    if lake_root is None or "://" in lake_root:
        raise ValueError(
            f"hpo: no Optuna storage for study {study_name!r}: set {STORAGE_ENV} (e.g. postgresql://user@host/db), "
            f"or use a local lake (the journal file lives at <lake>/{STUDY_DIR}/<study>.log; lake: {lake_root!r})"
        )
    path = Path(lake_root) / STUDY_DIR / f"{study_name}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path))), f"journal:{path}"


def _validation_returns(result: Any, capital: float) -> tuple[list[float], list[str]]:
    r = daily_returns(result.equity, capital)
    days = result.equity["trade_date"].unique(maintain_order=True).sort().cast(pl.Utf8).to_list()
    return [float(x) for x in r], days


class ValidationCallback(BaseCallback):
    """A deterministic backtest of the current policy on the validation rows (same env config as training,
    whole-data mode) every `eval_every` steps before the last, and once after the last gradient step (SB3 calls
    `on_step` before that step's update, so the final value is taken at training end: it is the saved model's).
    Records the value and the daily returns on the trial (user attributes `val_*`), reports the value for pruning
    and prunes (raises TrialPruned) when the pruner says so (rl-baselines3-zoo's TrialEvalCallback pattern)."""

    def __init__(
        self, trial: optuna.Trial, val_rows: pl.DataFrame, eval_every: int, total_timesteps: int, capital: float
    ) -> None:
        super().__init__()
        self.trial, self.val_rows, self.capital = trial, val_rows, capital
        self.eval_every, self.total_timesteps = eval_every, total_timesteps
        self.value: float | None = None

    def evaluate(self, allow_prune: bool) -> None:
        env_cfg = self.training_env.get_attr("config")[0]
        result = run_backtest(self.model, self.val_rows, env_cfg, capital=self.capital)
        self.value = float(result.metrics["total_return"])
        returns, days = _validation_returns(result, self.capital)
        step = int(self.num_timesteps)
        self.trial.set_user_attr("val_step", step)
        self.trial.set_user_attr("val_total_return", self.value)
        self.trial.set_user_attr("val_daily_returns", returns)
        self.trial.set_user_attr("val_trade_dates", days)
        self.trial.set_user_attr("val_metrics", result.metrics)
        self.trial.report(self.value, step)
        if allow_prune and self.trial.should_prune():
            raise optuna.TrialPruned(f"validation total return {self.value:.4%} at step {step}")

    def _on_step(self) -> bool:
        n = self.num_timesteps
        if self.eval_every and n % self.eval_every == 0 and n < self.total_timesteps:
            self.evaluate(allow_prune=True)
        return True

    def _on_training_end(self) -> None:
        self.evaluate(allow_prune=False)


def _train_only(cfg: TrainConfig) -> TrainConfig:
    """The config `train` gets in a trial: no val/test windows (validation is the callback's job)."""
    return dataclasses.replace(cfg, val_start=None, val_end=None, test_start=None, test_end=None)


def make_objective(settings: StudySettings, features: pl.DataFrame, worker: int = 0) -> Callable[[optuna.Trial], float]:
    """Train on the TRAIN rows only, return the last validation value (module doc). The test rows never enter."""
    base = settings.base
    train_rows = select_window(features, base.train_start, base.train_end)
    val_rows = select_window(features, base.val_start, base.val_end)
    if val_rows.height < 2:
        raise ValueError(f"hpo: the validation window {base.val_start}..{base.val_end} has {val_rows.height} rows")

    def objective(trial: optuna.Trial) -> float:
        params = sample_params(trial, settings.space)
        trial.set_user_attr("params", params)
        trial.set_user_attr("worker", f"{socket.gethostname()}/{os.getpid()}/{worker}")
        trial.set_user_attr("reward", params["reward"])
        cfg = trial_config(base, params)
        callback = ValidationCallback(trial, val_rows, settings.eval_every, cfg.total_timesteps, cfg.capital)
        with tempfile.TemporaryDirectory(prefix="phoenix-hpo-") as tmp:
            train(_train_only(cfg), train_rows, tmp, callbacks=[callback])
        assert callback.value is not None  # _on_training_end evaluated
        return callback.value

    return objective


def _check_settings(study: optuna.Study, settings: StudySettings) -> None:
    stored = study.user_attrs.get(SETTINGS_ATTR)
    if stored is None:
        study.set_user_attr(SETTINGS_ATTR, settings.to_dict())
        return
    mine = json.loads(json.dumps(settings.to_dict()))
    if stored != mine:
        diff = sorted(k for k in mine if stored.get(k) != mine[k])
        raise ValueError(
            f"hpo: study {study.study_name!r} was created with other settings ({diff} differ): its trials would "
            "not be comparable; use a new study name, or join it without settings (python -m phoenix_rl.hpo)"
        )


def load_settings(study_name: str, storage: optuna.storages.BaseStorage) -> StudySettings:
    """The settings a study was created with (a worker joining it)."""
    study = optuna.load_study(study_name=study_name, storage=storage)
    stored = study.user_attrs.get(SETTINGS_ATTR)
    if stored is None:
        raise ValueError(f"hpo: study {study_name!r} has no stored settings; start it with --config")
    return StudySettings.from_dict(stored)


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
    _check_settings(study, settings)
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
) -> None:
    """One worker process of `run_study_workers`: opens the storage itself (storages do not pickle)."""
    storage, _ = optuna_storage(study_name, lake_root=lake_root)
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
) -> optuna.Study:
    """`run_study` on `optuna_storage(study_name, lake_root)` in `workers` processes at once (phoenix_rl.pool:
    spawned, one torch thread each; 1: in this process), worker indices 0..workers-1. The study is created and
    its settings checked here first, so the workers only join it. With several workers the trial sequence
    depends on their timing (constant-liar TPE), so a seeded study repeats exactly only with one."""
    from phoenix_rl.pool import job_result, training_pool

    storage, _ = optuna_storage(study_name, lake_root=lake_root)
    study = run_study(settings, features, study_name, storage, 0)  # create or check; no trial
    if log is not None:
        remaining = max(n_trials - finished_trials(study), 0)
        log(f"study {study_name}: {len(study.trials)} trials so far; up to {remaining} more on {workers} worker(s)")
    with training_pool(workers) as pool:
        jobs = [
            pool.submit(_study_worker, settings, features, study_name, lake_root, n_trials, timeout, k)
            for k in range(workers)
        ]
        for k, job in enumerate(jobs):
            job_result(job, f"HPO worker {k} of study {study_name!r}")
    return optuna.load_study(study_name=study_name, storage=storage)


def _returns_matrix(study: optuna.Study) -> tuple[np.ndarray, list[int]]:
    """T validation days x N trials (complete and pruned, each with its last evaluation)."""
    cols, numbers, days = [], [], None
    for t in study.get_trials(deepcopy=False, states=FINISHED):
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

    deflated Sharpe ratio (research_stats.deflated_sharpe_ratio: per-day Sharpe ratios of ALL finished trials,
    pruned included, N = their number, raw kurtosis) and PBO by CSCV over the T days x N trials matrix, with
    the largest even number of splits <= min(n_splits, T). A statistic that is undefined here (fewer than 3
    days, constant returns, fewer than 2 trials) is None with the reason in `<name>_note`.
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
        dsr = deflated_sharpe_ratio(best.user_attrs["val_daily_returns"], sharpe_columns(matrix), len(numbers))
        out["dsr"] = float(dsr["dsr"])
        out["dsr_detail"] = {k: float(v) for k, v in dsr.items()}
    except (ValueError, KeyError) as exc:
        out["dsr_note"] = f"n/a: {exc}"
    splits = min(n_splits, matrix.shape[0]) // 2 * 2
    try:
        pbo = pbo_cscv(matrix, n_splits=splits)
        out["pbo"] = float(pbo["pbo"])
        out["pbo_detail"] = {"n_splits": splits, "n_combinations": pbo["n_combinations"]}
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

    from phoenix_rl.env import EnvConfig

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
        result = train(_train_only(cfg), select_window(features, base.train_start, base.train_end), out)
        saved = json.loads(result.config_path.read_text())
        env_cfg = EnvConfig(**saved["env_config"])
        model = SAC.load(result.model_path, device="cpu")
        val = run_backtest(model, val_rows, env_cfg, capital=cfg.capital)
        test = run_backtest(model, test_rows, env_cfg, capital=cfg.capital)
    test_returns, test_days = _validation_returns(test, cfg.capital)
    record = {
        "trial": best.number,
        "params": best.params,
        "train_config": cfg.to_dict(),
        "val_value_search": best.value,
        "val_value_retrained": float(val.metrics["total_return"]),
        "test_metrics": test.metrics,
        "test_daily_returns": test_returns,
        "test_trade_dates": test_days,
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
    from phoenix_assets.lib.lake import Lake  # the lake reader (no Dagster import)

    frame = Lake(args.lake).scan("features_1m")
    starts = [s for s, _ in base.windows().values() if s]
    ends = [e for _, e in base.windows().values() if e]
    frame = frame.filter(
        pl.col("trade_date").is_between(dt.date.fromisoformat(min(starts)), dt.date.fromisoformat(max(ends)))
    )
    return frame.collect().sort("ts")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m phoenix_rl.hpo", description=__doc__.splitlines()[0])
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
