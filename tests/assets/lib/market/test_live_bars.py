"""The live path gives the batch tables bit for bit: records replayed in arrival order, in chunks of any size
down to one record, -> `LiveBars` -> `LiveFeatures` equal `ofi_bars_1m` / `features_1m` computed in batch."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import databento
import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from feature_specs import load_catalog
from phoenix_assets.lib.features.compute import compute_features
from phoenix_assets.lib.features.hmm_regimes import filter_regimes, fit_regime_model
from phoenix_assets.lib.market.bars import ofi_bars_1m, seconds_frame
from phoenix_assets.lib.market.book_kernel import BookArrays, arrays_from_dbn, arrays_from_records, book_ofi_1s
from phoenix_assets.lib.market.live_bars import LiveBars, LiveFeatures
from phoenix_assets.lib.synthetic.market import SyntheticMarketConfig, write_day
from tests.conftest import ESH4_MBP10 as REAL_DAY  # real ES book 16:00-18:00 CT: the halt, then the open

MARKET = SyntheticMarketConfig(records_per_day=20_000, ofi_strength=0.5)


def _records(path: Path) -> BookArrays:
    store = databento.DBNStore.from_file(path)
    return arrays_from_dbn(np.concatenate(list(store.to_ndarray(count=1 << 16))))


def _batch_bars(records: BookArrays, symbol: str | None = None) -> pl.DataFrame:
    n = len(records.ts_recv)
    chunks = (records.slice(i, min(i + 65_536, n)) for i in range(0, n, 65_536))
    return ofi_bars_1m(seconds_frame(book_ofi_1s(chunks)), symbol=symbol)


def _replay(records: BookArrays, live: LiveBars, seed: int) -> pl.DataFrame:
    """Feed the records in random chunk sizes, with a stretch of single records (the live feed's shape)."""
    rng = np.random.default_rng(seed)
    n, i, out = len(records.ts_recv), 0, []
    singles = range(n // 3, n // 3 + 2_000)
    while i < n:
        step = 1 if i in singles else int(rng.integers(1, 3_000))
        out.append(live.on_records(records.slice(i, min(i + step, n))))
        i += step
    out.append(live.close())
    return pl.concat([o for o in out if o.height])


@pytest.mark.parametrize("source", ["real ESH4 open", "synthetic MNQ day with a roll"])
def test_replayed_records_give_the_batch_bars_bit_for_bit(source: str, tmp_path: Path) -> None:
    if source == "real ESH4 open":
        records, symbol = _records(REAL_DAY), "ESH4"
    else:
        cfg = SyntheticMarketConfig(records_per_day=20_000, roll_date=dt.date(2024, 3, 15))
        days = [write_day(d, tmp_path, cfg) for d in (dt.date(2024, 3, 14), dt.date(2024, 3, 15))]
        parts = [_records(p) for p in days]
        records, symbol = BookArrays(*(np.concatenate(cols) for cols in zip(*parts, strict=True))), "MNQ.v.0"
    batch = _batch_bars(records, symbol)
    live = _replay(records, LiveBars(symbol=symbol), seed=3)
    assert batch.height > 70  # the real file's 79 minutes; 2 x 1,380 synthetic
    assert_frame_equal(live, batch, check_exact=True)


def test_a_minute_closes_only_when_a_later_minute_begins() -> None:
    records = _records(REAL_DAY)
    live = LiveBars(symbol="ESH4")
    minute = records.ts_recv // 60_000_000_000
    last_of_first = int(np.flatnonzero(minute == minute[0])[-1])
    assert live.on_records(records.slice(0, last_of_first + 1)).is_empty()  # the minute is still open
    bars = live.on_records(records.slice(last_of_first + 1, last_of_first + 2))  # a record of the next minute
    assert bars.height == 1
    assert bars["ts"].dt.epoch("ns")[0] // 60_000_000_000 == minute[0]


def test_live_features_equal_the_batch_features_of_the_day(tmp_path: Path) -> None:
    days = [dt.date(2024, 3, d) for d in (11, 12, 13, 14)]
    bars = pl.concat([_batch_bars(_records(write_day(d, tmp_path, MARKET)), "MNQ.v.0") for d in days])
    catalog = load_catalog()
    model = fit_regime_model(bars, catalog.hmm, days[0], days[1])  # fitted before the live day
    batch = compute_features(bars, catalog, filter_regimes(model, bars, catalog.hmm))
    live_day = days[-1]
    history = bars.filter(pl.col("trade_date") < live_day)
    today = bars.filter(pl.col("trade_date") == live_day)
    features = LiveFeatures(history, catalog, model)
    # an hour at a time, then bar by bar for the last 30 bars: causal features do not care how they arrive
    rows, stepwise = [], today.height - 30
    for start in range(0, stepwise, 60):
        rows.append(features.on_bars(today.slice(start, min(60, stepwise - start))))
    rows += [features.on_bars(today.slice(i, 1)) for i in range(stepwise, today.height)]
    live = pl.concat([r for r in rows if r.height])
    expected = batch.filter(pl.col("trade_date") == live_day)
    assert expected.height > 1_000 and expected["warm"].sum() > 1_000
    assert_frame_equal(live, expected, check_exact=True)


def test_live_features_refuse_a_bar_fed_twice_and_keep_columns_for_pre_open_bars(tmp_path: Path) -> None:
    bars = _batch_bars(_records(write_day(dt.date(2024, 3, 12), tmp_path, MARKET)), "MNQ.v.0")
    catalog = load_catalog()
    model = fit_regime_model(bars, catalog.hmm, dt.date(2024, 3, 12), dt.date(2024, 3, 12))
    features = LiveFeatures(bars.head(0), catalog, model)
    pre_open = features.on_bars(bars.filter(~pl.col("in_session")).head(3))
    assert pre_open.height == 0 and {"ofi_1min_zscore", "warm", "hmm_regime"} <= set(pre_open.columns)
    session = bars.filter(pl.col("in_session"))
    assert features.on_bars(session.slice(0, 5)).height == 5
    with pytest.raises(ValueError, match="fed already"):  # its windows would count it twice
        features.on_bars(session.slice(4, 1))


def test_record_objects_of_the_live_feed_decode_like_the_file() -> None:
    """`databento.Live` yields record objects, not arrays: through their DBN bytes they give the file path's
    columns exactly, and the bars built from them are the batch bars."""
    store = databento.DBNStore.from_file(REAL_DAY)
    objects = list(store)  # MBP10Msg, the type the live client yields
    from_objects = arrays_from_records([*objects[:3], "not a record", *objects[3:]])
    from_file = _records(REAL_DAY)
    for got, want in zip(from_objects, from_file, strict=True):
        np.testing.assert_array_equal(got, want)
    live = LiveBars(symbol="ESH4")
    bars = [live.on_records(arrays_from_records(objects[i : i + 500])) for i in range(0, len(objects), 500)]
    assert_frame_equal(pl.concat([*[b for b in bars if b.height], live.close()]), _batch_bars(from_file, "ESH4"))
