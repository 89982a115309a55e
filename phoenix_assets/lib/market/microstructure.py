"""Run a stored raw day through the book/OFI kernel, and the quality checks of the bar tables.

Glue between the lake and `book_kernel` / `bars` (no dagster): the raw partition streams back in feed
order chunk by chunk through one `BookOfiState`, so peak memory does not grow with the day.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pyarrow as pa

from phoenix_assets.lib.check_outcome import CheckOutcome
from phoenix_assets.lib.io.lake import Lake
from phoenix_assets.lib.io.raw_reader import iter_raw_partition
from phoenix_assets.lib.market.bars import STOIKOV_INPUTS, fit_stoikov_adjustment, seconds_frame
from phoenix_assets.lib.market.book_kernel import SECOND_COLUMNS, BookOfiState, arrays_from_raw
from phoenix_assets.lib.schema import F_LAST, RAW_TABLE, SECONDS_TABLE, level_columns

STOIKOV_TRAIN_DAYS = 5  # earlier trade dates of book_snapshots_1s that Stoikov's microprice is fitted on
KERNEL_INPUTS = [
    "ts_recv", "instrument_id", "action", "side", "flags", "price", "size",
    *level_columns("bid_px"), *level_columns("ask_px"), *level_columns("bid_sz"), *level_columns("ask_sz"),
]  # fmt: skip
OFI_COLUMNS = [f"ofi_l{m}" for m in range(1, 11)]


def seconds_of_day(lake: Lake, trade_date: dt.date, chunk_rows: int = 65_536) -> tuple[pl.DataFrame, dict[str, int]]:
    """The `book_snapshots_1s` rows of one stored raw day, and the kernel's reset counters."""
    state = BookOfiState()
    parts = [
        state.process_chunk(arrays_from_raw(pl.from_arrow(batch)))
        for batch in iter_raw_partition(lake, trade_date, KERNEL_INPUTS, chunk_rows)
    ]
    parts.append(state.flush())
    columns = {k: np.concatenate([p[k] for p in parts]) for k in SECOND_COLUMNS}
    return seconds_frame(columns), state.diagnostics()


def symbols_of_day(lake: Lake, trade_date: dt.date) -> pl.DataFrame:
    """instrument_id -> symbol as stored in raw_mbp10 for the day.

    The streaming engine, named: polars 2.1's default ("auto") streams this query too, but the in-memory
    engine (POLARS_ENGINE_AFFINITY, an older polars) loads both columns of the whole day first: +1.07 GB
    at 10M records, ~3 GB at 30M (measured for issue 26), against ~120 MB streamed at any size.
    """
    return (
        lake.scan(RAW_TABLE)
        .filter(pl.col("trade_date") == trade_date)
        .select("instrument_id", "symbol")
        .unique()
        .collect(engine="streaming")
    )


def to_delta_arrow(frame: pl.DataFrame) -> pa.Table:
    """Datetimes to microseconds (Delta's timestamp resolution; bars and seconds lose nothing)."""
    casts = [pl.col(c).cast(pl.Datetime("us", "UTC")) for c, t in frame.schema.items() if isinstance(t, pl.Datetime)]
    return frame.with_columns(casts).to_arrow()


def check_bars_contiguous(bars: pl.DataFrame) -> CheckOutcome:
    """Inside continuous trading, every minute between a run's first and last bar has a bar."""
    runs = (
        bars.filter(pl.col("in_session"))
        .group_by("instrument_id", "trade_date")
        .agg(pl.len().alias("bars"), pl.col("ts").min().alias("first"), pl.col("ts").max().alias("last"))
        .with_columns(expected=((pl.col("last") - pl.col("first")).dt.total_minutes() + 1))
    )
    missing = int((runs["expected"] - runs["bars"]).sum()) if runs.height else 0
    return CheckOutcome(missing == 0, f"{missing} missing minutes inside the session", {"missing_minutes": missing})


def check_no_nan_with_book(bars: pl.DataFrame) -> CheckOutcome:
    """Where the end-of-minute book exists (mid_close defined) the book columns are finite."""
    cols = ["mid_open", "mid_close", "microprice_close", "spread_ticks_close", "close", "open", "high", "low"]
    cols = [c for c in cols if c in bars.columns]
    with_book = bars.filter(pl.col("mid_close").is_not_null())
    bad = {c: int(with_book[c].is_null().sum() + with_book[c].is_nan().sum()) for c in cols}
    bad = {c: n for c, n in bad.items() if n}
    return CheckOutcome(not bad, f"{sum(bad.values())} NaN/null book values", {"columns": bad or {"none": 0}})


def check_spread_at_least_one_tick(bars: pl.DataFrame) -> CheckOutcome:
    """An uncrossed end-of-minute book has a spread of at least one tick."""
    spread = bars.filter(pl.col("spread_ticks_close").is_not_null())["spread_ticks_close"]
    below = int((spread < 1 - 1e-9).sum())
    return CheckOutcome(
        below == 0, f"{below} bars with spread below 1 tick", {"bars_below_one_tick": below, "min": spread.min()}
    )


def check_ofi_sums_match(bars: pl.DataFrame, seconds: pl.DataFrame) -> CheckOutcome:
    """Per instrument, the day's OFI per level summed over 1m bars equals the sum over the 1s table."""
    a = bars.group_by("instrument_id").agg(pl.col(OFI_COLUMNS).sum()).sort("instrument_id")
    b = seconds.group_by("instrument_id").agg(pl.col(OFI_COLUMNS).sum()).sort("instrument_id")
    equal = a.equals(b)
    return CheckOutcome(
        equal,
        "1m OFI sums equal the 1s table" if equal else "1m OFI sums differ from the 1s table",
        {"ofi_l1_1m": int(a["ofi_l1"].sum()), "ofi_l1_1s": int(b["ofi_l1"].sum())},
    )


def check_volume_matches_raw(bars: pl.DataFrame, lake: Lake, trade_date: dt.date) -> CheckOutcome:
    """The bars' volume equals the size of the day's trade records in raw_mbp10."""
    raw = (
        lake.scan(RAW_TABLE)
        .filter((pl.col("trade_date") == trade_date) & (pl.col("action") == "T"))
        .select(pl.col("size").sum())
        .collect(engine="streaming")  # a day's column never in memory at once, whatever its size
        .item()
    )
    raw = int(raw or 0)
    ours = int(bars["volume"].sum())
    return CheckOutcome(ours == raw, f"bar volume {ours} vs raw trades {raw}", {"bar_volume": ours, "raw_volume": raw})


def check_events_match_raw(seconds: pl.DataFrame, lake: Lake, trade_date: dt.date) -> CheckOutcome:
    """Every F_LAST record of the raw day is one event in exactly one second."""
    raw = (
        lake.scan(RAW_TABLE)
        .filter((pl.col("trade_date") == trade_date) & ((pl.col("flags") & F_LAST) != 0))
        .select(pl.len())
        .collect(engine="streaming")  # a day's column never in memory at once, whatever its size
        .item()
    )
    ours = int(seconds["n_events"].sum())
    return CheckOutcome(ours == raw, f"{ours} events vs {raw} F_LAST records", {"events": ours, "raw_f_last": raw})


def stoikov_table_for(lake: Lake, trade_date: dt.date, days: int) -> tuple[pl.DataFrame | None, list[dt.date]]:
    """Fit Stoikov's adjustment on up to `days` earlier trade dates of the 1s table (never the day itself)."""
    if days <= 0 or not lake.exists(SECONDS_TABLE):
        return None, []
    earlier = (
        lake.scan(SECONDS_TABLE)
        .filter(
            (pl.col("trade_date") < trade_date) & (pl.col("trade_date") >= trade_date - dt.timedelta(days=3 * days))
        )
        .select("trade_date")
        .unique()
        .sort("trade_date")
        .collect()["trade_date"]
        .to_list()[-days:]
    )
    if not earlier:
        return None, []
    train = lake.scan(SECONDS_TABLE).filter(pl.col("trade_date").is_in(earlier)).select(STOIKOV_INPUTS).collect()
    return fit_stoikov_adjustment(train), earlier
