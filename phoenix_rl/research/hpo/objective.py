"""One trial: train on the TRAIN window only, judge on the VALIDATION window (package doc)."""

from __future__ import annotations

import dataclasses
import os
import socket
import tempfile
from collections.abc import Callable
from typing import Any

import optuna
import polars as pl
from stable_baselines3.common.callbacks import BaseCallback

from phoenix_rl.config import TrainConfig
from phoenix_rl.evaluation.backtest import run_backtest
from phoenix_rl.evaluation.metrics import daily_returns
from phoenix_rl.research.hpo.settings import StudySettings
from phoenix_rl.research.search_space import sample_params, trial_config
from phoenix_rl.train.trainer import select_window, train

OBJECTIVE = "validation total return after costs (maximised)"


Log = Callable[[str], None]


def validation_returns(result: Any, capital: float) -> tuple[list[float], list[str]]:
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
        returns, days = validation_returns(result, self.capital)
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


def train_only(cfg: TrainConfig) -> TrainConfig:
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
            train(train_only(cfg), train_rows, tmp, callbacks=[callback])
        assert callback.value is not None  # _on_training_end evaluated
        return callback.value

    return objective
