"""Research assets: `walk_forward` (monthly folds, everything refit per fold) and `ablation_report` (arms x seeds on
the same folds, two-stage seed x day bootstrap CIs, Holm-corrected verdicts).

Both pre-register their protocol: the whole config (data, windows, arms, seeds, training, statistics) is hashed
(phoenix_rl.research.protocol) and recorded in `research_protocols` BEFORE any training, and every test day of
every arm x seed x fold x strategy is written, in $ per contract on the fixed capital, to `research_daily_pnl`
under that hash. A re-run of the same hash replaces that run's rows (one Delta partition per protocol_hash); a
changed config is a new hash, so a new run beside the old one.

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
import pyarrow as pa
from pydantic import Field

from feature_specs import load_catalog
from phoenix_assets.defs.microstructure.assets import ofi_bars_1m
from phoenix_assets.defs.model.assets import TRAINING_POOL, TRAINING_TAGS
from phoenix_assets.defs.model.config import MambaSacConfig
from phoenix_assets.defs.resources import LakeResource
from phoenix_assets.lib.features.compute import compute_features, warmup_start
from phoenix_assets.lib.features.hmm_regimes import filter_regimes, fit_regime_model
from phoenix_assets.lib.io.artifacts import with_decision_book
from phoenix_assets.lib.io.lake import Lake
from phoenix_assets.lib.schema import BARS_TABLE, RESEARCH_DAILY_PNL_TABLE, RESEARCH_PROTOCOLS_TABLE
from phoenix_rl.config import TrainConfig
from phoenix_rl.evaluation.metrics import format_metric
from phoenix_rl.evaluation.plots import markdown_image
from phoenix_rl.research import statistics
from phoenix_rl.research.protocol import canonical_json, protocol_hash
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
    market: str = Field(
        default="",
        description=(
            "What the data are (e.g. the synthetic market's settings as JSON): recorded and hashed with the protocol"
        ),
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
    fold_rows = feats.filter(pl.col("trade_date").is_between(w.train[0], w.test[1])).sort("ts")
    return with_decision_book(fold_rows, bars)  # the one fill model crosses the decision book


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
    for name, daily in result.stitched.items():  # fixed capital: the days' dollars add up
        ts = daily["trade_date"].cast(pl.Datetime("ns")).dt.replace_time_zone("UTC") + dt.timedelta(hours=21)
        curves[name] = pl.DataFrame({"ts": ts, "equity": result.capital + daily["pnl_usd"].cum_sum()})
    return equity_curve_png(curves, title=title)


def _frame_md(frame: pl.DataFrame) -> str:
    md = ["| " + " | ".join(frame.columns) + " |", "|---" * frame.width + "|"]
    md += [
        "| " + " | ".join(format_metric(v) if isinstance(v, float) or v is None else str(v) for v in row) + " |"
        for row in frame.rows()
    ]
    return "\n".join(md)


OVERALL_COLS = (
    "total_return",
    "total_pnl_usd",
    "sharpe",
    "sortino",
    "max_drawdown_pct",
    "max_drawdown_usd",
    "n_trades",
    "total_cost",
    "n_days",
)

PROTOCOL_SCHEMA = pa.schema(
    [
        ("protocol_hash", pa.string()),  # sha256 of config_json
        ("asset", pa.string()),
        ("registered_at", pa.timestamp("us", "UTC")),  # first registration; a re-run keeps it
        ("config_json", pa.string()),  # the canonical JSON that was hashed
    ]
)
DAILY_PNL_SCHEMA = pa.schema(
    [
        ("protocol_hash", pa.string()),
        ("asset", pa.string()),
        ("arm", pa.string()),
        ("strategy", pa.string()),  # agent, tuned_ofi_rule, flat, buy_and_hold, random, ...
        ("seed", pa.int64()),  # the agent's training seed (walk_forward: the seed chosen on validation)
        ("fold", pa.int64()),
        ("trade_date", pa.date32()),
        ("pnl_usd", pa.float64()),  # net of costs, per contract
        ("cost_usd", pa.float64()),
        ("round_trips", pa.int64()),  # closed that trade date
        ("capital", pa.float64()),
    ]
)


def protocol_record(asset: str, config: dg.Config, folds: list[Fold], lake: Lake) -> dict[str, Any]:
    """Everything that defines a research run, to be hashed before any training: the asset, its whole config
    (arms, seeds, training settings, statistics, the market description), the arms' definitions, the folds'
    windows and the data (the bars' trade dates and Delta version)."""
    dates = _available_dates(lake)
    record: dict[str, Any] = {
        "asset": asset,
        "config": {k: v for k, v in config.model_dump().items() if k not in ("workers", "ray_address")},
        "folds": [f.windows.as_dict() for f in folds],
        "data": {
            "table": BARS_TABLE,
            "delta_version": lake.table(BARS_TABLE).version(),
            "trade_dates": [str(dates[0]), str(dates[-1]), len(dates)],
        },
    }
    if asset == "ablation_report":
        record["arms"] = {a: ARMS[a] for a in config.arms}  # type: ignore[attr-defined]
        record["reference_arm"] = REFERENCE_ARM
        record["statistics"] = {
            "ci": "two-stage bootstrap: seeds with replacement per arm, then stationary-bootstrap days",
            "correction": "Holm over every comparison of the report",
            "min_days": statistics.MIN_DAYS,
            "min_trades": statistics.MIN_TRADES,
        }
    return record


def register_protocol(lake: Lake, record: dict[str, Any]) -> tuple[str, bool]:
    """Record the protocol in RESEARCH_PROTOCOLS_TABLE before training; (hash, True) when it was new. A hash
    already registered keeps its first row: the same protocol re-run (its results will replace the earlier ones)."""
    digest = protocol_hash(record)
    if lake.exists(RESEARCH_PROTOCOLS_TABLE):
        seen = lake.scan(RESEARCH_PROTOCOLS_TABLE).filter(pl.col("protocol_hash") == digest).select(pl.len())
        if seen.collect().item():
            return digest, False
    row = {
        "protocol_hash": digest,
        "asset": record["asset"],
        "registered_at": dt.datetime.now(dt.UTC),
        "config_json": canonical_json(record),
    }
    table = pa.Table.from_pylist([row], schema=PROTOCOL_SCHEMA)
    lake.replace_partition(RESEARCH_PROTOCOLS_TABLE, table.schema, table.to_batches(), "protocol_hash", digest)
    return digest, True


def write_daily_pnl(lake: Lake, digest: str, rows: list[pl.DataFrame]) -> int:
    """Replace protocol `digest`'s rows of RESEARCH_DAILY_PNL_TABLE (one Delta partition per protocol hash)."""
    frame = pl.concat(rows, how="vertical_relaxed").with_columns(protocol_hash=pl.lit(digest))
    table = frame.select(DAILY_PNL_SCHEMA.names).to_arrow().cast(DAILY_PNL_SCHEMA)
    return lake.replace_partition(RESEARCH_DAILY_PNL_TABLE, table.schema, table.to_batches(), "protocol_hash", digest)


def _pnl_rows(result: WalkForwardResult, asset: str, arm: str, seed: int | None) -> list[pl.DataFrame]:
    """One frame per strategy of a walk-forward's stitched test days, tagged for RESEARCH_DAILY_PNL_TABLE; seed
    None: the seed chosen per fold."""
    chosen = {f.fold.index: f.chosen_seed for f in result.folds}
    return [
        daily.with_columns(
            asset=pl.lit(asset),
            arm=pl.lit(arm),
            strategy=pl.lit(strategy),
            seed=pl.lit(seed, pl.Int64) if seed is not None else pl.col("fold").replace_strict(chosen),
            capital=pl.lit(result.capital),
        )
        for strategy, daily in result.stitched.items()
    ]


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
    digest, new = register_protocol(the_lake, protocol_record("walk_forward", config, folds, the_lake))
    context.log.info(f"protocol {digest[:12]} {'registered' if new else 'already registered: re-run replaces it'}")
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
    pnl_version = write_daily_pnl(the_lake, digest, _pnl_rows(result, "walk_forward", "walk_forward", None))
    png = _stitched_png(result, f"walk-forward: {len(folds)} test months, out of sample, fixed capital")
    folds_md = _frame_md(result.fold_table())
    record = {
        "protocol_hash": digest,
        "folds": [f.windows.as_dict() for f in folds],
        "overall": overall,
        "seeds": list(config.seeds),
    }
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
            "agent_oos_pnl_usd": overall["agent"]["total_pnl_usd"],
            "tuned_rule_oos_pnl_usd": overall["tuned_ofi_rule"]["total_pnl_usd"],
            "protocol_hash": digest,
            "research_daily_pnl_version": pnl_version,
        }
    )


class AblationConfig(FoldsConfig):
    arms: list[str] = Field(default=list(ARMS), description=f"Arms to run, of {list(ARMS)}")
    bootstrap_reps: int = Field(default=2_000, description="Two-stage (seeds, then days) bootstrap replications")
    alpha: float = Field(default=0.05, description="Familywise error rate of the verdicts (Holm) and 1 - CI level")


def versus_verdict(name: str, other: str, result: dict[str, Any], n_trades: float | None = None) -> str:
    """Plain words for a comparison name - other (other = "flat": vs 0): statistics.versus_verdict, the one
    tested source of every research verdict (Holm-corrected, "no evidence" below its power)."""
    return statistics.versus_verdict(name, other, result, n_trades)


def ablation_verdict(arm: str, result: dict[str, Any], n_trades: float | None = None) -> str:
    """Plain words for the comparison arm - reference arm."""
    return versus_verdict(arm, REFERENCE_ARM, result, n_trades)


def _seed_matrix(frames: dict[int, pl.DataFrame], dates: list[dt.date]) -> np.ndarray:
    """seeds x days of pnl_usd on `dates` (each seed's stitched test days; every seed has the same dates)."""
    rows = []
    for seed, frame in frames.items():
        by_date = dict(zip(frame["trade_date"], frame["pnl_usd"], strict=True))
        missing = [d for d in dates if d not in by_date]
        if missing:
            raise ValueError(f"ablation_report: seed {seed} has no test-day PnL on {missing[:3]}: the folds differ")
        rows.append([by_date[d] for d in dates])
    return np.asarray(rows, dtype=float)


def _ci_md(title: str, rows: dict[str, dict[str, Any]]) -> str:
    head = (
        f"| {title} | mean $/day | 95% CI (seeds x days) | Holm p | days | seeds | total (fixed capital) | verdict |\n"
        "|---|---|---|---|---|---|---|---|\n"
    )
    return head + "\n".join(
        f"| {name} | {c['mean']:+,.1f} | [{c['low']:+,.1f}, {c['high']:+,.1f}] | {c['p_adjusted']:.3g} | "
        f"{c['n_days']} | {'/'.join(str(n) for n in c['n_seeds'])} | {format_metric(c.get('total_return'))} | "
        f"{c['verdict']} |"
        for name, c in rows.items()
    )


@dg.asset(
    **FOLD_ASSET,
    description=(
        "Ablation on the walk-forward folds: each arm (feature set, action mode, reward shaping) x each seed, "
        "out-of-sample daily $ PnL on fixed capital per seed in research_daily_pnl (protocol pre-registered in "
        "research_protocols); every arm vs phase2_no_ofi, vs flat and vs the tuned OFI rule with two-stage (seeds, "
        "then days) bootstrap CIs, Holm-corrected verdicts over all comparisons."
    ),
)
def ablation_report(
    context: dg.AssetExecutionContext, config: AblationConfig, lake: LakeResource
) -> dg.MaterializeResult:
    unknown = [a for a in config.arms if a not in ARMS]
    if unknown or not config.arms:
        raise ValueError(f"ablation_report: arms must be among {list(ARMS)} (got {config.arms})")
    has_reference = REFERENCE_ARM in config.arms  # without it: vs flat and vs the tuned rule only (a cheaper run)
    if not has_reference:
        context.log.warning(f"ablation_report: no {REFERENCE_ARM} arm, so no ablation comparison (vs flat, vs rule)")
    if len(config.seeds) < 10:
        context.log.warning(
            f"ablation_report: {len(config.seeds)} seed(s) per arm; evidence runs use >= 10 (training variance)"
        )
    n_arms = len(config.arms)
    family_size = (n_arms - 1 if has_reference else 0) + (n_arms + 1) + n_arms  # vs reference, flat (+ rule), rule
    if config.bootstrap_reps < statistics.min_bootstrap_reps(family_size, config.alpha):
        raise ValueError(
            f"ablation_report: bootstrap_reps={config.bootstrap_reps} can reject nothing in a Holm family of "
            f"{family_size} comparisons at alpha {config.alpha} (smallest p = 2 / (reps + 1)): use >= "
            f"{statistics.min_bootstrap_reps(family_size, config.alpha)}"
        )
    the_lake = lake.lake()
    folds = _folds(the_lake, config)
    digest, new = register_protocol(the_lake, protocol_record("ablation_report", config, folds, the_lake))
    context.log.info(f"protocol {digest[:12]} {'registered' if new else 'already registered: re-run replaces it'}")
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
    agent: dict[str, dict[int, pl.DataFrame]] = {}  # arm -> seed -> fold, trade_date, pnl_usd, ... (OOS test days)
    rule: dict[str, dict[int, pl.DataFrame]] = {}  # the same for the tuned OFI rule run beside each arm x seed
    per_seed: dict[str, dict[int, dict[str, float | None]]] = {}
    pnl_rows: list[pl.DataFrame] = []
    timings: list[dict[str, Any]] = []  # wall time of every fold x arm x seed (in its worker)
    features_s: dict[int, float] = {}
    for arm in config.arms:
        by_seed = {seed: results[f"{arm}/s{seed}"] for seed in config.seeds}
        for seed, result in by_seed.items():
            pnl_rows += _pnl_rows(result, "ablation_report", arm, seed)
            for f in result.folds:
                features_s.setdefault(f.fold.index, f.seconds["features"])
                timings.append(
                    {"arm": arm, "seed": seed, "fold": f.fold.index}
                    | {k: v for k, v in f.seconds.items() if k != "features"}
                )
        per_seed[arm] = {s: r.overall_metrics()["agent"] for s, r in by_seed.items()}
        agent[arm] = {s: r.stitched["agent"] for s, r in by_seed.items()}
        rule[arm] = {s: r.stitched["tuned_ofi_rule"] for s, r in by_seed.items()}  # tuned on each fold's train
        context.log.info(f"arm {arm}: OOS $ PnL by seed {[m['total_pnl_usd'] for m in per_seed[arm].values()]}")
    pnl_version = write_daily_pnl(the_lake, digest, pnl_rows)
    capital = float(bases[config.arms[0]].capital)
    dates = agent[config.arms[0]][config.seeds[0]]["trade_date"].to_list()
    matrix = {arm: _seed_matrix(agent[arm], dates) for arm in config.arms}
    rule_matrix = {arm: _seed_matrix(rule[arm], dates) for arm in config.arms}
    trips = {arm: float(np.mean([m["n_trades"] or 0.0 for m in per_seed[arm].values()])) for arm in config.arms}
    trips["tuned_ofi_rule"] = float(sum(rule[config.arms[0]][config.seeds[0]]["round_trips"]))
    # a verdict's power (statistics.underpowered): a strategy vs flat needs its own round trips; a difference of
    # two needs one side that trades (mean round trips over seeds)
    ci_args = {"alpha": config.alpha, "reps": config.bootstrap_reps, "seed": 0}
    # one family: every arm vs the reference, every strategy vs flat, every arm vs the tuned rule (Holm over all).
    # The rule observes only its own feature, so its series differs between arms only through their env settings
    # (warm flags): vs flat it is reported from the first arm
    raw: dict[tuple[str, str], dict[str, Any]] = {}
    for arm in config.arms:
        if has_reference and arm != REFERENCE_ARM:
            raw["reference", arm] = statistics.seed_day_bootstrap(matrix[arm], matrix[REFERENCE_ARM], **ci_args)
    series = {arm: matrix[arm] for arm in config.arms} | {"tuned_ofi_rule": rule_matrix[config.arms[0]]}
    for name, m in series.items():
        raw["flat", name] = statistics.seed_day_bootstrap(m, None, **ci_args)
    for arm in config.arms:
        raw["rule", arm] = statistics.seed_day_bootstrap(matrix[arm], rule_matrix[arm], **ci_args)
    keyed = statistics.holm_adjust({f"{k[0]}:{k[1]}": v for k, v in raw.items()}, config.alpha)
    family = {k: keyed[f"{k[0]}:{k[1]}"] for k in raw}

    def total(m: np.ndarray) -> float:  # the seed-mean total on the fixed capital (no compounding)
        return statistics.fixed_capital_total(m.mean(axis=0), capital)

    comparisons = {
        arm: c | {"verdict": ablation_verdict(arm, c, max(trips[arm], trips[REFERENCE_ARM]))}
        for (kind, arm), c in family.items()
        if kind == "reference"
    }
    vs_flat = {
        name: c | {"total_return": total(series[name]), "verdict": versus_verdict(name, "flat", c, trips[name])}
        for (kind, name), c in family.items()
        if kind == "flat"
    }
    vs_rule = {
        arm: c
        | {
            "total_return": total(matrix[arm]),
            "rule_total_return": total(rule_matrix[arm]),
            "verdict": versus_verdict(arm, "tuned_ofi_rule", c, max(trips[arm], trips["tuned_ofi_rule"])),
        }
        for (kind, arm), c in family.items()
        if kind == "rule"
    }
    ofi = comparisons.get("phase2_ofi")
    missing = "phase2_ofi" if "phase2_ofi" not in config.arms else REFERENCE_ARM
    verdict = ofi["verdict"] if ofi else f"{missing} not among the arms: no OFI ablation verdict"
    distribution = {
        arm: {
            k: {"mean": float(np.mean(v)), "min": float(np.min(v)), "max": float(np.max(v))}
            for k in ("total_return", "total_pnl_usd", "max_drawdown_pct", "max_drawdown_usd")
            if (v := [m[k] for m in seeds.values() if m[k] is not None])
        }
        for arm, seeds in per_seed.items()
    }
    wall = {"features_s_by_fold": features_s, "runs": timings}
    the_lake.write_artifact(
        "artifacts/ablation_report/latest.json",
        json.dumps(
            {
                "protocol_hash": digest,
                "capital": capital,
                "family_size": len(family),
                "comparisons": comparisons,
                "vs_flat": vs_flat,
                "vs_tuned_rule": vs_rule,
                "distribution": distribution,
                "per_seed": per_seed,
                "verdict": verdict,
                "folds": [f.windows.as_dict() for f in folds],
                "seeds": list(config.seeds),
                # seed-mean $ PnL per test day; every seed's series is in research_daily_pnl under protocol_hash
                "daily": {
                    k: [{"trade_date": d, "pnl_usd": float(v)} for d, v in zip(dates, m.mean(axis=0), strict=True)]
                    for k, m in series.items()
                },
                "seconds": wall,
            },
            default=str,
        ).encode(),
    )
    table = _ci_md(f"arm - {REFERENCE_ARM}", comparisons)
    return dg.MaterializeResult(
        metadata={
            "verdict_ofi": verdict,
            "paired_vs_phase2_no_ofi": dg.MetadataValue.md(table),
            "protocol_hash": digest,
            "research_daily_pnl_version": pnl_version,
            "family_size": len(family),
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
