"""The walk-forward ablation protocol, full size: does phase2_ofi beat phase2_no_ofi out of sample, and only
when an order-flow edge is planted?

For each planted strength (default 0.5, then the 0.0 control; same market seed and dates):
  1. synthetic MBP-10 DBN days (`write_day`) -> book kernel -> 1s frame -> `ofi_bars_1m` (Stoikov's table fit on
     the 5 previous trade dates' seconds, as the asset does) -> the `ofi_bars_1m` Delta table of a fresh local
     lake, one `replace_partition` per trade date (the asset's write). Built days are skipped on a rerun.
  2. the real `ablation_report` asset materialized on that lake (Dagster, in process): arms x seeds x monthly
     folds, HMM and features refit per fold; the protocol (market, dates, folds, arms, seeds, training, statistics)
     hashed and registered in the lake's `research_protocols` before any training; every arm x seed x fold x test
     day's $ PnL in `research_daily_pnl`; two-stage (seeds, then days) bootstrap CIs in $ a day on fixed capital
     vs phase2_no_ofi, vs flat and vs the train-tuned OFI rule, Holm-corrected over all of them.
Prints one table per strength and writes `benchmarks/results/protocol_run_cpu.json` and `.txt` (the tables,
the config and the wall time of every stage: data, features per fold, each training, total). Not part of CI.

    taskset -c 1 env OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 NUMBA_NUM_THREADS=1 \\
        python benchmarks/protocol_run.py [--strengths 0.5 0.0] [--timesteps 4000] [--out benchmarks/out/protocol]
    python benchmarks/protocol_run.py --stage data      # only build the lakes (cached)
    python benchmarks/protocol_run.py --stage tables    # only rewrite the .txt tables from the .json
    python benchmarks/protocol_run.py --strengths 0.0 --seeds 1 2   # one strength: the others' results are kept
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import polars as pl

from phoenix_assets.lib.market.microstructure import STOIKOV_TRAIN_DAYS

MARKET = {"records_per_day": 200_000, "flow_halflife_s": 300.0, "seed": 11}
FIRST_DATE, LAST_DATE = dt.date(2024, 1, 2), dt.date(2024, 5, 31)  # 5 months: 1 train + 1 val + 3 test
STOIKOV_DAYS = STOIKOV_TRAIN_DAYS  # as the ofi_bars_1m asset
TRAINING: dict[str, Any] = {  # benchmarks/evidence_run.py's EVIDENCE_TRAINING, made to learn in the budget
    "total_timesteps": 4_000,  # pilot (strength 0.5, Jan -> Feb): trades and gains on validation at 4k
    "learning_starts": 1_000,
    "train_freq": 2,
    "gradient_steps": 1,
    "batch_size": 64,
    "learning_rate": 1e-3,
    "ent_coef": "auto_0.1",  # SB3's auto starts at 1.0: 1.5k updates are too few to leave the deadband
    "d_model": 16,
    "d_state": 8,
    "n_layers": 1,
    "gamma": 0.95,
    "env": {"lookback": 16, "reward_scale": 0.1},
    "log_every": 1_000,
    "torch_threads": 1,
}
FOLDS: dict[str, Any] = {
    "train_months": 1,
    "val_months": 1,
    "test_months": 1,
    "n_folds": 3,
    "seeds": list(range(1, 11)),  # >= 10 seeds per arm: training variance is part of every CI
    "workers": 1,  # as measured (on one core, docs/research-protocol.md); --workers 2 on two free cores
}
ARMS = ["phase2_no_ofi", "phase2_ofi"]
RESULTS = Path(__file__).resolve().parent / "results"


def build_bars_lake(strength: float, folder: Path, first: dt.date, last: dt.date) -> dict[str, Any]:
    """ofi_bars_1m of every trade date in [first, last] into `folder/lake`; days already there are skipped."""
    import databento

    from phoenix_assets.lib import calendar as cal
    from phoenix_assets.lib.io.lake import Lake
    from phoenix_assets.lib.market.bars import fit_stoikov_adjustment, ofi_bars_1m, seconds_frame
    from phoenix_assets.lib.market.book_kernel import arrays_from_dbn, book_ofi_1s
    from phoenix_assets.lib.market.microstructure import to_delta_arrow
    from phoenix_assets.lib.schema import BARS_TABLE
    from phoenix_assets.lib.synthetic.market import SyntheticMarketConfig, write_day

    t0 = time.perf_counter()
    cfg = SyntheticMarketConfig(ofi_strength=strength, **MARKET)
    lake = Lake(str((folder / "lake").resolve()))
    dates = cal.trade_dates_between(first, last)
    done = set()
    if lake.exists(BARS_TABLE):
        done = set(lake.scan(BARS_TABLE).select(pl.col("trade_date").unique()).collect()["trade_date"].to_list())
    todo = [i for i, d in enumerate(dates) if d not in done]
    symbols = dict(zip(cfg.instrument_ids, cfg.raw_symbols, strict=True))  # raw_mbp10's symbol column
    recent: collections.deque[pl.DataFrame] = collections.deque(maxlen=STOIKOV_DAYS)
    # from STOIKOV_DAYS before the first missing day: their seconds feed the Stoikov fit of the days after
    for day in dates[max(0, todo[0] - STOIKOV_DAYS) :] if todo else []:
        store = databento.DBNStore.from_file(write_day(day, folder / "dbn", cfg))
        seconds = seconds_frame(book_ofi_1s(arrays_from_dbn(chunk) for chunk in store.to_ndarray(count=1 << 16)))
        seconds = seconds.with_columns(symbol=pl.col("instrument_id").replace_strict(symbols, return_dtype=pl.String))
        if day not in done:
            stoikov = fit_stoikov_adjustment(pl.concat(recent)) if recent else None
            table = to_delta_arrow(ofi_bars_1m(seconds, stoikov_table=stoikov))
            lake.replace_partition(BARS_TABLE, table.schema, table.to_batches(max_chunksize=65_536), "trade_date", day)
        recent.append(seconds)
    elapsed = time.perf_counter() - t0
    print(f"strength {strength}: {len(todo)} of {len(dates)} trade dates built in {elapsed:.0f} s -> {lake.root}")
    return {"lake": lake.root, "trade_dates": len(dates), "built": len(todo), "seconds": elapsed}


def run_ablation(lake_root: str, config: dict[str, Any]) -> dict[str, Any]:
    """Materialize the real `ablation_report` asset on the lake; its JSON artifact plus the wall time."""
    import dagster as dg

    from phoenix_assets.defs.research.walk_forward import ablation_report
    from phoenix_assets.defs.resources import LakeResource
    from phoenix_assets.lib.io.lake import Lake

    t0 = time.perf_counter()
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [ablation_report],
            resources={"lake": LakeResource(uri=lake_root)},
            instance=instance,
            run_config={"ops": {"ablation_report": {"config": config}}},
        )
    if not result.success:
        raise RuntimeError(f"ablation_report failed on {lake_root}")
    report = json.loads(Lake(lake_root).read_artifact("artifacts/ablation_report/latest.json"))
    return report | {"asset_seconds": time.perf_counter() - t0}


def _ci(c: dict[str, Any]) -> str:
    return f"{c['mean']:+,.1f} [{c['low']:+,.1f}, {c['high']:+,.1f}]"


def format_tables(strength: float, run: dict[str, Any]) -> str:
    """The three comparisons of one strength as Markdown tables ($ a day on fixed capital, 95% seed x day CI,
    Holm-adjusted p over the report's whole family)."""
    rep = run["report"]
    head = f"### planted strength {strength}: {len(rep['folds'])} test months, seeds {rep['seeds']}"
    if "protocol_hash" not in rep:  # written before issue 24: % of a drifting equity, seeds averaged first
        return (
            f"{head}\n\n(old accounting: see {RESULTS.name}/protocol_run_cpu_fixed_capital.txt, protocol_reanalysis.py)"
        )
    out = [f"{head}, protocol {rep['protocol_hash'][:12]}, family of {rep['family_size']} comparisons", ""]
    out += ["| arm - phase2_no_ofi | mean $/day [CI] | Holm p | days | verdict |", "|---|---|---:|---:|---|"]
    out += [
        f"| {a} | {_ci(c)} | {c['p_adjusted']:.3g} | {c['n_days']} | {c['verdict']} |"
        for a, c in rep["comparisons"].items()
    ]
    out += ["", "| strategy vs flat | mean $/day [CI] | Holm p | OOS total (fixed capital) | verdict |"]
    out += ["|---|---|---:|---:|---|"]
    out += [
        f"| {a} | {_ci(c)} | {c['p_adjusted']:.3g} | {c['total_return']:+.2%} | {c['verdict']} |"
        for a, c in rep["vs_flat"].items()
    ]
    out += ["", "| arm - tuned_ofi_rule | mean $/day [CI] | Holm p | arm total | rule total | verdict |"]
    out += ["|---|---|---:|---:|---:|---|"]
    out += [
        f"| {a} | {_ci(c)} | {c['p_adjusted']:.3g} | {c['total_return']:+.2%} | {c['rule_total_return']:+.2%} | "
        f"{c['verdict']} |"
        for a, c in rep["vs_tuned_rule"].items()
    ]
    out += ["", "| arm | OOS $ PnL by seed (fixed capital) | round trips by seed |", "|---|---|---|"]
    for arm, seeds in rep["per_seed"].items():
        totals = ", ".join(f"s{s} {m['total_pnl_usd']:+,.0f}" for s, m in seeds.items())
        trips = ", ".join(f"s{s} {m['n_trades']:.0f}" for s, m in seeds.items())
        out.append(f"| {arm} | {totals} | {trips} |")
    runs = rep["seconds"]["runs"]
    train_s = [r[k] for r in runs for k in r if k.startswith("train_seed")]
    out += [
        "",
        f"wall time: data {run['data']['seconds']:.0f} s ({run['data']['built']} days built), features per fold "
        + ", ".join(f"{float(s):.0f} s" for s in rep["seconds"]["features_s_by_fold"].values())
        + f", {len(train_s)} trainings {min(train_s):.0f}-{max(train_s):.0f} s (sum {sum(train_s):.0f} s), "
        f"test backtests + rule tuning sum {sum(r['test'] for r in runs):.0f} s, asset {rep['asset_seconds']:.0f} s",
    ]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strengths", type=float, nargs="+", default=[0.5, 0.0])
    parser.add_argument("--timesteps", type=int, default=TRAINING["total_timesteps"])
    parser.add_argument("--seeds", type=int, nargs="+", default=FOLDS["seeds"])
    parser.add_argument("--workers", type=int, default=FOLDS["workers"], help="training processes at once")
    parser.add_argument("--arms", nargs="+", default=ARMS)
    parser.add_argument("--stage", choices=["data", "all", "tables"], default="all")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/protocol"))
    parser.add_argument("--results", type=Path, default=RESULTS / "protocol_run_cpu")
    parser.add_argument("--set", nargs="*", default=[], help="extra training overrides key=json")
    args = parser.parse_args()
    training = TRAINING | {"total_timesteps": args.timesteps}
    training |= {k: json.loads(v) for k, v in (kv.split("=", 1) for kv in args.set)}
    config = FOLDS | {"seeds": args.seeds, "workers": args.workers, "arms": args.arms, "training": training}
    machine = {
        "cpus": os.cpu_count(),
        "affinity": sorted(os.sched_getaffinity(0)),
        "threads": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")},
        "python": platform.python_version(),
    }
    record: dict[str, Any] = {"market": MARKET, "dates": [str(FIRST_DATE), str(LAST_DATE)], "strengths": {}}
    json_path, txt_path = args.results.with_suffix(".json"), args.results.with_suffix(".txt")
    if json_path.exists():  # a run of some strengths keeps the others' results (each with its own config)
        earlier = json.loads(json_path.read_text())
        for run in earlier["strengths"].values():  # a file written before results carried their own config
            run.setdefault("config", earlier.get("config"))
            run.setdefault("machine", earlier.get("machine"))
            run.setdefault("seconds", run["data"]["seconds"] + run["report"]["asset_seconds"])
        record["strengths"] = earlier["strengths"]
    if args.stage == "tables":
        txt_path.write_text(_tables(record))
        return
    data = {s: build_bars_lake(s, args.out / f"s{s}", FIRST_DATE, LAST_DATE) for s in args.strengths}
    if args.stage == "data":
        return
    for strength in args.strengths:
        started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        market = json.dumps(MARKET | {"ofi_strength": strength, "dates": [str(FIRST_DATE), str(LAST_DATE)]})
        report = run_ablation(data[strength]["lake"], config | {"market": market})  # hashed with the protocol
        record["strengths"][str(strength)] = {
            "data": data[strength],
            "report": report,
            "config": config,
            "machine": machine | {"started_utc": started, "load_average_at_end": os.getloadavg()},
            "finished_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "seconds": data[strength]["seconds"] + report["asset_seconds"],
        }
        args.results.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(record, indent=1, default=str))
        print(format_tables(strength, record["strengths"][str(strength)]), flush=True)
        txt_path.write_text(_tables(record))


def _tables(record: dict[str, Any]) -> str:
    tables = [format_tables(float(k), v) for k, v in record["strengths"].items()]
    total = sum(v["seconds"] for v in record["strengths"].values())
    return "\n\n".join(tables) + f"\n\nwall time, all strengths here: {total:.0f} s\n"


if __name__ == "__main__":
    main()
