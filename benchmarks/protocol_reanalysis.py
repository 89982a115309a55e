"""Re-analysis of a stored protocol run (`benchmarks/results/protocol_run_cpu*.json`, written before issue 24)
with fixed-capital accounting: what its stored series allow, and what they do not.

Those files hold, per strength, each strategy's SEED-AVERAGED daily % return (each seed's $ PnL over that seed's
equity of the day, every test month restarting at the capital), the folds, and per seed only the compounded total,
the round trips and the $ costs. Recomputed here:
  * tuned_ofi_rule: exact. The rule is deterministic (its series is the same for every seed), so each month's
    equity is capital x cumprod(1 + r) and its daily $ PnL the differences: the fixed-capital total is the sum.
  * the agents: APPROXIMATE. The average of the seeds' ratios is not a ratio of averages; the seed-mean series
    is treated as one equity per month (the issue's reconstruction). Exact per seed only from research_daily_pnl.
  * days-only stationary-bootstrap CIs of the $ series, Holm over the comparisons. Seed variance cannot enter:
    the per-seed daily series were not stored, so these intervals are too narrow by the training variance.
Not recoverable: per-seed daily or per-month $, hence any seed x day CI and the per-seed fixed-capital totals.

    python benchmarks/protocol_reanalysis.py [benchmarks/results/protocol_run_cpu.json]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from phoenix_rl.research.statistics import fixed_capital_total, holm_adjust, seed_day_bootstrap, versus_verdict

CAPITAL = 10_000.0


def dollars(daily: list[dict[str, Any]], folds: list[dict[str, Any]], capital: float = CAPITAL) -> np.ndarray:
    """Daily $ PnL from daily % returns on an equity that restarts at `capital` at each fold's first test day."""
    starts = {f["test"][0] for f in folds}
    out, equity = [], capital
    for row in daily:
        if row["trade_date"] in starts:
            equity = capital
        pnl = equity * row["ret"]
        out.append(pnl)
        equity += pnl
    return np.asarray(out)


def reanalyse(run: dict[str, Any], reps: int = 2000) -> dict[str, Any]:
    rep = run["report"]
    series = {name: dollars(rows, rep["folds"]) for name, rows in rep["daily"].items()}
    compounded = {
        name: float(np.prod(1 + np.array([r["ret"] for r in rows])) - 1) for name, rows in rep["daily"].items()
    }
    raw = {}
    arms = [a for a in series if a != "tuned_ofi_rule"]
    for arm in arms:
        if arm != "phase2_no_ofi" and "phase2_no_ofi" in series:
            raw[f"{arm} - phase2_no_ofi"] = seed_day_bootstrap(series[arm], series["phase2_no_ofi"], reps=reps)
    for name in series:
        raw[f"{name} vs flat"] = seed_day_bootstrap(series[name], None, reps=reps)
    for arm in arms:
        raw[f"{arm} - tuned_ofi_rule"] = seed_day_bootstrap(series[arm], series["tuned_ofi_rule"], reps=reps)
    tests = holm_adjust(raw)
    for key, c in tests.items():
        name, other = (key.split(" vs ")[0], "flat") if " vs " in key else key.split(" - ")
        c["verdict"] = versus_verdict(name, other, c)
    totals = {
        name: {
            "pnl_usd": float(s.sum()),
            "fixed_capital_total": fixed_capital_total(s, CAPITAL),
            "reported_compounded_total": compounded[name],
            "exact": name == "tuned_ofi_rule",
        }
        for name, s in series.items()
    }
    costs = {arm: {s: m["total_cost"] for s, m in seeds.items()} for arm, seeds in rep["per_seed"].items()}
    return {"totals": totals, "tests": tests, "per_seed_costs_usd": costs, "n_days": len(next(iter(series.values())))}


def main() -> None:
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results/protocol_run_cpu.json")
    record = json.loads(path.read_text())
    out: dict[str, Any] = {"source": str(path), "capital": CAPITAL, "strengths": {}}
    lines = [f"# {path.name} re-analysed on fixed capital (${CAPITAL:,.0f}, 1 contract)", ""]
    for strength, run in record["strengths"].items():
        res = reanalyse(run)
        out["strengths"][strength] = res
        lines += [f"## planted strength {strength}: {res['n_days']} test days, seeds {run['report']['seeds']}", ""]
        lines += ["| strategy | $ PnL (sum of days) | fixed-capital total | reported (compounded) | exact? |"]
        lines += ["|---|---:|---:|---:|---|"]
        for name, t in res["totals"].items():
            exact = "yes" if t["exact"] else "approx. (seed mean of %)"
            lines.append(
                f"| {name} | {t['pnl_usd']:+,.0f} | {t['fixed_capital_total']:+.1%} | "
                f"{t['reported_compounded_total']:+.1%} | {exact} |"
            )
        rule_usd = res["totals"]["tuned_ofi_rule"]["pnl_usd"]
        if "phase2_ofi" in res["totals"] and abs(rule_usd) > 1.0:
            share = res["totals"]["phase2_ofi"]["pnl_usd"] / rule_usd
            lines += ["", f"phase2_ofi's $ PnL / the tuned rule's: {share:.0%}"]
        lines += ["", "| comparison | mean $/day [95% CI, days only] | Holm p | verdict |", "|---|---|---|---|"]
        for key, c in res["tests"].items():
            lines.append(
                f"| {key} | {c['mean']:+,.1f} [{c['low']:+,.1f}, {c['high']:+,.1f}] | {c['p_adjusted']:.3g} | "
                f"{c['verdict']} |"
            )
        lines.append("")
    lines.append(
        "Days-only intervals: the per-seed daily series were not stored, so training variance is in none of them."
    )
    target = path.with_name(path.stem + "_fixed_capital")
    target.with_suffix(".json").write_text(json.dumps(out, indent=1, default=str))
    target.with_suffix(".txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
