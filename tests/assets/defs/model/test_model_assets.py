"""mamba_sac_model (Pipes subprocess) -> backtests -> evaluation_metrics on a small synthetic features_1m table."""

import json
import math
import shutil
import sys
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import pytest

from phoenix_assets.defs.model.assets import backtests, evaluation_metrics, mamba_sac_model
from phoenix_assets.defs.model.sagemaker import SageMakerResource
from phoenix_assets.defs.resources import LakeResource
from phoenix_assets.lib.io.lake import Lake
from phoenix_assets.lib.schema import SAC_MODEL_DIR
from tests.conftest import TINY_MODEL_CONFIG
from tests.rl.train.test_trainer import HEALTHY

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
    assert set(checks) == {
        "agent_not_stuck_flat", "agent_edge_on_test", "metrics_finite", "point_in_time_windows",
        "trained_model_is_finite",
    }  # fmt: skip
    assert not checks["agent_edge_on_test"].passed  # one test day: below the verdict's power, "no evidence"
    assert checks["metrics_finite"].passed and checks["point_in_time_windows"].passed
    assert checks["trained_model_is_finite"].passed  # 64 steps, learning_starts 32: 32 gradient steps, all finite
    assert saved["training_health"]["gradient_steps"] == 32 and saved["training_health"]["non_finite_losses"] == {}
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


# A stand-in for `python -m phoenix_rl.train.pipes_entry` (argv: out folder, training_health record as JSON or
# "null", exit code): what a training leaves in --out. Exit code 1 is train refusing the model (config.json and
# error.txt, no model.zip); 0 is a training that saved a model whatever its record says (an older trainer).
FAKE_TRAINING = """
import json, sys
from pathlib import Path
from dagster_pipes import open_dagster_pipes

out, record, code = Path(sys.argv[1]), json.loads(sys.argv[2]), int(sys.argv[3])
out.mkdir(parents=True, exist_ok=True)
saved = {"train_config": {}, "feature_spec_hash": "testhash0123", "train_rows": 80}
(out / "config.json").write_text(json.dumps(saved if record is None else {**saved, "training_health": record}))
(out / "metrics.jsonl").write_text("")
with open_dagster_pipes() as pipes:
    if code:
        (out / "error.txt").write_text("UnhealthyTrainingError: train: refusing to save the model of this run")
        raise SystemExit(code)
    (out / "model.zip").write_bytes(b"a model")
    pipes.report_asset_materialization(metadata={})
"""


class FakeTraining(dg.PipesSubprocessClient):
    """Runs FAKE_TRAINING through the real Pipes session instead of the trainer."""

    def __init__(self, record: dict[str, object] | None, exit_code: int) -> None:
        super().__init__()
        self.record, self.exit_code = record, exit_code

    def run(self, *, context: Any, command: Any, extras: Any = None, env: Any = None, cwd: Any = None) -> Any:
        out = command[command.index("--out") + 1]
        fake = [sys.executable, "-c", FAKE_TRAINING, out, json.dumps(self.record), str(self.exit_code)]
        return super().run(context=context, command=fake, extras=extras, env=env, cwd=cwd)


class NoTraining(dg.PipesSubprocessClient):
    def run(self, **_: Any) -> Any:
        raise AssertionError("the training was launched")


def _lake_with_a_published_model(features_lake_root: str, tmp_path: Path) -> tuple[Path, bytes]:
    """A copy of the features lake whose latest.json points at an earlier model v0 (its bytes returned)."""
    root = tmp_path / "lake"
    shutil.copytree(features_lake_root, root)
    shutil.rmtree(root / "artifacts", ignore_errors=True)  # other tests' models in the shared lake
    lake = Lake(str(root))
    lake.write_artifact(f"{SAC_MODEL_DIR}/v0/model.zip", b"the previous model")
    lake.publish_latest(SAC_MODEL_DIR, f"{SAC_MODEL_DIR}/v0", "v0")
    return root, lake.read_artifact(f"{SAC_MODEL_DIR}/latest.json")


def _materialize_model(root: Path, client: dg.PipesSubprocessClient, **overrides: object) -> dg.ExecuteInProcessResult:
    with dg.instance_for_test() as instance:
        return dg.materialize(
            [mamba_sac_model],
            resources={
                "lake": LakeResource(uri=str(root)),
                "pipes_subprocess_client": client,
                "sagemaker": SageMakerResource(),
            },
            run_config=_run_config(**overrides),
            instance=instance,
            raise_on_error=False,
        )


@pytest.mark.parametrize(
    ("record", "exit_code", "reason"),
    [
        ({**HEALTHY, "non_finite_losses": {"train/critic_loss": 40}}, 1, "training subprocess failed: Unhealthy"),
        ({**HEALTHY, "gradient_steps": 0}, 0, "no gradient step was taken in 64 timesteps"),
        ({**HEALTHY, "non_finite_losses": {"train/actor_loss": 33}}, 0, "train/actor_loss was non-finite (first at"),
        (
            {**HEALTHY, "non_finite_parameter_count": 1, "non_finite_parameters": ["actor.mu.weight"]},
            0,
            "1 parameter tensor(s) hold NaN or inf: actor.mu.weight",
        ),
        (None, 0, "the run records no training_health"),
    ],
    ids=["train-refused", "no-gradient-step", "nan-loss", "nan-parameter", "no-record"],
)
def test_an_unhealthy_model_is_never_published(
    features_lake_root: str, tmp_path: Path, record: dict[str, object] | None, exit_code: int, reason: str
) -> None:
    """Issue 29: a bad training used to be stored and made latest (what backtests and `./phoenix paper` use).
    The blocking trained_model_is_finite check fails in the UI, the step fails, nothing is stored and latest.json
    still points at the previous model."""
    root, pointer = _lake_with_a_published_model(features_lake_root, tmp_path)
    result = _materialize_model(root, FakeTraining(record, exit_code))
    assert not result.success
    # first what issue 29 is about: the check alone (Dagster fails the step after the body returned) came too late
    assert Lake(str(root)).read_artifact(f"{SAC_MODEL_DIR}/latest.json") == pointer
    assert sorted(p.name for p in (root / SAC_MODEL_DIR).iterdir()) == ["latest.json", "v0"]
    message = str(next(e for e in result.all_events if e.is_step_failure).step_failure_data.error)
    assert reason in message
    if exit_code == 0:
        assert "refusing to publish the trained model (trained_model_is_finite: " in message
        assert "latest.json still points at the previous model" in message
    (check,) = result.get_asset_check_evaluations()
    assert check.check_name == "trained_model_is_finite" and not check.passed
    assert check.severity == dg.AssetCheckSeverity.ERROR
    assert result.asset_materializations_for_node("mamba_sac_model") == []


def test_a_healthy_record_publishes(features_lake_root: str, tmp_path: Path) -> None:
    """The same fake training with a healthy record is stored and made latest: the refusals above are the guard's."""
    root, _ = _lake_with_a_published_model(features_lake_root, tmp_path)
    result = _materialize_model(root, FakeTraining(HEALTHY, 0))
    assert result.success
    assert {c.check_name: c.passed for c in result.get_asset_check_evaluations()} == {
        "point_in_time_windows": True,
        "trained_model_is_finite": True,
    }
    latest = json.loads(Lake(str(root)).read_artifact(f"{SAC_MODEL_DIR}/latest.json"))
    assert latest["version"] != "v0" and Path(root, latest["path"], "model.zip").read_bytes() == b"a model"


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"total_timesteps": 0}, "total_timesteps must be an int >= 1 (got 0)"),
        ({"total_timesteps": -5}, "total_timesteps must be an int >= 1 (got -5)"),
        ({"batch_size": 0}, "batch_size must be an int >= 1 (got 0)"),
    ],
    ids=["total_timesteps=0", "total_timesteps=-5", "batch_size=0"],
)
def test_an_absurd_training_config_fails_before_training(
    features_lake_root: str, tmp_path: Path, overrides: dict[str, object], named: str
) -> None:
    """Issue 29: `total_timesteps: -5`, `0` and `batch_size: 0` trained and were published as latest."""
    root, pointer = _lake_with_a_published_model(features_lake_root, tmp_path)
    result = _materialize_model(root, NoTraining(), **overrides)
    assert not result.success
    message = str(next(e for e in result.all_events if e.is_step_failure).step_failure_data.error)
    assert "mamba_sac_model: invalid run config, nothing was trained: TrainConfig: " in message
    assert named in message and "the training was launched" not in message
    assert Lake(str(root)).read_artifact(f"{SAC_MODEL_DIR}/latest.json") == pointer
    assert sorted(p.name for p in (root / SAC_MODEL_DIR).iterdir()) == ["latest.json", "v0"]
