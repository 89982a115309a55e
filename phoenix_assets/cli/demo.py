"""The main job end to end on the embedded default: synthetic MNQ days with a planted, tradeable order-flow edge
-> landing -> raw -> microstructure -> features -> SAC + Mamba -> evaluation on 5 held-out days.

Runs against the persistent Dagster instance in $DAGSTER_HOME, so `./phoenix dev` shows the runs,
the materialized partitions and the check results afterwards. No credentials, local lake.
`--quick` is the 3-day smoke version (2024-03-13..15, a 5k-step run that need not learn) the UI test uses.
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import dagster as dg
import polars as pl

from phoenix_assets.definitions import defs, resources
from phoenix_assets.defs.ops.dagster_internals import InstanceRef
from phoenix_assets.lib import calendar as cal
from phoenix_assets.lib.schema import EQUITY_TABLE, TRADES_TABLE
from phoenix_rl.evaluation.metrics import format_metric
from phoenix_rl.windows import EvaluationWindows

DEMO_START = dt.date(2024, 2, 26)
DEMO_END = dt.date(2024, 3, 15)  # 15 trade dates; the synthetic contract rolls on 2024-03-15
QUICK_START = dt.date(2024, 3, 13)
INGEST_WORKERS = 2  # trade dates ingested at once (this machine: 2 cores)
TEST_DAYS = 5  # held-out trade dates at the end of the range
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}  # the table below is the report


def run_demo(
    start: dt.date,
    end: dt.date,
    instance: dg.DagsterInstance,
    embargo_days: int = 0,
    training: dict[str, Any] | None = None,
) -> bool:
    """Land and ingest each trade date, features, train, evaluate; True when every run and blocking check
    succeeded. `training` defaults to DEMO_TRAINING (the run that learns)."""
    days = cal.trade_dates_between(start, end)
    windows = demo_windows(days, embargo_days)  # a range too short for train < val < test fails here, first
    print(f"{'partition':<12}{'step':<19}{'result':<7}detail")
    ok = True
    # Trade dates are independent: ingest them in parallel processes, each on its own core, against the
    # same (on-disk) instance; print in date order.
    workers = max(1, min(INGEST_WORKERS, os.cpu_count() or 1, len(days)))
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        for day_ok, lines in pool.map(ingest_day, [d.isoformat() for d in days], [instance.get_ref()] * len(days)):
            print("\n".join(lines))
            ok = ok and day_ok
    print(f"{'-':<12}{'windows':<19}{'':<7}{windows.describe()}")
    return (
        ok
        and run_features(start, end, instance, windows.train)
        and run_model(windows, instance, DEMO_TRAINING if training is None else training)
    )


def ingest_day(key: str, instance_ref: InstanceRef) -> tuple[bool, list[str]]:
    """Land one trade date of synthetic data and run `daily_job` on it; (ok, the report's lines)."""
    instance = dg.DagsterInstance.from_ref(instance_ref)
    landed = defs.resolve_job_def("synthetic_landing_job").execute_in_process(
        partition_key=key, instance=instance, raise_on_error=False, run_config=QUIET
    )
    lines = [f"{key:<12}{'synthetic landing':<19}{'ok' if landed.success else 'FAILED':<7}"]
    ingested = defs.resolve_job_def("daily_job").execute_in_process(
        partition_key=key, instance=instance, raise_on_error=False, run_config=QUIET
    )
    checks = ingested.get_asset_check_evaluations()
    for mat in ingested.get_asset_materialization_events():
        asset = mat.asset_key.to_user_string()
        rows = mat.materialization.metadata["dagster/row_count"].value
        mine = [c for c in checks if c.asset_key == mat.asset_key]
        failed = [c.check_name for c in mine if not c.passed]
        extra = mat.materialization.metadata.get("ofi_contemporaneous_r2")
        lines.append(
            f"{key:<12}{asset:<19}{'ok':<7}{rows:>7} rows, {len(mine) - len(failed)}/{len(mine)} checks"
            + (f" (failed: {', '.join(failed)})" if failed else "")
            + (f", OFI->mid R² {extra.value:.2f}" if extra is not None and extra.value is not None else "")
        )
    if not ingested.success:
        lines.append(f"{key:<12}{'daily_job':<19}FAILED")
    blocking_failed = [c for c in checks if not c.passed and c.severity == dg.AssetCheckSeverity.ERROR]
    return landed.success and ingested.success and not blocking_failed, lines


def demo_windows(days: list[dt.date], embargo_days: int = 0) -> EvaluationWindows:
    """Train, then one validation day, then the last TEST_DAYS days (about half of what is left when the range
    is short), embargo apart."""
    held = len(days) - 2 * embargo_days - 1
    test = max(1, min(TEST_DAYS, held // 2))
    if held - test < 1:
        raise ValueError(
            f"the demo needs at least {3 + 2 * embargo_days} trade dates for train < val < test with an embargo of "
            f"{embargo_days} (got {len(days)}: {days[0]}..{days[-1]})"
        )
    train_end = held - test - 1
    val = train_end + 1 + embargo_days
    first_test = val + 1 + embargo_days
    return EvaluationWindows(
        (days[0], days[train_end]), (days[val], days[val]), (days[first_test], days[-1]), embargo_days
    ).validate()


def run_features(start: dt.date, end: dt.date, instance: dg.DagsterInstance, fit: tuple[dt.date, dt.date]) -> bool:
    """Fit the HMM on the TRAIN window only, then regimes and features for each month the demo touches."""
    model = dg.materialize(
        list(defs.assets or []),
        selection=["hmm_regime_model"],
        instance=instance,
        resources=resources(),
        run_config={
            **QUIET,
            "ops": {"hmm_regime_model": {"config": {"train_start": str(fit[0]), "train_end": str(fit[1])}}},
        },
        raise_on_error=False,
    )
    meta = model.get_asset_materialization_events()[0].materialization.metadata if model.success else {}
    print(
        f"{'-':<12}{'hmm_regime_model':<19}{'ok' if model.success else 'FAILED':<7}"
        f"{'log-likelihood ' + format(meta['log_likelihood'].value, '.0f') if meta else ''}"
    )
    ok = model.success
    features_job = defs.resolve_job_def("features_job")
    for month in sorted({d.replace(day=1) for d in cal.trade_dates_between(start, end)}):
        result = features_job.execute_in_process(
            partition_key=month.isoformat(), instance=instance, raise_on_error=False, run_config=QUIET
        )
        checks = result.get_asset_check_evaluations()
        failed = [c.check_name for c in checks if not c.passed]
        for mat in result.get_asset_materialization_events():
            rows = mat.materialization.metadata["dagster/row_count"].value
            extra = mat.materialization.metadata.get("warm_rows")
            print(
                f"{month:%Y-%m}     {mat.asset_key.to_user_string():<19}{'ok':<7}{rows:>7} rows"
                + (f" ({extra.value} warm), {len(checks) - len(failed)}/{len(checks)} checks" if extra else "")
                + (f" (failed: {', '.join(failed)})" if failed and extra else "")
            )
        blocking = [c for c in checks if not c.passed and c.severity == dg.AssetCheckSeverity.ERROR]
        ok = ok and result.success and not blocking
    return ok


# The run that learns the planted edge in about half a minute on one CPU core: 4K environment steps of SAC with a
# tiny Mamba extractor (4 bars of history), a gradient step every 2 environment steps, 200-bar episodes, and an
# entropy coefficient that starts at 0.1 (SB3's "auto" starts at 1.0: at 5K steps that policy was still random
# enough to stay flat) with learning rate 1e-3. (The asset's full-size default trains at ~7 steps/s on this CPU:
# benchmarks/bench_training.py.)
DEMO_TRAINING = {
    "total_timesteps": 4_000,
    "learning_starts": 500,
    "train_freq": 2,
    "batch_size": 64,
    "buffer_size": 6_000,
    "learning_rate": 1e-3,
    "ent_coef": "auto_0.1",
    "gamma": 0.9,
    "env": {"lookback": 4, "max_steps": 200, "reward_scale": 0.1},
    "d_model": 8,
    "d_state": 4,
    "n_layers": 1,
    "net_arch": [32, 32],
    "log_every": 1_000,
}
# `--quick`: 5K steps, one gradient step every 8 environment steps (~20 s); on 1 training day it need not learn.
SMOKE_TRAINING = {
    "total_timesteps": 5_000,
    "learning_starts": 1_000,
    "train_freq": 8,
    "batch_size": 64,
    "env": {"lookback": 16},
    "d_model": 16,
    "d_state": 8,
    "n_layers": 1,
    "log_every": 1_000,
}


def run_model(evaluation: EvaluationWindows, instance: dg.DagsterInstance, training: dict[str, Any]) -> bool:
    """Train on the train window, validate on val, evaluate agent and baselines once on the test window."""
    windows = evaluation.train_fields()
    result = dg.materialize(
        list(defs.assets or []),
        selection=["mamba_sac_model", "backtests", "evaluation_metrics"],
        instance=instance,
        resources=resources(),
        run_config={**QUIET, "ops": {"mamba_sac_model": {"config": training | windows}}},
        tags={"phoenix/training": "true"},
        raise_on_error=False,
    )
    for mat in result.get_asset_materialization_events():
        meta = mat.materialization.metadata
        rate = meta.get("steps_per_s")
        detail = f"{rate.value:.0f} training steps/s (SAC + Mamba)" if rate is not None else ""
        print(f"{'-':<12}{mat.asset_key.to_user_string():<19}{'ok':<7}{detail}")
    checks = result.get_asset_check_evaluations()
    for check in checks:
        verdict = "passed" if check.passed else f"FAILED ({check.severity.value})"
        print(f"{'-':<12}{'  check ' + check.check_name:<32}{verdict}")
    if result.success:
        lake = resources()["lake"].lake()
        metrics = lake.scan("evaluation_metrics").filter(pl.col("window") == "test").collect()
        latest = metrics.filter(pl.col("model_version") == metrics["model_version"].max())
        print(f"test window {evaluation.test[0]}..{evaluation.test[1]} (held out), $10K capital, after costs:")
        print("\n".join(metrics_table(latest)))
        version = latest["model_version"][0]
        window = (pl.col("model_version") == version) & (pl.col("window") == "test")
        equity = lake.scan(EQUITY_TABLE).filter(window).collect()
        trades = lake.scan(TRADES_TABLE).filter(window).collect()
        print(learning_verdict(equity, trades, float(latest["capital"][0])))
        for mat in result.get_asset_materialization_events():
            png = mat.materialization.metadata.get("equity_png_test")
            if png is not None:
                print(f"equity curve of the test window (agent vs baselines): {png.value}")
    blocking = [c for c in checks if not c.passed and c.severity == dg.AssetCheckSeverity.ERROR]
    return result.success and not blocking


# The report's table: (header, evaluation_metrics column, scale, format). Returns, drawdown and time in market in %
# (evaluation_metrics holds total_return and time_in_market as fractions, max_drawdown_pct in %), costs in $.
TABLE_COLUMNS: tuple[tuple[str, str, float, str], ...] = (
    ("return_%", "total_return", 100.0, "{:+.2f}"),
    ("sortino", "sortino", 1.0, "{:.2f}"),  # n/a: fewer days than min_days_for_ratios
    ("max_dd_%", "max_drawdown_pct", 1.0, "{:.2f}"),
    ("n_trades", "n_trades", 1.0, "{:.0f}"),
    ("in_mkt_%", "time_in_market", 100.0, "{:.1f}"),
    ("cost_$", "total_cost", 1.0, "{:,.2f}"),
)


def _scaled(value: float | None, scale: float) -> float | None:
    return None if value is None else value * scale


def metrics_table(metrics: pl.DataFrame) -> list[str]:
    """One line per strategy of `metrics` (evaluation_metrics rows), sorted by name, under a header: strategy
    left-aligned, numbers right-aligned, each column as wide as its widest cell."""
    rows = [
        [row["strategy"], *(format_metric(_scaled(row[col], scale), fmt) for _, col, scale, fmt in TABLE_COLUMNS)]
        for row in metrics.sort("strategy").iter_rows(named=True)
    ]
    header = ["strategy", *(name for name, *_ in TABLE_COLUMNS)]
    widths = [max(len(cells[i]) for cells in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join([cells[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))])

    return [line(header), line(["-" * w for w in widths]), *(line(cells) for cells in rows)]


def learning_verdict(equity: pl.DataFrame, trades: pl.DataFrame, capital: float) -> str:
    """One line from a test, not from a sign: `phoenix_rl.research.statistics.window_edge_verdict` on the test
    window's daily $ PnL (agent vs flat and vs the OFI rule tuned on the same train window, paired by trade date)
    and the agent's round trips, Holm-corrected; "no evidence" below MIN_DAYS days or MIN_TRADES round trips.
    `equity`/`trades`: the backtest_equity / backtest_trades rows of one model's test window, all strategies."""
    from phoenix_rl.research.statistics import window_edge_verdict

    result = window_edge_verdict(equity, trades, capital)
    return (
        f"verdict: {result['verdict']}. Totals on ${capital:,.0f} fixed capital: agent "
        f"{result['agent_total_return']:+.1%}, tuned OFI rule {result['rule_total_return']:+.1%}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--start", type=dt.date.fromisoformat, default=None, help=f"first trade date ({DEMO_START})")
    parser.add_argument("--end", type=dt.date.fromisoformat, default=DEMO_END)
    parser.add_argument("--embargo-days", type=int, default=0, help="trade dates between train/val/test")
    parser.add_argument("--quick", action="store_true", help="3 days from 2024-03-13 and a 5k-step smoke run")
    args = parser.parse_args(argv)
    start = args.start or (QUICK_START if args.quick else DEMO_START)
    training = SMOKE_TRAINING if args.quick else DEMO_TRAINING
    ok = run_demo(start, args.end, dg.DagsterInstance.get(), args.embargo_days, training)
    print("demo", "succeeded" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
