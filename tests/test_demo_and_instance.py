"""The README's main job on the embedded default, and the repo's dagster.yaml as a real instance."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from phoenix_assets.defs.ingest.synthetic import SyntheticMarketRunConfig
from phoenix_assets.defs.resources import LakeResource
from phoenix_assets.demo import run_demo
from phoenix_assets.lib.raw_ingest import RAW_TABLE
from phoenix_assets.lib.synthetic import SyntheticMarketConfig
from tests.conftest import REPO


@pytest.mark.slow
def test_demo_lands_and_ingests_synthetic_days_across_the_roll(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, instance: dg.DagsterInstance, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PHOENIX_LAKE_URI", str(tmp_path / "lake"))
    monkeypatch.setenv("PHOENIX_LANDING_DIR", str(tmp_path / "landing"))
    assert run_demo(dt.date(2024, 3, 13), dt.date(2024, 3, 15), instance)  # runs ok, no blocking check failed
    printed = capsys.readouterr().out
    png = printed.split("equity curve of the test window (agent vs baselines): ")[1].split()[0]
    assert Path(png).read_bytes()[:4] == b"\x89PNG"  # the demo says where the figure is
    assert len(list((tmp_path / "landing").glob("*.dbn.zst"))) == 3
    lake = LakeResource().lake()
    per_day = (
        lake.scan(RAW_TABLE)
        .group_by("trade_date")
        .agg(pl.len(), pl.col("instrument_id").unique().alias("ids"), pl.col("symbol").unique().alias("symbols"))
        .sort("trade_date")
        .collect()
    )
    cfg = SyntheticMarketConfig()
    assert per_day["trade_date"].to_list() == [dt.date(2024, 3, 13), dt.date(2024, 3, 14), dt.date(2024, 3, 15)]
    ids = [cfg.instrument_ids[0]]
    assert per_day["ids"].to_list() == [ids, ids, [cfg.instrument_ids[1]]]  # the roll
    assert per_day["symbols"].to_list() == [["MNQ.v.0"]] * 3
    target = SyntheticMarketRunConfig().records_per_day
    assert all(0.7 * target < n < 1.3 * target for n in per_day["len"])
    days = {"2024-03-13", "2024-03-14", "2024-03-15"}
    assert instance.get_materialized_partitions(dg.AssetKey("raw_mbp10")) == days
    for daily in ("book_snapshots_1s", "ofi_bars_1m"):
        assert instance.get_materialized_partitions(dg.AssetKey(daily)) == days
    assert instance.get_materialized_partitions(dg.AssetKey("features_1m")) == {"2024-03-01"}
    features = lake.scan("features_1m").collect()
    assert features["trade_date"].unique().sort().to_list() == [dt.date(2024, 3, d) for d in (13, 14, 15)]
    assert features["warm"].sum() > 1000 and features["feature_spec_hash"].n_unique() == 1
    assert set(features["instrument_id"]) == set(cfg.instrument_ids)  # the roll is inside the month
    regimes = lake.scan("hmm_regimes").collect()
    assert regimes.height == features.height and set(regimes["hmm_regime"]) <= {0, 1, 2}
    # issue 11 hole A: the HMM is fitted on the train window only; val and test are distinct, later windows
    _, hmm_path = lake.latest("artifacts/hmm_regime_model", "hmm_regime_model")
    hmm = json.loads(lake.read_artifact(hmm_path))
    assert (hmm["train_start"], hmm["train_end"]) == ("2024-03-13", "2024-03-13")
    _, model_path = lake.latest("artifacts/mamba_sac_model", "mamba_sac_model")
    saved = json.loads(lake.read_artifact(f"{model_path}/config.json"))
    assert saved["evaluation_windows"] == {
        "train": ["2024-03-13", "2024-03-13"], "val": ["2024-03-14", "2024-03-14"],
        "test": ["2024-03-15", "2024-03-15"], "embargo_days": 0,
    }  # fmt: skip
    assert saved["fitted_windows"]["hmm_regime_model"] == ["2024-03-13", "2024-03-13"]


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
        # run monitoring on (daemon fails runs stuck STARTING/CANCELING); nothing resumed: the launcher can't
        assert instance.run_monitoring_enabled
        assert instance.run_monitoring_start_timeout_seconds == 180
        assert instance.run_monitoring_max_resume_run_attempts == 0
        assert instance.run_monitoring_max_runtime_seconds == 0  # training and backfills run long
        assert str(home) in instance.root_directory
    assert (home / "history").exists() or (home / "storage").exists()
