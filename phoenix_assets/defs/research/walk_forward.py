"""Research assets: `walk_forward` (monthly folds, everything refit per fold) and `ablation_report` (arms on the
same folds, paired stationary-bootstrap CIs vs phase2_no_ofi).

Per fold the HMM is refit on the fold's train window and the features are recomputed from `ofi_bars_1m` with
its forward-filtered regimes (`fold_features`), so no fitted object of a fold has seen its validation or test
months; the agent's seeds are chosen on validation only and the test month is scored once
(phoenix_rl.research.walk_forward).
"""

import datetime as dt
import json
import tempfile
from typing import Any

import dagster as dg
import numpy as np
import polars as pl
from pydantic import Field

from feature_specs import load_catalog
from phoenix_assets.defs.microstructure.assets import ofi_bars_1m
from phoenix_assets.defs.model.assets import TRAINING_POOL, TRAINING_TAGS
from phoenix_assets.defs.model.config import MambaSacConfig
from phoenix_assets.defs.resources import LakeResource
from phoenix_assets.lib.features.compute import compute_features, warmup_start
from phoenix_assets.lib.features.hmm_regimes import filter_regimes, fit_regime_model
from phoenix_assets.lib.io.lake import Lake
from phoenix_assets.lib.schema import BARS_TABLE
from phoenix_rl.config import TrainConfig
from phoenix_rl.evaluation.metrics import format_metric
from phoenix_rl.evaluation.plots import markdown_image
from phoenix_rl.research.walk_forward import (
    Fold,
    WalkForwardResult,
    monthly_folds,
    run_walk_forward,
    run_walk_forwards,
)

ARMS: dict[str, dict[str, Any]] = {
    "phase1_baseline": {"feature_set": "phase1_baseline"},
    "phase2_no_ofi": {"feature_set": "phase2_no_ofi"},
    "phase2_ofi": {"feature_set": "phase2_ofi"},
    "phase3_mtf": {"feature_set": "phase3_mtf"},
    "phase2_ofi_continuous": {"feature_set": "phase2_ofi", "env": {"action_mode": "continuous"}},
    "phase2_ofi_shaped": {
        "feature_set": "phase2_ofi",
        "env": {"win_bonus": 0.05, "loss_penalty": 0.05, "hold_penalty": 0.001, "hold_bars": 30},
    },
}
REFERENCE_ARM = "phase2_no_ofi"


FOLD_ASSET: dict[str, Any] = {  # what walk_forward and ablation_report share as assets
    "group_name": "research",
    "kinds": {"pytorch", "python"},
    "deps": [ofi_bars_1m],  # features are recomputed per fold from the bars
    "op_tags": TRAINING_TAGS,  # one training job at a time (dagster.yaml's tag limit)
    "pool": TRAINING_POOL,  # one training step at a time across runs (deploy/postgres/dagster.yaml's pool limit)
}


class FoldsConfig(dg.Config):
    train_months: int = Field(default=2, description="Months of the rolling train window of each fold")
    val_months: int = Field(default=1, description="Validation months (seed selection) before each test month")
    test_months: int = Field(default=1, description="Months of each test window")
    n_folds: int = Field(default=3, description="Consecutive test windows: the last months of the data")
    embargo_days: int = Field(default=0, description="Trade dates dropped at the start of val and test windows")
    expanding: bool = Field(default=False, description="Train on all months before validation (else rolling)")
    seeds: list[int] = Field(default=[1, 2, 3], description="Training seeds per fold (and per arm)")
    workers: int = Field(
        default=2,
        description=(
            "Training processes at once, one torch thread each (2 on 2 cores: each runs at 0.94-1.01x a solo "
            "training, benchmarks/bench_training.py); results do not depend on it"
        ),
    )
    training: MambaSacConfig = Field(
        default_factory=MambaSacConfig, description="Training settings (windows are set per fold)"
    )
    ray_address: str | None = Field(
        default=None,
        description=(
            "Ray cluster for the trainings (host:port, ray://host:10001, 'auto'; each fold x arm x seed a task, one "
            "GPU each where the cluster has GPUs, retried on a lost node); empty -> $RAY_ADDRESS -> the local pool "
            "of `workers`. The cluster's nodes must run this code and see the run's temporary folder"
        ),
    )


def _available_dates(lake: Lake) -> list[dt.date]:
    if not lake.exists(BARS_TABLE):
        raise FileNotFoundError(f"no {BARS_TABLE} table under {lake.root}: materialize ofi_bars_1m for the months")
    dates = lake.scan(BARS_TABLE).select(pl.col("trade_date").unique()).collect()["trade_date"].sort()
    return dates.to_list()


def fold_features(lake: Lake, fold: Fold) -> pl.DataFrame:
    """Features of the fold's span with the HMM refit on its train window only (regimes forward-filtered)."""
    catalog = load_catalog()
    w = fold.windows
    first = warmup_start(w.train[0], catalog)
    bars = lake.scan(BARS_TABLE).filter(pl.col("trade_date").is_between(first, w.test[1])).collect()
    model = fit_regime_model(bars, catalog.hmm, w.train[0], w.train[1], spec_hash=catalog.content_hash)
    feats = compute_features(bars, catalog, filter_regimes(model, bars, catalog.hmm))
    return feats.filter(pl.col("trade_date").is_between(w.train[0], w.test[1])).sort("ts")


def _folds(lake: Lake, config: FoldsConfig) -> list[Fold]:
    return monthly_folds(
        _available_dates(lake),
        train_months=config.train_months,
        val_months=config.val_months,
        test_months=config.test_months,
        n_folds=config.n_folds,
        embargo_days=config.embargo_days,
        expanding=config.expanding,
    )


def _base_config(config: FoldsConfig, **overrides: Any) -> TrainConfig:
    base = config.training.to_train_config().to_dict()
    for key, value in overrides.items():
        base[key] = {**base[key], **value} if isinstance(value, dict) else value
    return TrainConfig.from_dict(base)


def _stitched_png(result: WalkForwardResult, title: str) -> bytes:
    from phoenix_rl.evaluation.plots import equity_curve_png

    curves = {}
    for name, daily in result.stitched.items():
        ts = daily["trade_date"].cast(pl.Datetime("ns")).dt.replace_time_zone("UTC") + dt.timedelta(hours=21)
        curves[name] = pl.DataFrame({"ts": ts, "equity": result.capital * np.cumprod(1.0 + daily["ret"].to_numpy())})
    return equity_curve_png(curves, title=title)


def _frame_md(frame: pl.DataFrame) -> str:
    md = ["| " + " | ".join(frame.columns) + " |", "|---" * frame.width + "|"]
    md += [
        "| " + " | ".join(format_metric(v) if isinstance(v, float) or v is None else str(v) for v in row) + " |"
        for row in frame.rows()
    ]
    return "\n".join(md)


OVERALL_COLS = ("total_return", "sharpe", "sortino", "max_drawdown_pct", "n_trades", "total_cost", "n_days")


@dg.asset(
    **FOLD_ASSET,
    description=(
        "Walk-forward over months: per fold the HMM and features are refit on the fold's train window, N seeds "
        "trained, the seed chosen on validation only and scored once on the test month; out-of-sample daily "
        "returns stitched across folds for the agent, the train-tuned OFI rule and the baselines."
    ),
)
def walk_forward(context: dg.AssetExecutionContext, config: FoldsConfig, lake: LakeResource) -> dg.MaterializeResult:
    the_lake = lake.lake()
    folds = _folds(the_lake, config)
    context.log.info(f"{len(folds)} folds: " + "; ".join(f.windows.describe() for f in folds))
    with tempfile.TemporaryDirectory(prefix="phoenix-wf-") as tmp:
        result = run_walk_forward(
            lambda f: fold_features(the_lake, f),
            folds,
            _base_config(config),
            config.seeds,
            tmp,
            workers=config.workers,
            log=context.log.info,
            ray_address=config.ray_address,
        )
    overall = result.overall_metrics()
    png = _stitched_png(result, f"walk-forward: {len(folds)} test months, out of sample")
    folds_md = _frame_md(result.fold_table())
    record = {"folds": [f.windows.as_dict() for f in folds], "overall": overall, "seeds": list(config.seeds)}
    the_lake.write_artifact("artifacts/walk_forward/latest_report.json", json.dumps(record, default=str).encode())
    return dg.MaterializeResult(
        metadata={
            "folds": dg.MetadataValue.json([f.windows.as_dict() for f in folds]),
            "chosen_seeds": dg.MetadataValue.json({f.fold.index: f.chosen_seed for f in result.folds}),
            "validation_scores": dg.MetadataValue.json({f.fold.index: f.val_scores for f in result.folds}),
            "per_fold": dg.MetadataValue.md(folds_md),
            "overall_oos": dg.MetadataValue.md(
                _frame_md(
                    pl.DataFrame([{"strategy": n} | {c: m.get(c) for c in OVERALL_COLS} for n, m in overall.items()])
                )
            ),
            "equity_curve": dg.MetadataValue.md(markdown_image(png, "stitched out-of-sample equity")),
            "agent_oos_total_return": overall["agent"]["total_return"],
            "tuned_rule_oos_total_return": overall["tuned_ofi_rule"]["total_return"],
        }
    )


class AblationConfig(FoldsConfig):
    arms: list[str] = Field(default=list(ARMS), description=f"Arms to run, of {list(ARMS)}")
    bootstrap_reps: int = Field(default=2_000, description="Stationary-bootstrap replications of each paired CI")
    alpha: float = Field(default=0.05, description="1 - confidence level of the CIs")


def versus_verdict(name: str, other: str, ci: dict[str, float]) -> str:
    """Plain words for a CI of the mean daily return difference name - other (other = "flat": vs 0)."""
    if ci["low"] > 0:
        return f"{name} beats {other}: the CI of the mean daily difference excludes 0 (above)"
    if ci["high"] < 0:
        return f"{name} is worse than {other}: the CI excludes 0 (below)"
    return f"no evidence that {name} differs from {other}: the CI includes 0"


def ablation_verdict(arm: str, ci: dict[str, float]) -> str:
    """Plain words for a paired CI of daily return differences arm - reference."""
    return versus_verdict(arm, REFERENCE_ARM, ci)


def _total_return(daily: pl.DataFrame) -> float:
    """Compounded return of a stitched daily series (for a seed mean: seeds held in equal parts, daily)."""
    return float(np.prod(1.0 + daily["ret"].to_numpy()) - 1.0)


def _mean_over_seeds(runs: dict[int, WalkForwardResult], strategy: str) -> pl.DataFrame:
    """trade_date, ret: the seeds' stitched OOS daily returns of `strategy`, averaged day by day."""
    frames = [r.stitched[strategy].rename({"ret": f"s{s}"}) for s, r in runs.items()]
    joined = frames[0]
    for f in frames[1:]:
        joined = joined.join(f, on="trade_date")
    return joined.select("trade_date", pl.mean_horizontal(pl.exclude("trade_date")).alias("ret"))


def _ci_md(title: str, rows: dict[str, dict[str, Any]]) -> str:
    head = f"| {title} | mean daily | CI | days | total return | verdict |\n|---|---|---|---|---|---|\n"
    return head + "\n".join(
        f"| {name} | {c['mean']:+.5f} | [{c['low']:+.5f}, {c['high']:+.5f}] | {c['n_days']} | "
        f"{format_metric(c.get('total_return'))} | {c['verdict']} |"
        for name, c in rows.items()
    )


@dg.asset(
    **FOLD_ASSET,
    description=(
        "Ablation on the walk-forward folds: each arm (feature set, action mode, reward shaping) x each seed, "
        "out-of-sample daily returns stitched per arm; paired differences vs phase2_no_ofi with a stationary-"
        "bootstrap CI over days (arch); a plain verdict whether OFI adds edge."
    ),
)
def ablation_report(
    context: dg.AssetExecutionContext, config: AblationConfig, lake: LakeResource
) -> dg.MaterializeResult:
    from phoenix_rl.research.statistics import mean_ci, paired_bootstrap_ci

    unknown = [a for a in config.arms if a not in ARMS]
    if unknown or REFERENCE_ARM not in config.arms:
        raise ValueError(
            f"ablation_report: arms must be among {list(ARMS)} and include {REFERENCE_ARM} (got {config.arms})"
        )
    if len(config.seeds) < 3:
        context.log.warning(f"ablation_report: {len(config.seeds)} seed(s) per arm; the protocol asks for >= 3")
    the_lake = lake.lake()
    folds = _folds(the_lake, config)
    bases = {arm: _base_config(config, **ARMS[arm]) for arm in config.arms}
    # every arm x seed is a one-seed walk-forward (no selection); one HMM refit per fold and one pool for them all
    runs = {f"{arm}/s{seed}": (bases[arm], [seed]) for arm in config.arms for seed in config.seeds}
    with tempfile.TemporaryDirectory(prefix="phoenix-ablation-") as tmp:  # one call: the OFI rule tuned once a fold
        results = run_walk_forwards(
            lambda f: fold_features(the_lake, f),
            folds,
            runs,
            tmp,
            workers=config.workers,
            log=context.log.info,
            ray_address=config.ray_address,
        )
    daily: dict[str, pl.DataFrame] = {}  # arm -> trade_date, mean over seeds of the stitched OOS return
    rule_daily: dict[str, pl.DataFrame] = {}  # arm -> the same for the tuned OFI rule run beside it
    per_seed: dict[str, dict[int, dict[str, float | None]]] = {}
    timings: list[dict[str, Any]] = []  # wall time of every fold x arm x seed (in its worker)
    features_s: dict[int, float] = {}
    for arm in config.arms:
        by_seed = {seed: results[f"{arm}/s{seed}"] for seed in config.seeds}
        for seed, result in by_seed.items():
            for f in result.folds:
                features_s.setdefault(f.fold.index, f.seconds["features"])
                timings.append(
                    {"arm": arm, "seed": seed, "fold": f.fold.index}
                    | {k: v for k, v in f.seconds.items() if k != "features"}
                )
        per_seed[arm] = {s: r.overall_metrics()["agent"] for s, r in by_seed.items()}
        daily[arm] = _mean_over_seeds(by_seed, "agent")
        rule_daily[arm] = _mean_over_seeds(by_seed, "tuned_ofi_rule")  # tuned on each fold's train window
        context.log.info(f"arm {arm}: OOS total return by seed {[m['total_return'] for m in per_seed[arm].values()]}")
    ci_args = {"alpha": config.alpha, "reps": config.bootstrap_reps, "seed": 0}
    reference = daily[REFERENCE_ARM]
    comparisons = {}
    for arm in config.arms:
        if arm == REFERENCE_ARM:
            continue
        paired = daily[arm].join(reference, on="trade_date", suffix="_ref")
        ci = paired_bootstrap_ci(paired["ret"].to_numpy(), paired["ret_ref"].to_numpy(), **ci_args)
        comparisons[arm] = ci | {"verdict": ablation_verdict(arm, ci)}
    # vs flat (earns 0 every day): the CI of the mean daily return itself. The rule observes only its own feature,
    # so its series differs between arms only through their env settings (warm flags): reported from the first arm
    series = {arm: daily[arm] for arm in config.arms} | {"tuned_ofi_rule": rule_daily[config.arms[0]]}
    vs_flat = {}
    for name, frame in series.items():
        ci = mean_ci(frame["ret"].to_numpy(), **ci_args)
        vs_flat[name] = ci | {"total_return": _total_return(frame), "verdict": versus_verdict(name, "flat", ci)}
    vs_rule = {}
    for arm in config.arms:
        paired = daily[arm].join(rule_daily[arm], on="trade_date", suffix="_rule")
        ci = paired_bootstrap_ci(paired["ret"].to_numpy(), paired["ret_rule"].to_numpy(), **ci_args)
        vs_rule[arm] = ci | {
            "total_return": _total_return(daily[arm]),
            "rule_total_return": _total_return(rule_daily[arm]),
            "verdict": versus_verdict(arm, "tuned_ofi_rule", ci),
        }
    ofi = comparisons.get("phase2_ofi")
    verdict = ofi["verdict"] if ofi else "phase2_ofi not among the arms: no OFI verdict"
    distribution = {
        arm: {
            k: {"mean": float(np.mean(v)), "min": float(np.min(v)), "max": float(np.max(v))}
            for k in ("total_return", "max_drawdown_pct")
            if (v := [m[k] for m in seeds.values() if m[k] is not None])
        }
        for arm, seeds in per_seed.items()
    }
    wall = {"features_s_by_fold": features_s, "runs": timings}
    the_lake.write_artifact(
        "artifacts/ablation_report/latest.json",
        json.dumps(
            {
                "comparisons": comparisons,
                "vs_flat": vs_flat,
                "vs_tuned_rule": vs_rule,
                "distribution": distribution,
                "per_seed": per_seed,
                "verdict": verdict,
                "folds": [f.windows.as_dict() for f in folds],
                "seeds": list(config.seeds),
                "daily": {k: v.to_dicts() for k, v in series.items()},  # dates: default=str
                "seconds": wall,
            },
            default=str,
        ).encode(),
    )
    rows = [
        f"| {arm} | {c['mean']:+.5f} | [{c['low']:+.5f}, {c['high']:+.5f}] | {c['n_days']} | {c['verdict']} |"
        for arm, c in comparisons.items()
    ]
    table = "| arm - phase2_no_ofi | mean daily diff | CI | days | verdict |\n|---|---|---|---|---|\n" + "\n".join(rows)
    return dg.MaterializeResult(
        metadata={
            "verdict_ofi": verdict,
            "paired_vs_phase2_no_ofi": dg.MetadataValue.md(table),
            "vs_flat": dg.MetadataValue.md(_ci_md("strategy (vs flat = 0)", vs_flat)),
            "vs_tuned_ofi_rule": dg.MetadataValue.md(_ci_md("arm - tuned_ofi_rule", vs_rule)),
            "vs_flat_verdicts": dg.MetadataValue.json({k: v["verdict"] for k, v in vs_flat.items()}),
            "vs_tuned_ofi_rule_verdicts": dg.MetadataValue.json({k: v["verdict"] for k, v in vs_rule.items()}),
            "per_arm_oos_distribution": dg.MetadataValue.json(distribution),
            "folds": dg.MetadataValue.json([f.windows.as_dict() for f in folds]),
            "seeds": dg.MetadataValue.json(list(config.seeds)),
            "wall_seconds": dg.MetadataValue.json(wall),
        }
    )
