"""Microstructure stage: `raw_mbp10` -> `book_snapshots_1s` -> `ofi_bars_1m` (daily partitions, Delta)."""

import datetime as dt

import dagster as dg
import polars as pl
from pydantic import Field

from phoenix_assets.defs.checks import CheckTable, check_results, check_specs
from phoenix_assets.defs.ingest.assets import raw_mbp10
from phoenix_assets.defs.partitions import FOLLOW_PARENT_PARTITION, trade_date_partitions
from phoenix_assets.defs.resources import LakeResource
from phoenix_assets.lib.check_outcome import CheckOutcome
from phoenix_assets.lib.market import bars as bar_lib
from phoenix_assets.lib.market import microstructure as ms
from phoenix_assets.lib.schema import BARS_TABLE, RAW_TABLE, SECONDS_TABLE

SECONDS_CHECKS: CheckTable = {
    "events_match_raw": ("Events counted by the kernel equal the F_LAST records of raw_mbp10", True),
    "spread_at_least_one_tick": ("Valid (uncrossed) end-of-second books have a spread >= 1 tick", True),
}
BAR_CHECKS: CheckTable = {
    "no_nan_with_book": ("No NaN/null book value where the end-of-minute book exists", True),
    "spread_at_least_one_tick": ("Uncrossed end-of-minute books have a spread >= 1 tick", True),
    "ofi_sums_match_1s": ("The day's OFI per level from the 1m bars equals the sum of the 1s table", True),
    "volume_matches_raw": ("Bar volume equals the size of the trade records in raw_mbp10", True),
    "bars_contiguous": ("No missing minute inside continuous trading (a quiet minute warns, not blocks)", False),
}


def _iso(ts: object) -> str:
    return "n/a" if ts is None else str(ts)


@dg.asset(
    partitions_def=trade_date_partitions,
    automation_condition=FOLLOW_PARENT_PARTITION,
    group_name="microstructure",
    kinds={"deltalake", "numba"},
    deps=[raw_mbp10],
    check_specs=check_specs("book_snapshots_1s", SECONDS_CHECKS, trade_date_partitions),
    description=(
        "Per second of activity (dense inside a run): end-of-second 10-level book (index points, sizes), "
        "per-level OFI (Cont-Kukanov-Stoikov 2014; Xu-Gould-Howison 2019) summed over the second, aggressor "
        "volumes, trade OHLC, time-weighted spread/microprice sums, crossed flag. Book read only on F_LAST "
        "records; snapshots and trades add no OFI; state resets on a roll and at the session break."
    ),
)
def book_snapshots_1s(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    trade_date = dt.date.fromisoformat(context.partition_key)
    the_lake = lake.lake()
    the_lake.require_partition(RAW_TABLE, trade_date, needed_by="book_snapshots_1s")
    seconds, diagnostics = ms.seconds_of_day(the_lake, trade_date)
    seconds = seconds.join(ms.symbols_of_day(the_lake, trade_date), on="instrument_id", how="left")
    table = ms.to_delta_arrow(seconds)
    version = the_lake.replace_partition(
        SECONDS_TABLE, table.schema, table.to_batches(max_chunksize=65_536), "trade_date", trade_date
    )
    valid = bar_lib.with_l1_columns(seconds).filter(pl.col("book_valid"))
    below = int((valid["spread_ticks_close"] < 1 - 1e-9).sum())
    context.log.info(f"{trade_date}: {seconds.height} seconds, kernel {diagnostics}")
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": seconds.height,
            "first_ts": _iso(seconds["ts"].min()),
            "last_ts": _iso(seconds["ts"].max()),
            "instruments": sorted(seconds["instrument_id"].unique().to_list()),
            "events": int(seconds["n_events"].sum()),
            "crossed_seconds": int(seconds["crossed"].sum()),
            **{f"kernel_{k}": v for k, v in diagnostics.items()},
            "delta_version": version,
        },
        check_results=check_results(
            "book_snapshots_1s",
            SECONDS_CHECKS,
            {
                "events_match_raw": ms.check_events_match_raw(seconds, the_lake, trade_date),
                "spread_at_least_one_tick": CheckOutcome(
                    below == 0, f"{below} valid seconds with spread < 1 tick", {"seconds_below_one_tick": below}
                ),
            },
        ),
    )


class OfiBarsConfig(dg.Config):
    stoikov_train_days: int = Field(
        default=ms.STOIKOV_TRAIN_DAYS,
        description="Earlier trade dates of book_snapshots_1s used to fit Stoikov's microprice (past only)",
    )


@dg.asset(
    partitions_def=trade_date_partitions,
    automation_condition=FOLLOW_PARENT_PARTITION,
    group_name="microstructure",
    kinds={"deltalake", "polars"},
    deps=[book_snapshots_1s],
    check_specs=check_specs("ofi_bars_1m", BAR_CHECKS, trade_date_partitions),
    description=(
        "One-minute order-flow bars by ts_recv: trade OHLC (mid fallback), volumes, VWAP parts, OFI per level "
        "(contracts and depth-normalised), mid, imbalance-weighted and Stoikov microprice, spread, depth, "
        "liquidity consumption, crossed share, in_session. Metadata: how much OFI explains the mid (R²)."
    ),
)
def ofi_bars_1m(context: dg.AssetExecutionContext, config: OfiBarsConfig, lake: LakeResource) -> dg.MaterializeResult:
    trade_date = dt.date.fromisoformat(context.partition_key)
    the_lake = lake.lake()
    the_lake.require_partition(SECONDS_TABLE, trade_date, needed_by="ofi_bars_1m")
    seconds = the_lake.read_partition(SECONDS_TABLE, trade_date)
    stoikov, train_dates = ms.stoikov_table_for(the_lake, trade_date, config.stoikov_train_days)
    bars = bar_lib.ofi_bars_1m(seconds, stoikov_table=stoikov)
    table = ms.to_delta_arrow(bars)
    version = the_lake.replace_partition(
        BARS_TABLE, table.schema, table.to_batches(max_chunksize=65_536), "trade_date", trade_date
    )
    figures = bar_lib.ofi_mid_figures(bars)
    outcomes = {
        "bars_contiguous": ms.check_bars_contiguous(bars),
        "no_nan_with_book": ms.check_no_nan_with_book(bars),
        "spread_at_least_one_tick": ms.check_spread_at_least_one_tick(bars),
        "ofi_sums_match_1s": ms.check_ofi_sums_match(bars, seconds),
        "volume_matches_raw": ms.check_volume_matches_raw(bars, the_lake, trade_date),
    }
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": bars.height,
            "first_bar": _iso(bars["ts"].min()),
            "last_bar": _iso(bars["ts"].max()),
            "in_session_bars": int(bars["in_session"].sum()),
            "volume": int(bars["volume"].sum()),
            "ofi_contemporaneous_r2": figures.get("contemporaneous_r2"),
            "ofi_contemporaneous_beta_ticks_per_contract": figures.get("contemporaneous_beta"),
            "ofi_forward_corr_next_minute": figures.get("forward_corr"),
            "stoikov_trained_on": [d.isoformat() for d in train_dates] or ["none: no earlier 1s data"],
            "delta_version": version,
        },
        check_results=check_results("ofi_bars_1m", BAR_CHECKS, outcomes),
    )
