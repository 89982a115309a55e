"""The README's main job on the embedded default, and the repo's dagster.yaml as a real instance."""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import warnings
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest

from phoenix_assets.cli import paper
from phoenix_assets.cli.demo import DEMO_END, DEMO_START, demo_windows, learning_verdict, metrics_table, run_demo
from phoenix_assets.definitions import resources
from phoenix_assets.defs.ingest.synthetic import SyntheticMarketRunConfig
from phoenix_assets.defs.model.assets import PIPES_WARNINGS
from phoenix_assets.defs.paper.assets import paper_daily_report, paper_track_record
from phoenix_assets.defs.resources import LakeResource
from phoenix_assets.lib import calendar as cal
from phoenix_assets.lib.io.lake import Lake
from phoenix_assets.lib.schema import RAW_TABLE
from phoenix_assets.lib.synthetic.market import SyntheticMarketConfig
from phoenix_rl.live.monitor_state import monitor_state
from tests.conftest import REPO


@pytest.mark.slow
def test_demo_runs_end_to_end_and_its_agent_learns_the_planted_edge(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, instance: dg.DagsterInstance, capsys: pytest.CaptureFixture[str]
) -> None:
    """`./phoenix demo` as the README gives it: 15 synthetic trade dates across the roll, train < val < 5 held-out
    test days, and on the test days the agent pays its costs and beats flat, random and buy-and-hold."""
    monkeypatch.setenv("PHOENIX_LAKE_URI", str(tmp_path / "lake"))
    monkeypatch.setenv("PHOENIX_LANDING_DIR", str(tmp_path / "landing"))
    with warnings.catch_warnings(record=True) as caught:  # every warning the demo raises in this process
        warnings.simplefilter("always")
        assert run_demo(DEMO_START, DEMO_END, instance)  # runs ok, no blocking check failed
    captured = capsys.readouterr()
    printed = captured.out
    _assert_the_report_is_clean(printed, captured.err, [(w.category, str(w.message)) for w in caught])
    png = printed.split("equity curve of the test window (agent vs baselines): ")[1].split()[0]
    assert Path(png).read_bytes()[:4] == b"\x89PNG"  # the demo says where the figure is
    days = cal.trade_dates_between(DEMO_START, DEMO_END)
    assert len(days) == 15 and len(list((tmp_path / "landing").glob("*.dbn.zst"))) == 15
    lake = LakeResource().lake()
    per_day = (
        lake.scan(RAW_TABLE)
        .group_by("trade_date")
        .agg(pl.len(), pl.col("instrument_id").unique().alias("ids"), pl.col("symbol").unique().alias("symbols"))
        .sort("trade_date")
        .collect()
    )
    ids = SyntheticMarketConfig().instrument_ids
    assert per_day["trade_date"].to_list() == days
    assert per_day["ids"].to_list() == [[ids[0]]] * 14 + [[ids[1]]]  # the roll on 2024-03-15
    assert per_day["symbols"].to_list() == [["MNQ.v.0"]] * 15
    target = SyntheticMarketRunConfig().records_per_day
    assert all(0.7 * target < n < 1.3 * target for n in per_day["len"])
    keys = {d.isoformat() for d in days}
    for daily in ("raw_mbp10", "book_snapshots_1s", "ofi_bars_1m"):
        assert instance.get_materialized_partitions(dg.AssetKey(daily)) == keys
    assert instance.get_materialized_partitions(dg.AssetKey("features_1m")) == {"2024-02-01", "2024-03-01"}
    features = lake.scan("features_1m").collect()
    assert features["trade_date"].unique().sort().to_list() == days
    assert features["feature_spec_hash"].n_unique() == 1
    regimes = lake.scan("hmm_regimes").collect()
    assert regimes.height == features.height and set(regimes["hmm_regime"]) <= {0, 1, 2}
    # issue 11 hole A: the HMM is fitted on the train window only; val and test are distinct, later windows
    _, hmm_path = lake.latest("artifacts/hmm_regime_model", "hmm_regime_model")
    hmm = json.loads(lake.read_artifact(hmm_path))
    assert (hmm["train_start"], hmm["train_end"]) == ("2024-02-26", "2024-03-07")
    _, model_path = lake.latest("artifacts/mamba_sac_model", "mamba_sac_model")
    saved = json.loads(lake.read_artifact(f"{model_path}/config.json"))
    assert saved["evaluation_windows"] == {
        "train": ["2024-02-26", "2024-03-07"], "val": ["2024-03-08", "2024-03-08"],
        "test": ["2024-03-11", "2024-03-15"], "embargo_days": 0,
    }  # fmt: skip
    assert saved["fitted_windows"]["hmm_regime_model"] == ["2024-02-26", "2024-03-07"]
    # issue 11: the demo's agent learns. Measured on this CPU: +33.7% on the 5 test days with 330 round trips,
    # flat 0, buy-and-hold -7.8%, random -68%; the rule tuned on the same train window made +35.1%.
    test = lake.scan("evaluation_metrics").filter(pl.col("window") == "test").collect()
    returns = dict(zip(test["strategy"], test["total_return"], strict=True))
    trades = dict(zip(test["strategy"], test["n_trades"], strict=True))
    assert returns["agent"] > 0.01 and trades["agent"] >= 10, (returns, trades)  # trades, and pays its costs
    assert returns["agent"] > max(returns["random"], returns["buy_and_hold"]), returns
    assert "verdict: evidence of a tradeable edge" in printed  # from the test (days, round trips, Holm)
    _paper_trade_a_test_day(lake, instance, capsys)


def _assert_the_report_is_clean(out: str, err: str, caught: list[tuple[type[Warning], str]]) -> None:
    """The test-window table fits an 80-column terminal, in % and $; Dagster's Pipes warnings stay out of it."""
    table = out.split("(held out), $10K capital, after costs:\n")[1].split("\nverdict: ")[0].splitlines()
    assert table[0].split() == ["strategy", "return_%", "sortino", "max_dd_%", "n_trades", "in_mkt_%", "cost_$"]
    assert {line.split()[0] for line in table[2:]} >= {"agent", "flat", "buy_and_hold", "random"}, table
    too_wide = [line for line in table if len(line) > 80]
    assert not too_wide, too_wide
    agent = next(line.split() for line in table if line.startswith("agent "))
    assert re.fullmatch(r"[+-]\d+\.\d\d", agent[1]) and agent[4].isdigit(), agent  # +33.96 (%), 328 trades
    for category, pattern in PIPES_WARNINGS:
        assert not [m for c, m in caught if issubclass(c, category) and re.match(pattern, m, re.I)], pattern
        text = pattern.replace("\\", "")  # the regex's literal text
        assert text not in out and text not in err, text


def _window(daily: dict[str, list[float]], trade_pnl: list[float], bars: int = 3) -> tuple[pl.DataFrame, pl.DataFrame]:
    """backtest_equity / backtest_trades rows of a test window: each strategy earns daily[strategy][d] $ on day d
    over `bars` bars; the agent closes the round trips `trade_pnl`."""
    rows = []
    for strategy, pnl in daily.items():
        equity = 10_000.0
        for d, day_pnl in enumerate(pnl):
            date = dt.date(2024, 3, 1) + dt.timedelta(days=d)
            for b in range(bars):
                equity += day_pnl / bars
                ts = dt.datetime(date.year, date.month, date.day, 14, b, tzinfo=dt.UTC)
                rows.append({"strategy": strategy, "ts": ts, "trade_date": date, "equity": equity, "cost": 1.0})
    trades = pl.DataFrame(
        {"strategy": ["agent"] * len(trade_pnl), "pnl": trade_pnl}, schema_overrides={"pnl": pl.Float64}
    )
    return pl.DataFrame(rows), trades


def test_the_verdict_says_no_evidence_on_five_round_trips_and_claims_an_edge_only_when_tested() -> None:
    # the reviewer's no-edge market: one position a session, 5 round trips, +1.4 % on 5 days
    equity, trades = _window({"agent": [60, -20, 45, 30, 25], "tuned_ofi_rule": [0] * 5}, [60, -20, 45, 30, 25])
    line = learning_verdict(equity, trades, 10_000.0)
    assert line.startswith("verdict: no evidence of a tradeable edge: too little data (5 round trip(s), need >= 30)")
    assert line.endswith("agent +1.4%, tuned OFI rule +0.0%")
    # many trades that net nothing: no evidence either
    rng = np.random.default_rng(1)
    noise = {"agent": list(rng.normal(0, 200, 20)), "tuned_ofi_rule": list(rng.normal(0, 200, 20))}
    equity, trades = _window(noise, list(rng.normal(0, 30, 400)))
    assert learning_verdict(equity, trades, 10_000.0).startswith("verdict: no evidence of a tradeable edge: agent $")
    # a clearly positive long series with many round trips: an edge, and how it compares with the rule
    edge = {"agent": list(rng.normal(700, 150, 40)), "tuned_ofi_rule": list(rng.normal(700, 150, 40))}
    equity, trades = _window(edge, list(rng.normal(10, 25, 1_500)))
    line = learning_verdict(equity, trades, 10_000.0)
    assert line.startswith("verdict: evidence of a tradeable edge: agent $+"), line
    assert "no evidence that the agent differs from the tuned OFI rule" in line


def test_the_report_table_fits_80_columns_in_percent_and_dollars() -> None:
    names = ["agent", "buy_and_hold", "flat", "ofi_threshold", "random", "tuned_ofi_rule"]
    metrics = pl.DataFrame(
        {
            "strategy": names[::-1],
            "total_return": [0.351, -0.68, 0.12, 0.0, -0.078, 0.339553],
            "sortino": [None, None, None, None, None, 3.14159],
            "max_drawdown_pct": [0.5, 68.3, 1.2, 0.0, 9.1, 0.407755],
            "n_trades": [300.0, 2112.0, 80.0, 0.0, 1.0, 328.0],
            "time_in_market": [0.8, 0.98, 0.3, 0.0, 1.0, 0.93029],
            "total_cost": [700.0, 12345.678, 200.0, 0.0, 3.1, 734.72],
        },
        schema_overrides={"sortino": pl.Float64},
    )
    lines = metrics_table(metrics)
    assert max(len(line) for line in lines) <= 80, lines
    assert lines[0].split() == ["strategy", "return_%", "sortino", "max_dd_%", "n_trades", "in_mkt_%", "cost_$"]
    assert [line.split()[0] for line in lines[2:]] == names  # sorted by name, under a rule
    assert lines[2].split() == ["agent", "+33.96", "3.14", "0.41", "328", "93.0", "734.72"]
    assert lines[6].split() == ["random", "-68.00", "n/a", "68.30", "2112", "98.0", "12,345.68"]


def _paper_trade_a_test_day(lake: Lake, instance: dg.DagsterInstance, capsys: pytest.CaptureFixture[str]) -> None:
    """`./phoenix paper` on a held-out day of the demo's lake: the trained agent through the Nautilus L2 venue
    makes the bar backtest's decisions; the daily report, the go-live gate and the monitor read the record.
    Measured: 94 fills, $644 vs the bar backtest's $610 (book fills cost less than 1 tick a side), positions
    agree on 100% of 1,379 bars, ~80 s, record->order p50 107 ms (the Delta journal commit is most of it)."""
    day = dt.date(2024, 3, 14)
    # the latency budget is the loop's wall clock; on 2 busy CI cores it is not what this test is about
    assert paper.main(["--start", day.isoformat(), "--end", day.isoformat(), "--latency-budget-ms", "5000"]) == 0
    printed = capsys.readouterr().out
    agree = float(printed.split("positions agree on ")[1].split("%")[0])
    assert agree > 95.0, printed  # same features, same observations; only the fills' prices differ
    bars = lake.scan("paper_bars").filter(pl.col("trade_date") == day).collect().sort("bar_ts")
    assert bars.height > 1_300 and bars["position"][-1] == 0 and (bars["risk_state"] == "ACTIVE").all()
    orders, fills = lake.scan("paper_orders").collect(), lake.scan("paper_fills").collect()
    assert orders.height >= 20 and orders["client_order_id"].n_unique() == orders.height
    assert fills["quantity"].sum() == 0 and set(fills["client_order_id"]) == set(orders["client_order_id"])
    with pytest.raises(SystemExit, match="already paper-traded 2024-03-14"):
        paper.main(["--start", day.isoformat(), "--end", day.isoformat()])
    report = dg.materialize(
        [paper_daily_report], partition_key=day.isoformat(), instance=instance, resources=resources()
    )
    row = lake.scan("paper_daily_report").collect().row(0, named=True)
    assert row["pnl_usd"] == pytest.approx(bars["pnl_usd"][-1], abs=0.01) and report.success
    record = dg.materialize([paper_track_record], instance=instance, resources=resources(), raise_on_error=False)
    (gate,) = record.get_asset_check_evaluations()
    assert not gate.passed and "only 1 trade dates of paper trading" in str(gate.description)
    state = monitor_state(lake)
    assert state["status"] == "ok" and state["position"] == 0
    assert state["pnl_usd"] == pytest.approx(bars["pnl_usd"][-1])


def test_demo_windows_hold_out_the_last_five_days() -> None:
    days = cal.trade_dates_between(DEMO_START, DEMO_END)
    w = demo_windows(days)
    assert (w.train, w.val, w.test) == (
        (dt.date(2024, 2, 26), dt.date(2024, 3, 7)), (dt.date(2024, 3, 8),) * 2,
        (dt.date(2024, 3, 11), dt.date(2024, 3, 15)),
    )  # fmt: skip
    embargoed = demo_windows(days, embargo_days=1)  # 03-06 and 03-08 dropped
    assert (embargoed.train[1], embargoed.val, embargoed.test[0]) == (
        dt.date(2024, 3, 5), (dt.date(2024, 3, 7),) * 2, dt.date(2024, 3, 11),
    )  # fmt: skip
    short = demo_windows(days[-3:])  # --quick: one day each
    assert (short.train, short.val, short.test) == tuple((d, d) for d in days[-3:])
    with pytest.raises(ValueError, match="at least 5 trade dates"):
        demo_windows(days[-4:], embargo_days=1)


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
