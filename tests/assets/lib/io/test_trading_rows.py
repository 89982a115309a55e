"""What a training, a study and a backtest trade on: features_1m rows with the decision book of ofi_bars_1m."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import deltalake
import polars as pl

from phoenix_assets.lib.io.artifacts import features_between, trading_rows
from phoenix_assets.lib.io.lake import Lake
from phoenix_assets.lib.schema import BARS_TABLE, FEATURES_TABLE

T0 = dt.datetime(2024, 1, 2, 15, 0, tzinfo=dt.UTC)


def _lake(tmp_path: Path, with_bars: bool = True) -> Lake:
    lake = Lake(str(tmp_path / "lake"))
    ts = [T0 + dt.timedelta(minutes=k) for k in range(4)]
    features = pl.DataFrame(
        {
            "ts": ts,
            "instrument_id": [7, 7, 7, 7],
            "trade_date": [dt.date(2024, 1, 2)] * 3 + [dt.date(2024, 1, 3)],
            "open": [1.0, 2.0, 3.0, 4.0],
            "close": [1.5, 2.5, 3.5, 4.5],
            "x": [0.1, 0.2, 0.3, 0.4],
        }
    )
    deltalake.write_deltalake(lake.table_uri(FEATURES_TABLE), features.to_arrow(), partition_by=["trade_date"])
    if with_bars:  # bar 1 has no book (a silent minute's mid is null); bar 3's instrument differs (a roll)
        bars = pl.DataFrame(
            {
                "ts": ts,
                "instrument_id": [7, 7, 7, 8],
                "trade_date": [dt.date(2024, 1, 2)] * 3 + [dt.date(2024, 1, 3)],
                "mid_close": [1.25, None, 3.5, 4.25],
                "spread_ticks_close": [1.0, None, 2.0, 1.0],
                "ofi": [9.0, 9.0, 9.0, 9.0],
            }
        )
        deltalake.write_deltalake(lake.table_uri(BARS_TABLE), bars.to_arrow(), partition_by=["trade_date"])
    return lake


def test_trading_rows_carry_the_decision_book_of_each_bar(tmp_path: Path) -> None:
    rows = trading_rows(_lake(tmp_path), "2024-01-02", "2024-01-03", ["ts", "instrument_id", "trade_date", "open"])
    assert rows.columns == ["ts", "instrument_id", "trade_date", "open", "mid_close", "spread_ticks_close"]
    assert rows["mid_close"].to_list() == [1.25, None, 3.5, None]  # joined on ts AND instrument
    assert rows["spread_ticks_close"].to_list() == [1.0, None, 2.0, None]
    assert rows["ts"].is_sorted()


def test_trading_rows_keep_the_window_and_fall_back_to_features_without_bars(tmp_path: Path) -> None:
    lake = _lake(tmp_path)
    assert trading_rows(lake, "2024-01-02", "2024-01-02")["open"].to_list() == [1.0, 2.0, 3.0]
    bare = _lake(tmp_path / "bare", with_bars=False)
    assert trading_rows(bare, "2024-01-02", "2024-01-03").equals(features_between(bare, "2024-01-02", "2024-01-03"))
