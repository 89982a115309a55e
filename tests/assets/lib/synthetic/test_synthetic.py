"""The synthetic MNQ market: real DBN files that decode with databento and keep real data's invariants.

The invariants are checked on files read back through `databento.DBNStore`, not on the generator's
own arrays, so what is tested is what downstream stages will see.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from collections.abc import Iterator
from pathlib import Path

import databento as db
import numpy as np
import pytest
import zstandard

from phoenix_assets.lib import calendar as cal
from phoenix_assets.lib.schema import F_LAST, F_SNAPSHOT, UNDEF_PRICE, level_columns
from phoenix_assets.lib.synthetic import market as synthetic
from phoenix_assets.lib.synthetic.market import (
    MBP10_DTYPE,
    TICK,
    SyntheticMarketConfig,
    day_file_name,
    write_day,
    write_range,
)

DAY = dt.date(2024, 3, 12)  # a Tuesday, before the default roll date
SMALL = SyntheticMarketConfig(records_per_day=12_000)
BOOK_COLUMNS = [c for f in ("bid_px", "ask_px", "bid_sz", "ask_sz", "bid_ct", "ask_ct") for c in level_columns(f)]
NS_MIN = cal.NS_PER_MINUTE


def read(path: Path) -> np.ndarray:
    return db.DBNStore.from_file(path).to_ndarray()


def ct_minute_of_day(ts: np.ndarray, trade_date: dt.date) -> np.ndarray:
    """Chicago wall-clock minute of day (0-1439) of UTC nanosecond timestamps."""
    local = ts.astype(np.int64) + cal.utc_offset_ns(trade_date)
    return (local // NS_MIN) % (24 * 60)


def i64(a: np.ndarray) -> np.ndarray:
    return a.astype(np.int64)


@pytest.fixture(scope="module")
def day_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_day(DAY, tmp_path_factory.mktemp("synthetic"), SMALL)


@pytest.fixture(scope="module")
def recs(day_file: Path) -> np.ndarray:
    return read(day_file)


@pytest.fixture(scope="module")
def event_last(recs: np.ndarray) -> np.ndarray:
    """True on the last record of each event (records of one event share ts_event)."""
    ts = i64(recs["ts_event"])
    return np.append(ts[1:] != ts[:-1], True)


# --- the file ---------------------------------------------------------------------------------------


def test_metadata_and_symbol_mapping_round_trip(day_file: Path, recs: np.ndarray) -> None:
    store = db.DBNStore.from_file(day_file)
    meta = store.metadata
    start, end = cal.trade_date_window(DAY)
    assert day_file.name == day_file_name(DAY) == "glbx-mdp3-mnq-20240312.mbp-10.dbn.zst"
    assert (meta.version, meta.dataset, str(store.schema)) == (3, "GLBX.MDP3", "mbp-10")
    assert (str(meta.stype_in), str(meta.stype_out)) == ("continuous", "instrument_id")
    assert (meta.start, meta.end, list(meta.symbols)) == (start, end, ["MNQ.v.0"])
    # one interval per UTC date the window touches (21:00 UTC Mar 11 to 21:00 UTC Mar 12; CDT)
    assert meta.mappings == {
        "MNQ.v.0": [
            {"start_date": dt.date(2024, 3, 11), "end_date": dt.date(2024, 3, 12), "symbol": "42005347"},
            {"start_date": dt.date(2024, 3, 12), "end_date": dt.date(2024, 3, 13), "symbol": "42005347"},
        ]
    }
    assert recs.dtype == MBP10_DTYPE
    df = store.to_df()
    assert len(df) == len(recs) > 0
    assert set(df["symbol"].unique()) == {"MNQ.v.0"}
    assert set(df["instrument_id"].unique()) == {42005347}


def test_record_headers(recs: np.ndarray) -> None:
    assert np.all(recs["length"] == 92) and np.all(recs["rtype"] == 10)
    assert np.all(recs["publisher_id"] == 1) and np.all(recs["instrument_id"] == 42005347)
    assert set(np.unique(recs["action"])) <= {b"A", b"C", b"M", b"T"}
    assert set(np.unique(recs["flags"])) == {0, F_LAST, F_SNAPSHOT | F_LAST}


def test_prices_on_tick_grid(recs: np.ndarray) -> None:
    for name in ["price", *level_columns("bid_px"), *level_columns("ask_px")]:
        px = i64(recs[name])
        defined = px[px != UNDEF_PRICE]
        assert np.all(defined % TICK == 0), name
        assert np.all((defined > 5_000 * 10**9) & (defined < 50_000 * 10**9)), name


# --- events and flags -------------------------------------------------------------------------------


def test_f_last_marks_the_last_record_of_every_event(recs: np.ndarray, event_last: np.ndarray) -> None:
    flagged = (recs["flags"] & F_LAST) != 0
    np.testing.assert_array_equal(flagged, event_last)
    trades = recs["action"] == b"T"
    assert trades.sum() > 100 and not np.any(flagged & trades)
    # records of one event were received together
    same_event = ~event_last[:-1]
    np.testing.assert_array_equal(recs["ts_recv"][:-1][same_event], recs["ts_recv"][1:][same_event])
    np.testing.assert_array_equal(recs["sequence"][:-1][same_event], recs["sequence"][1:][same_event])


def test_exactly_one_snapshot_and_it_is_first(recs: np.ndarray) -> None:
    snap = np.flatnonzero(recs["flags"] & F_SNAPSHOT)
    assert snap.tolist() == [0]
    first = recs[0]
    assert first["flags"] == F_SNAPSHOT | F_LAST
    assert (first["action"], first["side"], first["price"], first["size"], first["depth"]) == (
        b"A",
        b"N",
        UNDEF_PRICE,
        0,
        0,
    )
    assert int(first["ts_event"]) == cal.pre_open_ns(DAY)


def test_book_on_a_trade_record_equals_the_record_before(recs: np.ndarray) -> None:
    idx = np.flatnonzero(recs["action"] == b"T")
    assert idx.min() > 0
    for col in BOOK_COLUMNS:
        np.testing.assert_array_equal(recs[col][idx], recs[col][idx - 1], err_msg=col)
    cont = idx[i64(recs["ts_event"][idx]) > cal.session_open_ns(DAY)]
    side = recs["side"][cont]
    assert set(np.unique(side)) == {b"A", b"B"}
    # a trade prints at the best opposite price for its size (or, in a move, the whole level)
    buy = side == b"B"
    np.testing.assert_array_equal(recs["price"][cont][buy], recs["ask_px_00"][cont][buy])
    np.testing.assert_array_equal(recs["price"][cont][~buy], recs["bid_px_00"][cont][~buy])
    assert np.all(recs["depth"][cont] == 0) and np.all(i64(recs["size"][cont]) >= 1)


def test_single_record_events_change_the_book_as_stated(recs: np.ndarray, event_last: np.ndarray) -> None:
    """Slow reference: an A/C/M at depth d without a price shift changes that level's size by `size`."""
    session = i64(recs["ts_event"]) > cal.session_open_ns(DAY)
    checked = 0
    for i in range(1, len(recs)):
        r, prev = recs[i], recs[i - 1]
        if not (session[i] and event_last[i] and event_last[i - 1]) or r["action"] == b"T":
            continue
        side = "bid" if r["side"] == b"B" else "ask"
        d = int(r["depth"])
        px, old_px = int(r[f"{side}_px_{d:02d}"]), int(prev[f"{side}_px_{d:02d}"])
        if px != old_px:
            continue  # a ladder shift (a move or a gap fill)
        assert int(r["price"]) == px
        change = int(r[f"{side}_sz_{d:02d}"]) - int(prev[f"{side}_sz_{d:02d}"])
        if r["action"] == b"A":
            assert change == int(r["size"]), i
        elif r["action"] == b"C":
            assert change == -int(r["size"]), i
        else:
            assert abs(change) == int(r["size"]), i
        checked += 1
    assert checked > len(recs) // 2


# --- the CME day ------------------------------------------------------------------------------------


def test_no_records_in_the_halt_or_after_the_window(recs: np.ndarray) -> None:
    start, end = cal.trade_date_window(DAY)
    ts_event, ts_recv = i64(recs["ts_event"]), i64(recs["ts_recv"])
    assert ts_event.min() == cal.pre_open_ns(DAY) == start + 45 * NS_MIN  # nothing 16:00-16:45
    assert ts_recv.max() < end and ts_event.max() < end
    minutes = ct_minute_of_day(ts_recv, DAY)
    assert not np.any((minutes >= 16 * 60) & (minutes < 16 * 60 + 45))
    assert ts_event.max() > end - 10 * NS_MIN  # trading runs to the close


def test_crossed_books_only_in_the_pre_open(recs: np.ndarray) -> None:
    open_ns = cal.session_open_ns(DAY)
    ts = i64(recs["ts_event"])
    bid, ask = i64(recs["bid_px_00"]), i64(recs["ask_px_00"])
    last = (recs["flags"] & F_LAST) != 0
    crossed = bid >= ask
    pre = ts < open_ns
    assert crossed[pre & last].sum() > 5  # the indicative book is often locked or crossed
    assert not np.any(crossed[last & ~pre])
    # from 17:00 on only the uncross trade may show a crossed book: it prints on the indicative book
    uncross_trade = (ts == open_ns) & (recs["action"] == b"T")
    assert uncross_trade.sum() == 1 and not np.any(crossed & ~pre & ~uncross_trade)
    # book states in continuous trading: spread 1 tick or more (2 while a gap waits to be filled)
    spread = (ask - bid)[last & ~pre]
    assert spread.min() == TICK and set(np.unique(spread)) <= {TICK, 2 * TICK}
    assert np.mean(spread == TICK) > 0.9


def test_pre_open_and_opening_uncross(recs: np.ndarray) -> None:
    open_ns = cal.session_open_ns(DAY)
    ts = i64(recs["ts_event"])
    pre = recs[ts < open_ns]
    assert len(pre) > 10 and not np.any(pre["action"] == b"T")
    for i in range(5, 10):
        assert np.all(i64(pre[f"bid_px_{i:02d}"]) == UNDEF_PRICE) and np.all(i64(pre[f"ask_px_{i:02d}"]) == UNDEF_PRICE)
        for f in ("bid_sz", "ask_sz", "bid_ct", "ask_ct"):
            assert np.all(pre[f"{f}_{i:02d}"] == 0)
    for i in range(5):
        assert np.all(i64(pre[f"bid_px_{i:02d}"]) != UNDEF_PRICE)
    uncross = recs[ts == open_ns]
    assert len(uncross) == 2
    trade, book = uncross
    assert (trade["action"], trade["side"], trade["flags"]) == (b"T", b"N", 0) and trade["size"] > 0
    assert int(trade["price"]) == round(synthetic.opening_price_points(DAY, SMALL) * 1e9)
    assert book["flags"] == F_LAST and book["bid_px_00"] == trade["price"]
    assert book["ask_px_00"] - book["bid_px_00"] == TICK
    assert all(int(book[f"{s}_px_{i:02d}"]) != UNDEF_PRICE for s in ("bid", "ask") for i in range(10))


def test_book_shape_in_continuous_trading(recs: np.ndarray) -> None:
    cont = recs[(i64(recs["ts_event"]) >= cal.session_open_ns(DAY)) & ((recs["flags"] & F_LAST) != 0)]
    for side, step in (("bid", -TICK), ("ask", TICK)):
        best = i64(cont[f"{side}_px_00"])
        for i in range(10):
            np.testing.assert_array_equal(i64(cont[f"{side}_px_{i:02d}"]), best + i * step)
            size, count = i64(cont[f"{side}_sz_{i:02d}"]), i64(cont[f"{side}_ct_{i:02d}"])
            assert np.all((size >= 1) & (count >= 1) & (count <= size))
    near = np.median(i64(cont["bid_sz_00"]))
    far = np.median(i64(cont["bid_sz_09"]))
    assert 1 <= near < far <= 60  # thicker deeper


def test_timestamps_and_sequence(recs: np.ndarray, event_last: np.ndarray) -> None:
    ts_event, ts_recv = i64(recs["ts_event"]), i64(recs["ts_recv"])
    assert np.all(np.diff(ts_event) >= 0)
    assert np.all(np.diff(ts_event[event_last]) > 0)  # strictly increasing across events
    assert np.all(np.diff(ts_recv) >= 0)
    latency = ts_recv - ts_event
    assert latency.min() > 0 and latency.max() < 1_000_000
    assert np.all((recs["ts_in_delta"] > 0) & (recs["ts_in_delta"] < 100_000))
    seq = i64(recs["sequence"])
    assert np.all(np.diff(seq) >= 0) and np.all(np.diff(seq[event_last]) > 0)


def test_activity_follows_the_clock(recs: np.ndarray) -> None:
    minutes = ct_minute_of_day(recs["ts_recv"], DAY)
    overnight = np.sum((minutes >= 22 * 60) & (minutes < 22 * 60 + 30))
    cash_open = np.sum((minutes >= 8 * 60 + 30) & (minutes < 9 * 60))
    europe = np.sum((minutes >= 3 * 60) & (minutes < 3 * 60 + 30))
    assert cash_open > 4 * overnight > 0
    assert europe > 1.5 * overnight


def test_records_per_day_is_roughly_honoured(tmp_path: Path) -> None:
    cfg = SyntheticMarketConfig(records_per_day=20_000)
    for path in write_range(dt.date(2024, 3, 4), dt.date(2024, 3, 8), tmp_path, cfg):
        n = len(read(path))
        assert 0.7 * cfg.records_per_day <= n <= 1.3 * cfg.records_per_day, (path.name, n)


def test_flow_is_normalised_at_any_activity() -> None:
    """flow/scale has RMS about 1 whatever records_per_day is, so ofi_strength means the same thing."""
    for n in (10_000, 300_000):
        diag = synthetic._day_diagnostics(DAY, SyntheticMarketConfig(records_per_day=n))
        assert 0.8 < diag["flow_z_rms"] < 1.25, (n, diag)
        assert diag["price_decisions"] > 0.04 * diag["events"]


def test_iter_day_records_matches_the_file(day_file: Path, recs: np.ndarray) -> None:
    chunks = list(synthetic.iter_day_records(DAY, dataclasses.replace(SMALL, chunk_records=5_000)))
    assert len(chunks) > 1 and all(c.dtype == MBP10_DTYPE for c in chunks)
    np.testing.assert_array_equal(np.concatenate(chunks), recs)


# --- volatility does not grow with the record count ------------------------------------------------

# sha256 of the files `write_day(2024-03-12, cfg)` wrote before the big-day volatility fix (issue 26),
# computed on the pre-fix generator (commit bdfe774) with this venv's zstandard; days of <= 200k records
# must stay byte-identical (the demo's numbers and the book/bar/feature tests depend on them)
BYTES_BEFORE_FIX = {
    200_000: "ebe0c9296305b0ffb42769488389ecef3de15c1985f53219e0c560c872387c08",  # DEMO_MARKET
    40_000: "9441acfe7fd47c81d3608b273b3bf7604fae8d611a5133668ae0bb4238fb9732",  # the generator's default
}


@pytest.mark.parametrize("records", sorted(BYTES_BEFORE_FIX))
def test_days_up_to_200k_records_are_byte_identical_to_before(records: int, tmp_path: Path) -> None:
    cfg = synthetic.DEMO_MARKET if records == 200_000 else SyntheticMarketConfig()
    assert cfg.records_per_day == records
    digest = hashlib.sha256(write_day(DAY, tmp_path, cfg).read_bytes()).hexdigest()
    assert digest == BYTES_BEFORE_FIX[records]


def test_event_mix_by_hand() -> None:
    """Up to 200k records the module constants; at 2M a tenth of the move share, the rest re-mixed."""
    assert synthetic.move_scale(40_000) == synthetic.move_scale(200_000) == 1.0
    assert synthetic._event_mix(200_000) == (0.06, synthetic.FLOW_VAR_PER_EVENT, 1.152)
    assert synthetic.move_scale(2_000_000) == pytest.approx(0.1)
    p_move, flow_var, records = synthetic._event_mix(2_000_000)
    assert p_move == pytest.approx(0.006)
    # non-move events keep their mix: flow variance per event scales with their share, 0.994 / 0.94
    assert flow_var == pytest.approx(synthetic.FLOW_VAR_PER_EVENT * 0.994 / 0.94)
    # a move is 2.4 records (0.6 trade + cancel + 0.8 add); the rest average (1.152 - 0.06 * 2.4) / 0.94
    assert records == pytest.approx(0.006 * 2.4 + 0.994 * (1.152 - 0.144) / 0.94)
    assert records == pytest.approx(1.080306, abs=1e-6)


def session_range_and_realized_vol(trade_date: dt.date, cfg: SyntheticMarketConfig) -> tuple[int, float, float]:
    """(records, high - low of the mid, sqrt of the sum of squared 1-minute mid changes), in points, of
    the continuous session on F_LAST book states; streamed chunk by chunk (a 2M day is 740 MB raw)."""
    open_ns = cal.session_open_ns(trade_date)
    n_minutes = (cal.trade_date_window(trade_date)[1] - open_ns) // NS_MIN + 1
    last_mid = np.full(n_minutes, np.nan)
    low, high, records = np.inf, -np.inf, 0
    for chunk in synthetic.iter_day_records(trade_date, cfg):
        records += len(chunk)
        book = chunk[((chunk["flags"] & F_LAST) != 0) & (i64(chunk["ts_event"]) >= open_ns)]
        if len(book) == 0:
            continue
        mid = (i64(book["bid_px_00"]) + i64(book["ask_px_00"])) / 2e9
        low, high = min(low, mid.min()), max(high, mid.max())
        last_mid[(i64(book["ts_event"]) - open_ns) // NS_MIN] = mid  # the last state of each minute wins
    minute_mid = last_mid[~np.isnan(last_mid)]
    return records, float(high - low), float(np.sqrt(np.sum(np.diff(minute_mid) ** 2)))


@pytest.mark.slow
def test_a_2m_record_day_has_the_volatility_of_a_200k_day() -> None:
    """Before the fix a 2M-record DEMO_MARKET day had realized vol ~270 points and ranges of 950-2,700
    points (7x-10x the 200k day's ~37 and 70-240); now the number of moves a day is fixed."""
    days = [dt.date(2024, 3, 5), dt.date(2024, 3, 6), dt.date(2024, 3, 7)]
    small = [session_range_and_realized_vol(d, synthetic.DEMO_MARKET) for d in days]
    big_cfg = dataclasses.replace(synthetic.DEMO_MARKET, records_per_day=2_000_000)
    big = [session_range_and_realized_vol(d, big_cfg) for d in days]
    for (_, _, rv_small), (n_big, _, rv_big) in zip(small, big, strict=True):
        assert 0.85 * 2_000_000 < n_big < 1.15 * 2_000_000  # the record count is still honoured
        assert 1 / 1.5 < rv_big / rv_small < 1.5, (rv_small, rv_big)
    mean_range_small = np.mean([r for _, r, _ in small])
    mean_range_big = np.mean([r for _, r, _ in big])
    assert 1 / 1.5 < mean_range_big / mean_range_small < 1.5, (small, big)
    # the planted link keeps its meaning: flow/scale still has RMS about 1 at the move decisions
    diag = synthetic._day_diagnostics(days[0], big_cfg)
    assert 0.8 < diag["flow_z_rms"] < 1.25, diag


# --- roll, determinism, errors ----------------------------------------------------------------------


def test_roll_switches_the_contract(tmp_path: Path) -> None:
    cfg = SyntheticMarketConfig(records_per_day=3_000, roll_date=dt.date(2024, 3, 14))
    before, on, after = write_range(dt.date(2024, 3, 13), dt.date(2024, 3, 15), tmp_path, cfg)
    assert {int(i) for i in np.unique(read(before)["instrument_id"])} == {42005347}
    for path in (on, after):
        assert {int(i) for i in np.unique(read(path)["instrument_id"])} == {42140878}
        assert set(db.DBNStore.from_file(path).to_df()["symbol"].unique()) == {"MNQ.v.0"}
    # the next contract trades higher by about the roll spread (daily moves are a few percent at most)
    open_before = synthetic.opening_price_points(dt.date(2024, 3, 13), cfg)
    open_on = synthetic.opening_price_points(dt.date(2024, 3, 14), cfg)
    no_roll = synthetic.opening_price_points(dt.date(2024, 3, 14), SyntheticMarketConfig(roll_date=None))
    assert open_on - no_roll == cfg.roll_spread_points
    assert abs(open_on - open_before - cfg.roll_spread_points) < 0.06 * open_before


def test_opening_prices_follow_a_daily_walk_keyed_by_seed_and_date() -> None:
    cfg = SyntheticMarketConfig(roll_date=None)
    days = cal.trade_dates_between(dt.date(2023, 1, 2), dt.date(2024, 12, 31))
    opens = np.array([synthetic.opening_price_points(d, cfg) for d in days])
    assert np.all(opens % 0.25 == 0) and opens[days.index(synthetic.WALK_ANCHOR)] == cfg.start_price
    daily = np.diff(np.log(opens))
    assert 0.8 * synthetic.DAILY_VOL < daily.std() < 1.2 * synthetic.DAILY_VOL
    assert synthetic.opening_price_points(DAY, dataclasses.replace(cfg, records_per_day=999)) == opens[days.index(DAY)]
    assert synthetic.opening_price_points(DAY, dataclasses.replace(cfg, seed=8)) != opens[days.index(DAY)]


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    cfg = SyntheticMarketConfig(records_per_day=5_000)
    a = write_day(DAY, tmp_path / "a", cfg).read_bytes()
    b = write_day(DAY, tmp_path / "b", cfg).read_bytes()
    c = write_day(DAY, tmp_path / "c", SyntheticMarketConfig(records_per_day=5_000, seed=8)).read_bytes()
    assert a == b and a != c


def test_a_day_alone_equals_the_same_day_in_a_range(tmp_path: Path) -> None:
    cfg = SyntheticMarketConfig(records_per_day=5_000)
    alone = write_day(dt.date(2024, 3, 13), tmp_path / "alone", cfg)
    paths = write_range(dt.date(2024, 3, 8), dt.date(2024, 3, 13), tmp_path / "range", cfg)
    assert [p.name for p in paths] == [day_file_name(dt.date(2024, 3, d)) for d in (8, 11, 12, 13)]
    assert paths[-1].read_bytes() == alone.read_bytes()


def test_records_do_not_depend_on_the_chunk_size(tmp_path: Path) -> None:
    big = write_day(DAY, tmp_path / "big", SyntheticMarketConfig(records_per_day=5_000))
    small = write_day(DAY, tmp_path / "small", SyntheticMarketConfig(records_per_day=5_000, chunk_records=777))
    unzip = zstandard.ZstdDecompressor()
    assert unzip.decompressobj().decompress(big.read_bytes()) == unzip.decompressobj().decompress(small.read_bytes())


@pytest.mark.parametrize("day", [dt.date(2024, 3, 9), dt.date(2024, 3, 10)])
def test_weekend_raises(day: dt.date, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a CME trade date"):
        write_day(day, tmp_path, SMALL)
    assert write_range(day, day, tmp_path, SMALL) == []
    assert not any(tmp_path.iterdir())


def test_a_failed_write_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = synthetic._iter_record_bytes

    def crash_midway(trade_date: dt.date, cfg: SyntheticMarketConfig) -> Iterator[np.ndarray]:
        for i, chunk in enumerate(real(trade_date, cfg)):
            if i == 2:
                raise RuntimeError("disk on fire")
            yield chunk

    monkeypatch.setattr(synthetic, "_iter_record_bytes", crash_midway)
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_day(DAY, tmp_path, SyntheticMarketConfig(records_per_day=5_000, chunk_records=500))
    assert list(tmp_path.iterdir()) == []


# --- the planted edge -------------------------------------------------------------------------------


def minute_ofi_and_next_mid_change(path: Path, trade_date: dt.date) -> tuple[np.ndarray, np.ndarray]:
    """Per-minute best-level OFI (Cont, Kukanov & Stoikov 2014, eq. 1-2) from consecutive F_LAST book
    states in continuous trading, and each minute's mid change (in ticks)."""
    recs = read(path)
    open_ns = cal.session_open_ns(trade_date)
    book = recs[((recs["flags"] & F_LAST) != 0) & (i64(recs["ts_event"]) >= open_ns)]
    pb, qb = i64(book["bid_px_00"]), i64(book["bid_sz_00"])
    pa, qa = i64(book["ask_px_00"]), i64(book["ask_sz_00"])
    e = (
        (pb[1:] >= pb[:-1]) * qb[1:]
        - (pb[1:] <= pb[:-1]) * qb[:-1]
        - (pa[1:] <= pa[:-1]) * qa[1:]
        + (pa[1:] >= pa[:-1]) * qa[:-1]
    )
    minute = (i64(book["ts_recv"]) - open_ns) // NS_MIN
    n_min = int(minute.max()) + 1
    ofi = np.bincount(minute[1:], weights=e, minlength=n_min)
    last_state = np.full(n_min, -1)
    last_state[minute] = np.arange(len(book))  # the last state seen in each minute wins
    last_state = np.maximum.accumulate(last_state)
    mid_ticks = (pb + pa) / (2 * TICK)
    mid_change = np.diff(mid_ticks[last_state], prepend=mid_ticks[0])
    return ofi, mid_change


@pytest.mark.slow
def test_past_ofi_predicts_the_next_minute_only_when_planted(tmp_path: Path) -> None:
    """Pooled over three 200k-record days (~4,100 minutes). Across seeds 7-26 this correlation was
    0.28 +- 0.025 (min 0.24) with ofi_strength=0.8 and 0.00 +- 0.02 (max |0.045|) with 0."""
    days = [dt.date(2024, 3, 5), dt.date(2024, 3, 6), dt.date(2024, 3, 7)]
    corr = {}
    for strength in (0.8, 0.0):
        cfg = SyntheticMarketConfig(records_per_day=200_000, ofi_strength=strength)
        past_ofi, next_change = [], []
        for day in days:
            ofi, mid_change = minute_ofi_and_next_mid_change(write_day(day, tmp_path / str(strength), cfg), day)
            # contemporaneous OFI always explains the mid (a move adds OFI mechanically)
            assert np.corrcoef(ofi, mid_change)[0, 1] > 0.5
            past_ofi.append(ofi[:-1])
            next_change.append(mid_change[1:])
        corr[strength] = float(np.corrcoef(np.concatenate(past_ofi), np.concatenate(next_change))[0, 1])
    assert corr[0.8] > 0.15, corr
    assert abs(corr[0.0]) < 0.08, corr
