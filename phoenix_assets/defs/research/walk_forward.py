"""Research assets: `walk_forward` (monthly folds, everything refit per fold) and `ablation_report` (arms on the
same folds, paired stationary-bootstrap CIs vs phase2_no_ofi).

Per fold the HMM is refit on the fold's train window and the features are recomputed from `ofi_bars_1m` with
its forward-filtered regimes (`fold_features`), so no fitted object of a fold has seen its validation or test
months; the agent's seeds are chosen on validation only and the test month is scored once (phoenix_rl.walk_forward).
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
from phoenix_assets.defs.model.assets import TRAINING_TAGS
from phoenix_assets.defs.model.config import MambaSacConfig
from phoenix_assets.defs.resources import LakeResource
from phoenix_assets.lib.features import compute_features, warmup_start
from phoenix_assets.lib.hmm_regimes import filter_regimes, fit_regime_model
from phoenix_assets.lib.lake import Lake
from phoenix_assets.lib.microstructure import BARS_TABLE
from phoenix_rl.config import TrainConfig
from phoenix_rl.metrics import format_metric
from phoenix_rl.plots import markdown_image
from phoenix_rl.walk_forward import Fold, WalkForwardResult, monthly_folds, run_walk_forward

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


class FoldsConfig(dg.Config):
    train_months: int = Field(default=2, description="Months of the rolling train window of each fold")
    val_months: int = Field(default=1, description="Validation months (seed selection) before each test month")
    test_months: int = Field(default=1, description="Months of each test window")
    n_folds: int = Field(default=3, description="Consecutive test windows: the last months of the data")
    embargo_days: int = Field(default=0, description="Trade dates dropped at the start of val and test windows")
    expanding: bool = Field(default=False, description="Train on all months before validation (else rolling)")
    seeds: list[int] = Field(default=[1, 2, 3], description="Training seeds per fold (and per arm)")
    training: MambaSacConfig = Field(
        default_factory=MambaSacConfig, description="Training settings (windows are set per fold)"
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
    from phoenix_rl.plots import equity_curve_png

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
    group_name="research",
    kinds={"pytorch", "python"},
    deps=[ofi_bars_1m],  # features are recomputed per fold from the bars
    op_tags=TRAINING_TAGS,  # one training job at a time (dagster.yaml's tag limit)
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
            lambda f: fold_features(the_lake, f), folds, _base_config(config), config.seeds, tmp, log=context.log.info
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


def ablation_verdict(arm: str, ci: dict[str, float]) -> str:
    """Plain words for a paired CI of daily return differences arm - reference."""
    if ci["low"] > 0:
        return f"{arm} beats {REFERENCE_ARM}: the CI of the mean daily difference excludes 0 (above)"
    if ci["high"] < 0:
        return f"{arm} is worse than {REFERENCE_ARM}: the CI excludes 0 (below)"
    return f"no evidence that {arm} differs from {REFERENCE_ARM}: the CI includes 0"


@dg.asset(
    group_name="research",
    kinds={"pytorch", "python"},
    deps=[ofi_bars_1m],  # features are recomputed per fold from the bars
    op_tags=TRAINING_TAGS,  # one training job at a time (dagster.yaml's tag limit)
    description=(
        "Ablation on the walk-forward folds: each arm (feature set, action mode, reward shaping) x each seed, "
        "out-of-sample daily returns stitched per arm; paired differences vs phase2_no_ofi with a stationary-"
        "bootstrap CI over days (arch); a plain verdict whether OFI adds edge."
    ),
)
def ablation_report(
    context: dg.AssetExecutionContext, config: AblationConfig, lake: LakeResource
) -> dg.MaterializeResult:
    from phoenix_rl.research_stats import paired_bootstrap_ci

    unknown = [a for a in config.arms if a not in ARMS]
    if unknown or REFERENCE_ARM not in config.arms:
        raise ValueError(
            f"ablation_report: arms must be among {list(ARMS)} and include {REFERENCE_ARM} (got {config.arms})"
        )
    if len(config.seeds) < 3:
        context.log.warning(f"ablation_report: {len(config.seeds)} seed(s) per arm; the protocol asks for >= 3")
    the_lake = lake.lake()
    folds = _folds(the_lake, config)
    cache: dict[int, pl.DataFrame] = {}

    def features_for(fold: Fold) -> pl.DataFrame:  # one HMM refit per fold, shared by every arm and seed
        if fold.index not in cache:
            cache[fold.index] = fold_features(the_lake, fold)
        return cache[fold.index]

    daily: dict[str, pl.DataFrame] = {}  # arm -> trade_date, mean over seeds of the stitched OOS return
    per_seed: dict[str, dict[int, dict[str, float | None]]] = {}
    with tempfile.TemporaryDirectory(prefix="phoenix-ablation-") as tmp:
        for arm in config.arms:
            base = _base_config(config, **ARMS[arm])
            runs = {}
            for seed in config.seeds:
                result = run_walk_forward(
                    features_for, folds, base, [seed], f"{tmp}/{arm}/s{seed}", log=context.log.info
                )
                runs[seed] = result
            per_seed[arm] = {s: r.overall_metrics()["agent"] for s, r in runs.items()}
            frames = [r.stitched["agent"].rename({"ret": f"s{s}"}) for s, r in runs.items()]
            joined = frames[0]
            for f in frames[1:]:
                joined = joined.join(f, on="trade_date")
            daily[arm] = joined.select("trade_date", pl.mean_horizontal(pl.exclude("trade_date")).alias("ret"))
            context.log.info(
                f"arm {arm}: OOS total return by seed {[m['total_return'] for m in per_seed[arm].values()]}"
            )
    reference = daily[REFERENCE_ARM]
    comparisons = {}
    for arm in config.arms:
        if arm == REFERENCE_ARM:
            continue
        paired = daily[arm].join(reference, on="trade_date", suffix="_ref")
        ci = paired_bootstrap_ci(
            paired["ret"].to_numpy(),
            paired["ret_ref"].to_numpy(),
            alpha=config.alpha,
            reps=config.bootstrap_reps,
            seed=0,
        )
        comparisons[arm] = ci | {"verdict": ablation_verdict(arm, ci)}
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
    the_lake.write_artifact(
        "artifacts/ablation_report/latest.json",
        json.dumps(
            {"comparisons": comparisons, "distribution": distribution, "verdict": verdict}, default=str
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
            "per_arm_oos_distribution": dg.MetadataValue.json(distribution),
            "folds": dg.MetadataValue.json([f.windows.as_dict() for f in folds]),
            "seeds": dg.MetadataValue.json(list(config.seeds)),
        }
    )
