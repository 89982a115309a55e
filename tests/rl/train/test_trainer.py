"""The training entry point: train() and the CLI write a loadable model, its config (with hashes), metrics."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import torch
from stable_baselines3 import SAC
from stable_baselines3.common.callbacks import BaseCallback

from feature_specs import load_feature_set
from phoenix_rl.env.trading_env import EnvConfig
from phoenix_rl.evaluation.backtest import run_backtest
from phoenix_rl.testing import synthetic_features
from phoenix_rl.train.trainer import (
    LossWatch,
    TrainConfig,
    UnhealthyTrainingError,
    main,
    sac_kwargs,
    train,
    training_health,
    training_health_problems,
)
from tests.conftest import TINY_MODEL_CONFIG

TINY = {
    "feature_set": "phase2_ofi",
    "train_end": "2024-03-13",
    "val_start": "2024-03-14",
    "val_end": "2024-03-14",
    "test_start": "2024-03-15",
    "total_timesteps": 200,
    "learning_starts": 50,
    "batch_size": 16,
    "buffer_size": 1_000,
    "d_model": 8,
    "d_state": 4,
    "n_layers": 1,
    "net_arch": [16, 16],
    "env": {"lookback": 8, "max_steps": 60},
    "log_every": 100,
}


@pytest.fixture(scope="module")
def features() -> pl.DataFrame:
    cols = load_feature_set("phase2_ofi").columns
    f = synthetic_features(cols, n_sessions=4, bars_per_session=120)
    return f.with_columns(feature_spec_hash=pl.lit("abc123"))


def test_train_writes_model_config_metrics_and_forwards_them(
    features: pl.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    temp = tmp_path / "tempdir"  # SB3's default logger would leave an empty SB3-<time> folder here per learn()
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    seen: list[tuple[int, dict[str, float]]] = []
    result = train(TrainConfig.from_dict(TINY), features, tmp_path, on_metrics=lambda s, m: seen.append((s, m)))
    assert list(temp.glob("SB3-*")) == []
    assert result.timesteps == 200 and result.steps_per_s > 0
    assert [s for s, m in seen if "timesteps" in m] == [100, 200]
    assert "train/critic_loss" in seen[-2][1] and "steps_per_s" in seen[-2][1]
    assert result.val_metrics is not None and "val/sortino" in seen[-1][1]
    cfg = json.loads(result.config_path.read_text())
    assert cfg["feature_spec_hash"] == "abc123"
    assert cfg["feature_set_content_hash"] == load_feature_set("phase2_ofi").content_hash
    assert cfg["feature_columns"] == list(load_feature_set("phase2_ofi").columns)
    assert cfg["train_config"] == TrainConfig.from_dict(TINY).to_dict()
    health = cfg["training_health"]
    assert health["gradient_steps"] == 150  # SB3 trains at steps 51..200 (> learning_starts 50)
    assert health["non_finite_losses"] == {} and health["non_finite_parameter_count"] == 0
    assert training_health_problems(health) == []
    assert len(result.metrics_path.read_text().splitlines()) == 2
    # the saved model backtests on the held-out test day
    model = SAC.load(result.model_path)
    env_cfg = EnvConfig(**{**cfg["env_config"], "feature_columns": tuple(cfg["feature_columns"])})
    test_rows = features.filter(pl.col("trade_date") >= pl.date(2024, 3, 15))
    res = run_backtest(model, test_rows, env_cfg)
    assert res.equity.height == test_rows.height


def test_cli_and_config_validation(features: pl.DataFrame, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    features.write_parquet(tmp_path / "f.parquet")
    (tmp_path / "cfg.json").write_text(json.dumps({**TINY, "total_timesteps": 60, "val_start": None, "val_end": None}))
    rc = main(
        [
            "--config",
            str(tmp_path / "cfg.json"),
            "--features",
            str(tmp_path / "f.parquet"),
            "--out",
            str(tmp_path / "run"),
        ]
    )
    assert rc == 0 and (tmp_path / "run" / "model.zip").exists()
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["result"]["timesteps"] == 60 and last["result"]["val_metrics"] is None
    with pytest.raises(ValueError, match="unknown keys"):
        TrainConfig.from_dict({"learning_rat": 1e-3})
    with pytest.raises(ValueError, match="lacks columns"):
        train(TrainConfig.from_dict(TINY), features.drop("spread_zscore"), tmp_path / "bad")


def test_sac_kwargs_follow_the_config(features: pl.DataFrame) -> None:
    """SAC is built from the config alone; share_features_extractor gives actor and critic one extractor."""
    from phoenix_rl.agent.extractor import MambaFeaturesExtractor
    from phoenix_rl.env.trading_env import MnqTradingEnv
    from phoenix_rl.train.trainer import retain_freed_memory, sac_kwargs

    cfg = TrainConfig.from_dict(TINY)
    assert TrainConfig().torch_threads == 1 and not TrainConfig().share_features_extractor
    env_cfg = cfg.env_config(tuple(load_feature_set("phase2_ofi").columns), "warm")
    for share in (False, True):
        cfg.share_features_extractor = share
        model = SAC(env=MnqTradingEnv(features, env_cfg), **sac_kwargs(cfg))
        assert isinstance(model.actor.features_extractor, MambaFeaturesExtractor)
        assert (model.actor.features_extractor is model.critic.features_extractor) is share
        assert model.batch_size == cfg.batch_size and model.learning_starts == cfg.learning_starts
    assert retain_freed_memory()  # glibc (Linux): the training's malloc setting applies


# tests/conftest.py's tiny model trained on the train day only: 64 steps, gradient steps at 33..64
SHORT = {k: v for k, v in TINY_MODEL_CONFIG.items() if not k.startswith(("val_", "test_"))}
HEALTHY = {
    "gradient_steps": 32,
    "timesteps": 64,
    "non_finite_losses": {},
    "non_finite_parameter_count": 0,
    "non_finite_parameters": [],
    "parameters_checked": 40,
}


@pytest.mark.parametrize(
    ("change", "problems"),
    [
        ({}, []),
        (
            {"gradient_steps": 0},
            ["no gradient step was taken in 64 timesteps (learning_starts must be < total_timesteps)"],
        ),
        (
            {"non_finite_losses": {"train/critic_loss": 40, "train/actor_loss": 41}},
            [
                "train/actor_loss was non-finite (first at timestep 41)",
                "train/critic_loss was non-finite (first at timestep 40)",
            ],
        ),
        (
            {"non_finite_parameter_count": 12, "non_finite_parameters": ["actor.mu.weight", "actor.mu.bias"]},
            ["12 parameter tensor(s) hold NaN or inf: actor.mu.weight, actor.mu.bias, ..."],
        ),
    ],
    ids=["healthy", "no-gradient-step", "nan-losses", "nan-parameters"],
)
def test_training_health_problems_judges_the_record(change: dict[str, Any], problems: list[str]) -> None:
    assert training_health_problems({**HEALTHY, **change}) == problems


def test_a_missing_record_is_a_problem() -> None:
    """mamba_sac_model judges config.json's record: a model trained before the check has none, and is refused."""
    assert training_health_problems(None) == training_health_problems({}) != []
    assert "records no training_health" in training_health_problems(None)[0]


def test_training_health_finds_a_nan_parameter(features: pl.DataFrame) -> None:
    from phoenix_rl.env.trading_env import MnqTradingEnv

    cfg = TrainConfig.from_dict(SHORT)
    env_cfg = cfg.env_config(tuple(load_feature_set("phase2_ofi").columns), "warm")
    model = SAC(env=MnqTradingEnv(features, env_cfg), **sac_kwargs(cfg))
    fresh = training_health(model, LossWatch())
    assert fresh["non_finite_parameter_count"] == 0 and fresh["gradient_steps"] == 0
    assert fresh["parameters_checked"] == len(list(model.policy.parameters())) + 1  # + SAC's log_ent_coef
    with torch.no_grad():
        model.actor.mu.weight[0, 0] = math.nan
        model.log_ent_coef.fill_(math.inf)
    health = training_health(model, LossWatch())
    assert health["non_finite_parameters"] == ["actor.mu.weight", "log_ent_coef"]
    assert "2 parameter tensor(s) hold NaN or inf: actor.mu.weight, log_ent_coef" in training_health_problems(health)
    json.dumps(health)  # stored in config.json as it is


class PoisonAtTheEnd(BaseCallback):
    """A NaN in the actor after the last gradient step: SB3 itself never notices one there."""

    def _on_step(self) -> bool:
        return True

    def _on_training_end(self) -> None:
        with torch.no_grad():
            self.model.actor.mu.bias.fill_(math.nan)


def _refused(cfg: TrainConfig, features: pl.DataFrame, out: Path, **kwargs: Any) -> dict[str, Any]:
    """train() on cfg must refuse: no model.zip (not even the earlier one planted here), its config.json recorded."""
    out.mkdir()
    (out / "model.zip").write_bytes(b"an earlier run's model")
    with pytest.raises(UnhealthyTrainingError, match="train: refusing to save the model of this run: "):
        train(cfg, features, out, **kwargs)
    assert not (out / "model.zip").exists()
    return json.loads((out / "config.json").read_text())["training_health"]


def test_a_nan_parameter_is_refused(features: pl.DataFrame, tmp_path: Path) -> None:
    health = _refused(TrainConfig.from_dict(SHORT), features, tmp_path / "run", callbacks=[PoisonAtTheEnd()])
    assert health["non_finite_parameters"] == ["actor.mu.bias"] and health["gradient_steps"] == 32


def test_batch_size_0_is_refused_even_past_the_config_check(features: pl.DataFrame, tmp_path: Path) -> None:
    """Issue 29: batch_size 0 trained with NaN actor and critic losses and was saved. TrainConfig refuses it now;
    set after validation (the dataclass is mutable), the training's own check still refuses the model."""
    cfg = TrainConfig.from_dict(SHORT)
    cfg.batch_size = 0
    health = _refused(cfg, features, tmp_path / "run")
    assert {"train/actor_loss", "train/critic_loss"} <= set(health["non_finite_losses"])
    assert health["non_finite_parameter_count"] == 0  # the mean over an empty batch: NaN loss, zero gradients


def test_no_gradient_step_is_refused_even_past_the_config_check(features: pl.DataFrame, tmp_path: Path) -> None:
    cfg = TrainConfig.from_dict(SHORT)
    cfg.learning_starts = cfg.total_timesteps
    health = _refused(cfg, features, tmp_path / "run")
    assert health["gradient_steps"] == 0 and health["timesteps"] == 64
