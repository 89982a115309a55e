"""Data-quality checks of `raw_mbp10`, evaluated on each materialized partition.

Blocking checks gate everything downstream: bad raw data would poison every feature built on it.
The in-session gap check only warns: real days have quiet spells, and later stages mask gaps.
"""

import datetime as dt

import dagster as dg

from phoenix_assets.defs.checks import CheckTable, check_results, check_specs
from phoenix_assets.defs.partitions import trade_date_partitions
from phoenix_assets.defs.resources import QualityThresholds
from phoenix_assets.lib import raw_quality as q
from phoenix_assets.lib.lake import Lake
from phoenix_assets.lib.raw_ingest import IngestStats

ASSET = "raw_mbp10"
RAW_CHECKS: CheckTable = {
    "schema": ("Column names and types equal the raw_mbp10 schema", True),
    "non_empty": ("The partition holds at least one record", True),
    "ts_recv_ordered": ("ts_recv never decreases within an instrument", True),
    "no_duplicates": ("No duplicated book records (split-fill trade records allowed)", True),
    "prices_on_tick_grid": ("Defined prices are positive and on the tick grid", True),
    "crossed_share": ("Crossed/locked books in continuous trading below a threshold (pre-open masked)", True),
    "expectations": ("great-expectations suite: schema, non-null keys, value domains", True),
    "session_gaps": ("No silence longer than the limit inside continuous trading", False),
}
RAW_CHECK_SPECS = check_specs(ASSET, RAW_CHECKS, trade_date_partitions)


def raw_check_results(
    lake: Lake, trade_date: dt.date, stats: IngestStats, thresholds: QualityThresholds
) -> list[dg.AssetCheckResult]:
    outcomes = {
        "schema": q.check_schema(lake),
        "non_empty": q.check_non_empty(lake, trade_date),
        "ts_recv_ordered": q.check_ordering(stats),
        "no_duplicates": q.check_no_duplicates(lake, trade_date),
        "prices_on_tick_grid": q.check_prices_on_grid(lake, trade_date, thresholds.tick_size),
        "crossed_share": q.check_crossed_share(stats, thresholds.max_crossed_share),
        "expectations": q.check_expectations(lake, trade_date),
        "session_gaps": q.check_session_gaps(stats, thresholds.max_gap_minutes),
    }
    return check_results(ASSET, RAW_CHECKS, outcomes)
