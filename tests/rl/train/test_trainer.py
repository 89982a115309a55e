"""The training entry point: train() and the CLI write a loadable model, its config (with hashes), metrics."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import polars as pl
import pytest
from stable_baselines3 import SAC

from feature_specs import load_feature_set
from phoenix_rl.env.trading_env import EnvConfig
from phoenix_rl.evaluation.backtest import run_backtest
from phoenix_rl.testing import synthetic_features
from phoenix_rl.train.trainer import TrainConfig, main, train

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
