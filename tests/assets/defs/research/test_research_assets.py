"""walk_forward and ablation_report through Dagster on a lake of real-pipeline synthetic bars (3 months)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import dagster as dg
import deltalake
import polars as pl
import pytest

from phoenix_assets.defs.research.walk_forward import (
    ablation_report,
    ablation_verdict,
    fold_features,
    register_protocol,
    versus_verdict,
    walk_forward,
    write_daily_pnl,
)
from phoenix_assets.defs.resources import LakeResource
from phoenix_assets.lib import calendar as cal
from phoenix_assets.lib.io.lake import Lake
from phoenix_assets.lib.market.microstructure import to_delta_arrow
from phoenix_assets.lib.schema import BARS_TABLE, RESEARCH_DAILY_PNL_TABLE, RESEARCH_PROTOCOLS_TABLE
from phoenix_rl.research.walk_forward import monthly_folds
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


def test_fold_features_carry_the_decision_book_the_fill_model_crosses(bars_lake: str) -> None:
    """Training and test rows of a fold hold each bar's end-of-minute book (not the next open's fallback)."""
    lake = Lake(bars_lake)
    dates = lake.scan(BARS_TABLE).select("trade_date").unique().collect()["trade_date"].sort().to_list()
    fold = monthly_folds(dates, train_months=1, val_months=1, test_months=1, n_folds=1)[0]
    rows = fold_features(lake, fold)
    book = (
        lake.scan(BARS_TABLE)
        .select(pl.col("ts").cast(rows.schema["ts"]), "instrument_id", "mid_close", "spread_ticks_close")
        .collect()
    )
    joined = rows.select("ts", "instrument_id", "mid_close", "spread_ticks_close").join(
        book, on=["ts", "instrument_id"], how="left", suffix="_bars"
    )
    assert rows.height > 0 and joined["mid_close"].drop_nulls().len() > 0.9 * rows.height
    assert joined.filter(pl.col("mid_close").ne_missing(pl.col("mid_close_bars"))).height == 0


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
    pnl = Lake(bars_lake).scan(RESEARCH_DAILY_PNL_TABLE).filter(pl.col("protocol_hash") == report["protocol_hash"])
    agent = pnl.filter(pl.col("strategy") == "agent").collect()
    assert agent.height == 6 and agent["pnl_usd"].sum() == pytest.approx(report["overall"]["agent"]["total_pnl_usd"])


@pytest.mark.slow
def test_ablation_report_pairs_arms_against_phase2_no_ofi(bars_lake: str) -> None:
    config = FOLDS | {"arms": ["phase2_no_ofi", "phase2_ofi"], "bootstrap_reps": 400, "seeds": [1, 2]}
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
        total = sum(d["pnl_usd"] for d in saved["daily"][name]) / saved["capital"]  # fixed capital: dollars add
        assert c["total_return"] == pytest.approx(total)
        assert c["family_size"] == 1 + 3 + 2 and 0 <= c["p_value"] <= c["p_adjusted"] <= 1  # one Holm family
    rule = saved["vs_tuned_rule"]["phase2_ofi"]
    assert rule["n_days"] == 6 and rule["rule_total_return"] == pytest.approx(
        saved["vs_flat"]["tuned_ofi_rule"]["total_return"]
    )
    assert rule["total_return"] == pytest.approx(saved["vs_flat"]["phase2_ofi"]["total_return"])
    # every arm x seed x strategy x test day is data under the pre-registered protocol hash
    pnl = Lake(bars_lake).scan(RESEARCH_DAILY_PNL_TABLE).filter(pl.col("protocol_hash") == saved["protocol_hash"])
    agent = pnl.filter(pl.col("strategy") == "agent").collect()
    assert agent.height == 2 * 2 * 6 and sorted(agent["seed"].unique()) == [1, 2]
    mean = agent.filter(pl.col("arm") == "phase2_ofi").group_by("trade_date").agg(pl.col("pnl_usd").mean())
    assert mean["pnl_usd"].sum() == pytest.approx(sum(d["pnl_usd"] for d in saved["daily"]["phase2_ofi"]))
    assert saved["comparisons"]["phase2_ofi"]["n_seeds"] == [2, 2]
    (fold_s,) = saved["seconds"]["features_s_by_fold"].values()
    assert fold_s > 0 and {r["arm"] for r in saved["seconds"]["runs"]} == {"phase2_no_ofi", "phase2_ofi"}


def _c(mean: float, reject: bool, n_days: int = 20) -> dict:
    return {"mean": mean, "low": mean - 1, "high": mean + 1, "n_days": n_days, "p_adjusted": 0.01, "reject": reject}


def test_verdict_words() -> None:
    assert versus_verdict("x", "flat", _c(5.0, True)).startswith("x beats flat (Holm-adjusted p = 0.01")
    assert versus_verdict("x", "tuned_ofi_rule", _c(-5.0, True)).startswith("x is worse than tuned")
    assert ablation_verdict("phase2_ofi", _c(5.0, True)).startswith("phase2_ofi beats phase2_no_ofi")
    assert ablation_verdict("x", _c(-5.0, True)).startswith("x is worse")
    assert ablation_verdict("x", _c(5.0, False)).startswith("no evidence")
    # below its power a verdict claims nothing, whatever the interval says
    assert versus_verdict("x", "flat", _c(5.0, True, n_days=4)).startswith("no evidence that x differs from flat: too")
    assert versus_verdict("x", "flat", _c(5.0, True), n_trades=5).endswith("(5 round trip(s), need >= 30)")


def test_protocol_registry_and_daily_pnl_round_trip(tmp_path: Path) -> None:
    """research_protocols is written first and kept on a re-run; research_daily_pnl replaces a protocol's rows
    and reads back through polars and deltalake (and DuckDB where it is installed)."""
    lake = Lake(str(tmp_path / "lake"))
    record = {"asset": "ablation_report", "config": {"seeds": [1, 2], "alpha": 0.05}}
    digest, new = register_protocol(lake, record)
    assert new and register_protocol(lake, dict(reversed(record.items()))) == (digest, False)  # key order: same
    other, new_other = register_protocol(lake, record | {"config": {"seeds": [1, 2, 3], "alpha": 0.05}})
    assert new_other and other != digest
    protocols = lake.scan(RESEARCH_PROTOCOLS_TABLE).collect()
    assert sorted(protocols["protocol_hash"]) == sorted([digest, other])
    assert json.loads(protocols.filter(pl.col("protocol_hash") == digest)["config_json"][0]) == record

    def rows(pnl: float) -> list[pl.DataFrame]:
        days = [dt.date(2024, 3, 1), dt.date(2024, 3, 4)]
        return [
            pl.DataFrame(
                {"fold": [0, 0], "trade_date": days, "pnl_usd": [pnl, -pnl], "cost_usd": [1.5, 2.5],
                 "round_trips": [3, 0]}
            ).with_columns(asset=pl.lit("ablation_report"), arm=pl.lit("phase2_ofi"), strategy=pl.lit("agent"),
                           seed=pl.lit(s, pl.Int64), capital=pl.lit(10_000.0))
            for s in (1, 2)
        ]  # fmt: skip

    write_daily_pnl(lake, digest, rows(100.0))
    write_daily_pnl(lake, other, rows(7.0))
    write_daily_pnl(lake, digest, rows(250.0))  # the same protocol re-run: its rows replaced, not appended
    back = pl.read_delta(lake.table_uri(RESEARCH_DAILY_PNL_TABLE)).filter(pl.col("protocol_hash") == digest)
    assert back.height == 4 and sorted(back["pnl_usd"]) == [-250.0, -250.0, 250.0, 250.0]
    assert back.schema["trade_date"] == pl.Date and back.schema["seed"] == pl.Int64
    arrow = deltalake.DeltaTable(lake.table_uri(RESEARCH_DAILY_PNL_TABLE)).to_pyarrow_table()
    assert arrow.num_rows == 8 and set(arrow.column("protocol_hash").to_pylist()) == {digest, other}
    try:
        import duckdb
    except ImportError:
        return
    total = duckdb.sql(f"select sum(pnl_usd) from delta_scan('{lake.table_uri(RESEARCH_DAILY_PNL_TABLE)}')")
    assert total.fetchone()[0] == pytest.approx(0.0)


def test_too_few_bootstrap_reps_for_the_family_are_refused_before_training(tmp_path: Path) -> None:
    # 2 arms: a family of 1 + 3 + 2 = 6; with 200 replications the smallest Holm p is 6 x 2/201 = 0.0597 > 0.05
    config = FOLDS | {"arms": ["phase2_no_ofi", "phase2_ofi"], "bootstrap_reps": 200}
    with pytest.raises(Exception, match=r"bootstrap_reps=200 can reject nothing in a Holm family of 6 .* use >= 239"):
        _run(ablation_report, str(tmp_path / "no_lake"), config)


@pytest.mark.slow
def test_an_ablation_without_the_reference_arm_reports_vs_flat_and_vs_the_rule(bars_lake: str) -> None:
    """One arm (the evidence run's cheaper protocol): no ablation comparison, a Holm family of 2 + 1."""
    result = _run(ablation_report, bars_lake, FOLDS | {"arms": ["phase2_ofi"], "bootstrap_reps": 400})
    meta = result.asset_materializations_for_node("ablation_report")[0].metadata
    assert meta["verdict_ofi"].value == "phase2_no_ofi not among the arms: no OFI ablation verdict"
    saved = json.loads(Lake(bars_lake).read_artifact("artifacts/ablation_report/latest.json"))
    assert saved["comparisons"] == {} and saved["family_size"] == 3
    assert set(saved["vs_flat"]) == {"phase2_ofi", "tuned_ofi_rule"} and set(saved["vs_tuned_rule"]) == {"phase2_ofi"}


def test_unknown_arms_are_refused_before_training(tmp_path: Path) -> None:
    with pytest.raises(Exception, match=r"arms must be among .* \(got \['phase9'\]\)"):
        _run(ablation_report, str(tmp_path / "no_lake"), FOLDS | {"arms": ["phase9"]})


def test_missing_bars_are_named(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="no ofi_bars_1m table under"):
        _run(walk_forward, str(tmp_path / "empty"), FOLDS)
