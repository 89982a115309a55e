"""The training config is defined once (phoenix_rl/config.py): the Dagster config of `mamba_sac_model` is generated
from it and the training process reads the same JSON. These tests fail as soon as a copy could drift again."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import dagster as dg
import pytest

from phoenix_assets.definitions import defs
from phoenix_assets.defs.model.config import EnvSettings, MambaSacConfig
from phoenix_rl.config import DATA_BOUND_ENV_FIELDS, EnvConfig, TrainConfig

# every configurable field at a value other than its default (a new field must be added here: see below)
NON_DEFAULT: dict[str, Any] = {
    "feature_set": "phase2_no_ofi",
    "train_start": "2024-01-02",
    "train_end": "2024-01-31",
    "val_start": "2024-02-02",
    "val_end": "2024-02-06",
    "test_start": "2024-02-08",
    "test_end": "2024-02-14",
    "embargo_days": 1,
    "total_timesteps": 12_345,
    "seed": 7,
    "torch_threads": 3,
    "torch_deterministic": False,
    "learning_rate": 1e-3,
    "buffer_size": 1_234,
    "batch_size": 32,
    "learning_starts": 77,
    "gamma": 0.9,
    "tau": 0.01,
    "train_freq": 4,
    "gradient_steps": 2,
    "ent_coef": "0.05",
    "net_arch": [8, 16, 8],
    "share_features_extractor": True,
    "d_model": 12,
    "d_state": 6,
    "d_conv": 3,
    "expand": 3,
    "n_layers": 3,
    "env": {
        "lookback": 9,
        "max_contracts": 2,
        "point_value": 20.0,
        "tick_size": 0.5,
        "commission_per_side_usd": 1.1,
        "slippage_ticks_per_side": 0.5,
        "fill_latency_ms": 50.0,
        "fill_at": "open",
        "reward_scale": 0.1,
        "turnover_penalty_usd": 0.25,
        "drawdown_penalty": 0.5,
        "win_bonus": 0.2,
        "loss_penalty": 0.3,
        "hold_penalty": 0.01,
        "hold_bars": 30,
        "differential_reward": "sortino",
        "differential_eta": 0.05,
        "action_mode": "continuous",
        "deadband": 0.1,
        "episode_mode": "whole",
        "max_steps": None,
        "max_gap_minutes": 10.0,
        "trade_only_warm": False,
        "obs_clip": 5.0,
        "upnl_scale_points": 20.0,
        "time_scale_bars": 30.0,
    },
    "capital": 25_000.0,
    "log_every": 50,
}


def _dagster_processed(config: dict[str, Any]) -> dict[str, Any]:
    """`config` through Dagster's own run-config validation of mamba_sac_model (types, nesting, defaults filled)."""
    job = defs.resolve_job_def("model_job")
    processed = dg.validate_run_config(job, {"ops": {"mamba_sac_model": {"config": config}}})
    return processed["ops"]["mamba_sac_model"]["config"]


def test_the_dagster_config_has_exactly_the_train_config_fields() -> None:
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    env_fields = {f.name for f in dataclasses.fields(EnvConfig)} - set(DATA_BOUND_ENV_FIELDS)
    assert set(MambaSacConfig.model_fields) == train_fields | {"launch"}
    assert set(EnvSettings.model_fields) == env_fields
    # NON_DEFAULT names every configurable field, each at a value other than its default
    assert set(NON_DEFAULT) == train_fields and set(NON_DEFAULT["env"]) == env_fields
    default = TrainConfig().to_dict()
    assert [k for k, v in NON_DEFAULT.items() if k != "env" and v == default[k]] == []
    assert [k for k, v in NON_DEFAULT["env"].items() if v == default["env"][k]] == []


def test_defaults_come_from_one_place() -> None:
    assert MambaSacConfig().to_train_config() == TrainConfig()
    assert MambaSacConfig(**_dagster_processed({})).to_train_config() == TrainConfig()
    assert TrainConfig().env == EnvConfig()


def test_every_field_round_trips_dagster_to_the_training_json(tmp_path: Path) -> None:
    expected = TrainConfig.from_dict(NON_DEFAULT)
    data_bound = {"feature_columns": [], "warm_column": "warm"}  # filled in by train from the data
    assert expected.to_dict() == {**NON_DEFAULT, "env": {**NON_DEFAULT["env"], **data_bound}}
    config = MambaSacConfig(**_dagster_processed({**NON_DEFAULT, "launch": "sagemaker"}))
    cfg = config.to_train_config()
    assert cfg == expected
    path = tmp_path / "config.json"
    path.write_text(cfg.to_json())  # what mamba_sac_model hands to the Pipes subprocess and the SageMaker job
    assert json.loads(path.read_text()) == expected.to_dict()
    assert TrainConfig.from_json(path) == expected


def test_the_pipes_and_sagemaker_entry_reads_the_payload_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """phoenix_rl.train.pipes_entry.train_and_report (also the SageMaker container's path) passes train() the same
    TrainConfig the asset wrote."""
    import phoenix_rl.train.trainer
    from phoenix_rl.train.pipes_entry import ERROR_FILE, train_and_report

    seen: list[TrainConfig] = []

    class Stop(Exception):
        pass

    def fake_train(cfg: TrainConfig, *args: Any, **kwargs: Any) -> None:
        seen.append(cfg)
        raise Stop("captured")

    monkeypatch.setattr(phoenix_rl.train.trainer, "train", fake_train)
    cfg = MambaSacConfig(**_dagster_processed(NON_DEFAULT)).to_train_config()
    (tmp_path / "config.json").write_text(cfg.to_json())
    import polars as pl

    pl.DataFrame({"ts": [1]}).write_parquet(tmp_path / "features.parquet")
    pipes = SimpleNamespace(log=SimpleNamespace(info=lambda _msg: None))
    with pytest.raises(Stop):
        train_and_report(pipes, tmp_path / "config.json", tmp_path / "features.parquet", tmp_path / "out")  # type: ignore[arg-type]
    assert seen == [TrainConfig.from_dict(NON_DEFAULT)]
    assert (tmp_path / "out" / ERROR_FILE).read_text() == "Stop: captured"


def test_unknown_and_data_bound_keys_are_refused() -> None:
    with pytest.raises(ValueError, match=r"unknown keys \['lookback'\]"):
        TrainConfig.from_dict({"lookback": 8})  # an env setting: it lives under "env" now
    with pytest.raises(ValueError, match=r"TrainConfig.env: unknown keys \['episode_steps'\]"):
        TrainConfig.from_dict({"env": {"episode_steps": 8}})
    with pytest.raises(ValueError, match=r"env\.feature_columns is set by train"):
        TrainConfig.from_dict({"env": {"feature_columns": ["ofi_1min_zscore"]}})
    with pytest.raises(ValueError, match="ent_coef"):
        TrainConfig(ent_coef="often")
    with pytest.raises(ValueError, match="deadband"):
        TrainConfig.from_dict({"env": {"deadband": 1.5}})
    with pytest.raises(dg.DagsterInvalidConfigError):
        _dagster_processed({"env": {"feature_columns": ["x"]}})
    assert TrainConfig(ent_coef=0.05).sb3_ent_coef == 0.05  # type: ignore[arg-type]
    assert TrainConfig().sb3_ent_coef == "auto"


def test_the_asset_needs_all_windows() -> None:
    with pytest.raises(ValueError, match=r"lacks the windows \['val_start', 'val_end', 'test_start', 'test_end'\]"):
        MambaSacConfig(train_start="2024-03-13", train_end="2024-03-14").windows()
    full = MambaSacConfig(**{k: v for k, v in NON_DEFAULT.items() if k.endswith(("_start", "_end"))})
    assert full.windows() == {
        "train": ("2024-01-02", "2024-01-31"),
        "val": ("2024-02-02", "2024-02-06"),
        "test": ("2024-02-08", "2024-02-14"),
    }


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"total_timesteps": 0}, "total_timesteps must be an int >= 1 (got 0)"),
        ({"total_timesteps": -5}, "total_timesteps must be an int >= 1 (got -5)"),
        ({"batch_size": 0}, "batch_size must be an int >= 1 (got 0)"),
        ({"learning_starts": 12_345}, "learning_starts must be < total_timesteps"),
        ({"learning_rate": -1.0}, "learning_rate must be a finite number in (0, inf) (got -1.0)"),
        ({"net_arch": []}, "net_arch must be a non-empty list"),
    ],
)
def test_the_dagster_config_surfaces_the_train_config_validation(change: dict[str, Any], named: str) -> None:
    """Issue 29: Dagster's schema takes any int, so the run config passes it; building the TrainConfig of the run
    (the asset's first step, before it reads data or trains) refuses it with TrainConfig's message."""
    config = MambaSacConfig(**_dagster_processed({**NON_DEFAULT, **change}))
    with pytest.raises(ValueError, match=r"^TrainConfig: ") as raised:
        config.to_train_config()
    assert named in str(raised.value)
    with pytest.raises(ValueError, match="TrainConfig: "):
        config.windows()
