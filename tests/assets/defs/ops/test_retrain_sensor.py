"""retrain_sensor: real features_1m materializations (and drift check results) in a real temporary instance,
a lake holding the month's trade dates and a model's config.json; no training."""

import datetime as dt
import json
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from phoenix_assets.definitions import defs
from phoenix_assets.defs.checks import check_results, check_specs
from phoenix_assets.defs.features.assets import FEATURE_CHECKS
from phoenix_assets.defs.model.assets import TRAINING_TAGS
from phoenix_assets.defs.ops.retrain import (
    DRIFT_MIN_NEW_TRADE_DATES,
    ModelCoverage,
    decide,
    retrain_sensor,
    retrain_windows,
)
from phoenix_assets.defs.partitions import month_partitions
from phoenix_assets.defs.resources import LakeResource
from phoenix_assets.lib import calendar as cal
from phoenix_assets.lib.check_outcome import CheckOutcome
from phoenix_assets.lib.io.lake import Lake
from phoenix_assets.lib.schema import SAC_MODEL_DIR

D = dt.date.fromisoformat
FEB, MAR, APR = D("2024-02-01"), D("2024-03-01"), D("2024-04-01")


class FeaturesMonthConfig(dg.Config):
    last_day: str
    drift_passed: bool = True


@dg.asset(
    name="features_1m",
    partitions_def=month_partitions,
    check_specs=check_specs("features_1m", FEATURE_CHECKS, month_partitions),
)
def features_month(
    context: dg.AssetExecutionContext, config: FeaturesMonthConfig, lake: LakeResource
) -> dg.MaterializeResult:
    """Stand-in for features_1m: the month's trade dates up to `last_day` in the table, its checks reported."""
    first = D(context.partition_key)
    days = cal.trade_dates_between(first, D(config.last_day))
    frame = pl.DataFrame({"trade_date": days, "close": [1.0] * len(days)}).with_columns(month=pl.lit(first))
    table = frame.to_arrow()
    lake.lake().replace_partition("features_1m", table.schema, table.to_batches(), "month", first)
    outcomes = {name: CheckOutcome(True, name) for name in FEATURE_CHECKS}
    outcomes["drift_vs_training"] = CheckOutcome(config.drift_passed, "PSI")
    return dg.MaterializeResult(check_results=check_results("features_1m", FEATURE_CHECKS, outcomes))


@pytest.fixture
def lake_root(tmp_path: Path) -> str:
    return str(tmp_path / "lake")


def materialize_month(
    instance: dg.DagsterInstance, root: str, month: dt.date, last_day: str, drift_passed: bool = True
) -> None:
    result = dg.materialize(
        [features_month],
        partition_key=month.isoformat(),
        instance=instance,
        resources={"lake": LakeResource(uri=root)},
        run_config=dg.RunConfig(ops={"features_1m": FeaturesMonthConfig(last_day=last_day, drift_passed=drift_passed)}),
    )
    assert result.success


def publish_model(root: str, version: str, train: tuple[str, str], val: tuple[str, str], test: tuple[str, str]) -> None:
    """What mamba_sac_model stores: <SAC_MODEL_DIR>/<version>/config.json and latest.json."""
    lake = Lake(root)
    folder = f"{SAC_MODEL_DIR}/{version}"
    windows = {"train": list(train), "val": list(val), "test": list(test)}
    lake.write_artifact(
        f"{folder}/config.json", json.dumps({"model_version": version, "data_windows": windows}).encode()
    )
    lake.publish_latest(SAC_MODEL_DIR, folder, version)


def tick(instance: dg.DagsterInstance, root: str, cursor: str | None = None) -> dg.SensorResult:
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, definitions=defs, resources={"lake": LakeResource(uri=root)}
    )
    result = retrain_sensor(context)
    assert isinstance(result, dg.SensorResult)
    return result


def skip_message(result: dg.SensorResult) -> str:
    assert not result.run_requests
    reason = result.skip_reason
    return reason.skip_message if isinstance(reason, dg.SkipReason) else str(reason or "")


def windows_of(request: dg.RunRequest) -> dict[str, str]:
    return request.run_config["ops"]["mamba_sac_model"]["config"]


# --- registration ------------------------------------------------------------------------------------


def test_sensor_is_registered_and_targets_model_job() -> None:
    sensor = defs.resolve_sensor_def("retrain_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert sensor.job_name == "model_job"
    job = defs.get_repository_def().get_job("model_job")
    keys = {k.to_user_string() for k in job.asset_layer.executable_asset_keys}
    assert keys == {"mamba_sac_model", "backtests", "evaluation_metrics"}  # evaluation follows the model
    assert TRAINING_TAGS.items() <= job.tags.items()


# --- the rule, on real events ------------------------------------------------------------------------


def test_new_month_retrains_once(instance: dg.DagsterInstance, lake_root: str) -> None:
    materialize_month(instance, lake_root, FEB, "2024-02-29")
    materialize_month(instance, lake_root, MAR, "2024-03-29")
    publish_model(
        lake_root, "v-march", ("2024-02-01", "2024-03-15"), ("2024-03-18", "2024-03-22"), ("2024-03-25", "2024-03-29")
    )
    covered = tick(instance, lake_root)
    assert "covers 2024-03 (data through 2024-03-29)" in skip_message(covered)

    materialize_month(instance, lake_root, APR, "2024-04-05")
    new = tick(instance, lake_root, covered.cursor)
    assert len(new.run_requests or []) == 1
    request = (new.run_requests or [])[0]
    assert request.tags["phoenix/training"] == "true"  # dagster.yaml holds these to one at a time
    assert request.tags["phoenix/retrain_reason"] == "new_month"
    assert request.run_key == "retrain:2024-04:through:2024-04-05"
    # 47 trade dates (Feb 1 .. Apr 5): test = the newest week, validation = the week before, train = the rest
    assert windows_of(request) == {
        "train_start": "2024-02-01",
        "train_end": "2024-03-22",
        "val_start": "2024-03-25",
        "val_end": "2024-03-29",
        "test_start": "2024-04-01",
        "test_end": "2024-04-05",
    }

    # the same month again: no new event after the cursor -> nothing; a lost cursor -> the same run key
    again = tick(instance, lake_root, new.cursor)
    assert "no new features_1m materialization" in skip_message(again)
    assert [r.run_key for r in tick(instance, lake_root, covered.cursor).run_requests or []] == [request.run_key]

    # the new model covers April; April re-materialized with a new day: covered, drift passed -> nothing
    publish_model(
        lake_root, "v-april", ("2024-02-01", "2024-03-22"), ("2024-03-25", "2024-03-29"), ("2024-04-01", "2024-04-05")
    )
    materialize_month(instance, lake_root, APR, "2024-04-08")
    quiet = tick(instance, lake_root, new.cursor)
    assert "model v-april covers 2024-04" in skip_message(quiet)
    assert "drift_vs_training passed" in skip_message(quiet)


def test_failed_drift_retrains_within_the_month(instance: dg.DagsterInstance, lake_root: str) -> None:
    materialize_month(instance, lake_root, MAR, "2024-03-29")
    publish_model(
        lake_root, "v1", ("2024-03-01", "2024-03-15"), ("2024-03-18", "2024-03-22"), ("2024-03-25", "2024-03-29")
    )
    cursor = tick(instance, lake_root).cursor

    # drift, but the model already saw every trade date of the month: retraining would change nothing
    materialize_month(instance, lake_root, MAR, "2024-03-29", drift_passed=False)
    seen = tick(instance, lake_root, cursor)
    assert f"only 0 trade date(s) are newer than the model (an early retrain needs {DRIFT_MIN_NEW_TRADE_DATES})" in (
        skip_message(seen)
    )
    # April's first days with drift: a new month anyway
    materialize_month(instance, lake_root, APR, "2024-04-02", drift_passed=False)
    publish_model(
        lake_root, "v2", ("2024-03-01", "2024-03-22"), ("2024-03-25", "2024-03-27"), ("2024-03-28", "2024-04-02")
    )
    # April again, a week later, drift failed: not a newer month, but a week the model has not seen
    materialize_month(instance, lake_root, APR, "2024-04-10", drift_passed=False)
    drift = tick(instance, lake_root, seen.cursor)
    (request,) = drift.run_requests or []
    assert request.tags["phoenix/retrain_reason"] == "drift"
    assert request.run_key == "retrain:2024-04:through:2024-04-10"
    assert windows_of(request)["test_end"] == "2024-04-10"
    assert windows_of(request)["test_start"] == "2024-04-04"  # 29 trade dates: held-out windows of 5

    # drift passed on the latest evaluation of the month -> no early retrain
    materialize_month(instance, lake_root, APR, "2024-04-10", drift_passed=True)
    assert "drift_vs_training passed" in skip_message(tick(instance, lake_root, drift.cursor))


def test_training_in_progress_holds_the_events(instance: dg.DagsterInstance, lake_root: str) -> None:
    materialize_month(instance, lake_root, MAR, "2024-03-29")
    run = instance.add_run(dg.DagsterRun("model_job", status=dg.DagsterRunStatus.STARTED, tags=TRAINING_TAGS))
    busy = tick(instance, lake_root, None)
    assert f"training run {run.run_id} (model_job) is STARTED" in skip_message(busy)
    assert busy.cursor is None  # not advanced: the month is reconsidered when the training ends

    instance.report_run_failed(run)
    (request,) = tick(instance, lake_root, busy.cursor).run_requests or []
    assert request.tags["phoenix/retrain_reason"] == "no_model"


def test_no_model_yet_trains_on_what_there_is(instance: dg.DagsterInstance, lake_root: str) -> None:
    assert "no new features_1m materialization" in skip_message(tick(instance, lake_root))
    materialize_month(instance, lake_root, MAR, "2024-03-13")  # 9 trade dates
    result = tick(instance, lake_root)
    (request,) = result.run_requests or []
    assert request.tags["phoenix/retrain_reason"] == "no_model"
    assert request.tags["phoenix/trigger"] == "retrain_sensor"
    # few dates: each held-out window is a fifth of them (here one trade date)
    assert windows_of(request) == {
        "train_start": "2024-03-01",
        "train_end": "2024-03-11",
        "val_start": "2024-03-12",
        "val_end": "2024-03-12",
        "test_start": "2024-03-13",
        "test_end": "2024-03-13",
    }
    assert json.loads(result.cursor or "")["after"] > 0


# --- the pure parts ----------------------------------------------------------------------------------


def test_windows_are_disjoint_ordered_and_bounded() -> None:
    three = [D("2024-03-13"), D("2024-03-14"), D("2024-03-15")]
    assert retrain_windows(three) == {
        "train_start": "2024-03-13",
        "train_end": "2024-03-13",
        "val_start": "2024-03-14",
        "val_end": "2024-03-14",
        "test_start": "2024-03-15",
        "test_end": "2024-03-15",
    }
    with pytest.raises(ValueError, match="at least 3"):
        retrain_windows(three[:2])
    two_years = cal.trade_dates_between(D("2022-06-01"), D("2024-05-31"))
    w = retrain_windows(two_years)
    assert w["train_start"] == "2023-06-01"  # rolling 12 calendar months
    assert (w["val_end"], w["test_start"], w["test_end"]) == ("2024-05-24", "2024-05-27", "2024-05-31")
    assert w["train_end"] < w["val_start"] <= w["val_end"] < w["test_start"]


def test_decide_explains_every_skip() -> None:
    dates = cal.trade_dates_between(MAR, D("2024-03-29"))
    model = ModelCoverage("v", D("2024-03-29"))
    assert decide([MAR], [], dates[:2], None).reason is None
    assert decide([MAR], [], dates, None).reason == "no_model"
    assert decide([MAR], [], dates, model).reason is None
    assert decide([MAR], [MAR], dates, ModelCoverage("v", D("2024-03-15"))).reason == "drift"
    stale = decide([MAR], [FEB], dates, ModelCoverage("v", D("2024-03-15")))
    assert stale.reason is None and "only for months the model already covers" in stale.message
