"""The main job end to end on the embedded default: synthetic MNQ days -> landing -> `raw_mbp10` (+ checks).

Runs against the persistent Dagster instance in $DAGSTER_HOME, so `./phoenix dev` shows the runs,
the materialized partitions and the check results afterwards. No credentials, local lake.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys

import dagster as dg
import polars as pl

from phoenix_assets.definitions import defs, resources
from phoenix_assets.lib import cme_calendar as cal
from phoenix_rl.windows import EvaluationWindows

DEMO_START = dt.date(2024, 3, 13)
DEMO_END = dt.date(2024, 3, 15)  # the synthetic contract rolls on 2024-03-15
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}  # the table below is the report


def run_demo(start: dt.date, end: dt.date, instance: dg.DagsterInstance, embargo_days: int = 0) -> bool:
    """Land and ingest each trade date; True when every run and blocking check succeeded."""
    synthetic_job = defs.resolve_job_def("synthetic_landing_job")
    daily_job = defs.resolve_job_def("daily_job")
    ok = True
    print(f"{'partition':<12}{'step':<22}{'result':<10}detail")
    for day in cal.trade_dates_between(start, end):
        key = day.isoformat()
        landed = synthetic_job.execute_in_process(
            partition_key=key, instance=instance, raise_on_error=False, run_config=QUIET
        )
        print(f"{key:<12}{'synthetic landing':<22}{'ok' if landed.success else 'FAILED':<10}")
        ingested = daily_job.execute_in_process(
            partition_key=key, instance=instance, raise_on_error=False, run_config=QUIET
        )
        checks = ingested.get_asset_check_evaluations()
        for mat in ingested.get_asset_materialization_events():
            asset = mat.asset_key.to_user_string()
            rows = mat.materialization.metadata["dagster/row_count"].value
            mine = [c for c in checks if c.asset_key == mat.asset_key]
            failed = [c.check_name for c in mine if not c.passed]
            extra = mat.materialization.metadata.get("ofi_contemporaneous_r2")
            print(
                f"{key:<12}{asset:<22}{'ok':<10}{rows:>8} rows, checks {len(mine) - len(failed)}/{len(mine)} passed"
                + (f" (failed: {', '.join(failed)})" if failed else "")
                + (f", OFI->mid R² {extra.value:.2f}" if extra is not None and extra.value is not None else "")
            )
        if not ingested.success:
            print(f"{key:<12}{'daily_job':<22}FAILED")
        blocking_failed = [c for c in checks if not c.passed and c.severity == dg.AssetCheckSeverity.ERROR]
        ok = ok and landed.success and ingested.success and not blocking_failed
    windows = demo_windows(cal.trade_dates_between(start, end), embargo_days)
    print(f"{'-':<12}{'windows':<22}{'':<10}{windows.describe()}")
    return ok and run_features(start, end, instance, windows.train) and run_model(windows, instance)


def demo_windows(days: list[dt.date], embargo_days: int = 0) -> EvaluationWindows:
    """Train, then one validation day, then the test days (about half of what is left), embargo apart."""
    held = len(days) - 2 * embargo_days - 1
    test = max(1, held // 2)
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
        f"{'-':<12}{'hmm_regime_model':<22}{'ok' if model.success else 'FAILED':<10}"
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
                f"{month:%Y-%m}     {mat.asset_key.to_user_string():<22}{'ok':<10}{rows:>8} rows"
                + (f" ({extra.value} warm), checks {len(checks) - len(failed)}/{len(checks)} passed" if extra else "")
                + (f" (failed: {', '.join(failed)})" if failed and extra else "")
            )
        blocking = [c for c in checks if not c.passed and c.severity == dg.AssetCheckSeverity.ERROR]
        ok = ok and result.success and not blocking
    return ok


# The Phase-1 smoke run: 5K environment steps of SAC with a small Mamba extractor, one gradient step every
# 8 environment steps (~20 s on 2 CPU cores; the full-size default trains at ~3-5 steps/s on this CPU).
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


def run_model(evaluation: EvaluationWindows, instance: dg.DagsterInstance) -> bool:
    """Train on the train window, validate on val, evaluate agent and baselines once on the test window."""
    windows = evaluation.train_fields()
    result = dg.materialize(
        list(defs.assets or []),
        selection=["mamba_sac_model", "backtests", "evaluation_metrics"],
        instance=instance,
        resources=resources(),
        run_config={**QUIET, "ops": {"mamba_sac_model": {"config": SMOKE_TRAINING | windows}}},
        tags={"phoenix/training": "true"},
        raise_on_error=False,
    )
    for mat in result.get_asset_materialization_events():
        meta = mat.materialization.metadata
        rate = meta.get("steps_per_s")
        detail = f"{rate.value:.0f} training steps/s (SAC + Mamba)" if rate is not None else ""
        print(f"{'-':<12}{mat.asset_key.to_user_string():<22}{'ok':<10}{detail}")
    checks = result.get_asset_check_evaluations()
    for check in checks:
        verdict = "passed" if check.passed else f"FAILED ({check.severity.value})"
        print(f"{'-':<12}{'  check ' + check.check_name:<32}{verdict}")
    if result.success:
        lake = resources()["lake"].lake()
        metrics = lake.scan("evaluation_metrics").filter(pl.col("window") == "test").collect()
        latest = metrics.filter(pl.col("model_version") == metrics["model_version"].max())
        cols = ["strategy", "total_return", "sortino", "max_drawdown_pct", "n_trades", "time_in_market", "total_cost"]
        with pl.Config(tbl_rows=10, tbl_cols=10, tbl_hide_dataframe_shape=True):
            print(f"test window {evaluation.test[0]}..{evaluation.test[1]} (held out), $10K capital, after costs:")
            shown = latest.select(cols).sort("strategy").with_columns(pl.col("sortino").round(2).cast(pl.String))
            print(shown.with_columns(pl.col("sortino").fill_null("n/a")))  # n/a: fewer days than min_days_for_ratios
        for mat in result.get_asset_materialization_events():
            png = mat.materialization.metadata.get("equity_png_test")
            if png is not None:
                print(f"equity curve of the test window (agent vs baselines): {png.value}")
    blocking = [c for c in checks if not c.passed and c.severity == dg.AssetCheckSeverity.ERROR]
    return result.success and not blocking


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--start", type=dt.date.fromisoformat, default=DEMO_START)
    parser.add_argument("--end", type=dt.date.fromisoformat, default=DEMO_END)
    parser.add_argument("--embargo-days", type=int, default=0, help="trade dates between train/val/test")
    args = parser.parse_args(argv)
    ok = run_demo(args.start, args.end, dg.DagsterInstance.get(), args.embargo_days)
    print("demo", "succeeded" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
