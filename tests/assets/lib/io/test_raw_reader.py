"""Reading a raw partition back in exact feed order, file by file, in bounded memory."""

from __future__ import annotations

from pathlib import Path

import databento as db
import numpy as np
import pyarrow as pa
import pytest

from phoenix_assets.lib.io import lake as lake_module
from phoenix_assets.lib.io.lake import Lake
from phoenix_assets.lib.io.raw_reader import RawOrderError, iter_raw_partition
from phoenix_assets.lib.schema import RAW_MBP10_SCHEMA, RAW_ORDER, RAW_TABLE
from tests.assets.lib.ingest.test_raw_ingest import ESH4_DAY, ingest
from tests.conftest import ESH4_MBP10, land


def test_many_files_stream_back_in_feed_order(lake: Lake, landing: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lake_module._PartitionFiles, "ROWS_PER_FILE", 5_000)
    land(landing, ESH4_MBP10)
    ingest(lake, landing, ESH4_DAY, chunk=3_000)
    assert len(lake.table(RAW_TABLE).file_uris()) == 8  # 43,717 rows in files of >= 5,000
    batches = list(iter_raw_partition(lake, ESH4_DAY, ["ts_recv", "sequence", "action"], batch_rows=1_000))
    got = pa.Table.from_batches(batches)
    ref = db.DBNStore.from_file(ESH4_MBP10).to_ndarray()
    assert got[RAW_ORDER].to_pylist() == list(range(len(ref)))
    np.testing.assert_array_equal(got["ts_recv"].to_numpy(), ref["ts_recv"].astype(np.int64))
    np.testing.assert_array_equal(got["sequence"].to_numpy(), ref["sequence"].astype(np.int64))


def test_a_gap_in_record_index_is_an_error(lake: Lake, landing: Path) -> None:
    land(landing, ESH4_MBP10)
    ingest(lake, landing, ESH4_DAY)
    frame = lake.read_partition(RAW_TABLE, ESH4_DAY, order_by=RAW_ORDER)
    holed = frame.filter(frame[RAW_ORDER] != 100).to_arrow().cast(RAW_MBP10_SCHEMA)
    lake.replace_partition(RAW_TABLE, RAW_MBP10_SCHEMA, holed.to_batches(), "trade_date", ESH4_DAY)
    with pytest.raises(RawOrderError, match="record_index not contiguous"):
        for _ in iter_raw_partition(lake, ESH4_DAY, ["ts_recv"]):
            pass
