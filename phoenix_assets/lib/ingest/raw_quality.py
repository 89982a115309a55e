"""Data-quality checks of one `raw_mbp10` partition (pure functions; the asset wraps them).

The blocking checks run BEFORE the Delta commit (see `Lake.replace_partition(before_commit=...)`): data
that fails them is never committed and the previous version stays current. The checks that need every
record (exact duplicates, the tick grid, the great-expectations suite) are accumulated batch by batch
while the ingest streams the day (`RawBatchChecks.update`), so the staged files are not read back; the
same accumulators check a stored partition (`RawPartition.stored`, read `BATCH_ROWS` rows at a time with
no read-ahead). Order-dependent figures (per-instrument `ts_recv` order, in-session gaps, crossed books)
come from the streaming pass in `raw_ingest.IngestStats`. Memory stays flat in the day's size: the
duplicate index spills to disk by hash bucket, great-expectations validates per-column value summaries
(great-expectations loads in a worker process while the day streams: `ge_worker`).
"""

from __future__ import annotations

import atexit
import datetime as dt
import json
import os
import pickle
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
from numba import njit

from phoenix_assets.lib.check_outcome import CheckOutcome
from phoenix_assets.lib.ingest.ge_worker import build_suite
from phoenix_assets.lib.ingest.raw_ingest import IngestStats
from phoenix_assets.lib.io.lake import Lake
from phoenix_assets.lib.process_lifetime import PARENT_PID_ENV
from phoenix_assets.lib.schema import (
    PRICE_COLUMNS,
    PRICE_SCALE,
    RAW_COLUMNS,
    RAW_MBP10_SCHEMA,
    RAW_ORDER,
    RAW_TABLE,
    RECORD_COLUMNS,
)

ACTIONS = ["A", "C", "M", "R", "T", "F", "N"]
SIDES = ["A", "B", "N"]
BATCH_ROWS = 65_536  # rows per batch when a stored partition is read back (one row group)
SPILL_ROWS = 1 << 20  # the duplicate index keeps this many hashes in memory, then spills to disk
SPILL_BUCKETS = 64  # hash buckets on disk: a 30M-record day is ~470k hashes (12 MB) per bucket


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

    def batches(self, columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
        """The partition at most `BATCH_ROWS` rows at a time, with the `trade_date` column in place.

        No read-ahead: pyarrow's default scan buffers up to 16 batches per file and 4 files at once,
        which at 1M-row batches was 7 GB on a 10M-record day.
        """
        own = [c for c in columns or RAW_COLUMNS if c in self.dataset.schema.names]
        scan = self.dataset.to_batches(columns=own, batch_size=BATCH_ROWS, batch_readahead=0, fragment_readahead=0)
        for batch in scan:
            if "trade_date" not in batch.schema.names and (columns is None or "trade_date" in columns):
                days = pa.array(np.full(batch.num_rows, np.datetime64(self.trade_date, "D")), type=pa.date32())
                batch = batch.append_column("trade_date", days)
            yield batch


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


# ---- exact duplicates: a 128-bit hash of each record's own fields, grouped in bounded memory ----

_M1 = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0xC2B2AE3D27D4EB4F)


@njit(cache=True, nogil=True)
def _fmix64(x: np.uint64) -> np.uint64:
    """MurmurHash3's 64-bit finaliser (Appleby, smhasher `fmix64`): every input bit flips half the output."""
    x ^= x >> np.uint64(33)
    x *= np.uint64(0xFF51AFD7ED558CCD)
    x ^= x >> np.uint64(33)
    x *= np.uint64(0xC4CEB9FE1A85EC53)
    x ^= x >> np.uint64(33)
    return x


@njit(cache=True, nogil=True)
def _mix_column(h1: np.ndarray, h2: np.ndarray, values: np.ndarray, valid: np.ndarray, column: int) -> None:
    """Fold one column into both running hashes (`valid` empty: no nulls). A multiply-rotate step per value
    (two different multipliers and rotations); `_finish` applies fmix64 once per record at the end."""
    c1 = _fmix64(np.uint64(column + 1) * _M1)
    c2 = _fmix64(np.uint64(column + 1) * _M2 + np.uint64(1))
    null = _fmix64(c1 ^ c2)
    has_nulls = valid.size > 0
    for i in range(values.size):
        v = null if has_nulls and not valid[i] else np.uint64(values[i]) ^ c1
        a = (h1[i] ^ v) * _M1
        h1[i] = (a << np.uint64(31)) | (a >> np.uint64(33))
        b = (h2[i] + (v ^ c2)) * _M2
        h2[i] = (b << np.uint64(27)) | (b >> np.uint64(37))


@njit(cache=True, nogil=True)
def _finish(h1: np.ndarray, h2: np.ndarray) -> None:
    for i in range(h1.size):
        h1[i] = _fmix64(h1[i])
        h2[i] = _fmix64(h2[i] ^ h1[i])


@njit(cache=True, nogil=True)
def _pack_short_strings(offsets: np.ndarray, data: np.ndarray, out: np.ndarray) -> bool:
    """Strings of at most 7 bytes -> one int64 each (bytes, then the length in the top byte): equal
    exactly when the strings are. False (out unusable) as soon as one is longer."""
    for i in range(out.size):
        start, stop = offsets[i], offsets[i + 1]
        if stop - start > 7:
            return False
        word = np.int64(stop - start) << np.int64(56)
        for k in range(stop - start):
            word |= np.int64(data[start + k]) << np.int64(8 * k)
        out[i] = word
    return True


def int64_values(values: pa.Array) -> np.ndarray:
    """An integer column's values as int64 (a zero-copy view for int64; values under nulls are arbitrary)."""
    if values.type != pa.int64():
        values = values.cast(pa.int64())
    data = values.buffers()[1]
    return np.frombuffer(data, dtype=np.int64, count=len(values) + values.offset)[values.offset :]


def validity(values: pa.Array) -> np.ndarray:
    """True where defined; an empty array when the column has no nulls."""
    if not values.null_count:
        return np.empty(0, np.bool_)
    return values.is_valid().to_numpy(zero_copy_only=False)


def _column_words(values: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """A column as 64-bit words that are equal exactly when the values are, and its validity (empty: no nulls)."""
    kind = values.type
    if pa.types.is_integer(kind) or pa.types.is_boolean(kind) or pa.types.is_temporal(kind):
        words = int64_values(values if not pa.types.is_temporal(kind) else values.cast(pa.int64()))
    elif pa.types.is_floating(kind):
        words = values.cast(pa.float64()).fill_null(0.0).to_numpy().view(np.int64)  # the exact bits
    else:
        words = None
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):  # action, side: one byte each
            offsets_width = np.int64 if pa.types.is_large_string(kind) else np.int32
            buffers = values.buffers()
            offsets = np.frombuffer(buffers[1], dtype=offsets_width)[values.offset : values.offset + len(values) + 1]
            data = np.frombuffer(buffers[2], dtype=np.uint8) if buffers[2] is not None else np.empty(0, np.uint8)
            packed = np.empty(len(values), dtype=np.int64)
            if _pack_short_strings(offsets.astype(np.int64), data, packed):
                words = packed
        if words is None:  # longer strings, anything else: polars' 64-bit value hash
            words = pl.Series(values).hash(seed=42).to_numpy().view(np.int64)
    return np.ascontiguousarray(words), validity(values)


def record_hashes(batch: pa.RecordBatch) -> tuple[np.ndarray, np.ndarray]:
    """Two independent 64-bit hashes of each record's DBN fields (`RECORD_COLUMNS`; Phoenix's additions
    `record_index`, `symbol` and `trade_date` left out): equal records, equal hashes; two different records
    share both with probability ~2^-128, so a 30M-record day has no false duplicate in practice."""
    n = batch.num_rows
    h1 = np.full(n, 0x243F6A8885A308D3, dtype=np.uint64)
    h2 = np.full(n, 0x13198A2E03707344, dtype=np.uint64)
    for j, name in enumerate(RECORD_COLUMNS):
        words, valid = _column_words(batch.column(name))
        _mix_column(h1, h2, words, valid, j)
    _finish(h1, h2)
    return h1, h2


_HASHED = np.dtype([("h1", "<u8"), ("h2", "<u8"), ("first", "<i8"), ("trade", "u1")])


class DuplicateIndex:
    """Exact duplicate groups of a stream of record hashes, in memory bounded by `spill_rows`.

    Hashes are buffered; past `spill_rows` they are partitioned by their top bits into `buckets` files
    on local disk (`$TMPDIR`, 25 bytes a record), and the groups are formed bucket by bucket: equal
    hashes always share a bucket, so no pair is missed and nothing is sampled.
    """

    def __init__(self, spill_rows: int = SPILL_ROWS, buckets: int = SPILL_BUCKETS) -> None:
        if buckets < 2 or buckets & (buckets - 1):
            raise ValueError(f"DuplicateIndex: buckets must be a power of two >= 2 (got {buckets})")
        self.spill_rows, self.buckets, self._bits = spill_rows, buckets, buckets.bit_length() - 1
        self._buffer: list[np.ndarray] = []
        self._buffered = 0
        self._dir: Path | None = None
        self.rows = 0
        self.spilled = 0

    def add(self, h1: np.ndarray, h2: np.ndarray, trade: np.ndarray, record_index: np.ndarray) -> None:
        part = np.empty(len(h1), dtype=_HASHED)
        part["h1"], part["h2"], part["first"], part["trade"] = h1, h2, record_index, trade
        self._buffer.append(part)
        self._buffered += len(part)
        self.rows += len(part)
        if self._buffered >= self.spill_rows:
            self._spill()

    def _spill(self) -> None:
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="phoenix-raw-duplicates-"))
        rows = np.concatenate(self._buffer) if self._buffer else np.empty(0, dtype=_HASHED)
        self._buffer, self._buffered = [], 0
        by_bucket = np.empty_like(rows)
        bounds = _partition_by_bucket(_as_bytes(rows), rows["h1"], self._bits, _as_bytes(by_bucket))
        for b in range(self.buckets):
            if bounds[b + 1] > bounds[b]:
                with open(self._dir / f"{b}.bin", "ab") as out:
                    by_bucket[bounds[b] : bounds[b + 1]].tofile(out)
        self.spilled += len(rows)

    def groups(self) -> pl.DataFrame:
        """Every hash seen more than once: `len`, `trade` (all its records are trades), `first`/`last`
        record_index; sorted by `first`. Removes the spill files."""
        try:
            if self._dir is None:
                rows = np.concatenate(self._buffer) if self._buffer else np.empty(0, dtype=_HASHED)
                return _groups(rows).sort("first")
            self._spill()
            found = [_groups(np.fromfile(path, dtype=_HASHED)) for path in sorted(self._dir.glob("*.bin"))]
            return pl.concat(found).sort("first") if found else _groups(np.empty(0, dtype=_HASHED))
        finally:
            self.close()

    def close(self) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
        self._buffer, self._buffered = [], 0


def _as_bytes(rows: np.ndarray) -> np.ndarray:
    """Packed records as a 2-D uint8 array, one row of `itemsize` bytes each (a view, no copy)."""
    return rows.view(np.uint8).reshape(len(rows), rows.dtype.itemsize)


@njit(cache=True, nogil=True)
def _partition_by_bucket(rows: np.ndarray, h1: np.ndarray, bits: int, out: np.ndarray) -> np.ndarray:
    """Counting sort of `rows` (bytes) into `out` by bucket (the top `bits` of `h1`), stable; the buckets'
    bounds in `out`.

    Two passes, O(n): the rows move as raw bytes (numpy's fancy indexing of a packed structured dtype copies
    them field by field, ~0.25 s per 1M rows; an argsort to find the order cost as much again).
    """
    shift = np.uint64(64 - bits)
    bounds = np.zeros((1 << bits) + 1, np.int64)
    for i in range(h1.size):
        bounds[np.int64(h1[i] >> shift) + 1] += 1
    for b in range(1, bounds.size):
        bounds[b] += bounds[b - 1]
    next_free = bounds[:-1].copy()
    width = rows.shape[1]
    for i in range(h1.size):
        b = np.int64(h1[i] >> shift)
        d = next_free[b]
        next_free[b] = d + 1
        for k in range(width):
            out[d, k] = rows[i, k]
    return bounds


@njit(cache=True, nogil=True)
def _repeated(h1: np.ndarray) -> np.ndarray:
    """True for each value that occurs more than once in `h1`: an open-addressing set keyed by the value's own
    low bits (it is a hash already), O(n), where sorting each bucket's hashes took ~0.4 s per 10M records."""
    size = 1
    while size < 2 * h1.size:
        size *= 2
    mask = np.uint64(size - 1)
    keys = np.empty(size, np.uint64)
    state = np.zeros(size, np.uint8)  # 0 empty, 1 seen once, 2 seen again
    slot_of = np.empty(h1.size, np.int64)
    for i in range(h1.size):
        slot = np.int64(h1[i] & mask)
        while state[slot] != 0 and keys[slot] != h1[i]:
            slot = (slot + 1) & np.int64(mask)
        if state[slot] == 0:
            keys[slot], state[slot] = h1[i], 1
        else:
            state[slot] = 2
        slot_of[i] = slot
    out = np.empty(h1.size, np.bool_)
    for i in range(h1.size):
        out[i] = state[slot_of[i]] == 2
    return out


def _groups(rows: np.ndarray) -> pl.DataFrame:
    """Groups of equal (h1, h2) with more than one record. The records whose h1 repeats (a handful: split-fill
    trades, real duplicates) are found in one pass, and only they are grouped."""
    candidates = rows[_repeated(np.ascontiguousarray(rows["h1"]))]
    frame = pl.DataFrame({name: candidates[name] for name in _HASHED.names})
    return (
        frame.group_by("h1", "h2")
        .agg(
            pl.len().cast(pl.Int64).alias("len"),
            (pl.col("trade") == 1).all().alias("trade"),
            pl.col("first").min().alias("first"),
            pl.col("first").max().alias("last"),
        )
        .filter(pl.col("len") > 1)
        .select("len", "trade", "first", "last")
    )


def add_batch_hashes(index: DuplicateIndex, batch: pa.RecordBatch) -> None:
    """Hash a batch's records into `index` (trades flagged: identical trades are allowed split fills)."""
    h1, h2 = record_hashes(batch)
    trade = _is_trade(batch.column("action"))
    index.add(h1, h2, trade, int64_values(batch.column(RAW_ORDER)))


def _is_trade(action: pa.Array) -> np.ndarray:
    """1 where the record is a trade (`T`)."""
    return pc.fill_null(pc.equal(action, "T"), False).to_numpy(zero_copy_only=False).astype(np.uint8)


def duplicates_outcome(groups: pl.DataFrame, stats: IngestStats | None = None) -> CheckOutcome:
    """The verdict on the duplicate groups (`DuplicateIndex.groups`)."""
    book = groups.filter(~pl.col("trade"))
    duplicates = int((book["len"] - 1).sum()) if book.height else 0
    trades = groups.filter(pl.col("trade"))
    split_fills = int((trades["len"] - 1).sum()) if trades.height else 0
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


def check_no_duplicates(
    part: RawPartition, stats: IngestStats | None = None, spill_rows: int = SPILL_ROWS
) -> CheckOutcome:
    """No two book records identical in every DBN field (128-bit hash of the record's own fields).

    Phoenix's additions (`record_index`, `symbol`, `trade_date`) are left out of the hash: a copy of a
    day's file whose metadata names another symbol carries the same records and must count as duplicates.
    Identical trade records are legitimate in real CME data: one aggressor filling two resting orders
    of equal size in one packet gives two T records with the same ts, price, size and sequence (the
    ESH4 fixture has 15). With `stats`, the description names the files the first duplicate came from.
    """
    index = DuplicateIndex(spill_rows)
    for batch in part.batches([*RECORD_COLUMNS, RAW_ORDER]):
        add_batch_hashes(index, batch)
    return duplicates_outcome(index.groups(), stats)


# ---- prices on the tick grid ----


@njit(cache=True, nogil=True)
def _count_off_grid(values: np.ndarray, valid: np.ndarray, tick: int) -> int:
    """Defined values that are not positive or not a multiple of `tick` (> 0)."""
    has_nulls = valid.size > 0
    bad = 0
    last, last_bad = np.int64(1), True  # a book level's price repeats from record to record: one division each
    for i in range(values.size):
        if has_nulls and not valid[i]:
            continue
        v = values[i]
        if v != last:
            last, last_bad = v, v <= 0 or v % tick != 0
        elif i == 0:
            last_bad = v <= 0 or v % tick != 0
        if last_bad:
            bad += 1
    return bad


def bad_prices(batch: pa.RecordBatch, tick_size: float) -> dict[str, int]:
    """Per price column: defined prices that are not positive or not a multiple of the tick."""
    tick = round(tick_size * PRICE_SCALE)
    counts: dict[str, int] = {}
    for col in PRICE_COLUMNS:
        values = batch.column(col)
        if pa.types.is_integer(values.type):
            counts[col] = int(_count_off_grid(int64_values(values), validity(values), tick))
        else:  # a wrong type (check_schema fails it): polars' own arithmetic, as before
            frame = pl.from_arrow(batch.select([col]))
            assert isinstance(frame, pl.DataFrame)
            counts[col] = int(frame.select(((pl.col(col) <= 0) | (pl.col(col) % tick != 0)).sum()).item() or 0)
    return counts


def grid_outcome(counts: dict[str, int], tick_size: float) -> CheckOutcome:
    offenders = {k: v for k, v in counts.items() if v}
    total = sum(offenders.values())
    return CheckOutcome(
        total == 0,
        f"{total} prices off the {tick_size} grid or not positive",
        {"bad_prices": total, "columns": offenders or {"none": 0}, "tick_size": tick_size},
    )


def check_prices_on_grid(part: RawPartition, tick_size: float) -> CheckOutcome:
    """Every defined price (trade/level) is positive and a multiple of the tick."""
    counts = dict.fromkeys(PRICE_COLUMNS, 0)
    for batch in part.batches(PRICE_COLUMNS):
        for col, n in bad_prices(batch, tick_size).items():
            counts[col] += n
    return grid_outcome(counts, tick_size)


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


# The `raw_mbp10` suite as plain data: (expectation type, its kwargs). great-expectations builds its objects
# from these entries in a worker process (`ge_worker`, started with the summary: its import takes ~2.5 s); the
# per-batch summaries need only the columns, kinds and bounds, read from the same entries, and `validate`
# checks that the objects great-expectations built say the same.
SUITE: tuple[tuple[str, dict[str, Any]], ...] = (
    ("expect_table_columns_to_match_ordered_list", {"column_list": RAW_COLUMNS}),
    *(
        ("expect_column_values_to_not_be_null", {"column": col})
        for col in ("ts_recv", "ts_event", "instrument_id", "action", "side", "flags", "sequence")
    ),
    ("expect_column_values_to_be_in_set", {"column": "rtype", "value_set": [10]}),
    ("expect_column_values_to_be_in_set", {"column": "action", "value_set": ACTIONS}),
    ("expect_column_values_to_be_in_set", {"column": "side", "value_set": SIDES}),
    ("expect_column_values_to_be_between", {"column": "depth", "min_value": 0, "max_value": 9}),
    ("expect_column_values_to_be_between", {"column": "flags", "min_value": 0, "max_value": 255}),
    ("expect_column_values_to_be_between", {"column": "size", "min_value": 0}),
    ("expect_column_values_to_be_between", {"column": "ts_recv", "min_value": 0}),
)
GE_TIMEOUT_S = 600.0  # `validate` waits at most this long for the worker's reply, then kills it and raises


def _expectation_suite() -> list[Any]:
    """The `raw_mbp10` expectations as great-expectations objects, in this process (imports great-expectations)."""
    return build_suite(list(SUITE))


def check_expectations(part: RawPartition) -> CheckOutcome:
    """great-expectations suite (schema, non-null keys, value domains) on the partition's value summaries."""
    summary = ExpectationSummary()
    for batch in part.batches():
        summary.update(batch)
    return summary.validate([c for c in RAW_COLUMNS if c in part.schema().names])


def _bound(value: Any, kind: pa.DataType) -> pa.Scalar | None:
    """An expectation's bound (great-expectations stores 0 as 0.0) as a scalar comparable with the column."""
    if value is None:
        return None
    if pa.types.is_integer(kind) and float(value).is_integer():
        info = np.iinfo(kind.to_pandas_dtype())
        return pa.scalar(min(max(int(value), int(info.min)), int(info.max)), type=kind)
    return pa.scalar(float(value))


@dataclass
class _ColumnValues:
    """What one column contributes to the suite: its nulls and its values by class.

    A class holds values every expectation on the column judges alike: each distinct value for a column
    with an in-set expectation; below / inside / above the bounds of its between expectation otherwise.
    Each class keeps its smallest and largest value and its record count.
    """

    by_value: bool
    bounds: tuple[Any, Any] | None
    nulls: int = 0
    classes: dict[Any, list[Any]] = field(default_factory=dict)  # key -> [min, max, count]

    def update(self, column: pa.Array) -> None:
        self.nulls += column.null_count
        if column.null_count == len(column):
            return
        if self.by_value:  # a handful of distinct values (the decoder already refused unknown actions/sides)
            counted = pc.value_counts(column)
            for value, n in zip(counted.field("values").to_pylist(), counted.field("counts").to_pylist(), strict=True):
                if value is not None:
                    self._add(value, value, value, n)
            return
        lo, hi = (_bound(b, column.type) for b in self.bounds or (None, None))
        if pa.types.is_integer(column.type):  # the usual case, every value within bounds: one pass, not five
            extremes = pc.min_max(column)
            low, high = extremes["min"].as_py(), extremes["max"].as_py()
            if (lo is None or low >= lo.as_py()) and (hi is None or high <= hi.as_py()):
                self._add(0, low, high, len(column) - column.null_count)
                return
        below = pc.less(column, lo) if lo is not None else None
        above = pc.greater(column, hi) if hi is not None else None
        n_below = pc.sum(below).as_py() or 0 if below is not None else 0
        n_above = pc.sum(above).as_py() or 0 if above is not None else 0
        inside = column
        if n_below or n_above:  # bad data only: the out-of-bounds classes, then the rest
            for key, mask, n in ((-1, below, n_below), (1, above, n_above)):
                if n:
                    extremes = pc.min_max(column.filter(mask))
                    self._add(key, extremes["min"].as_py(), extremes["max"].as_py(), n)
            outside = pc.or_kleene(below, above) if below is not None and above is not None else (below or above)
            inside = column.filter(pc.invert(outside))
        n_inside = len(inside) - inside.null_count
        if n_inside:
            extremes = pc.min_max(inside)
            self._add(0, extremes["min"].as_py(), extremes["max"].as_py(), n_inside)

    def _add(self, key: Any, lo: Any, hi: Any, n: int) -> None:
        have = self.classes.get(key)
        if have is None:
            self.classes[key] = [lo, hi, int(n)]
        else:
            have[0], have[1], have[2] = min(have[0], lo), max(have[1], hi), have[2] + int(n)

    def rows(self, dtype: pa.DataType) -> tuple[pl.Series, np.ndarray]:
        """Representative values and the records each stands for (a class's max stands for none)."""
        values: list[Any] = []
        weights: list[int] = []
        for lo_v, hi_v, n in self.classes.values():
            values.append(lo_v)
            weights.append(n)
            if hi_v != lo_v:
                values.append(hi_v)
                weights.append(0)
        if self.nulls:
            values.append(None)
            weights.append(self.nulls)
        series = pl.Series("v", pa.array(values, type=dtype))
        return series, np.asarray(weights, dtype=np.int64)


class ExpectationSummary:
    """The suite's columns summarised batch by batch, then validated by great-expectations.

    great-expectations stays the engine: every expectation is validated on its column's representative
    values (one per class above, plus a null), and the records behind the values it reports unexpected
    are summed, so `unexpected_counts` count records exactly as validating every record would, in memory
    that does not grow with the day. Expectations other than the suite's kinds are refused, not guessed.

    The summaries need only `SUITE`'s plain bounds; great-expectations runs in a worker process (`ge_worker`,
    one per process, started by the first summary: its import overlaps the day's streaming on the other
    core, without taking the GIL from the stream's threads), and `validate` sends it the summaries. A worker
    that fails, dies or does not answer within `GE_TIMEOUT_S` is a clear error (and is replaced next time).
    """

    def __init__(self) -> None:
        self.batches = 0
        self.rows = 0
        self._dtypes: dict[str, pa.DataType] = {}
        self._columns = _summary_plan(SUITE)
        _worker()  # loading great-expectations from now on, if this process has no worker yet

    def update(self, batch: pa.RecordBatch) -> None:
        self.batches += 1
        self.rows += batch.num_rows
        for name, values in self._columns.items():
            if name in batch.schema.names:
                column = batch.column(name)
                self._dtypes.setdefault(name, column.type)
                values.update(column)

    def validate(self, columns: list[str]) -> CheckOutcome:
        """Run the suite: the table expectation on the partition's columns, the others on the summaries."""
        frames: dict[str | None, Any] = {None: pl.DataFrame(schema=dict.fromkeys(columns, pl.Int64)).to_pandas()}
        weights: dict[str, np.ndarray] = {}
        for name, values in self._columns.items():
            if name in self._dtypes:
                series, weights[name] = values.rows(self._dtypes[name])
                frames[name] = series.alias(name).to_frame().to_pandas()
        reply = _ask_worker(frames)
        built = _plan_key(_summary_plan(reply["suite"]))
        if built != _plan_key(self._columns):
            raise ValueError(
                f"raw_mbp10 expectations: the great-expectations suite {built} and the summaries "
                f"{_plan_key(self._columns)} disagree"
            )
        unexpected: dict[str, int] = {}
        failed: set[str] = set()
        for (kind, kwargs), result in zip(reply["suite"], reply["results"], strict=True):
            column = kwargs.get("column")
            key = f"{kind}({column or 'table'})"
            if result is None:  # the column is missing from the partition
                failed.add(key)
                unexpected[key] = 0
                continue
            success, rows = result
            unexpected[key] = int(weights[column][np.asarray(rows, dtype=np.int64)].sum()) if column else 0
            if not success:
                failed.add(key)
        n = len(reply["suite"])
        return CheckOutcome(
            not failed and self.rows > 0,
            f"great-expectations: {n - len(failed)}/{n} expectations met",
            {
                "expectations": n,
                "failed": sorted(failed) or ["none"],
                "unexpected_counts": unexpected,
                "batches": self.batches,
                "validated_on": f"per-column value summaries of {self.rows} records",
                "great_expectations_version": reply["version"],
            },
        )


class _Worker:
    """A `ge_worker` process: it loads great-expectations at once, then answers requests (length-prefixed
    pickles on its stdin and stdout) until its stdin closes."""

    def __init__(self, suite: str) -> None:
        self.suite = suite
        self.lock = threading.Lock()  # one request at a time
        env = {**os.environ, PARENT_PID_ENV: str(os.getpid())}
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)

    def command(self) -> list[str]:
        return [sys.executable, "-m", "phoenix_assets.lib.ingest.ge_worker", self.suite]

    def ask(self, frames: dict[str | None, Any]) -> dict[str, Any]:
        """The worker's reply to `frames` (see `ge_worker`); a clear error if it failed, died or hung (it is
        then stopped)."""
        deadline = time.monotonic() + GE_TIMEOUT_S
        try:
            self._send(pickle.dumps({"frames": frames}), deadline)
            size = int.from_bytes(self._receive(8, deadline), "little")
            reply = pickle.loads(self._receive(size, deadline))
        except BaseException:
            self.stop()
            raise
        if "error" in reply:
            self.stop()
            trace = str(reply["error"]).strip()
            raise RuntimeError(
                f"raw_mbp10 expectations: the great-expectations worker failed: {trace.splitlines()[-1]}\n"
                f"the worker's traceback:\n{trace}"
            )
        return reply

    def _wait(self, fd: int, write: bool, deadline: float) -> None:
        left = deadline - time.monotonic()
        ready = select.select([], [fd], [], max(left, 0))[1] if write else select.select([fd], [], [], max(left, 0))[0]
        if not ready:
            raise TimeoutError(
                f"raw_mbp10 expectations: the great-expectations worker (pid {self.proc.pid}) did not answer "
                f"within {GE_TIMEOUT_S:g} s; the expectations check cannot run"
            )

    def _send(self, payload: bytes, deadline: float) -> None:
        assert self.proc.stdin is not None
        data, fd = len(payload).to_bytes(8, "little") + payload, self.proc.stdin.fileno()
        try:
            while data:  # at most PIPE_BUF at a time once writable: never blocks past the deadline
                self._wait(fd, True, deadline)
                data = data[os.write(fd, data[: select.PIPE_BUF]) :]
        except BrokenPipeError:
            raise self._died() from None

    def _receive(self, size: int, deadline: float) -> bytes:
        assert self.proc.stdout is not None
        fd, parts, got = self.proc.stdout.fileno(), [], 0
        while got < size:
            self._wait(fd, False, deadline)
            part = os.read(fd, min(size - got, 1 << 20))
            if not part:
                raise self._died()
            parts.append(part)
            got += len(part)
        return b"".join(parts)

    def _died(self) -> RuntimeError:
        code = self.proc.wait()
        return RuntimeError(f"raw_mbp10 expectations: the great-expectations worker failed: no reply, exit code {code}")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        """Kill the worker (if still running), reap it and close its pipes."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()


_shared: _Worker | None = None
_shared_lock = threading.Lock()


def _worker() -> _Worker:
    """The process's great-expectations worker for the current `SUITE`, started if there is none (or it has
    exited: e.g. the thread that started it ended, which fires its `PR_SET_PDEATHSIG`)."""
    global _shared
    suite = json.dumps(SUITE)
    with _shared_lock:
        if _shared is None or not _shared.alive() or _shared.suite != suite:
            if _shared is not None:
                _shared.stop()
            _shared = _Worker(suite)
        return _shared


def _ask_worker(frames: dict[str | None, Any]) -> dict[str, Any]:
    """One request to the shared worker; a worker that failed is dropped, the next call starts a new one."""
    global _shared
    worker = _worker()
    with worker.lock:
        try:
            return worker.ask(frames)
        except BaseException:
            with _shared_lock:
                if _shared is worker:
                    _shared = None
            raise


def stop_worker() -> None:
    """Stop the shared great-expectations worker, if any (also at interpreter exit)."""
    global _shared
    with _shared_lock:
        if _shared is not None:
            _shared.stop()
            _shared = None


atexit.register(stop_worker)


def _summary_plan(entries: Iterable[tuple[str, dict[str, Any]]]) -> dict[str, _ColumnValues]:
    """What each column's summary keeps for the expectations `entries` (type, kwargs) make of it.

    Expectations other than the `_SUMMARISED` kinds are refused, not guessed."""
    columns: dict[str, _ColumnValues] = {}
    for kind, kwargs in entries:
        column = kwargs.get("column")
        if column is None:
            continue
        if kind not in _SUMMARISED:
            raise ValueError(f"raw_mbp10 expectations: {kind} has no summary; add it to _SUMMARISED")
        values = columns.setdefault(column, _ColumnValues(by_value=False, bounds=None))
        if kind == "expect_column_values_to_be_in_set":
            values.by_value = True
        elif kind == "expect_column_values_to_be_between":
            if kwargs.get("strict_min") or kwargs.get("strict_max") or values.bounds is not None:
                raise ValueError(f"raw_mbp10 expectations: {column}: one non-strict between per column")
            values.bounds = (kwargs.get("min_value"), kwargs.get("max_value"))
    return columns


def _plan_key(plan: dict[str, _ColumnValues]) -> dict[str, tuple[bool, tuple[float | None, ...] | None]]:
    """A plan's content, bounds as floats (great-expectations stores 0 as 0.0)."""
    return {
        column: (v.by_value, None if v.bounds is None else tuple(None if b is None else float(b) for b in v.bounds))
        for column, v in plan.items()
    }


_SUMMARISED = {
    "expect_column_values_to_not_be_null",
    "expect_column_values_to_be_in_set",
    "expect_column_values_to_be_between",
}


class RawBatchChecks:
    """The checks that need every record, fed batch by batch while the ingest streams the day."""

    def __init__(self, tick_size: float, spill_rows: int = SPILL_ROWS) -> None:
        self.tick_size = tick_size
        self.duplicates = DuplicateIndex(spill_rows)
        self.bad_prices = dict.fromkeys(PRICE_COLUMNS, 0)
        self.expectations = ExpectationSummary()

    def update(self, batch: pa.RecordBatch) -> None:
        add_batch_hashes(self.duplicates, batch)
        for col, n in bad_prices(batch, self.tick_size).items():
            self.bad_prices[col] += n
        self.expectations.update(batch)

    def outcomes(self, part: RawPartition, stats: IngestStats | None) -> dict[str, CheckOutcome]:
        """`no_duplicates`, `prices_on_tick_grid` and `expectations` of what was streamed into `part`.

        The duplicate groups are formed in a thread (numba, polars and file reads: the GIL is mostly free)
        while this one waits for great-expectations' verdicts from its worker process."""
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="raw_mbp10-duplicates") as pool:
            groups = pool.submit(self.duplicates.groups)
            expectations = self.expectations.validate([c for c in RAW_COLUMNS if c in part.schema().names])
            duplicates = duplicates_outcome(groups.result(), stats)
        return {
            "no_duplicates": duplicates,
            "prices_on_tick_grid": grid_outcome(self.bad_prices, self.tick_size),
            "expectations": expectations,
        }

    def close(self) -> None:
        self.duplicates.close()
