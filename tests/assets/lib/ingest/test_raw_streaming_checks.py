"""The record-level raw checks accumulated batch by batch (issue 26) give the verdicts of a whole-frame reference.

A day is ingested in 1,000-record chunks (44 batches) with the duplicate index spilling every 5,000
hashes, and the streamed outcomes, and the stored partition's re-check, are compared with slow obvious
references computed with polars (and great-expectations on the whole frame) on the whole partition.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from phoenix_assets.lib.ingest import raw_quality as q
from phoenix_assets.lib.ingest.raw_ingest import ingest_partition, select_files
from phoenix_assets.lib.io.dbn_reader import scan_dbn_files
from phoenix_assets.lib.io.lake import Lake
from phoenix_assets.lib.schema import (
    PRICE_COLUMNS,
    PRICE_SCALE,
    RAW_COLUMNS,
    RAW_ORDER,
    RAW_TABLE,
    RECORD_COLUMNS,
    UNDEF_PRICE,
)
from tests.assets.lib.ingest.test_raw_ingest import ESH4_DAY, dbn_bytes
from tests.conftest import ESH4_MBP10

CHUNK = 1_000
SPILL = 5_000


def reference_duplicates(frame: pl.DataFrame) -> dict[str, Any]:
    """Exact groups on the record's own fields (no hashing): book duplicates and identical trades."""
    groups = (
        frame.group_by(RECORD_COLUMNS)
        .agg(pl.len().alias("len"), pl.col(RAW_ORDER).min().alias("first"), pl.col(RAW_ORDER).max().alias("last"))
        .filter(pl.col("len") > 1)
        .sort("first")
    )
    book, trades = groups.filter(pl.col("action") != "T"), groups.filter(pl.col("action") == "T")
    out: dict[str, Any] = {
        "duplicate_book_records": int((book["len"] - 1).sum()),
        "identical_trade_records (split fills, allowed)": int((trades["len"] - 1).sum()),
    }
    if book.height:
        out["first_duplicate_record_indexes"] = [int(book["first"][0]), int(book["last"][0])]
    return out


def reference_grid(frame: pl.DataFrame, tick_size: float) -> dict[str, int]:
    tick = round(tick_size * PRICE_SCALE)
    bad = frame.select(((pl.col(c) <= 0) | (pl.col(c) % tick != 0)).sum().alias(c) for c in PRICE_COLUMNS)
    return {c: int(v) for c, v in bad.row(0, named=True).items() if v}


def reference_expectations(frame: pl.DataFrame) -> tuple[list[str], dict[str, int]]:
    """The suite validated on every record at once, through pandas (the pre-issue-26 way)."""
    import great_expectations as gx

    context = gx.get_context(mode="ephemeral")
    batch = (
        context.data_sources.add_pandas("ref")
        .add_dataframe_asset("whole")
        .add_batch_definition_whole_dataframe("b")
        .get_batch(batch_parameters={"dataframe": frame.select(RAW_COLUMNS).to_pandas()})
    )
    failed, unexpected = [], {}
    for exp in q._expectation_suite():
        result = batch.validate(exp)
        key = f"{exp.expectation_type}({exp.configuration.kwargs.get('column', 'table')})"
        unexpected[key] = int(result.result.get("unexpected_count", 0) or 0)
        if not result.success:
            failed.append(key)
    return sorted(failed) or ["none"], unexpected


@pytest.fixture
def bad_day(landing: Path) -> Path:
    """ESH4 with a duplicate straddling the chunk boundary at record 1,000, a far duplicate, two
    off-grid prices and three depths out of range."""
    meta, recs = dbn_bytes(ESH4_MBP10)
    book = np.flatnonzero(recs["action"] != b"T")
    at = int(book[book >= CHUNK - 1][0])  # records CHUNK-1 (last of batch 1) and CHUNK (first of batch 2): equal
    recs = np.concatenate([recs[: CHUNK - 1], recs[at : at + 1], recs[at:]])
    recs = np.concatenate([recs, recs[int(book[5]) : int(book[5]) + 1]])  # the 6th book record again, last
    priced = np.flatnonzero(recs["price"] != UNDEF_PRICE)
    off = [int(priced[100]), int(priced[len(priced) // 2])]
    recs["price"][off] += 1  # 1e-9 off the 0.25 grid
    recs["depth"][[100, 20_000, 40_000]] = 12
    path = landing / "bad.dbn"
    path.write_bytes(meta + recs.tobytes())
    return path


@pytest.mark.slow
def test_streamed_checks_equal_the_whole_frame_reference(lake: Lake, landing: Path, bad_day: Path) -> None:
    infos, _ = scan_dbn_files(landing)
    files, _ = select_files(infos, ESH4_DAY, "GLBX.MDP3", strict=True)
    streamed = q.RawBatchChecks(0.25, spill_rows=SPILL)
    batches: list[int] = []
    stats, _ = ingest_partition(
        lake, files, ESH4_DAY, CHUNK, on_batch=lambda b: (batches.append(b.num_rows), streamed.update(b))
    )
    assert len(batches) > 40 and streamed.duplicates.rows == stats.rows
    frame = lake.read_partition(RAW_TABLE, ESH4_DAY, order_by=RAW_ORDER)
    part = q.RawPartition.stored(lake, ESH4_DAY)
    outcomes = streamed.outcomes(part, stats)
    assert streamed.duplicates.spilled == stats.rows  # every hash went through the disk buckets

    dup = outcomes["no_duplicates"]
    ref = reference_duplicates(frame)
    assert ref["duplicate_book_records"] == 2  # the pair across the batch boundary and the far one
    assert not dup.passed and {k: dup.metadata[k] for k in ref} == ref
    straddling = frame.filter(pl.col(RAW_ORDER).is_in([CHUNK - 1, CHUNK])).select(RECORD_COLUMNS)
    assert straddling.n_unique() == 1 and batches[0] == CHUNK
    assert "bad.dbn" in dup.description

    grid = outcomes["prices_on_tick_grid"]
    assert not grid.passed and grid.metadata["columns"] == reference_grid(frame, 0.25) == {"price": 2}

    failed, unexpected = reference_expectations(frame)
    exp = outcomes["expectations"]
    assert failed == ["expect_column_values_to_be_between(depth)"] and unexpected[failed[0]] == 3
    assert exp.metadata["failed"] == failed and exp.metadata["unexpected_counts"] == unexpected
    assert exp.metadata["batches"] == len(batches) and not exp.passed

    # the stored partition, re-checked in 1,000-row batches, gives the same verdicts
    q_batch_rows = q.BATCH_ROWS
    try:
        q.BATCH_ROWS = CHUNK
        again = q.check_no_duplicates(part, stats, spill_rows=SPILL)
        assert again.metadata == dup.metadata and again.description == dup.description
        assert q.check_prices_on_grid(part, 0.25).metadata == grid.metadata
        stored_exp = q.check_expectations(part)
        assert stored_exp.metadata["failed"] == failed and stored_exp.metadata["unexpected_counts"] == unexpected
        assert stored_exp.metadata["batches"] > 40
    finally:
        q.BATCH_ROWS = q_batch_rows


def test_clean_day_passes_streamed_and_matches_reference(lake: Lake, landing: Path) -> None:
    (landing / ESH4_MBP10.name).write_bytes(ESH4_MBP10.read_bytes())
    infos, _ = scan_dbn_files(landing)
    files, _ = select_files(infos, ESH4_DAY, "GLBX.MDP3", strict=True)
    streamed = q.RawBatchChecks(0.25, spill_rows=SPILL)
    stats, _ = ingest_partition(lake, files, ESH4_DAY, CHUNK, on_batch=streamed.update)
    outcomes = streamed.outcomes(q.RawPartition.stored(lake, ESH4_DAY), stats)
    assert all(o.passed for o in outcomes.values()), {k: o.description for k, o in outcomes.items()}
    frame = lake.read_partition(RAW_TABLE, ESH4_DAY, order_by=RAW_ORDER)
    assert outcomes["no_duplicates"].metadata == reference_duplicates(frame)
    assert outcomes["expectations"].metadata["unexpected_counts"] == reference_expectations(frame)[1]


def test_duplicate_index_spills_and_finds_every_group() -> None:
    """Planted groups among random hashes, spilled every 100 rows into 8 buckets, equal the in-memory answer."""
    rng = np.random.default_rng(3)
    n = 2_000
    h1, h2 = rng.integers(0, 2**63, n, dtype=np.uint64) * 2, rng.integers(0, 2**63, n, dtype=np.uint64)
    h1[[10, 1_500, 1_999]], h2[[10, 1_500, 1_999]] = h1[3], h2[3]  # a group of 4 across spills
    h1[700], h2[700] = h1[699], h2[699]  # a pair
    h1[800] = h1[801]  # same h1, different h2: not a duplicate
    trade = np.zeros(n, np.uint8)
    trade[[699, 700]] = 1
    index, ref = q.DuplicateIndex(spill_rows=100, buckets=8), q.DuplicateIndex(spill_rows=10**9)
    for lo in range(0, n, 37):
        sl = slice(lo, lo + 37)
        for ix in (index, ref):
            ix.add(h1[sl], h2[sl], trade[sl], np.arange(n, dtype=np.int64)[sl])
    got = index.groups()
    assert index.spilled == n and got.equals(ref.groups())
    assert got.rows() == [(4, False, 3, 1_999), (2, True, 699, 700)]


def test_off_grid_count_by_hand() -> None:
    tick = 250_000_000
    values = np.array([tick, 2 * tick, tick + 1, -tick, 0, tick + 1, tick + 1, 7 * tick, tick + 1], dtype=np.int64)
    assert q._count_off_grid(values, np.empty(0, np.bool_), tick) == 6  # tick+1 x4, -tick, 0
    valid = np.ones(values.size, np.bool_)
    valid[[2, 4]] = False  # undefined prices are not judged
    assert q._count_off_grid(values, valid, tick) == 4
    batch = pa.record_batch({c: pa.array(values, mask=~valid) for c in PRICE_COLUMNS})
    assert q.bad_prices(batch, 0.25) == dict.fromkeys(PRICE_COLUMNS, 4)


def test_record_hash_sees_every_field_and_nulls() -> None:
    base = {c: pa.array([1, 1, 1, 1], type=pa.int64()) for c in RECORD_COLUMNS}
    base["action"], base["side"] = pa.array(["A", "A", "A", "T"]), pa.array(["B", "B", "B", "B"])
    base["bid_px_09"] = pa.array([5, 5, None, 5], type=pa.int64())
    base["ask_ct_09"] = pa.array([1, 1, 1, 1], type=pa.int64())
    h1, h2 = q.record_hashes(pa.record_batch(base))
    assert h1[0] == h1[1] and h2[0] == h2[1]  # identical records
    assert len({(a, b) for a, b in zip(h1, h2, strict=True)}) == 3  # a null price and another action differ
    for column in ("ts_recv", "ask_ct_09", "side"):  # a change in any one field changes the hash
        changed = dict(base)
        values = changed[column].to_pylist()
        values[1] = "A" if column == "side" else 2
        changed[column] = pa.array(values, type=base[column].type)
        g1, _ = q.record_hashes(pa.record_batch(changed))
        assert g1[0] != g1[1], column
    words, _ = q._column_words(pa.array(["T", "TT", "", "T"]))
    assert words[0] == words[3] and len(set(words[:3])) == 3


@pytest.mark.parametrize("bits", [1, 3, 6])
def test_bucket_partition_equals_a_stable_argsort(bits: int) -> None:
    """The O(n) counting sort of the spill moves the same bytes to the same places as numpy's stable argsort."""
    rng = np.random.default_rng(bits)
    n = 5_001
    rows = np.empty(n, dtype=q._HASHED)
    rows["h1"], rows["h2"] = rng.integers(0, 2**64, n, dtype=np.uint64), rng.integers(0, 2**64, n, dtype=np.uint64)
    rows["first"], rows["trade"] = np.arange(n), rng.integers(0, 2, n)
    rows["h1"][:50] = rows["h1"][50:100]  # equal keys keep their order
    bucket = (rows["h1"] >> np.uint64(64 - bits)).astype(np.int64)
    want = rows[np.argsort(bucket, kind="stable")]
    got = np.empty_like(rows)
    bounds = q._partition_by_bucket(q._as_bytes(rows), rows["h1"], bits, q._as_bytes(got))
    assert got.tobytes() == want.tobytes()
    assert (bounds == np.searchsorted(np.sort(bucket), np.arange((1 << bits) + 1))).all()


def test_repeated_hashes_equal_the_sorted_reference() -> None:
    rng = np.random.default_rng(11)
    h1 = rng.integers(0, 2**64, 20_000, dtype=np.uint64)
    h1[rng.integers(0, h1.size, 300)] = h1[rng.integers(0, h1.size, 300)]
    h1[:64] = np.uint64(7) << np.uint64(20)  # one value many times, and colliding low bits below
    h1[64:128] = (np.arange(64, dtype=np.uint64) << np.uint64(40)) | np.uint64(5)
    values, counts = np.unique(h1, return_counts=True)
    assert (q._repeated(h1) == np.isin(h1, values[counts > 1])).all()
