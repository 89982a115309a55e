"""Data-quality checks of `raw_mbp10`, evaluated on each materialized partition.

Blocking checks gate everything downstream: bad raw data would poison every feature built on it.
The in-session gap check only warns: real days have quiet spells, and later stages mask gaps.
"""

import datetime as dt
from collections.abc import Callable

import dagster as dg
import pyarrow.dataset as pads

from phoenix_assets.defs.checks import CheckTable, check_results, check_specs
from phoenix_assets.defs.partitions import trade_date_partitions
from phoenix_assets.defs.resources import QualityThresholds
from phoenix_assets.lib.check_outcome import CheckOutcome
from phoenix_assets.lib.ingest import raw_quality as q
from phoenix_assets.lib.ingest.raw_ingest import IngestStats

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


class RawDataRejected(ValueError):
    """The staged partition failed a blocking check; nothing was committed."""


def raw_outcomes(part: q.RawPartition, stats: IngestStats, thresholds: QualityThresholds) -> dict[str, CheckOutcome]:
    return {
        "schema": q.check_schema(part),
        "non_empty": q.check_non_empty(part),
        "ts_recv_ordered": q.check_ordering(stats),
        "no_duplicates": q.check_no_duplicates(part, stats),
        "prices_on_tick_grid": q.check_prices_on_grid(part, thresholds.tick_size),
        "crossed_share": q.check_crossed_share(stats, thresholds.max_crossed_share),
        "expectations": q.check_expectations(part),
        "session_gaps": q.check_session_gaps(stats, thresholds.max_gap_minutes),
    }


def raw_gate(
    trade_date: dt.date, thresholds: QualityThresholds, outcomes: dict[str, CheckOutcome]
) -> Callable[[pads.Dataset, IngestStats], None]:
    """The pre-commit gate: evaluate every check on the staged files, refuse them if a blocking one fails.

    `outcomes` is filled in for the caller, which reports them as check results once committed.
    """

    def gate(staged: pads.Dataset, stats: IngestStats) -> None:
        outcomes.update(raw_outcomes(q.RawPartition(staged, trade_date), stats, thresholds))
        failed = [name for name, (_, blocking) in RAW_CHECKS.items() if blocking and not outcomes[name].passed]
        if failed:
            reasons = "; ".join(f"{name}: {outcomes[name].description}" for name in failed)
            raise RawDataRejected(
                f"{ASSET} {trade_date}: blocking check(s) failed on the staged data, nothing was committed "
                f"(the partition's previous version stays current): {reasons}. "
                f"Files: {', '.join(stats.rows_per_file) or 'none'}"
            )

    return gate


def raw_check_results(outcomes: dict[str, CheckOutcome]) -> list[dg.AssetCheckResult]:
    return check_results(ASSET, RAW_CHECKS, outcomes)
