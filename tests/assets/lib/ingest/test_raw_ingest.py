"""Landing one trade date into `raw_mbp10`: values, atomic replace, idempotence, bad input."""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

import databento as db
import numpy as np
import polars as pl
import pytest
import zstandard

from phoenix_assets.lib import calendar as cal
from phoenix_assets.lib.ingest.raw_ingest import LandingError, ingest_partition, reject_unreadable, select_files
from phoenix_assets.lib.io.dbn_reader import DbnFileError, scan_dbn_files
from phoenix_assets.lib.io.lake import Lake
from phoenix_assets.lib.schema import RAW_COLUMNS, RAW_ORDER, RAW_TABLE, UNDEF_PRICE
from tests.conftest import ESH1_MBP10, ESH1_TRADES, ESH4_MBP10, ESM4_MBP10, land

ESH4_DAY = dt.date(2023, 12, 26)  # records 22:00-24:00 UTC on 12-25 = 16:00-18:00 CT -> trade date 12-26


def ingest(lake: Lake, folder: Path, day: dt.date, chunk: int = 4096, strict: bool = True):
    infos, unreadable = scan_dbn_files(folder)
    if strict:
        reject_unreadable(unreadable, day)
    files, _ = select_files(infos, day, "GLBX.MDP3", strict)
    return ingest_partition(lake, files, day, chunk)


def dbn_bytes(path: Path) -> tuple[bytes, np.ndarray]:
    """(metadata bytes, records) of a DBN file, for crafting bad files from real ones."""
    raw = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(path.read_bytes())).read()
    meta_len = 8 + int.from_bytes(raw[4:8], "little")
    dtype = db.DBNStore.from_file(path).to_ndarray().dtype
    return raw[:meta_len], np.frombuffer(raw[meta_len:], dtype=dtype).copy()


def test_real_day_lands_with_databento_values(lake: Lake, landing: Path) -> None:
    land(landing, ESH4_MBP10)
    stats, version = ingest(lake, landing, ESH4_DAY)
    stored = lake.read_partition(RAW_TABLE, ESH4_DAY, order_by=RAW_ORDER)
    ref = db.DBNStore.from_file(ESH4_MBP10).to_df(price_type="fixed", pretty_ts=False)
    start, end = cal.trade_date_window(ESH4_DAY)
    ts = ref.index.to_numpy().astype(np.int64)
    ref = ref[(ts >= start) & (ts < end)]
    assert stored.height == len(ref) == stats.rows == 43_717
    assert stored.columns == RAW_COLUMNS
    assert (stored["ts_recv"].to_numpy() == ref.index.to_numpy().astype(np.int64)).all()
    for col in ("price", "bid_px_00", "ask_px_09", "bid_sz_03", "ask_ct_09", "sequence", "flags"):
        ours = stored[col].fill_null(UNDEF_PRICE).to_numpy()
        assert (ours == ref[col].to_numpy().astype(np.int64)).all(), col
    assert stored["action"].to_list() == ref["action"].tolist()
    assert stored["record_index"].to_list() == list(range(43_717))
    assert set(stored["symbol"]) == {"ESH4"} and set(stored["trade_date"]) == {ESH4_DAY}
    assert stats.instruments == {17077} and stats.out_of_order == 0
    assert stats.crossed_pre_open > 100  # the crossed pre-open is seen, and masked
    assert stats.crossed_share_in_session < 1e-3
    assert version == 0


def test_rematerialising_is_idempotent_and_keeps_other_partitions(lake: Lake, landing: Path) -> None:
    land(landing, ESH4_MBP10, ESM4_MBP10)
    ingest(lake, landing, ESH4_DAY)
    ingest(lake, landing, dt.date(2024, 5, 8))
    before = lake.scan(RAW_TABLE).sort("trade_date", RAW_ORDER).collect()
    _, version = ingest(lake, landing, ESH4_DAY, chunk=999)
    after = lake.scan(RAW_TABLE).sort("trade_date", RAW_ORDER).collect()
    assert version == 2
    assert after.equals(before)
    assert after.group_by("trade_date").len().sort("trade_date")["len"].to_list() == [43_717, 170]


def test_failure_half_way_leaves_the_previous_version(lake: Lake, landing: Path, tmp_path: Path) -> None:
    land(landing, ESH4_MBP10)
    ingest(lake, landing, ESH4_DAY)
    before = lake.read_partition(RAW_TABLE, ESH4_DAY, order_by=RAW_ORDER)
    # a second file for the day whose tail is truncated: the error comes after many good chunks
    meta, recs = dbn_bytes(ESH4_MBP10)
    recs = recs.copy()
    recs["instrument_id"] = 99  # another instrument, so the two files do not overlap in symbols
    bad = landing / "second.dbn"
    meta2 = meta.replace(b"ESH4", b"ESM4")
    bad.write_bytes(meta2 + recs.tobytes()[: 368 * 20_000 + 17])
    with pytest.raises(DbnFileError, match=r"second\.dbn: truncated after \d+ records"):
        ingest(lake, landing, ESH4_DAY)
    assert lake.table(RAW_TABLE).version() == 0
    assert lake.read_partition(RAW_TABLE, ESH4_DAY, order_by=RAW_ORDER).equals(before)


def test_records_outside_the_declared_range_are_refused(lake: Lake, landing: Path) -> None:
    meta, recs = dbn_bytes(ESH4_MBP10)
    recs["ts_recv"][-10:] += np.uint64(3 * cal.NS_PER_DAY)  # days after the file's declared end
    (landing / "liar.dbn").write_bytes(meta + recs.tobytes())
    with pytest.raises(DbnFileError, match=r"liar\.dbn: record #43707 received at .* outside the file's declared"):
        ingest(lake, landing, ESH4_DAY)
    assert not lake.exists(RAW_TABLE)


def test_empty_day_is_an_error_and_writes_nothing(lake: Lake, landing: Path) -> None:
    land(landing, ESH4_MBP10)  # declared 12-25..12-26 UTC: overlaps trade date 12-25, holds none of it
    with pytest.raises(LandingError, match=r"partition 2023-12-25: no MBP-10 records received"):
        ingest(lake, landing, dt.date(2023, 12, 25))
    assert not lake.exists(RAW_TABLE)
    with pytest.raises(LandingError, match=r"partition 2024-01-03: no MBP-10 DBN file in the landing folder"):
        ingest(lake, landing, dt.date(2024, 1, 3))


def test_empty_day_does_not_wipe_an_existing_partition(lake: Lake, landing: Path, tmp_path: Path) -> None:
    land(landing, ESH4_MBP10)
    ingest(lake, landing, ESH4_DAY)
    meta, _ = dbn_bytes(ESH4_MBP10)
    (landing / ESH4_MBP10.name).unlink()
    (landing / "empty.dbn").write_bytes(meta)  # header only, no records
    with pytest.raises(LandingError, match="no MBP-10 records received"):
        ingest(lake, landing, ESH4_DAY)
    assert lake.read_partition(RAW_TABLE, ESH4_DAY).height == 43_717


def test_file_of_another_schema_is_a_clear_error(lake: Lake, landing: Path) -> None:
    land(landing, ESH1_MBP10, ESH1_TRADES)
    day = dt.date(2020, 12, 28)
    with pytest.raises(LandingError, match=r"trades\.fixture\.dbn\.zst: schema trades.*expected mbp-10"):
        ingest(lake, landing, day)
    stats, _ = ingest(lake, landing, day, strict=False)  # skipping is an explicit choice
    assert stats.rows == 4


def test_overlapping_files_are_refused_as_duplicates(lake: Lake, landing: Path) -> None:
    land(landing, ESH4_MBP10)
    (landing / "copy.dbn.zst").write_bytes(ESH4_MBP10.read_bytes())
    with pytest.raises(LandingError, match="both hold MBP-10 records of \\['ESH4'\\]"):
        ingest(lake, landing, ESH4_DAY)


def test_unreadable_dbn_in_landing_is_named(lake: Lake, landing: Path) -> None:
    land(landing, ESH4_MBP10)
    (landing / "broken.dbn.zst").write_bytes(b"garbage")
    with pytest.raises(LandingError, match=r"unreadable DBN file\(s\): .*broken\.dbn\.zst"):
        ingest(lake, landing, ESH4_DAY)


def test_trade_dates_of_the_real_files() -> None:
    first = pl.from_epoch(pl.Series([cal.trade_date_window(ESH4_DAY)[0]]), "ns")[0]
    assert str(first) == "2023-12-25 22:00:00"  # 16:00 CST
    assert cal.trade_dates_overlapping(*cal.trade_date_window(dt.date(2024, 3, 11))) == [dt.date(2024, 3, 11)]
    assert cal.utc_offset_ns(dt.date(2024, 3, 11)) == -5 * 3600 * cal.NS_PER_SECOND  # CDT after the switch
    lo, hi = cal.trade_date_window(dt.date(2024, 3, 11))  # Sunday 16:00 CT .. Monday 16:00 CT
    assert cal.trade_date_of(lo) == cal.trade_date_of(hi - 1) == dt.date(2024, 3, 11)
    assert cal.trade_date_of(hi) == dt.date(2024, 3, 12)
    assert cal.trade_date_of(lo - 1) is None  # Sunday before 16:00 CT: a weekend, no trade date
