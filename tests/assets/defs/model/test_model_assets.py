"""mamba_sac_model (Pipes subprocess) -> backtests -> evaluation_metrics on a small synthetic features_1m table."""

import json
import math
import shutil
from pathlib import Path

import dagster as dg
import polars as pl

from phoenix_assets.defs.model.assets import backtests, evaluation_metrics, mamba_sac_model
from phoenix_assets.defs.model.sagemaker import SageMakerResource
from phoenix_assets.defs.resources import LakeResource
from phoenix_assets.lib.io.lake import Lake
from tests.conftest import TINY_MODEL_CONFIG

ASSETS = [mamba_sac_model, backtests, evaluation_metrics]
TINY = TINY_MODEL_CONFIG


def _run_config(**overrides: object) -> dg.RunConfig:
    return dg.RunConfig(ops={"mamba_sac_model": {"config": {**TINY, **overrides}}})


def _materialize(root: str, run_config: dg.RunConfig) -> dg.ExecuteInProcessResult:
    with dg.instance_for_test() as instance:
        return dg.materialize(
            ASSETS,
            resources={
                "lake": LakeResource(uri=root),
                "pipes_subprocess_client": dg.PipesSubprocessClient(),
                "sagemaker": SageMakerResource(),
            },
            run_config=run_config,
            instance=instance,
            raise_on_error=False,
        )


def test_train_backtest_evaluate(features_lake_root: str) -> None:
    result = _materialize(features_lake_root, _run_config())
    assert result.success

    # the model: Pipes-reported metadata merged with the asset's own, and a versioned artifact + latest pointer
    meta = result.asset_materializations_for_node("mamba_sac_model")[0].metadata
    assert meta["steps_per_s"].value > 0
    assert "| timesteps |" in meta["learning_curve"].value
    assert "data:image/png;base64" in meta["learning_curve"].value
    assert meta["timesteps"].value == 64
    assert meta["feature_spec_hash"].value == "testhash0123"
    lake = Lake(features_lake_root)
    pointer = json.loads(lake.read_artifact("artifacts/mamba_sac_model/latest.json"))
    assert Path(features_lake_root, pointer["path"], "model.zip").stat().st_size > 0
    saved = json.loads(lake.read_artifact(f"{pointer['path']}/config.json"))
    assert saved["feature_spec_hash"] == "testhash0123"
    assert saved["data_windows"]["train"] == ["2024-03-13", "2024-03-13"]
    assert saved["package_versions"]["stable-baselines3"]
    assert "git_commit" in saved

    # backtests: trades and per-bar equity for 2 windows x 6 strategies (incl. the train-tuned OFI rule)
    version = pointer["version"]
    equity = lake.scan("backtest_equity").filter(pl.col("model_version") == version).collect()
    assert equity.select("window", "strategy").unique().height == 12
    rule = result.asset_materializations_for_node("backtests")[0].metadata["tuned_ofi_rule"].value
    assert rule["tuned_on"] == ["2024-03-13", "2024-03-13"]  # the model's TRAIN window, never val/test
    assert rule["feature"].startswith("ofi_") and rule["grid_points"] > 1
    assert lake.scan("backtest_trades").collect()["model_version"].unique().to_list() == [version]

    # evaluation: one finite row per window x strategy, Markdown with the equity PNG, checks evaluated
    metrics = lake.scan("evaluation_metrics").collect()
    assert metrics.height == 12
    strategies = ["agent", "buy_and_hold", "flat", "ofi_threshold", "random", "tuned_ofi_rule"]
    assert sorted(metrics["strategy"].unique()) == strategies
    numeric = metrics.drop("model_version", "window", "strategy")
    assert all(v is None or math.isfinite(v) for row in numeric.iter_rows() for v in row)  # None: n/a
    flat = metrics.filter(pl.col("strategy") == "flat")
    assert (flat["final_equity"] == flat["capital"]).all()
    emeta = result.asset_materializations_for_node("evaluation_metrics")[0].metadata
    assert "data:image/png;base64" in emeta["equity_curves"].value
    assert "| window | strategy |" in emeta["metrics"].value
    assert metrics["sortino"].null_count() == metrics.height  # windows of a few days: n/a, never a number
    assert "n/a" in emeta["metrics"].value and emeta["min_days_for_ratios"].value == 20
    assert Path(emeta["equity_png_test"].value).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # the figure, as a file
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert set(checks) == {"agent_not_stuck_flat", "metrics_finite", "point_in_time_windows"}
    assert checks["metrics_finite"].passed and checks["point_in_time_windows"].passed
    assert saved["evaluation_windows"] == {
        "train": ["2024-03-13", "2024-03-13"], "val": ["2024-03-14", "2024-03-14"],
        "test": ["2024-03-15", "2024-03-15"], "embargo_days": 0,
    }  # fmt: skip
    assert "time_in_market" in checks["agent_not_stuck_flat"].metadata


def test_training_failure_fails_the_asset(features_lake_root: str) -> None:
    """An empty train window makes the subprocess raise; the asset fails and says what to check."""
    result = _materialize(features_lake_root, _run_config(train_start="2024-03-04", train_end="2024-03-05"))
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    message = str(failure.step_failure_data.error)
    assert "training subprocess failed" in message
    assert "2024-03-04..2024-03-05" in message
    assert "ValueError: train: only 0 rows in the train window" in message


def test_an_hmm_fitted_into_validation_is_refused_before_training(features_lake_root: str, tmp_path: Path) -> None:
    """Issue 11 hole A: the demo used to fit the HMM on a window including the held-out day."""
    root = tmp_path / "lake"
    shutil.copytree(features_lake_root, root)
    shutil.rmtree(root / "artifacts", ignore_errors=True)  # other tests' models in the shared lake
    lake = Lake(str(root))
    path = lake.write_artifact(
        "artifacts/hmm_regime_model/v1.json", b'{"train_start": "2024-03-13", "train_end": "2024-03-15"}'
    )
    lake.publish_latest("artifacts/hmm_regime_model", "artifacts/hmm_regime_model/v1.json", "v1")
    assert path.endswith("v1.json")
    result = _materialize(str(root), _run_config())
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = str(failure.step_failure_data.error)
    assert "hmm_regime_model was fitted on data up to 2024-03-15, not before validation starts 2024-03-14" in message
    assert not (root / "artifacts" / "mamba_sac_model").exists()  # refused before training
