"""The Dagster instance on PostgreSQL (deploy/postgres/dagster.yaml), against a real server: the monthly backfill
through a real `dagster-daemon` and the retrain sensor in the daemon, each with two runs in progress at once; every
run and materialization recorded, none lost, no lock errors. The SQLite default is tested by test_backfill_cli.py and
test_retrain_sensor.py; the three-process production shape by test_production_shape.py."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from pathlib import Path

import dagster as dg
import pytest

from phoenix_assets.definitions import defs
from phoenix_assets.defs.ops.dagster_internals import BulkActionStatus
from phoenix_assets.defs.ops.retrain import retrain_windows
from phoenix_assets.lib import calendar as cal
from phoenix_assets.lib.io.lake import Lake
from tests.assets.defs.ops.pg_support import (
    assert_no_lock_errors,
    assert_overlapped,
    cli,
    dagster_process,
    pg_dagster_home,
    wait_for,
)
from tests.ui_support import REPO, VENV_BIN, ingest_days_and_fit_hmm, phoenix_env, tail

pytestmark = pytest.mark.slow

DAYS = ["2024-03-28", "2024-04-01"]  # a trade date in each of two months (2024-03-29 is Good Friday)
MONTHS = ["2024-03-01", "2024-04-01"]
DAEMON_TIMEOUT_S = 240
DONE = {BulkActionStatus.COMPLETED, BulkActionStatus.COMPLETED_SUCCESS}
FAILED = {BulkActionStatus.FAILED, BulkActionStatus.COMPLETED_FAILED, BulkActionStatus.CANCELED}
RETRAIN_LOCATION = "tests.assets.defs.ops.pg_retrain_location"


@pytest.fixture
def pg_env(tmp_path: Path, dagster_pg_url: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment `./phoenix` gives with PHOENIX_DAGSTER_PG_URL set, on temporary folders and a fresh database;
    also this test process's, so that `DagsterInstance.get()` here opens the same instance."""
    home = pg_dagster_home(tmp_path / "dagster_home")
    env = {**phoenix_env(home, tmp_path / "lake", tmp_path / "landing"), "PHOENIX_DAGSTER_PG_URL": dagster_pg_url}
    for key in ("DAGSTER_HOME", "PHOENIX_LAKE_URI", "PHOENIX_LANDING_DIR", "PHOENIX_DAGSTER_PG_URL"):
        monkeypatch.setenv(key, env[key])
    return env


def test_instance_is_postgres_with_the_queue_limits_and_the_training_pool(pg_env: dict[str, str]) -> None:
    with dg.DagsterInstance.get() as instance:
        assert {type(s).__name__ for s in (instance.run_storage, instance.event_log_storage)} == {
            "PostgresRunStorage",
            "PostgresEventLogStorage",
        }
        assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        config = instance.get_concurrency_config()
        queue = config.run_queue_config
        assert queue is not None and queue.max_concurrent_runs == 4
        limits = {(t["key"], t.get("value")): t["limit"] for t in queue.tag_concurrency_limits}
        assert limits == {
            ("phoenix/training", None): 1,
            ("phoenix/source", "databento"): 1,
            ("dagster/backfill", None): 2,
        }
        assert (config.pool_config.default_pool_limit, config.pool_config.pool_granularity.value) == (1, "op")
        assert instance.event_log_storage.supports_global_concurrency_limits
    pools = {a.key.to_user_string(): a.op.pool for a in defs.assets or [] if isinstance(a, dg.AssetsDefinition)}
    assert {k for k, p in pools.items() if p == "training"} == {
        "mamba_sac_model",
        "hpo_study",
        "walk_forward",
        "ablation_report",
    }


def _backfill_on_the_daemon(env: dict[str, str], log: Path) -> list[dg.RunRecord]:
    """`dagster job backfill` (docs/operations.md), then a real daemon until every run of it has finished."""
    out = cli(
        env, "job", "backfill", "-w", "workspace.yaml", "-j", "features_job", "--from", MONTHS[0], "--to", MONTHS[-1],
        "--noprompt",
    )  # fmt: skip
    assert "Launched backfill job" in out, out
    with dg.DagsterInstance.get() as instance:
        backfill_id = instance.get_backfills(limit=1)[0].backfill_id
        backfill_runs = dg.RunsFilter(tags={"dagster/backfill": backfill_id})

        def finished() -> list[dg.RunRecord] | None:
            backfill = instance.get_backfill(backfill_id)
            assert backfill is not None
            assert backfill.status not in FAILED, f"backfill {backfill_id} {backfill.status}:\n{tail(log, 60)}"
            records = instance.get_run_records(filters=backfill_runs)
            done = backfill.status in DONE and len(records) == len(MONTHS)
            return list(records) if done and all(r.dagster_run.is_finished for r in records) else None

        with dagster_process([str(VENV_BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"], env, log):
            return wait_for(f"backfill {backfill_id}", finished, DAEMON_TIMEOUT_S, log)


def test_monthly_backfill_runs_two_months_at_once_through_the_daemon(pg_env: dict[str, str], tmp_path: Path) -> None:
    ingest_days_and_fit_hmm(DAYS, records_per_day=20_000)  # two months' days and the regime model, on PG
    # as in test_backfill_cli.py: the sensors that would act on the backfill's results are stopped
    stops = [
        subprocess.Popen(
            [str(VENV_BIN / "dagster"), "sensor", "stop", "-w", "workspace.yaml", sensor],
            cwd=REPO,
            env=pg_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for sensor in ("phoenix_automation", "retrain_sensor")
    ]
    for stop in stops:
        out, _ = stop.communicate(timeout=180)
        assert stop.returncode == 0, out

    log = tmp_path / "daemon.log"
    records = _backfill_on_the_daemon(pg_env, log)
    assert sorted(r.dagster_run.tags["dagster/partition"] for r in records) == MONTHS
    failed = {r.dagster_run.run_id: r.dagster_run.status for r in records if not r.dagster_run.is_success}
    assert not failed, f"backfill runs failed: {failed}\n{tail(log, 60)}"
    assert_overlapped(records)  # dagster/backfill's limit of 2: both months at once
    assert_no_lock_errors(log)

    with dg.DagsterInstance.get() as instance:  # every materialization recorded, for both months
        for asset in ("hmm_regimes", "features_1m"):
            assert instance.get_materialized_partitions(dg.AssetKey(asset)) == set(MONTHS), asset
    features = Lake(pg_env["PHOENIX_LAKE_URI"]).scan("features_1m").collect()
    rows = features.group_by("month").len().sort("month")
    assert rows["month"].to_list() == [dt.date.fromisoformat(m) for m in MONTHS] and rows["len"].min() > 0, rows


def test_retrain_sensor_in_the_daemon_after_two_months_materialized_at_once(
    pg_env: dict[str, str], tmp_path: Path
) -> None:
    """Two `features_1m` months materialized by two processes at once, then the real `retrain_sensor` in a real
    daemon (tests/assets/defs/ops/pg_retrain_location.py: stand-ins for the features and the training): it sees both
    months, queues one training with windows over both, and the daemon launches it."""
    config = tmp_path / "hold.yaml"
    config.write_text(json.dumps({"ops": {"features_1m": {"config": {"hold_s": 4.0}}}}))
    months = ["2024-02-01", "2024-03-01"]
    logs = [tmp_path / f"materialize-{m}.log" for m in months]
    procs = []
    for month, log in zip(months, logs, strict=True):
        cmd = [str(VENV_BIN / "dagster"), "asset", "materialize", "-m", RETRAIN_LOCATION, "--select", "features_1m"]
        with log.open("wb") as out:
            cmd += ["--partition", month, "-c", str(config)]
            procs.append(subprocess.Popen(cmd, cwd=REPO, env=pg_env, stdout=out, stderr=subprocess.STDOUT))
    for proc, log in zip(procs, logs, strict=True):
        assert proc.wait(timeout=180) == 0, tail(log)

    with dg.DagsterInstance.get() as instance:
        materialized = instance.get_run_records(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.SUCCESS]))
        assert sorted(r.dagster_run.tags["dagster/partition"] for r in materialized) == months
        assert_overlapped(materialized)
        assert instance.get_materialized_partitions(dg.AssetKey("features_1m")) == set(months)

        log = tmp_path / "daemon.log"
        training = dg.RunsFilter(job_name="model_job")

        def trained() -> dg.RunRecord | None:
            records = instance.get_run_records(filters=training)
            return records[0] if records and records[0].dagster_run.is_finished else None

        with dagster_process([str(VENV_BIN / "dagster-daemon"), "run", "-m", RETRAIN_LOCATION], pg_env, log):
            record = wait_for("the retrain sensor's model_job run", trained, DAEMON_TIMEOUT_S, log)
        run = record.dagster_run
        assert run.is_success, f"model_job {run.run_id} {run.status}:\n{tail(log, 60)}"
        assert len(instance.get_run_records(filters=training)) == 1  # one training for both months
        assert run.tags["phoenix/retrain_reason"] == "no_model" and run.tags["phoenix/training"] == "true"
        dates = cal.trade_dates_between(dt.date(2024, 2, 1), dt.date(2024, 3, 31))
        assert run.run_config["ops"]["mamba_sac_model"]["config"] == retrain_windows(dates)
        assert run.tags["dagster/run_key"] == f"retrain:2024-03:through:{dates[-1].isoformat()}"
    assert_no_lock_errors(log, *logs)
    assert Lake(pg_env["PHOENIX_LAKE_URI"]).scan("features_1m").collect().height == len(dates)
