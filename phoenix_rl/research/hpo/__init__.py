"""Hyper-parameter search of SAC + Mamba with Optuna, judged on the validation window only.

    python -m phoenix_rl.research.hpo --study NAME --lake LAKE_ROOT --n-trials 40 --worker 1   # join a study
    python -m phoenix_rl.research.hpo --study NAME --features f.parquet --settings s.json --n-trials 20   # new

A trial is the study's base `TrainConfig` (phoenix_rl/config.py, the one definition of every setting) with the
sampled values replaced in it (`trial_config`): it trains on the TRAIN window only (`train` never sees the
validation or test rows) and a callback backtests the policy on the VALIDATION window every `eval_every` steps
and at the end. The objective is the validation total return after costs, not a Sharpe or Sortino ratio: those
are n/a on windows shorter than 20 trade dates (phoenix_rl/evaluation/metrics.py), and validation windows
usually are. The intermediate validation returns are reported to the pruner (MedianPruner), and every
evaluation stores the trial's validation daily returns as user attributes, so pruned trials, which were draws
of the search as much as completed ones, enter the deflated Sharpe ratio and the PBO (`study_statistics`).

Sampler: multivariate TPE (Falkner et al. 2018 via Optuna's TPESampler(multivariate=True); constant liar for
parallel workers). Search space: `SearchSpace`, ranges as rl-baselines3-zoo's SAC sampler
(`rl_zoo3/hyperparams_opt.py`: gamma, tau, batch and train_freq categorical lists with gradient_steps =
train_freq, net_arch small [64, 64] / medium [256, 256]) with a log-uniform learning rate in [1e-5, 1e-2],
plus the Mamba extractor, the lookback, the action mode and the reward shaping: the weights of
`phoenix_rl.env.rewards` (recorded under `params["reward"]`, user attribute `reward`) go into the trial's EnvConfig
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

The package by concern: `storage` (where a study lives), `settings` (what defines it, stored in it),
`objective` (one trial: train on TRAIN, judge on VALIDATION) and `study` (run, statistics, the one test look,
plots, the command line). The names below are the package's API.
"""

from phoenix_rl.research.hpo.objective import OBJECTIVE, ValidationCallback, make_objective
from phoenix_rl.research.hpo.settings import StudySettings, load_settings
from phoenix_rl.research.hpo.storage import STORAGE_ENV, journal_storage, optuna_storage
from phoenix_rl.research.hpo.study import (
    FINISHED,
    finished_trials,
    run_study,
    run_study_workers,
    score_best_on_test,
    study_plots,
    study_statistics,
)
from phoenix_rl.research.search_space import NET_ARCHS, SearchSpace, sample_params, trial_config

__all__ = [
    "FINISHED",
    "NET_ARCHS",
    "OBJECTIVE",
    "STORAGE_ENV",
    "SearchSpace",
    "StudySettings",
    "ValidationCallback",
    "finished_trials",
    "journal_storage",
    "load_settings",
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
