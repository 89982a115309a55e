"""Automation: the landing sensor, the declarative conditions, backfill idempotence, the run-failure sensor."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import dagster as dg
import databento as db
import polars as pl
import pytest
import zstandard

from phoenix_assets.definitions import defs
from phoenix_assets.defs.ingest.assets import raw_mbp10
from phoenix_assets.defs.microstructure.assets import book_snapshots_1s, ofi_bars_1m
from phoenix_assets.defs.ops.automation import FAILURE_LOG, landing_sensor, record_run_failure
from phoenix_assets.defs.resources import LandingResource, QualityThresholds
from phoenix_assets.lib.io.lake import Lake
from phoenix_assets.lib.schema import BARS_TABLE, RAW_TABLE, SECONDS_TABLE
from tests.assets.defs.ingest.test_raw_asset import failure_message, resources
from tests.conftest import ESH1_TRADES, ESH4_MBP10, ESM4_MBP10, SHARED_DATA, land

ESH4_KEY, ESM4_KEY = "2023-12-26", "2024-05-08"
XNAS_MBP10 = SHARED_DATA / "xnas-itch-nvda-20201228.mbp-10.fixture.dbn.zst"  # mbp-10 of another dataset


def evaluate(instance: dg.DagsterInstance, landing: Path, cursor: str | None = None) -> dg.SensorResult:
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"landing": LandingResource(path=str(landing))}
    )
    result = landing_sensor(context)
    assert isinstance(result, dg.SensorResult)
    return result


def _decompressed(path: Path) -> bytes:
    with path.open("rb") as f:
        return zstandard.ZstdDecompressor().stream_reader(f).read()


def requested(result: dg.SensorResult) -> dict[str, str]:
    return {r.partition_key: r.run_key for r in result.run_requests or []}


def skip_message(result: dg.SensorResult) -> str:
    reason = result.skip_reason
    return reason.skip_message if isinstance(reason, dg.SkipReason) else str(reason or "")


# --- definitions -------------------------------------------------------------------------------------


def test_definitions_register_sensors_and_conditions() -> None:
    repo = defs.get_repository_def()
    status = {s.name: s.default_status for s in repo.sensor_defs}
    assert status == {
        "landing_sensor": dg.DefaultSensorStatus.STOPPED,
        "phoenix_automation": dg.DefaultSensorStatus.RUNNING,
        "record_run_failure": dg.DefaultSensorStatus.RUNNING,
        "retrain_sensor": dg.DefaultSensorStatus.RUNNING,
        "run_worker_sweep": dg.DefaultSensorStatus.RUNNING,
    }
    job = repo.get_job(defs.resolve_sensor_def("landing_sensor").job_name)
    assert job.asset_layer.executable_asset_keys == {raw_mbp10.key}
    conditions = {k.to_user_string(): c for a in defs.assets or [] for k, c in a.automation_conditions_by_key.items()}
    assert conditions.get("raw_mbp10") is None and conditions.get("hmm_regime_model") is None  # never auto-refit
    assert all(conditions[a] is not None for a in ("book_snapshots_1s", "ofi_bars_1m", "hmm_regimes", "features_1m"))
    assert [s.name for s in repo.schedule_defs] == ["databento_daily", "paper_daily"]  # both stopped by default


# --- landing sensor ----------------------------------------------------------------------------------


def test_landing_sensor_requests_exactly_the_affected_trade_dates(instance: dg.DagsterInstance, landing: Path) -> None:
    land(landing, ESH4_MBP10, ESM4_MBP10, ESH1_TRADES, XNAS_MBP10)
    first = evaluate(instance, landing)
    # ESH4's metadata (2023-12-25 00:00 UTC ..) also overlaps trade date 2023-12-25, but its first record is
    # received at 16:00 CT: only 2023-12-26. The trades file and the XNAS file are not raw_mbp10's.
    assert set(requested(first)) == {ESH4_KEY, ESM4_KEY}
    assert all(r.tags["phoenix/source"] == "landing" for r in first.run_requests or [])
    files = json.loads(first.cursor or "")["files"]
    assert {Path(p).name for p in files} == {ESH4_MBP10.name, ESM4_MBP10.name}

    again = evaluate(instance, landing, first.cursor)
    assert requested(again) == {} and "no new or changed" in skip_message(again)
    # a lost cursor re-requests with the same run keys, which Dagster de-duplicates
    assert requested(evaluate(instance, landing)) == requested(first)

    os.utime(landing / ESM4_MBP10.name)  # touched, same bytes: nothing new
    touched = evaluate(instance, landing, again.cursor)
    assert requested(touched) == {}

    # rewritten with different bytes (same records, recompressed with a checksum): a new run for its trade date only
    target = landing / ESM4_MBP10.name
    target.write_bytes(zstandard.ZstdCompressor(level=1, write_checksum=True).compress(_decompressed(ESM4_MBP10)))
    assert target.read_bytes() != ESM4_MBP10.read_bytes()
    changed = evaluate(instance, landing, touched.cursor)
    assert set(requested(changed)) == {ESM4_KEY}
    assert requested(changed)[ESM4_KEY] != requested(first)[ESM4_KEY]
    assert requested(evaluate(instance, landing, changed.cursor)) == {}


def test_landing_sensor_skips_corrupt_files_until_fixed(instance: dg.DagsterInstance, landing: Path) -> None:
    garbage = landing / "glbx-mdp3-20240102.mbp-10.dbn.zst"
    garbage.write_bytes(b"not a dbn file" * 100)
    truncated = landing / "glbx-mdp3-esm4-20240508.mbp-10.dbn"  # valid header, first record cut short
    body = _decompressed(ESM4_MBP10)
    header = len(body) - 368 * len(db.DBNStore.from_file(ESM4_MBP10).to_ndarray())  # MBP-10 records: 368 bytes
    truncated.write_bytes(body[: header + 100])
    result = evaluate(instance, landing)
    assert requested(result) == {}
    message = skip_message(result)
    assert str(garbage) in message and str(truncated) in message
    assert json.loads(result.cursor or "")["files"] == {}  # not marked seen

    truncated.write_bytes(body)  # fixed: picked up on the next tick
    fixed = evaluate(instance, landing, result.cursor)
    assert set(requested(fixed)) == {ESM4_KEY}
    assert str(garbage) not in json.loads(fixed.cursor or "")["files"]


# --- declarative automation --------------------------------------------------------------------------


def _requested(result: dg.EvaluateAutomationConditionsResult) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for r in result.results:
        if r.true_subset.size:
            out[r.key.to_user_string()] = set(r.true_subset.expensively_compute_partition_keys() or {"<all>"})
    return out


def test_new_raw_partition_requests_its_day_downstream_only(
    instance: dg.DagsterInstance, lake: Lake, landing: Path
) -> None:
    initial = dg.evaluate_automation_conditions(defs=defs, instance=instance)  # first evaluation records state
    assert initial.total_requested == 0
    land(landing, ESH4_MBP10)
    raw = dg.materialize([raw_mbp10], partition_key=ESH4_KEY, instance=instance, resources=resources(lake, landing))
    assert raw.success
    after = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=initial.cursor)
    # the day's chain in one request: a blocking check failing on book_snapshots_1s stops ofi_bars_1m in-run
    assert _requested(after) == {"book_snapshots_1s": {ESH4_KEY}, "ofi_bars_1m": {ESH4_KEY}}
    quiet = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=after.cursor)
    assert _requested(quiet) == {}  # handled: not requested twice


def test_failed_blocking_check_stops_the_day(instance: dg.DagsterInstance, lake: Lake, landing: Path) -> None:
    land(landing, ESM4_MBP10)
    cursor = dg.evaluate_automation_conditions(defs=defs, instance=instance).cursor
    off_grid = resources(lake, landing) | {"quality": QualityThresholds(tick_size=0.3)}  # ES prices are not on it
    failed = dg.materialize(
        [raw_mbp10], partition_key=ESM4_KEY, instance=instance, resources=off_grid, raise_on_error=False
    )
    assert not failed.success  # a failed blocking check fails the run before the commit...
    assert "prices_on_tick_grid" in failure_message(failed) and not failed.get_asset_materialization_events()
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
    assert _requested(result) == {}  # ...and nothing downstream is requested
    fixed = dg.materialize([raw_mbp10], partition_key=ESM4_KEY, instance=instance, resources=resources(lake, landing))
    assert fixed.success
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
    assert _requested(result) == {"book_snapshots_1s": {ESM4_KEY}, "ofi_bars_1m": {ESM4_KEY}}


def _report(instance: dg.DagsterInstance, asset: str, partition: str | None, checks: dict[str, bool]) -> None:
    instance.report_runless_asset_event(dg.AssetMaterialization(asset, partition=partition))
    for name, passed in checks.items():
        instance.report_runless_asset_event(
            dg.AssetCheckEvaluation(dg.AssetKey(asset), name, passed, partition=partition, blocking=True)
        )


def _blocking(asset: dg.AssetsDefinition) -> list[str]:
    return [s.name for s in asset.check_specs if s.blocking]


def test_monthly_assets_follow_the_days_of_their_month(instance: dg.DagsterInstance) -> None:
    """Pure condition logic on reported events (no data needed)."""
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance)

    _report(instance, "hmm_regime_model", None, {})
    _report(instance, "ofi_bars_1m", ESH4_KEY, dict.fromkeys(_blocking(ofi_bars_1m), True))
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
    # the month of the updated day, although other days of December 2023 are missing; no refit of the model
    assert _requested(result) == {"hmm_regimes": {"2023-12-01"}, "features_1m": {"2023-12-01"}}

    _report(instance, "hmm_regime_model", None, {})  # a refit recomputes nothing by itself
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
    assert _requested(result) == {}


# --- backfill idempotence ----------------------------------------------------------------------------


def test_rematerialising_a_day_leaves_the_tables_unchanged(
    instance: dg.DagsterInstance, lake: Lake, landing: Path
) -> None:
    land(landing, ESH4_MBP10)
    tables = {RAW_TABLE: "record_index", SECONDS_TABLE: "ts", BARS_TABLE: "ts"}

    def run_day() -> dict[str, pl.DataFrame]:
        result = dg.materialize(
            [raw_mbp10, book_snapshots_1s, ofi_bars_1m],
            partition_key=ESH4_KEY,
            instance=instance,
            resources=resources(lake, landing),
        )
        assert result.success
        day = dt.date.fromisoformat(ESH4_KEY)
        return {t: lake.read_partition(t, day).sort(["instrument_id", order]) for t, order in tables.items()}

    first, second = run_day(), run_day()
    for table in tables:
        assert first[table].height > 0 and first[table].height == second[table].height, table
        assert first[table].equals(second[table]), table
        assert lake.scan(table).select(pl.len()).collect().item() == first[table].height, table


# --- run failures ------------------------------------------------------------------------------------


def _failed_run(instance: dg.DagsterInstance, lake: Lake, landing: Path) -> dg.RunFailureSensorContext:
    result = dg.materialize(
        [raw_mbp10], partition_key=ESH4_KEY, instance=instance, resources=resources(lake, landing), raise_on_error=False
    )
    assert not result.success
    run = instance.get_run_by_id(result.run_id)
    assert run is not None
    failure = next(e for e in result.all_events if e.event_type_value == "PIPELINE_FAILURE")
    return dg.build_run_status_sensor_context(
        sensor_name="record_run_failure", dagster_event=failure, dagster_instance=instance, dagster_run=run
    ).for_run_failure()


def test_run_failure_sensor_records_the_failure(
    instance: dg.DagsterInstance, lake: Lake, landing: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PHOENIX_FAILURE_LOG_GROUP", raising=False)
    context = _failed_run(instance, lake, landing)  # empty landing folder
    record_run_failure(context)
    lines = (Path(instance.root_directory) / FAILURE_LOG).read_text().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["run_id"] == context.dagster_run.run_id
    assert record["job_name"] == context.dagster_run.job_name
    assert record["partition"] == ESH4_KEY
    assert "raw_mbp10" in record["error"]
    assert "no MBP-10 DBN file in the landing folder" in record["step_errors"]["raw_mbp10"]


def test_run_failure_sensor_sends_to_cloudwatch_when_configured(
    instance: dg.DagsterInstance, lake: Lake, landing: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    moto = pytest.importorskip("moto")
    import boto3

    for k, v in {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("PHOENIX_FAILURE_LOG_GROUP", "phoenix-test")  # read when the failure is handled
    context = _failed_run(instance, lake, landing)
    with moto.mock_aws():
        logs = boto3.client("logs")
        logs.create_log_group(logGroupName="phoenix-test")
        record_run_failure(context)
        events = logs.get_log_events(logGroupName="phoenix-test", logStreamName="phoenix-run-failures")["events"]
    assert [json.loads(e["message"])["run_id"] for e in events] == [context.dagster_run.run_id]
    assert (Path(instance.root_directory) / FAILURE_LOG).exists()
