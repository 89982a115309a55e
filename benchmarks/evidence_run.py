"""Evidence run: does the Phase-2 agent find a planted order-flow edge after costs, and only when it exists?

For each planted strength (default 0.5 and the 0.0 control), with the same seed and dates:
  synthetic MBP-10 DBN days -> book kernel -> 1m bars -> HMM fit on the train window only -> forward-filtered
  regimes -> features (the library functions the Dagster assets call) -> SAC + Mamba on the train window
  (`phoenix_rl.train.trainer.train`, the code the `mamba_sac_model` asset runs) -> deterministic backtests of the agent
  and the baselines (flat, buy-and-hold, random, OFI threshold) on the held-out test window, identical costs.
Each strength is trained with every seed of `--seeds` (default 10: a training run is a random draw). Prints one
table per strength and seed, then the verdicts from the test-window daily $ PnL on fixed capital: the agent vs flat
and vs the train-tuned OFI rule with two-stage (seeds, then days) bootstrap CIs, Holm-corrected over all
strengths' comparisons (phoenix_rl.research.statistics). Not part of CI (minutes of CPU per seed).

    python benchmarks/evidence_run.py [--strengths 0.5 0.0] [--seeds 1 2 ...] [--timesteps 30000] [--out runs/evidence]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import time
from pathlib import Path

import numpy as np
import polars as pl

EVIDENCE_MARKET = {"records_per_day": 200_000, "flow_halflife_s": 300.0, "seed": 11}
TRAIN = (dt.date(2024, 1, 8), dt.date(2024, 1, 26))  # 15 trade dates
VAL = (dt.date(2024, 1, 29), dt.date(2024, 1, 30))
TEST = (dt.date(2024, 1, 31), dt.date(2024, 2, 6))  # 5 trade dates, never seen in training
EVIDENCE_TRAINING = {
    "feature_set": "phase2_ofi",
    "total_timesteps": 30_000,
    "learning_starts": 2_000,
    "train_freq": 4,
    "gradient_steps": 1,
    "batch_size": 128,
    "d_model": 16,
    "d_state": 8,
    "n_layers": 1,
    "gamma": 0.95,
    "env": {"lookback": 16, "reward_scale": 0.1},
    "log_every": 2_000,
}


def build_features(strength: float, folder: Path) -> pl.DataFrame:
    """The pipeline's library path for TRAIN.start..TEST.end at one planted strength (cached as parquet)."""
    cached = folder / f"features_s{strength}.parquet"
    if cached.exists():
        return pl.read_parquet(cached)
    import databento

    from feature_specs import load_catalog
    from phoenix_assets.lib.features.compute import compute_features
    from phoenix_assets.lib.features.hmm_regimes import filter_regimes, fit_regime_model
    from phoenix_assets.lib.market.bars import ofi_bars_1m, seconds_frame
    from phoenix_assets.lib.market.book_kernel import arrays_from_dbn, book_ofi_1s
    from phoenix_assets.lib.synthetic.market import SyntheticMarketConfig, write_range

    cfg = SyntheticMarketConfig(ofi_strength=strength, **EVIDENCE_MARKET)
    days = folder / f"dbn_s{strength}"
    days.mkdir(parents=True, exist_ok=True)
    parts = []
    for path in write_range(TRAIN[0], TEST[1], days, cfg):
        store = databento.DBNStore.from_file(path)
        seconds = book_ofi_1s(arrays_from_dbn(chunk) for chunk in store.to_ndarray(count=1 << 16))
        parts.append(ofi_bars_1m(seconds_frame(seconds), symbol=cfg.continuous_symbol))
    bars = pl.concat(parts)
    catalog = load_catalog()
    model = fit_regime_model(bars, catalog.hmm, TRAIN[0], TRAIN[1])
    features = compute_features(bars, catalog, filter_regimes(model, bars, catalog.hmm))
    features.write_parquet(cached)
    return features


def env_steps_per_s(features: pl.DataFrame, env_cfg: object, steps: int = 20_000) -> float:
    from phoenix_rl.env.trading_env import MnqTradingEnv

    env = MnqTradingEnv(features, env_cfg)  # type: ignore[arg-type]
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, size=(steps, 1)).astype(np.float32)
    t0 = time.perf_counter()
    for a in actions:
        _, _, term, trunc, _ = env.step(a)
        if term or trunc:
            env.reset()
    return steps / (time.perf_counter() - t0)


def evaluate(strength: float, features: pl.DataFrame, out: Path, overrides: dict) -> dict:
    from phoenix_rl.env.trading_env import EnvConfig
    from phoenix_rl.evaluation.backtest import run_backtest
    from phoenix_rl.evaluation.baselines import run_baselines, tune_ofi_rule
    from phoenix_rl.train.trainer import TrainConfig, select_window, train

    windows = {
        "train_start": str(TRAIN[0]),
        "train_end": str(TRAIN[1]),
        "val_start": str(VAL[0]),
        "val_end": str(VAL[1]),
        "test_start": str(TEST[0]),
        "test_end": str(TEST[1]),
    }
    env = {**EVIDENCE_TRAINING["env"], **overrides.get("env", {})}  # --set env={...} changes only those keys
    cfg = TrainConfig.from_dict({**EVIDENCE_TRAINING, **windows, **overrides, "env": env})
    result = train(
        cfg,
        features,
        out / f"s{strength}" / f"seed{cfg.seed}",
        on_metrics=lambda step, m: print(json.dumps({"step": step, **m})),
    )
    saved = json.loads(result.config_path.read_text())
    env_cfg = EnvConfig(**saved["env_config"])
    from stable_baselines3 import SAC

    model = SAC.load(result.model_path, device="cpu")
    test = select_window(features, cfg.test_start, cfg.test_end)
    runs = {"agent": run_backtest(model, test, env_cfg, capital=cfg.capital)}
    rule = tune_ofi_rule(select_window(features, cfg.train_start, cfg.train_end), env_cfg, capital=cfg.capital)
    runs |= run_baselines(test, env_cfg, capital=cfg.capital, tuned_rule=rule)  # the rule tuned on TRAIN only
    from phoenix_rl.evaluation.metrics import daily_pnl

    return {
        "strength": strength,
        "seed": cfg.seed,
        "daily_pnl_usd": {
            name: {str(d): float(v) for d, v in daily_pnl(r.equity, cfg.capital).select("trade_date", "pnl_usd").rows()}
            for name, r in runs.items()
        },
        "train_steps_per_s": result.steps_per_s,
        "env_steps_per_s": env_steps_per_s(select_window(features, cfg.train_start, cfg.train_end), env_cfg),
        "config": dataclasses.asdict(cfg),
        "test": {name: r.metrics for name, r in runs.items()},
        "tuned_ofi_rule": rule.summary(),
    }


COLUMNS = ("total_return", "sortino", "max_drawdown_pct", "n_trades", "win_rate", "time_in_market", "total_cost")


def print_table(report: dict) -> None:
    from phoenix_rl.evaluation.metrics import format_metric

    print(
        f"\nplanted strength {report['strength']}, seed {report['seed']}: test window {TEST[0]}..{TEST[1]} "
        "(held out), after costs"
    )
    print(f"{'strategy':<15}" + "".join(f"{c:>18}" for c in COLUMNS))
    for name, m in report["test"].items():
        print(f"{name:<15}" + "".join(f"{format_metric(m[c]):>18}" for c in COLUMNS))
    print(
        f"training {report['train_steps_per_s']:.0f} steps/s (SAC + Mamba, CPU), env {report['env_steps_per_s']:.0f} "
        "steps/s (random actions)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strengths", type=float, nargs="+", default=[0.5, 0.0])
    parser.add_argument("--timesteps", type=int, default=EVIDENCE_TRAINING["total_timesteps"])
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=list(range(1, 11)), help="training seeds (>= 10: training variance)"
    )
    parser.add_argument("--out", type=Path, default=Path("runs/evidence"))
    parser.add_argument("--set", nargs="*", default=[], help="extra TrainConfig overrides key=json")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    overrides = {"total_timesteps": args.timesteps}
    overrides |= {k: json.loads(v) for k, v in (kv.split("=", 1) for kv in args.set)}
    reports = []
    for strength in args.strengths:
        t0 = time.perf_counter()
        features = build_features(strength, args.out)
        print(f"features for strength {strength}: {features.height} rows in {time.perf_counter() - t0:.0f} s")
        reports += [evaluate(strength, features, args.out, overrides | {"seed": seed}) for seed in args.seeds]
    verdicts = seed_verdicts(reports)
    (args.out / "report.json").write_text(json.dumps({"runs": reports, "verdicts": verdicts}, indent=2, default=str))
    for report in reports:
        print_table(report)
    for key, c in verdicts.items():
        print(f"{key}: {c['mean']:+,.1f} $/day [{c['low']:+,.1f}, {c['high']:+,.1f}], {c['verdict']}")


def seed_verdicts(reports: list[dict]) -> dict[str, dict]:
    """Agent vs flat and vs the tuned rule per strength: seeds x test days of $ PnL, two-stage bootstrap, Holm."""
    from phoenix_rl.research.statistics import holm_adjust, seed_day_bootstrap, versus_verdict

    raw, trips = {}, {}
    for strength in sorted({r["strength"] for r in reports}):
        runs = [r for r in reports if r["strength"] == strength]
        days = sorted(runs[0]["daily_pnl_usd"]["agent"])
        agent = np.array([[r["daily_pnl_usd"]["agent"][d] for d in days] for r in runs])
        rule = np.array([[r["daily_pnl_usd"]["tuned_ofi_rule"][d] for d in days] for r in runs])
        trips[strength] = float(np.mean([r["test"]["agent"]["n_trades"] for r in runs]))
        raw[f"strength {strength}: agent vs flat"] = seed_day_bootstrap(agent, None)
        raw[f"strength {strength}: agent - tuned_ofi_rule"] = seed_day_bootstrap(agent, rule[:1])
    out = holm_adjust(raw)
    for key, c in out.items():
        strength = float(key.split()[1].rstrip(":"))
        other = "flat" if key.endswith("flat") else "tuned_ofi_rule"
        c["verdict"] = versus_verdict(f"the agent at strength {strength}", other, c, trips[strength])
    return out


if __name__ == "__main__":
    main()
