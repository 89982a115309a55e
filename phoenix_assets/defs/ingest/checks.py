"""Data-quality checks of `raw_mbp10`, evaluated on each materialized partition.

Blocking checks gate everything downstream: bad raw data would poison every feature built on it.
The in-session gap check only warns: real days have quiet spells, and later stages mask gaps.
"""

from __future__ import annotations

import datetime as dt

import dagster as dg

from phoenix_assets.defs.resources import QualityThresholds
from phoenix_assets.lib import raw_quality as q
from phoenix_assets.lib.lake import Lake
from phoenix_assets.lib.raw_ingest import IngestStats

ASSET = "raw_mbp10"
_BLOCKING = {
    "schema": "Column names and types equal the raw_mbp10 schema",
    "non_empty": "The partition holds at least one record",
    "ts_recv_ordered": "ts_recv never decreases within an instrument",
    "no_duplicates": "No duplicated book records (split-fill trade records allowed)",
    "prices_on_tick_grid": "Defined prices are positive and on the tick grid",
    "crossed_share": "Crossed/locked books in continuous trading below a threshold (pre-open masked)",
    "expectations": "great-expectations suite: schema, non-null keys, value domains",
}
_WARN = {"session_gaps": "No silence longer than the limit inside continuous trading"}

RAW_CHECK_SPECS = [
    dg.AssetCheckSpec(name, asset=ASSET, description=d, blocking=True) for name, d in _BLOCKING.items()
] + [dg.AssetCheckSpec(name, asset=ASSET, description=d) for name, d in _WARN.items()]


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
    return [
        dg.AssetCheckResult(
            asset_key=ASSET,
            check_name=name,
            passed=o.passed,
            severity=dg.AssetCheckSeverity.WARN if name in _WARN else dg.AssetCheckSeverity.ERROR,
            description=o.description,
            metadata=o.metadata,
        )
        for name, o in outcomes.items()
    ]
