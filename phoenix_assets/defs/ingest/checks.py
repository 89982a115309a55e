"""Data-quality checks of `raw_mbp10`, evaluated on each materialized partition.

Blocking checks gate everything downstream: bad raw data would poison every feature built on it.
The in-session gap check only warns: real days have quiet spells, and later stages mask gaps.
"""

import datetime as dt

import dagster as dg
import pyarrow as pa
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


def raw_outcomes(
    part: q.RawPartition,
    stats: IngestStats,
    thresholds: QualityThresholds,
    streamed: q.RawBatchChecks | None = None,
) -> dict[str, CheckOutcome]:
    """Every check's outcome; the record-level ones from `streamed` when the ingest fed it, else read from `part`."""
    if streamed is not None:
        record_level = streamed.outcomes(part, stats)
    else:
        record_level = {
            "no_duplicates": q.check_no_duplicates(part, stats),
            "prices_on_tick_grid": q.check_prices_on_grid(part, thresholds.tick_size),
            "expectations": q.check_expectations(part),
        }
    outcomes = {
        "schema": q.check_schema(part),
        "non_empty": q.check_non_empty(part),
        "ts_recv_ordered": q.check_ordering(stats),
        "crossed_share": q.check_crossed_share(stats, thresholds.max_crossed_share),
        "session_gaps": q.check_session_gaps(stats, thresholds.max_gap_minutes),
        **record_level,
    }
    return {name: outcomes[name] for name in RAW_CHECKS}


class RawGate:
    """The pre-commit gate: every check on the staged day, the staged files refused if a blocking one fails.

    `observe` is the ingest's `on_batch`: duplicates, the tick grid and the expectations accumulate while
    the day streams, so the gate reads only the staged files' schema and row count. `outcomes` is filled
    in for the caller, which reports them as check results once committed.
    """

    def __init__(self, trade_date: dt.date, thresholds: QualityThresholds, outcomes: dict[str, CheckOutcome]) -> None:
        self.trade_date, self.thresholds, self.outcomes = trade_date, thresholds, outcomes
        self.streamed = q.RawBatchChecks(thresholds.tick_size)

    def observe(self, batch: pa.RecordBatch) -> None:
        self.streamed.update(batch)

    def __call__(self, staged: pads.Dataset, stats: IngestStats) -> None:
        part = q.RawPartition(staged, self.trade_date)
        self.outcomes.update(raw_outcomes(part, stats, self.thresholds, self.streamed))
        failed = [name for name, (_, blocking) in RAW_CHECKS.items() if blocking and not self.outcomes[name].passed]
        if failed:
            reasons = "; ".join(f"{name}: {self.outcomes[name].description}" for name in failed)
            raise RawDataRejected(
                f"{ASSET} {self.trade_date}: blocking check(s) failed on the staged data, nothing was committed "
                f"(the partition's previous version stays current): {reasons}. "
                f"Files: {', '.join(stats.rows_per_file) or 'none'}"
            )

    def close(self) -> None:
        """Remove the duplicate index's spill files (also when the ingest failed before the gate ran)."""
        self.streamed.close()


def raw_gate(trade_date: dt.date, thresholds: QualityThresholds, outcomes: dict[str, CheckOutcome]) -> RawGate:
    """The pre-commit gate for `ingest_partition(before_commit=gate, on_batch=gate.observe)`."""
    return RawGate(trade_date, thresholds, outcomes)


def raw_check_results(outcomes: dict[str, CheckOutcome]) -> list[dg.AssetCheckResult]:
    return check_results(ASSET, RAW_CHECKS, outcomes)
