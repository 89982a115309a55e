"""A monthly backfill as docs/operations.md documents it, run the way a user runs it: `dagster job backfill` for a
range of months, executed by a real `dagster-daemon` on a temporary instance (the repo's dagster.yaml); then
the same backfill again, which must leave every table exactly as it was."""

from __future__ import annotations

import contextlib
import datetime as dt
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from phoenix_assets.defs.ops.dagster_internals import BulkActionStatus
from phoenix_assets.lib.io.lake import Lake
from tests.ui_support import (
    REPO,
    VENV_BIN,
    ingest_days_and_fit_hmm,
    phoenix_env,
    prepare_dagster_home,
    start_in_own_group,
    stop_group,
    tail,
)

pytestmark = pytest.mark.slow

DAYS = ["2024-03-27", "2024-03-28", "2024-04-01", "2024-04-02"]  # two months; 2024-03-29 is Good Friday
MONTHS = ["2024-03-01", "2024-04-01"]
BACKFILL_TIMEOUT_S = 300
DONE = {BulkActionStatus.COMPLETED, BulkActionStatus.COMPLETED_SUCCESS}
FAILED = {BulkActionStatus.FAILED, BulkActionStatus.COMPLETED_FAILED, BulkActionStatus.CANCELED}


def _cli(env: dict[str, str], *args: str) -> str:
    proc = subprocess.run(
        [str(VENV_BIN / "dagster"), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, f"dagster {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@contextlib.contextmanager
def _daemon(env: dict[str, str], log: Path) -> Iterator[None]:
    """`dagster-daemon run -w workspace.yaml` in its own process group, stopped with everything it started."""
    cmd = ["env", "--default-signal=INT,TERM", str(VENV_BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"]
    proc = start_in_own_group(cmd, env, log)
    try:
        yield
    finally:
        stop_group(proc)


def _backfill(env: dict[str, str], home: Path, log: Path) -> None:
    """The documented command (docs/operations.md), then the daemon until the backfill is done and every run of
    it succeeded."""
    out = _cli(
        env, "job", "backfill", "-w", "workspace.yaml", "-j", "features_job", "--from", MONTHS[0], "--to", MONTHS[-1],
        "--noprompt",
    )  # fmt: skip
    assert "Launched backfill job" in out, out
    with dg.DagsterInstance.from_config(str(home)) as instance:
        backfill_id = instance.get_backfills(limit=1)[0].backfill_id
        with _daemon(env, log):
            deadline = time.monotonic() + BACKFILL_TIMEOUT_S
            while time.monotonic() < deadline:
                backfill = instance.get_backfill(backfill_id)
                assert backfill is not None
                assert backfill.status not in FAILED, f"backfill {backfill_id} {backfill.status}:\n{tail(log, 60)}"
                runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/backfill": backfill_id}))
                if backfill.status in DONE and len(runs) == len(MONTHS) and all(r.is_finished for r in runs):
                    break
                time.sleep(2)
            else:
                raise AssertionError(f"backfill {backfill_id} not done after {BACKFILL_TIMEOUT_S} s:\n{tail(log, 60)}")
        assert sorted(r.tags["dagster/partition"] for r in runs) == MONTHS
        failed = [r.run_id for r in runs if r.status != dg.DagsterRunStatus.SUCCESS]
        assert not failed, f"backfill runs failed: {failed}\n{tail(log, 60)}"


def _tables(lake: Lake) -> dict[str, pl.DataFrame]:
    return {table: lake.scan(table).collect().sort("instrument_id", "ts") for table in ("hmm_regimes", "features_1m")}


def test_monthly_backfill_from_the_cli_runs_each_month_and_changes_nothing_when_repeated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "dagster_home"
    prepare_dagster_home(home)
    env = phoenix_env(home, tmp_path / "lake", tmp_path / "landing")
    for key in ("DAGSTER_HOME", "PHOENIX_LAKE_URI", "PHOENIX_LANDING_DIR"):
        monkeypatch.setenv(key, env[key])

    ingest_days_and_fit_hmm(DAYS)  # the days of two months, through the daily assets, and the regime model
    # The sensors the repo runs by default would act on the backfill's results (retraining included):
    # stopped here, so the daemon only executes the backfill.
    for sensor in ("phoenix_automation", "retrain_sensor"):
        _cli(env, "sensor", "stop", "-w", "workspace.yaml", sensor)

    lake = Lake(str(tmp_path / "lake"))
    _backfill(env, home, tmp_path / "daemon1.log")
    first = _tables(lake)
    months = {m: first["features_1m"].filter(pl.col("month") == dt.date.fromisoformat(m)).height for m in MONTHS}
    assert all(n > 0 for n in months.values()), months
    versions = {t: lake.table(t).version() for t in first}

    _backfill(env, home, tmp_path / "daemon2.log")
    second = _tables(lake)
    for table in first:
        assert first[table].equals(second[table]), f"{table} changed when the backfill was repeated"
        assert lake.table(table).version() == versions[table] + len(MONTHS), table  # one replace per month, no more
