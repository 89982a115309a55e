"""Features stage: `ofi_bars_1m` -> `hmm_regime_model` (fit on a training window) -> `hmm_regimes` and
`features_1m` (monthly partitions). Point in time throughout: trailing windows, forward filtering only."""

import datetime as dt

import dagster as dg
import polars as pl
from pydantic import Field

from feature_specs import load_catalog
from phoenix_assets.defs.checks import CheckTable, check_results, check_specs
from phoenix_assets.defs.microstructure.assets import ofi_bars_1m
from phoenix_assets.defs.partitions import FOLLOW_MONTH_OF_DAYS, month_partitions
from phoenix_assets.defs.resources import LakeResource
from phoenix_assets.lib.features import quality as fq
from phoenix_assets.lib.features.compute import compute_features, predictive_figures, warmup_start
from phoenix_assets.lib.features.hmm_regimes import filter_regimes, fit_regime_model, model_summary
from phoenix_assets.lib.io.artifacts import latest_regime_model
from phoenix_assets.lib.io.lake import Lake, MissingUpstreamError
from phoenix_assets.lib.market.microstructure import to_delta_arrow
from phoenix_assets.lib.schema import BARS_TABLE, FEATURES_TABLE, HMM_MODEL_DIR, REGIMES_TABLE

Z_CLIP = 5.0


def _bars(lake: Lake, start: dt.date, end: dt.date) -> pl.DataFrame:
    """ofi_bars_1m rows with start <= trade_date <= end."""
    if not lake.exists(BARS_TABLE):
        return pl.DataFrame()
    return lake.scan(BARS_TABLE).filter(pl.col("trade_date").is_between(start, end)).collect()


def _month(context: dg.AssetExecutionContext) -> tuple[dt.date, dt.date]:
    window = context.partition_time_window
    return window.start.date(), (window.end - dt.timedelta(days=1)).date()


def _require_month_bars(lake: Lake, bars: pl.DataFrame, first: dt.date, last: dt.date) -> None:
    """Refuse a month without ofi_bars_1m rows before anything is written, in `hmm_regimes` and `features_1m`
    alike: an empty partition would pass every check. `bars` may start earlier (features_1m's warm-up): only
    the month's own trade dates count."""
    if bars.is_empty() or bars.filter(pl.col("trade_date").is_between(first, last)).is_empty():
        raise MissingUpstreamError(
            f"month {first:%Y-%m}: upstream {BARS_TABLE} has no rows for trade dates {first}..{last} in "
            f"{lake.table_uri(BARS_TABLE)}; materialize {BARS_TABLE} for the month's trade dates first"
        )


class RegimeModelConfig(dg.Config):
    train_start: str = Field(default="2024-03-13", description="First trade date of the HMM training window")
    train_end: str = Field(default="2024-03-14", description="Last trade date of the HMM training window")


@dg.asset(
    group_name="features",
    kinds={"hmmlearn"},
    deps=[ofi_bars_1m],
    description=(
        "GaussianHMM (states ordered by volatility, several random starts) fit ONLY on the configured training "
        "window of ofi_bars_1m; stored as a versioned JSON artifact beside the lake (latest.json points to it)."
    ),
)
def hmm_regime_model(
    context: dg.AssetExecutionContext, config: RegimeModelConfig, lake: LakeResource
) -> dg.MaterializeResult:
    the_lake = lake.lake()
    catalog = load_catalog()
    start, end = dt.date.fromisoformat(config.train_start), dt.date.fromisoformat(config.train_end)
    bars = _bars(the_lake, start, end)
    if bars.is_empty():
        raise ValueError(f"hmm_regime_model: no ofi_bars_1m rows in the training window {start}..{end}")
    model = fit_regime_model(bars, catalog.hmm, start, end, spec_hash=catalog.content_hash)
    version = f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}-{catalog.content_hash[:8]}"
    path = f"{HMM_MODEL_DIR}/{version}.json"
    uri = the_lake.write_artifact(path, model.to_bytes())
    the_lake.publish_latest(HMM_MODEL_DIR, path, version)
    summary = model_summary(model, filter_regimes(model, bars, catalog.hmm))
    context.log.info(
        f"HMM fit on {start}..{end}: log-likelihood {model.log_likelihood:.1f}, converged {model.converged}"
    )
    return dg.MaterializeResult(
        metadata={
            "artifact": dg.MetadataValue.path(uri),
            "version": version,
            "feature_spec_hash": catalog.content_hash,
            "training_window": f"{start}..{end}",
            "log_likelihood": float(model.log_likelihood),
            "converged": bool(model.converged),
            "transition_matrix": dg.MetadataValue.json(summary["transmat"]),
            "state_means": dg.MetadataValue.json(summary["state_means"]),
            "occupancy_in_training": dg.MetadataValue.json(summary.get("occupancy", {})),
        }
    )


@dg.asset(
    partitions_def=month_partitions,
    automation_condition=FOLLOW_MONTH_OF_DAYS,
    group_name="features",
    kinds={"deltalake"},
    deps=[hmm_regime_model, ofi_bars_1m],
    description="Filtered regime probabilities P(state | bars up to t) per in-session bar (forward filter only).",
)
def hmm_regimes(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    the_lake = lake.lake()
    first, last = _month(context)
    bars = _bars(the_lake, first, last)
    _require_month_bars(the_lake, bars, first, last)
    model, cfg = latest_regime_model(the_lake), load_catalog().hmm
    regimes = filter_regimes(model, bars, cfg).with_columns(month=pl.lit(first))
    table = to_delta_arrow(regimes)
    version = the_lake.replace_partition(REGIMES_TABLE, table.schema, table.to_batches(), "month", first)
    summary = model_summary(model, regimes)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": regimes.height,
            "model_training_window": f"{summary['train_start']}..{summary['train_end']}",
            "occupancy": dg.MetadataValue.json(summary.get("occupancy", {})),
            "delta_version": version,
        }
    )


FEATURE_CHECKS: CheckTable = {
    "warm_rows_finite": ("No NaN/inf/null feature in rows flagged warm", True),
    "zscores_within_bounds": (f"Every z-score within ±{Z_CLIP}", True),
    "drift_vs_training": ("PSI of each feature vs the HMM training window (warns only)", False),
}


@dg.asset(
    partitions_def=month_partitions,
    automation_condition=FOLLOW_MONTH_OF_DAYS,
    group_name="features",
    kinds={"deltalake", "polars"},
    deps=[hmm_regime_model, ofi_bars_1m],
    check_specs=check_specs("features_1m", FEATURE_CHECKS, month_partitions),
    description=(
        "Every feature of every set in feature_specs/, point in time: trailing z-scores, session-aware windows, "
        "regimes by forward filtering. Reads enough earlier trade dates to warm up, so a month alone equals "
        "the same month inside a longer run. Stores the spec's content hash in every row."
    ),
)
def features_1m(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    the_lake = lake.lake()
    catalog = load_catalog()
    first, last = _month(context)
    bars = _bars(the_lake, warmup_start(first, catalog), last)
    _require_month_bars(the_lake, bars, first, last)
    model = latest_regime_model(the_lake)
    feats = compute_features(bars, catalog, filter_regimes(model, bars, catalog.hmm))
    month = feats.filter(pl.col("trade_date").is_between(first, last)).with_columns(
        month=pl.lit(first), feature_spec_hash=pl.lit(catalog.content_hash)
    )
    table = to_delta_arrow(month)
    version = the_lake.replace_partition(FEATURES_TABLE, table.schema, table.to_batches(), "month", first)
    reference_bars = _bars(the_lake, warmup_start(model.train_start, catalog), model.train_end)
    reference = compute_features(reference_bars, catalog, filter_regimes(model, reference_bars, catalog.hmm))
    reference = reference.filter(pl.col("trade_date").is_between(model.train_start, model.train_end))
    figures = predictive_figures(month, bars, columns=["ofi_1min_zscore", "ofi_3min_cumulative_zscore"])
    outcomes = {
        "warm_rows_finite": fq.check_warm_rows_finite(month),
        "zscores_within_bounds": fq.check_zscores_bounded(month, Z_CLIP),
        "drift_vs_training": fq.check_drift(month, reference),
    }
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": month.height,
            "warm_rows": int(month["warm"].sum()),
            "first_ts": str(month["ts"].min()),
            "last_ts": str(month["ts"].max()),
            "feature_spec_hash": catalog.content_hash,
            "feature_sets": sorted(catalog.sets),
            "warmup_from": warmup_start(first, catalog).isoformat(),
            "predictive_spearman_next_return": dg.MetadataValue.json(
                {k: (round(v, 4) if v == v else None) for k, v in figures.items()}
            ),
            "delta_version": version,
        },
        check_results=check_results("features_1m", FEATURE_CHECKS, outcomes),
    )
