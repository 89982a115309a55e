"""walk_forward and ablation_report through Dagster on a lake of real-pipeline synthetic bars (3 months)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import dagster as dg
import deltalake
import numpy as np
import polars as pl
import pytest

from phoenix_assets.defs.research.walk_forward import ablation_report, ablation_verdict, versus_verdict, walk_forward
from phoenix_assets.defs.resources import LakeResource
from phoenix_assets.lib import calendar as cal
from phoenix_assets.lib.io.lake import Lake
from phoenix_assets.lib.market.microstructure import to_delta_arrow
from phoenix_assets.lib.schema import BARS_TABLE
from tests.assets.lib.features.test_features import synthetic_bars
from tests.conftest import TINY_MODEL_CONFIG

TRAINING = {k: v for k, v in TINY_MODEL_CONFIG.items() if not k.endswith(("_start", "_end"))}
FOLDS = {"train_months": 1, "val_months": 1, "test_months": 1, "n_folds": 1, "seeds": [1], "training": TRAINING}


@pytest.fixture(scope="module")
def bars_lake(tmp_path_factory: pytest.TempPathFactory) -> str:
    """ofi_bars_1m for the first 6 trade dates of 2024-01..03 (synthetic DBN days through the book kernel,
    planted OFI link): three short months keep the fold loop to a minute or so."""
    root = tmp_path_factory.mktemp("research_lake")
    every = cal.trade_dates_between(dt.date(2024, 1, 2), dt.date(2024, 3, 29))
    days = [d for m in (1, 2, 3) for d in [x for x in every if x.month == m][:6]]
    bars = synthetic_bars(root / "landing", 0.8, records=4_000, days=days)  # writes every day of the range
    bars = bars.filter(pl.col("trade_date").is_in(days))
    deltalake.write_deltalake(
        Lake(str(root / "lake")).table_uri(BARS_TABLE), to_delta_arrow(bars), partition_by=["trade_date"]
    )
    return str(root / "lake")


def _run(asset: dg.AssetsDefinition, root: str, config: dict) -> dg.ExecuteInProcessResult:
    with dg.instance_for_test() as instance:
        return dg.materialize(
            [asset], resources={"lake": LakeResource(uri=root)}, instance=instance,
            run_config={"ops": {asset.key.path[-1]: {"config": config}}},
        )  # fmt: skip


@pytest.mark.slow
def test_walk_forward_asset_refits_per_fold_and_reports_oos(bars_lake: str) -> None:
    result = _run(walk_forward, bars_lake, FOLDS)
    meta = result.asset_materializations_for_node("walk_forward")[0].metadata
    (fold,) = meta["folds"].value
    assert fold["train"] == ["2024-01-02", "2024-01-09"] and fold["test"] == ["2024-03-01", "2024-03-08"]
    assert "data:image/png;base64" in meta["equity_curve"].value
    assert "tuned_ofi_rule" in meta["overall_oos"].value and "| agent |" in meta["overall_oos"].value
    report = json.loads(Lake(bars_lake).read_artifact("artifacts/walk_forward/latest_report.json"))
    assert report["overall"]["agent"]["n_days"] == 6  # the test month's trade dates, out of sample


@pytest.mark.slow
def test_ablation_report_pairs_arms_against_phase2_no_ofi(bars_lake: str) -> None:
    config = FOLDS | {"arms": ["phase2_no_ofi", "phase2_ofi"], "bootstrap_reps": 200}
    result = _run(ablation_report, bars_lake, config)
    meta = result.asset_materializations_for_node("ablation_report")[0].metadata
    assert meta["verdict_ofi"].value.startswith(("phase2_ofi beats", "phase2_ofi is worse", "no evidence"))
    assert "| phase2_ofi |" in meta["paired_vs_phase2_no_ofi"].value
    saved = json.loads(Lake(bars_lake).read_artifact("artifacts/ablation_report/latest.json"))
    ci = saved["comparisons"]["phase2_ofi"]
    assert ci["low"] <= ci["mean"] <= ci["high"] and ci["n_days"] == 6
    # every arm and the tuned rule against flat (0 a day), every arm against the rule tuned on train
    assert set(saved["vs_flat"]) == {"phase2_no_ofi", "phase2_ofi", "tuned_ofi_rule"}
    assert "| tuned_ofi_rule |" in meta["vs_flat"].value and "| phase2_ofi |" in meta["vs_tuned_ofi_rule"].value
    for name, c in saved["vs_flat"].items():
        assert c["low"] <= c["mean"] <= c["high"] and c["verdict"].startswith(
            (f"{name} beats flat", f"{name} is worse", "no")
        )
        total = float(np.prod(1 + np.array([d["ret"] for d in saved["daily"][name]])) - 1)
        assert c["total_return"] == pytest.approx(total)
    rule = saved["vs_tuned_rule"]["phase2_ofi"]
    assert rule["n_days"] == 6 and rule["rule_total_return"] == pytest.approx(
        saved["vs_flat"]["tuned_ofi_rule"]["total_return"]
    )
    assert rule["total_return"] == pytest.approx(saved["vs_flat"]["phase2_ofi"]["total_return"])
    (fold_s,) = saved["seconds"]["features_s_by_fold"].values()
    assert fold_s > 0 and {r["arm"] for r in saved["seconds"]["runs"]} == {"phase2_no_ofi", "phase2_ofi"}


def test_verdict_words() -> None:
    assert versus_verdict("x", "flat", {"low": 0.001, "high": 0.002}).startswith("x beats flat")
    assert versus_verdict("x", "tuned_ofi_rule", {"low": -0.002, "high": -0.001}).startswith("x is worse than tuned")
    assert ablation_verdict("phase2_ofi", {"low": 0.001, "high": 0.002}).startswith("phase2_ofi beats phase2_no_ofi")
    assert ablation_verdict("x", {"low": -0.002, "high": -0.001}).startswith("x is worse")
    assert ablation_verdict("x", {"low": -0.001, "high": 0.001}).startswith("no evidence")


def test_missing_bars_are_named(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="no ofi_bars_1m table under"):
        _run(walk_forward, str(tmp_path / "empty"), FOLDS)
