"""Data-quality checks of one `raw_mbp10` partition (pure functions; the asset wraps them).

Order-dependent figures (per-instrument `ts_recv` order, in-session gaps, crossed books) come from the
streaming pass in `raw_ingest.IngestStats`; the rest is read back from the stored Delta partition
with streaming polars scans or batch by batch, so memory stays bounded at 10M records/day.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import polars as pl
import pyarrow as pa

from phoenix_assets.lib.lake import Lake
from phoenix_assets.lib.mbp10_schema import PRICE_COLUMNS, PRICE_SCALE, RAW_COLUMNS, RAW_MBP10_SCHEMA
from phoenix_assets.lib.raw_ingest import RAW_TABLE, IngestStats

ACTIONS = ["A", "C", "M", "R", "T", "F", "N"]
SIDES = ["A", "B", "N"]


@dataclass(frozen=True)
class CheckOutcome:
    passed: bool
    description: str
    metadata: dict[str, Any] = field(default_factory=dict)


def _partition(lake: Lake, trade_date: dt.date) -> pl.LazyFrame:
    return lake.scan(RAW_TABLE).filter(pl.col("trade_date") == trade_date)


def check_schema(lake: Lake) -> CheckOutcome:
    """Stored column names and Arrow types equal the declared `raw_mbp10` schema."""
    stored = pa.schema(lake.table(RAW_TABLE).schema().to_arrow())
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


def check_non_empty(lake: Lake, trade_date: dt.date) -> CheckOutcome:
    rows = _partition(lake, trade_date).select(pl.len()).collect().item()
    return CheckOutcome(rows > 0, f"{rows} records stored", {"rows": rows})


def check_no_duplicates(lake: Lake, trade_date: dt.date) -> CheckOutcome:
    """No two stored book records identical in every DBN field (64-bit row hash, streamed).

    Identical trade records are legitimate in real CME data: one aggressor filling two resting orders
    of equal size in one packet gives two T records with the same ts, price, size and sequence (the
    ESH4 fixture has 15). Overlapping source files duplicate book records too, so those are the test.
    """
    part = _partition(lake, trade_date)
    fields = [c for c in RAW_COLUMNS if c != "record_index"]  # our own position column is always unique
    hashed = part.select(pl.col("action"), pl.struct(fields).hash(seed=42).alias("h"))
    counts = (
        hashed.group_by("h")
        .agg(pl.len(), (pl.col("action") == "T").all().alias("trade"))
        .filter(pl.col("len") > 1)
        .collect(engine="streaming")
    )
    book = counts.filter(~pl.col("trade"))
    duplicates = int((book["len"] - 1).sum()) if book.height else 0
    split_fills = int((counts.filter(pl.col("trade"))["len"] - 1).sum()) if counts.height else 0
    return CheckOutcome(
        duplicates == 0,
        f"{duplicates} duplicate book records",
        {"duplicate_book_records": duplicates, "identical_trade_records (split fills, allowed)": split_fills},
    )


def check_prices_on_grid(lake: Lake, trade_date: dt.date, tick_size: float) -> CheckOutcome:
    """Every defined price (trade/level) is positive and a multiple of the tick."""
    tick = round(tick_size * PRICE_SCALE)
    exprs = []
    for col in PRICE_COLUMNS:
        c = pl.col(col)
        exprs.append(((c <= 0) | (c % tick != 0)).sum().alias(col))
    bad = _partition(lake, trade_date).select(exprs).collect(engine="streaming").row(0, named=True)
    offenders = {k: int(v) for k, v in bad.items() if v}
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


def check_expectations(lake: Lake, trade_date: dt.date, batch_rows: int = 1_000_000) -> CheckOutcome:
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
    dataset = lake.table(RAW_TABLE).to_pyarrow_dataset(file_pruning_predicate=[("trade_date", "=", str(trade_date))])
    unexpected: dict[str, int] = {}
    failed: set[str] = set()
    batches = 0
    for batch in dataset.to_batches(batch_size=batch_rows):
        frame = pa.Table.from_batches([batch]).to_pandas()
        if "trade_date" not in frame:  # partition value lives in the path, not the file
            frame["trade_date"] = trade_date
        frame = frame[RAW_COLUMNS]
        result = batch_def.get_batch(batch_parameters={"dataframe": frame}).validate(suite)
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
