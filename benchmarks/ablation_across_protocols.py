"""The OFI ablation from two single-arm protocol runs: phase2_ofi - phase2_no_ofi re-analysed from the lake's
`research_daily_pnl`, without retraining.

Two runs of `benchmarks/protocol_run.py --arms <arm>` on the same lake are one two-arm ablation split in time
when their registered protocols (`research_protocols`) differ only in the arms: same market, dates, folds,
seeds, training and statistics. This script refuses them otherwise, then forms the family a two-arm
`ablation_report` would (phase2_ofi - phase2_no_ofi; each arm and the tuned rule vs flat; each arm - the tuned
rule: 6 comparisons) with the same two-stage (seeds, then days) bootstrap and Holm's correction, and prints it.

    python benchmarks/ablation_across_protocols.py --lake benchmarks/out/protocol/s0.5/lake \\
        --protocols b4e878aa3fbe cdc5c5c5c940 [--out benchmarks/results/protocol_run_cpu_ablation.txt]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from phoenix_assets.lib.io.lake import Lake
from phoenix_assets.lib.schema import RESEARCH_DAILY_PNL_TABLE, RESEARCH_PROTOCOLS_TABLE
from phoenix_rl.research import statistics


def _protocol(lake: Lake, prefix: str) -> tuple[str, dict[str, Any]]:
    rows = lake.scan(RESEARCH_PROTOCOLS_TABLE).filter(pl.col("protocol_hash").str.starts_with(prefix)).collect()
    if rows.height != 1:
        raise SystemExit(f"{prefix}: {rows.height} registered protocols match (need exactly one)")
    return rows["protocol_hash"][0], json.loads(rows["config_json"][0])


def _without_arms(record: dict[str, Any]) -> dict[str, Any]:
    """The protocol record less what the two runs may differ in: the arms (and nothing else)."""
    out = {k: v for k, v in record.items() if k != "arms"}
    out["config"] = {k: v for k, v in record["config"].items() if k != "arms"}
    return out


def _matrix(pnl: pl.DataFrame, digest: str, arm: str, strategy: str) -> tuple[np.ndarray, list, float]:
    """seeds x test days of $ PnL, the days, and the mean round trips per seed."""
    rows = pnl.filter((pl.col("protocol_hash") == digest) & (pl.col("arm") == arm) & (pl.col("strategy") == strategy))
    wide = rows.pivot(on="trade_date", index="seed", values="pnl_usd", aggregate_function=None).sort("seed")
    dates = sorted(rows["trade_date"].unique().to_list())
    trips = rows.group_by("seed").agg(pl.col("round_trips").sum())["round_trips"].mean()
    return wide.select([str(d) for d in dates]).to_numpy().astype(float), dates, float(trips or 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lake", type=Path, required=True)
    parser.add_argument(
        "--protocols", nargs=2, required=True, help="hash prefixes of the phase2_ofi and phase2_no_ofi runs"
    )
    parser.add_argument("--reps", type=int, default=2000)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    lake = Lake(str(args.lake))
    (ofi_hash, ofi_rec), (ref_hash, ref_rec) = (_protocol(lake, p) for p in args.protocols)
    if ofi_rec["config"]["arms"] != ["phase2_ofi"] or ref_rec["config"]["arms"] != ["phase2_no_ofi"]:
        raise SystemExit("the first protocol must be the phase2_ofi run, the second the phase2_no_ofi run")
    if _without_arms(ofi_rec) != _without_arms(ref_rec):
        raise SystemExit("the two protocols differ in more than their arms: not one ablation")
    pnl = lake.scan(RESEARCH_DAILY_PNL_TABLE).filter(pl.col("protocol_hash").is_in([ofi_hash, ref_hash])).collect()
    pnl = pnl.with_columns(pl.col("trade_date").cast(pl.String))
    ofi, dates, ofi_trips = _matrix(pnl, ofi_hash, "phase2_ofi", "agent")
    ref, ref_dates, ref_trips = _matrix(pnl, ref_hash, "phase2_no_ofi", "agent")
    rule, _, rule_trips = _matrix(pnl, ofi_hash, "phase2_ofi", "tuned_ofi_rule")
    ref_rule, _, _ = _matrix(pnl, ref_hash, "phase2_no_ofi", "tuned_ofi_rule")
    if dates != ref_dates or ofi.shape != ref.shape:
        raise SystemExit(f"the runs' test days or seeds differ: {ofi.shape} vs {ref.shape}")
    ci = {"alpha": float(ofi_rec["config"]["alpha"]), "reps": args.reps, "seed": 0}
    raw = {
        "phase2_ofi - phase2_no_ofi": (statistics.seed_day_bootstrap(ofi, ref, **ci), ("phase2_ofi", "phase2_no_ofi")),
        "phase2_ofi vs flat": (statistics.seed_day_bootstrap(ofi, None, **ci), ("phase2_ofi", "flat")),
        "phase2_no_ofi vs flat": (statistics.seed_day_bootstrap(ref, None, **ci), ("phase2_no_ofi", "flat")),
        "tuned_ofi_rule vs flat": (statistics.seed_day_bootstrap(rule, None, **ci), ("tuned_ofi_rule", "flat")),
        "phase2_ofi - tuned_ofi_rule": (
            statistics.seed_day_bootstrap(ofi, rule, **ci),
            ("phase2_ofi", "tuned_ofi_rule"),
        ),
        "phase2_no_ofi - tuned_ofi_rule": (
            statistics.seed_day_bootstrap(ref, ref_rule, **ci),
            ("phase2_no_ofi", "tuned_ofi_rule"),
        ),
    }
    family = statistics.holm_adjust({k: v[0] for k, v in raw.items()}, ci["alpha"])
    trips = {"phase2_ofi": ofi_trips, "phase2_no_ofi": ref_trips, "tuned_ofi_rule": rule_trips, "flat": 0.0}
    capital = float(pnl["capital"][0])
    lines = [
        f"OFI ablation across protocols {ofi_hash[:12]} (phase2_ofi) and {ref_hash[:12]} (phase2_no_ofi): "
        f"{ofi.shape[0]} seeds x {len(dates)} test days, ${capital:,.0f} fixed capital, Holm family of {len(family)}",
        "",
        "| comparison | mean $/day [95% CI, seeds x days] | Holm p | verdict |",
        "|---|---|---:|---|",
    ]
    for name, c in family.items():
        a, b = raw[name][1]
        verdict = statistics.versus_verdict(a, b, c, max(trips[a], trips[b]))
        lines.append(
            f"| {name} | {c['mean']:+,.1f} [{c['low']:+,.1f}, {c['high']:+,.1f}] | {c['p_adjusted']:.3g} | {verdict} |"
        )
    totals = {
        n: statistics.fixed_capital_total(m.mean(axis=0), capital)
        for n, m in (("phase2_ofi", ofi), ("phase2_no_ofi", ref))
    }
    lines += ["", "fixed-capital totals (seed mean): " + ", ".join(f"{n} {t:+.2%}" for n, t in totals.items())]
    lines.append(
        "phase2_no_ofi $ PnL by seed: "
        + ", ".join(f"{v:+,.0f}" for v in ref.sum(axis=1))
        + f"; mean round trips per seed {ref_trips:,.0f}"
    )
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
