"""Data-quality checks of one `raw_mbp10` partition (pure functions; the asset wraps them).

The blocking checks run on the partition's staged Parquet files BEFORE the Delta commit (see
`Lake.replace_partition(before_commit=...)`): data that fails them is never committed and the previous
version stays current. The same functions check a stored partition (`RawPartition.stored`).
Order-dependent figures (per-instrument `ts_recv` order, in-session gaps, crossed books) come from the
streaming pass in `raw_ingest.IngestStats`; the rest is read batch by batch, so memory stays bounded
at 10M records/day.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.dataset as pads

from phoenix_assets.lib.check_outcome import CheckOutcome
from phoenix_assets.lib.ingest.raw_ingest import IngestStats
from phoenix_assets.lib.io.lake import Lake
from phoenix_assets.lib.schema import (
    PRICE_COLUMNS,
    PRICE_SCALE,
    RAW_COLUMNS,
    RAW_MBP10_SCHEMA,
    RAW_TABLE,
    RECORD_COLUMNS,
)

ACTIONS = ["A", "C", "M", "R", "T", "F", "N"]
SIDES = ["A", "B", "N"]
BATCH_ROWS = 1_000_000


@dataclass(frozen=True)
class RawPartition:
    """One trade date of raw records to check: staged files before the commit, or the stored partition."""

    dataset: pads.Dataset
    trade_date: dt.date

    @classmethod
    def stored(cls, lake: Lake, trade_date: dt.date) -> RawPartition:
        pruning = [("trade_date", "=", str(trade_date))]
        return cls(lake.table(RAW_TABLE).to_pyarrow_dataset(file_pruning_predicate=pruning), trade_date)

    def schema(self) -> pa.Schema:
        """The columns as readers will see them (the partition value lives in the path, not the file)."""
        schema = self.dataset.schema
        if "trade_date" not in schema.names:
            schema = schema.append(pa.field("trade_date", pa.date32()))
        return schema

    def batches(self, columns: list[str] | None = None) -> Iterator[pl.DataFrame]:
        """The partition `BATCH_ROWS` rows at a time, with the `trade_date` column in place."""
        own = [c for c in columns or RAW_COLUMNS if c in self.dataset.schema.names]
        for batch in self.dataset.to_batches(columns=own, batch_size=BATCH_ROWS):
            frame = pl.from_arrow(pa.Table.from_batches([batch]))
            assert isinstance(frame, pl.DataFrame)
            if "trade_date" not in frame.columns and (columns is None or "trade_date" in columns):
                frame = frame.with_columns(pl.lit(self.trade_date).alias("trade_date"))
            yield frame


def check_schema(part: RawPartition) -> CheckOutcome:
    """Column names and Arrow types equal the declared `raw_mbp10` schema."""
    stored = part.schema()
    problems = []
    for want in RAW_MBP10_SCHEMA:
        if want.name not in stored.names:
            problems.append(f"missing {want.name}")
            continue
        got = stored.field(want.name).type
        if not (got.equals(want.type) or (pa.types.is_string(want.type) and pa.types.is_large_string(got))):
            problems.append(f"{want.name}: {got} (expected {want.type})")
    extra = sorted(set(stored.names) - set(RAW_COLUMNS))
    problems += [f"unexpected column {c}" for c in extra]
    return CheckOutcome(not problems, "schema matches raw_mbp10", {"problems": problems or ["none"]})


def check_non_empty(part: RawPartition) -> CheckOutcome:
    rows = part.dataset.count_rows()
    return CheckOutcome(rows > 0, f"{rows} records stored", {"rows": rows})


def check_no_duplicates(part: RawPartition, stats: IngestStats | None = None) -> CheckOutcome:
    """No two book records identical in every DBN field (64-bit hash of the record's own fields).

    Phoenix's additions (`record_index`, `symbol`, `trade_date`) are left out of the hash: a copy of a
    day's file whose metadata names another symbol carries the same records and must count as duplicates.
    Identical trade records are legitimate in real CME data: one aggressor filling two resting orders
    of equal size in one packet gives two T records with the same ts, price, size and sequence (the
    ESH4 fixture has 15). With `stats`, the description names the files the first duplicate came from.
    """
    parts = [
        f.select(pl.struct(RECORD_COLUMNS).hash(seed=42).alias("h"), pl.col("action"), pl.col("record_index"))
        for f in part.batches([*RECORD_COLUMNS, "record_index"])
    ]
    empty = {"h": pl.UInt64, "action": pl.String, "record_index": pl.Int64}
    hashed = pl.concat(parts) if parts else pl.DataFrame(schema=empty)
    counts = (
        hashed.group_by("h")
        .agg(
            pl.len(),
            (pl.col("action") == "T").all().alias("trade"),
            pl.col("record_index").min().alias("first"),
            pl.col("record_index").max().alias("last"),
        )
        .filter(pl.col("len") > 1)
        .sort("first")
    )
    book = counts.filter(~pl.col("trade"))
    duplicates = int((book["len"] - 1).sum()) if book.height else 0
    split_fills = int((counts.filter(pl.col("trade"))["len"] - 1).sum()) if counts.height else 0
    description = f"{duplicates} duplicate book records"
    metadata: dict[str, Any] = {
        "duplicate_book_records": duplicates,
        "identical_trade_records (split fills, allowed)": split_fills,
    }
    if duplicates:
        first, last = int(book["first"][0]), int(book["last"][0])
        metadata["first_duplicate_record_indexes"] = [first, last]
        if stats is not None:
            a, b = stats.file_of(first), stats.file_of(last)
            metadata["first_duplicate_files"] = [a, b]
            description += f" (record {last} of {b} repeats record {first} of {a})"
    return CheckOutcome(duplicates == 0, description, metadata)


def check_prices_on_grid(part: RawPartition, tick_size: float) -> CheckOutcome:
    """Every defined price (trade/level) is positive and a multiple of the tick."""
    tick = round(tick_size * PRICE_SCALE)
    counts = dict.fromkeys(PRICE_COLUMNS, 0)
    for frame in part.batches(PRICE_COLUMNS):
        bad = frame.select(((pl.col(c) <= 0) | (pl.col(c) % tick != 0)).sum().alias(c) for c in PRICE_COLUMNS)
        for col, value in bad.row(0, named=True).items():
            counts[col] += int(value or 0)
    offenders = {k: v for k, v in counts.items() if v}
    total = sum(offenders.values())
    return CheckOutcome(
        total == 0,
        f"{total} prices off the {tick_size} grid or not positive",
        {"bad_prices": total, "columns": offenders or {"none": 0}, "tick_size": tick_size},
    )


def check_ordering(stats: IngestStats) -> CheckOutcome:
    n = stats.out_of_order
    return CheckOutcome(n == 0, f"{n} records out of ts_recv order within their instrument", {"out_of_order": n})


def check_crossed_share(stats: IngestStats, max_share: float) -> CheckOutcome:
    share = stats.crossed_share_in_session
    return CheckOutcome(
        share <= max_share,
        f"crossed/locked share of in-session book states {share:.5f} (limit {max_share})",
        {
            "crossed_share_in_session": share,
            "crossed_in_session": stats.crossed_in_session,
            "book_states_in_session": stats.book_states_in_session,
            "crossed_pre_open (masked, allowed)": stats.crossed_pre_open,
            "limit": max_share,
        },
    )


def check_session_gaps(stats: IngestStats, max_gap_minutes: float) -> CheckOutcome:
    gap_min = stats.max_session_gap_ns / 60e9
    at = (
        dt.datetime.fromtimestamp(stats.max_session_gap_at / 1e9, tz=dt.UTC).isoformat()
        if stats.max_session_gap_at is not None
        else "n/a"
    )
    return CheckOutcome(
        gap_min <= max_gap_minutes,
        f"longest silence in continuous trading {gap_min:.2f} min (limit {max_gap_minutes}) starting {at}",
        {"max_gap_minutes": gap_min, "gap_starts_at": at, "limit_minutes": max_gap_minutes},
    )


def _expectation_suite() -> Any:
    import great_expectations as gx  # ~2.5 s import: only when the check runs

    suite = gx.ExpectationSuite(name="raw_mbp10")
    e = gx.expectations
    suite.add_expectation(e.ExpectTableColumnsToMatchOrderedList(column_list=RAW_COLUMNS))
    for col in ("ts_recv", "ts_event", "instrument_id", "action", "side", "flags", "sequence"):
        suite.add_expectation(e.ExpectColumnValuesToNotBeNull(column=col))
    suite.add_expectation(e.ExpectColumnValuesToBeInSet(column="rtype", value_set=[10]))
    suite.add_expectation(e.ExpectColumnValuesToBeInSet(column="action", value_set=ACTIONS))
    suite.add_expectation(e.ExpectColumnValuesToBeInSet(column="side", value_set=SIDES))
    suite.add_expectation(e.ExpectColumnValuesToBeBetween(column="depth", min_value=0, max_value=9))
    suite.add_expectation(e.ExpectColumnValuesToBeBetween(column="flags", min_value=0, max_value=255))
    suite.add_expectation(e.ExpectColumnValuesToBeBetween(column="size", min_value=0))
    suite.add_expectation(e.ExpectColumnValuesToBeBetween(column="ts_recv", min_value=0))
    return suite


def check_expectations(part: RawPartition) -> CheckOutcome:
    """great-expectations suite (schema, non-null keys, value domains), validated batch by batch."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    batch_def = (
        context.data_sources.add_pandas("raw_mbp10")
        .add_dataframe_asset("partition")
        .add_batch_definition_whole_dataframe("batch")
    )
    suite = _expectation_suite()
    unexpected: dict[str, int] = {}
    failed: set[str] = set()
    batches = 0
    for frame in part.batches():
        result = batch_def.get_batch(batch_parameters={"dataframe": frame.to_pandas()}).validate(suite)
        batches += 1
        for r in result.results:
            cfg = r.expectation_config
            key = f"{cfg.type}({cfg.kwargs.get('column', 'table')})"
            unexpected[key] = unexpected.get(key, 0) + int(r.result.get("unexpected_count", 0) or 0)
            if not r.success:
                failed.add(key)
    return CheckOutcome(
        not failed and batches > 0,
        f"great-expectations: {len(suite.expectations) - len(failed)}/{len(suite.expectations)} expectations met",
        {
            "expectations": len(suite.expectations),
            "failed": sorted(failed) or ["none"],
            "unexpected_counts": unexpected,
            "batches": batches,
            "great_expectations_version": gx.__version__,
        },
    )
