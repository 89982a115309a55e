"""The lake's Parquet writer chooses each column's encoding from the first batch (issue 26): tables read back
identical through polars, deltalake and pyarrow, and the choices are the ones that pay on `raw_mbp10`."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from phoenix_assets.lib.ingest.raw_ingest import ingest_partition, select_files
from phoenix_assets.lib.io import lake as lake_module
from phoenix_assets.lib.io.dbn_reader import scan_dbn_files
from phoenix_assets.lib.io.lake import PARQUET_TRIAL_MIN_ROWS, Lake, parquet_options
from phoenix_assets.lib.schema import RAW_ORDER, RAW_TABLE
from tests.assets.lib.ingest.test_raw_ingest import ESH4_DAY
from tests.conftest import ESH4_MBP10, land

N = 20_000


def _column_chunks(folder: Path) -> dict[str, pq.ColumnChunkMetaData]:
    """The first row group's column chunks of the one Parquet file under `folder`, by path."""
    (path,) = folder.rglob("*.parquet")
    group = pq.ParquetFile(path).metadata.row_group(0)
    return {group.column(i).path_in_schema: group.column(i) for i in range(group.num_columns)}


def _mixed_table() -> pa.Table:
    """Every kind of column the lake's tables hold, nested ones included."""
    rng = np.random.default_rng(5)
    return pa.table(
        {
            "ts": pa.array(np.arange(N, dtype=np.int64) * 60_000_000, pa.timestamp("us", tz="UTC")),
            "sequence": pa.array(np.cumsum(rng.integers(1, 40, N))),
            "price": pa.array(5_000_000_000_000 + rng.integers(0, 30, N) * 250_000_000),  # few, large values
            "size": pa.array(rng.integers(1, 60, N)),  # small, varied
            "ofi": pa.array(rng.normal(size=N)),
            "depth": pa.array(rng.integers(0, 10, N).astype(np.int16)),
            "maybe": pa.array(rng.integers(-1000, 1000, N), mask=np.arange(N) % 7 == 0),  # nulls
            "symbol": pa.array(["MNQH4"] * N),
            "valid": pa.array(rng.random(N) > 0.3),
            "day": pa.array([dt.date(2024, 3, 14)] * N),
            "levels": pa.array([[i % 5, i % 3] for i in range(N)]),
            "book": pa.array([{"bid": i % 11, "side": "AB"[i % 2]} for i in range(N)]),
            "month": pa.array(["2024-03"] * N),
        }
    )


def test_mixed_table_reads_back_identical_everywhere(tmp_path: Path) -> None:
    table = _mixed_table()
    lake = Lake(str(tmp_path))
    lake.replace_partition("t", table.schema, table.to_batches(max_chunksize=8_000), "month", "2024-03")
    want = table.drop_columns(["month"])
    via_polars = lake.scan("t").collect().drop("month").to_arrow().cast(want.schema)
    via_deltalake = lake.table("t").to_pyarrow_table().drop_columns(["month"]).cast(want.schema)
    via_pyarrow = pq.read_table(next((tmp_path / "t").rglob("*.parquet")))
    assert via_polars.equals(want) and via_deltalake.equals(want) and via_pyarrow.equals(want)

    chunks = _column_chunks(tmp_path / "t")
    encodings = {path: set(chunk.encodings) for path, chunk in chunks.items()}
    assert "DELTA_BINARY_PACKED" in encodings["ts"] and "DELTA_BINARY_PACKED" in encodings["sequence"]
    assert "RLE_DICTIONARY" in encodings["price"]
    assert "RLE_DICTIONARY" not in encodings["size"] and "RLE_DICTIONARY" not in encodings["ofi"]
    # nested columns keep pyarrow's defaults: a dictionary and statistics on every leaf
    for leaf in ("levels.list.element", "book.bid", "book.side"):
        assert "RLE_DICTIONARY" in encodings[leaf] and chunks[leaf].is_stats_set, leaf
    # statistics where a reader's filter can prune: sorted, constant and temporal columns only
    with_stats = {path for path, chunk in chunks.items() if chunk.is_stats_set}
    assert {"ts", "sequence", "symbol", "day"} <= with_stats
    assert not {"price", "size", "ofi", "depth", "maybe"} & with_stats


def test_each_column_gets_its_smallest_trial_encoding() -> None:
    """The choice is the smallest of the candidates, whatever the column's name."""
    sample = _mixed_table().to_batches()[0]
    options = parquet_options(sample)
    for name in ("sequence", "price", "size", "ofi", "depth", "maybe", "symbol"):
        sizes = {}
        for encoding in lake_module._encodings_for(sample.schema.field(name).type):
            sizes[encoding] = lake_module._trial_sizes(sample.select([name]).slice(0, 16_384), encoding)[name]
        chosen = (options["column_encoding"] or {}).get(name, "DICTIONARY")
        assert sizes[chosen] == min(sizes.values()), (name, chosen, sizes)


def test_small_batches_keep_pyarrows_defaults() -> None:
    small = _mixed_table().slice(0, PARQUET_TRIAL_MIN_ROWS - 1).to_batches()[0]
    assert parquet_options(small) == {"compression": "zstd"}


@pytest.mark.parametrize("chunk", [4_096, 50_000])
def test_raw_day_reads_back_identical_and_half_the_size(
    lake: Lake, landing: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    land(landing, ESH4_MBP10)
    infos, _ = scan_dbn_files(landing)
    files, _ = select_files(infos, ESH4_DAY, "GLBX.MDP3", strict=True)
    ingest_partition(lake, files, ESH4_DAY, chunk)
    stored = lake.read_partition(RAW_TABLE, ESH4_DAY, order_by=RAW_ORDER)

    defaults = Lake(str(tmp_path / "defaults"))
    monkeypatch.setattr(lake_module, "parquet_options", lambda sample: {"compression": "zstd"})
    ingest_partition(defaults, files, ESH4_DAY, chunk)
    before = defaults.read_partition(RAW_TABLE, ESH4_DAY, order_by=RAW_ORDER)
    assert stored.equals(before) and stored.height == 43_717
    via_deltalake = lake.table(RAW_TABLE).to_pyarrow_table().sort_by(RAW_ORDER)
    assert via_deltalake.select(stored.columns).cast(before.to_arrow().schema).equals(before.to_arrow())

    size = sum(p.stat().st_size for p in Path(lake.table_uri(RAW_TABLE)).rglob("*.parquet"))
    size_before = sum(p.stat().st_size for p in Path(defaults.table_uri(RAW_TABLE)).rglob("*.parquet"))
    assert size < 0.8 * size_before, (size, size_before)
    chunks = _column_chunks(Path(lake.table_uri(RAW_TABLE)))
    assert "DELTA_BINARY_PACKED" in chunks["ts_recv"].encodings
    assert "RLE_DICTIONARY" not in chunks["record_index"].encodings
    assert all(chunks[c].is_stats_set for c in ("ts_recv", "record_index", "instrument_id", "symbol"))
