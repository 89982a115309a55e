"""The README's main job on the embedded default, and the repo's dagster.yaml as a real instance."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from phoenix_assets.defs.resources import LakeResource
from phoenix_assets.demo import run_demo
from phoenix_assets.lib.raw_ingest import RAW_TABLE
from phoenix_assets.lib.synthetic import SyntheticMarketConfig
from tests.conftest import REPO


def test_demo_lands_and_ingests_synthetic_days_across_the_roll(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, instance: dg.DagsterInstance
) -> None:
    monkeypatch.setenv("PHOENIX_LAKE_URI", str(tmp_path / "lake"))
    monkeypatch.setenv("PHOENIX_LANDING_DIR", str(tmp_path / "landing"))
    assert run_demo(dt.date(2024, 3, 14), dt.date(2024, 3, 15), instance)  # runs ok, no blocking check failed
    assert len(list((tmp_path / "landing").glob("*.dbn.zst"))) == 2
    lake = LakeResource().lake()
    per_day = (
        lake.scan(RAW_TABLE)
        .group_by("trade_date")
        .agg(pl.len(), pl.col("instrument_id").unique().alias("ids"), pl.col("symbol").unique().alias("symbols"))
        .sort("trade_date")
        .collect()
    )
    cfg = SyntheticMarketConfig()
    assert per_day["trade_date"].to_list() == [dt.date(2024, 3, 14), dt.date(2024, 3, 15)]
    assert per_day["ids"].to_list() == [[cfg.instrument_ids[0]], [cfg.instrument_ids[1]]]  # the roll
    assert per_day["symbols"].to_list() == [["MNQ.v.0"], ["MNQ.v.0"]]
    assert all(0.6 * cfg.records_per_day < n < 1.4 * cfg.records_per_day for n in per_day["len"])
    assert instance.get_materialized_partitions(dg.AssetKey("raw_mbp10")) == {"2024-03-14", "2024-03-15"}


def test_repo_dagster_yaml_is_a_working_instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.get() as instance:
        coordinator = instance.run_coordinator
        assert type(coordinator).__name__ == "QueuedRunCoordinator"
        assert coordinator.get_run_queue_config().max_concurrent_runs == 2
        limits = coordinator.get_run_queue_config().tag_concurrency_limits
        assert {"key": "phoenix/training", "limit": 1} in limits
        assert str(home) in instance.root_directory
    assert (home / "history").exists() or (home / "storage").exists()
