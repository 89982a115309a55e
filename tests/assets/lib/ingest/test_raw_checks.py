"""Each raw data-quality check passes on the real fixture and fails on crafted bad data."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from phoenix_assets.lib.ingest import raw_quality as q
from phoenix_assets.lib.ingest.raw_ingest import IngestStats
from phoenix_assets.lib.io.dbn_reader import DbnFileError
from phoenix_assets.lib.io.lake import Lake
from phoenix_assets.lib.schema import RAW_MBP10_SCHEMA, RAW_ORDER, RAW_TABLE, UNDEF_PRICE
from tests.assets.lib.ingest.test_raw_ingest import ESH4_DAY, dbn_bytes, ingest
from tests.conftest import ESH4_MBP10, land


@pytest.fixture
def landed(lake: Lake, landing: Path) -> tuple[Lake, IngestStats]:
    land(landing, ESH4_MBP10)
    stats, _ = ingest(lake, landing, ESH4_DAY)
    return lake, stats


def stored(lake: Lake) -> q.RawPartition:
    return q.RawPartition.stored(lake, ESH4_DAY)


def rewrite(lake: Lake, frame: pl.DataFrame) -> None:
    """Replace the partition with a crafted frame (same schema)."""
    table = frame.to_arrow().cast(RAW_MBP10_SCHEMA)
    lake.replace_partition(RAW_TABLE, RAW_MBP10_SCHEMA, table.to_batches(), "trade_date", ESH4_DAY)


def test_all_checks_pass_on_the_real_day(landed: tuple[Lake, IngestStats]) -> None:
    lake, stats = landed
    outcomes = [
        q.check_schema(stored(lake)),
        q.check_non_empty(stored(lake)),
        q.check_no_duplicates(stored(lake)),
        q.check_prices_on_grid(stored(lake), 0.25),
        q.check_ordering(stats),
        q.check_crossed_share(stats, 0.001),
        q.check_session_gaps(stats, 15),
        q.check_expectations(stored(lake)),
    ]
    assert all(o.passed for o in outcomes), [o.description for o in outcomes if not o.passed]
    assert q.check_no_duplicates(stored(lake)).metadata["identical_trade_records (split fills, allowed)"] == 15


def test_duplicated_book_records_fail(landed: tuple[Lake, IngestStats]) -> None:
    lake, _ = landed
    frame = lake.read_partition(RAW_TABLE, ESH4_DAY, order_by=RAW_ORDER)
    rewrite(lake, pl.concat([frame, frame.filter(pl.col("action") == "A").head(3)]))
    outcome = q.check_no_duplicates(stored(lake))
    assert not outcome.passed and outcome.metadata["duplicate_book_records"] == 3


def test_off_grid_and_negative_prices_fail(landed: tuple[Lake, IngestStats]) -> None:
    lake, _ = landed
    frame = lake.read_partition(RAW_TABLE, ESH4_DAY, order_by=RAW_ORDER).with_row_index("i")
    frame = frame.with_columns(
        pl.when(pl.col("i") == 10)
        .then(pl.col("bid_px_03") + 10_000_000)
        .otherwise(pl.col("bid_px_03"))
        .alias("bid_px_03"),
        pl.when(pl.col("i") == 11).then(-pl.col("price")).otherwise(pl.col("price")).alias("price"),
    ).drop("i")
    rewrite(lake, frame)
    outcome = q.check_prices_on_grid(stored(lake), 0.25)
    assert not outcome.passed
    assert outcome.metadata["columns"] == {"price": 1, "bid_px_03": 1}
    assert q.check_prices_on_grid(stored(lake), 0.0025).metadata["columns"] == {"price": 1}


def test_wrong_types_fail_schema_and_expectations(landed: tuple[Lake, IngestStats], tmp_path: Path) -> None:
    lake, _ = landed
    frame = lake.read_partition(RAW_TABLE, ESH4_DAY, order_by=RAW_ORDER)
    bad = Lake(str(tmp_path / "bad_lake"))
    table = frame.with_columns(pl.col("size").cast(pl.Float64), pl.lit("X").alias("side")).to_arrow()
    bad.replace_partition(RAW_TABLE, table.schema, table.to_batches(), "trade_date", ESH4_DAY)
    schema = q.check_schema(stored(bad))
    assert not schema.passed and "size: double (expected int64)" in schema.metadata["problems"]
    expectations = q.check_expectations(stored(bad))
    assert not expectations.passed
    assert expectations.metadata["failed"] == ["expect_column_values_to_be_in_set(side)"]


def test_empty_partition_fails(lake: Lake) -> None:
    empty = pl.DataFrame(schema=pl.from_arrow(RAW_MBP10_SCHEMA.empty_table()).schema)
    rewrite(lake, empty)
    assert not q.check_non_empty(stored(lake)).passed
    assert not q.check_expectations(stored(lake)).passed


def _stats_for(records: np.ndarray) -> IngestStats:
    from phoenix_assets.lib import calendar as cal

    stats = IngestStats(trade_date=ESH4_DAY)
    for chunk in np.array_split(records, 5):
        stats.update(chunk, cal.session_open_ns(ESH4_DAY))
    return stats


def test_out_of_order_records_fail_even_across_chunks() -> None:
    _, recs = dbn_bytes(ESH4_MBP10)
    assert q.check_ordering(_stats_for(recs)).passed
    recs[[20_000, 20_001]] = recs[[20_001, 20_000]]
    recs[[8_743, 8_744]] = recs[[8_744, 8_743]]  # 8,743 records per chunk: straddles a chunk boundary
    swapped = _stats_for(recs)
    if recs["ts_recv"][20_000] == recs["ts_recv"][20_001]:
        pytest.skip("equal timestamps")
    assert not q.check_ordering(swapped).passed and swapped.out_of_order >= 2


def test_crossed_books_in_session_fail() -> None:
    _, recs = dbn_bytes(ESH4_MBP10)
    stats = _stats_for(recs)
    assert stats.crossed_pre_open > 0 and q.check_crossed_share(stats, 0.001).passed
    late = np.arange(len(recs)) > len(recs) // 2
    recs["bid_px_00"][late] = recs["ask_px_00"][late]  # locked books all afternoon
    assert not q.check_crossed_share(_stats_for(recs), 0.001).passed
    recs["bid_px_00"][late] = UNDEF_PRICE  # one-sided books are not crossed
    assert q.check_crossed_share(_stats_for(recs), 0.001).passed


def test_gap_inside_the_session_fails() -> None:
    _, recs = dbn_bytes(ESH4_MBP10)
    assert q.check_session_gaps(_stats_for(recs), 15).passed
    later = np.arange(len(recs)) >= len(recs) - 100
    recs["ts_recv"][later] += np.uint64(20 * 60 * 10**9)
    outcome = q.check_session_gaps(_stats_for(recs), 15)
    assert not outcome.passed and 20 <= outcome.metadata["max_gap_minutes"] < 21


def test_silent_zstd_corruption_is_caught(lake: Lake, landing: Path) -> None:
    """Corruption zstd cannot see (no frame checksum) still decodes; record validation catches it."""
    data = bytearray(ESH4_MBP10.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 64] = bytes(64)
    (landing / "silently-corrupt.dbn.zst").write_bytes(bytes(data))
    with pytest.raises(DbnFileError, match=r"silently-corrupt\.dbn\.zst: corrupt record #\d+: action="):
        ingest(lake, landing, ESH4_DAY)
    assert not lake.exists(RAW_TABLE)


def test_gap_check_ignores_the_halt_and_pre_open() -> None:
    stats = IngestStats(trade_date=dt.date(2024, 3, 11))
    assert q.check_session_gaps(stats, 15).passed  # nothing in session: nothing to judge
