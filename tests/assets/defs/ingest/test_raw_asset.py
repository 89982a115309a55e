"""`raw_mbp10` through Dagster: in-process materialize on a real Dagster instance and a temp lake."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pytest

from phoenix_assets.definitions import defs
from phoenix_assets.defs.ingest.assets import raw_mbp10
from phoenix_assets.defs.resources import DatabentoResource, LakeResource, LandingResource, QualityThresholds
from phoenix_assets.lib.io.lake import Lake
from phoenix_assets.lib.schema import RAW_TABLE
from tests.assets.lib.ingest.test_raw_ingest import ESH4_DAY, dbn_bytes
from tests.conftest import ESH4_MBP10, REPO, land


def resources(lake: Lake, landing: Path, **databento: Any) -> dict[str, Any]:
    return {
        "lake": LakeResource(uri=lake.root),
        "landing": LandingResource(path=str(landing)),
        "databento": DatabentoResource(**databento),
        "quality": QualityThresholds(),
    }


def run(
    instance: dg.DagsterInstance,
    lake: Lake,
    landing: Path,
    day: dt.date,
    config: dict | None = None,
    **db: Any,
):
    return dg.materialize(
        [raw_mbp10],
        partition_key=day.isoformat(),
        instance=instance,
        resources=resources(lake, landing, **db),
        run_config={"ops": {"raw_mbp10": {"config": config or {}}}},
        raise_on_error=False,
    )


def checks_by_name(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {c.check_name: c for c in result.get_asset_check_evaluations()}


def failure_message(result: dg.ExecuteInProcessResult) -> str:
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failures, "expected the step to fail"
    error, messages = failures[0].step_failure_data.error, []
    while error is not None:  # Dagster wraps the user's exception: walk the cause chain
        messages.append(error.message)
        error = error.cause
    return "\n".join(messages)


def test_real_day_materializes_with_checks_and_metadata(
    instance: dg.DagsterInstance, lake: Lake, landing: Path
) -> None:
    land(landing, ESH4_MBP10)
    result = run(instance, lake, landing, ESH4_DAY)
    assert result.success
    checks = checks_by_name(result)
    assert set(checks) == {
        "schema", "non_empty", "ts_recv_ordered", "no_duplicates", "prices_on_tick_grid",
        "crossed_share", "expectations", "session_gaps",
    }  # fmt: skip
    assert all(c.passed for c in checks.values()), [n for n, c in checks.items() if not c.passed]
    meta = result.get_asset_materialization_events()[0].materialization.metadata
    assert meta["dagster/row_count"].value == 43_717
    assert meta["instruments"].value == [17077]
    assert meta["first_ts_recv"].value.startswith("2023-12-25T22:00:00")
    assert meta["records_per_second"].value > 0
    # the instance recorded the partition
    assert instance.get_materialized_partitions(dg.AssetKey("raw_mbp10")) == {"2023-12-26"}
    # idempotent: same table content after a second run
    first = lake.scan(RAW_TABLE).sort("record_index").collect()
    assert run(instance, lake, landing, ESH4_DAY).success
    assert lake.scan(RAW_TABLE).sort("record_index").collect().equals(first)


def test_blocking_check_fails_on_out_of_order_records(instance: dg.DagsterInstance, lake: Lake, landing: Path) -> None:
    meta, recs = dbn_bytes(ESH4_MBP10)
    i = int(np.flatnonzero(np.diff(recs["ts_recv"].astype(np.int64)) > 0)[-1])
    recs[[i, i + 1]] = recs[[i + 1, i]]
    (landing / "swapped.dbn").write_bytes(meta + recs.tobytes())
    result = run(instance, lake, landing, ESH4_DAY)
    assert not result.success
    assert "ts_recv_ordered: 1 records out of ts_recv order" in failure_message(result)
    assert not lake.exists(RAW_TABLE)  # refused before the commit: no table was created
    spec = next(s for s in raw_mbp10.check_specs if s.name == "ts_recv_ordered")
    assert spec.blocking


def _partition_files(lake: Lake) -> set[str]:
    return {p.name for p in Path(lake.table_uri(RAW_TABLE)).rglob("*.parquet")}


def test_data_failing_a_blocking_check_is_never_committed(
    instance: dg.DagsterInstance, lake: Lake, landing: Path
) -> None:
    """Issue 13 item 2: a price off the tick grid by 1e-9 used to replace the good partition."""
    land(landing, ESH4_MBP10)
    assert run(instance, lake, landing, ESH4_DAY).success
    good, version, files = (
        lake.scan(RAW_TABLE).sort("record_index").collect(),
        lake.table(RAW_TABLE).version(),
        _partition_files(lake),
    )
    meta, recs = dbn_bytes(ESH4_MBP10)
    recs["price"][100] += 1  # one trade/level price 1e-9 off the 0.25 grid
    (landing / ESH4_MBP10.name).unlink()
    (landing / "off-grid.dbn").write_bytes(meta + recs.tobytes())
    result = run(instance, lake, landing, ESH4_DAY)
    assert not result.success
    message = failure_message(result)
    assert "raw_mbp10 2023-12-26: blocking check(s) failed on the staged data, nothing was committed" in message
    assert "prices_on_tick_grid: 1 prices off the 0.25 grid" in message and "off-grid.dbn" in message
    assert lake.table(RAW_TABLE).version() == version  # the previous version stays current
    assert lake.scan(RAW_TABLE).sort("record_index").collect().equals(good)
    assert _partition_files(lake) == files  # the refused files were deleted
    assert not list(Path(lake.table_uri(RAW_TABLE), "_phoenix_staging").glob("*.json"))


def test_copy_of_a_day_under_another_symbol_is_refused_naming_both_files(
    instance: dg.DagsterInstance, lake: Lake, landing: Path
) -> None:
    """Issue 13 item 1: same records, metadata naming another symbol, used to double the day."""
    land(landing, ESH4_MBP10)
    meta, recs = dbn_bytes(ESH4_MBP10)
    assert meta.count(b"ESH4") >= 1
    (landing / "renamed.dbn").write_bytes(meta.replace(b"ESH4", b"NQH4") + recs.tobytes())
    result = run(instance, lake, landing, ESH4_DAY)
    assert not result.success
    message = failure_message(result)
    assert "no_duplicates: " in message and "duplicate book records" in message
    assert "renamed.dbn" in message and ESH4_MBP10.name in message  # both files named
    assert not lake.exists(RAW_TABLE)


def test_bad_input_fails_with_a_message_naming_the_file(
    instance: dg.DagsterInstance, lake: Lake, landing: Path
) -> None:
    land(landing, ESH4_MBP10)
    (landing / "half.dbn").write_bytes(b"DBN\x03" + b"\x00" * 40)
    result = run(instance, lake, landing, ESH4_DAY)
    assert not result.success
    assert "half.dbn" in failure_message(result)
    assert not lake.exists(RAW_TABLE)


def test_empty_day_names_the_partition(instance: dg.DagsterInstance, lake: Lake, landing: Path) -> None:
    result = run(instance, lake, landing, dt.date(2024, 1, 3))
    assert not result.success
    assert "partition 2024-01-03: no MBP-10 DBN file in the landing folder" in failure_message(result)


def test_missing_databento_key_is_a_clear_message(
    instance: dg.DagsterInstance, lake: Lake, landing: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DATABENTO_API_KEY", raising=False)
    result = run(instance, lake, landing, ESH4_DAY, config={"source": "databento"})
    assert not result.success
    assert "No Databento API key: set DATABENTO_API_KEY" in failure_message(result)


def test_definitions_load_from_workspace_yaml(tmp_path: Path) -> None:
    dg.Definitions.validate_loadable(defs)
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    validate = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", str(REPO / "workspace.yaml")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert validate.returncode == 0, validate.stderr
    listed = subprocess.run(
        [sys.executable, "-m", "dagster", "asset", "list", "-m", "phoenix_assets.definitions"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    assert "raw_mbp10" in listed.stdout.split()
    job_names = {j.name for j in defs.resolve_all_job_defs()}
    assert {"synthetic_landing_job", "daily_job"} <= job_names
