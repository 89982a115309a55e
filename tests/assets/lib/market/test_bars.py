"""One-minute OFI bars: against the naive reference on real MBP-10 data, exact OFI sums, the synthetic
market's planted order-flow edge, and Stoikov's micro-price adjustment."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from test_book_kernel import (
    ESH4,
    ESM4,
    LEVELS,
    NS,
    load,
    records_from_file,
    reference_buckets,
    reference_columns,
)

from phoenix_assets.lib.io.dbn_reader import inspect_dbn, iter_mbp10_arrays
from phoenix_assets.lib.market.bars import (
    TICK_SIZE,
    apply_stoikov_adjustment,
    fit_stoikov_adjustment,
    ofi_bars_1m,
    ofi_mid_figures,
    seconds_frame,
    with_l1_columns,
)
from phoenix_assets.lib.market.book_kernel import SECOND_COLUMNS, arrays_from_dbn, book_ofi_1s
from phoenix_assets.lib.schema import BAR_COLUMNS
from phoenix_assets.lib.synthetic.market import SyntheticMarketConfig, write_range

MINUTE = 60 * NS
SYNTH_DAYS = (dt.date(2024, 3, 11), dt.date(2024, 3, 13))  # Mon-Wed, before the default roll


def seconds_of(path: Path) -> pl.DataFrame:
    info = inspect_dbn(path)
    return seconds_frame(book_ofi_1s(arrays_from_dbn(c) for c in iter_mbp10_arrays(info, 1 << 18)))


@pytest.fixture(scope="module")
def esh4_seconds() -> pl.DataFrame:
    return seconds_frame(book_ofi_1s([arrays_from_dbn(load(ESH4))]))


@pytest.fixture(scope="module")
def esh4_bars(esh4_seconds: pl.DataFrame) -> pl.DataFrame:
    return ofi_bars_1m(esh4_seconds, symbol="ESH4")


def test_seconds_frame_types(esh4_seconds: pl.DataFrame) -> None:
    assert esh4_seconds.columns == list(SECOND_COLUMNS)
    assert esh4_seconds.schema["ts"] == pl.Datetime("ns", "UTC")
    assert esh4_seconds.schema["trade_date"] == pl.Date
    assert esh4_seconds.schema["ofi_l1"] == pl.Int64 and esh4_seconds.schema["bid_px_00"] == pl.Float64
    # NaN became null: no-trade seconds and crossed end-of-second books
    assert esh4_seconds["trade_open"].null_count() > 0 and esh4_seconds["trade_open"].is_nan().sum() == 0
    assert esh4_seconds["mid_close"].null_count() == (~esh4_seconds["book_valid"]).sum()


def test_bars_match_reference(esh4_bars: pl.DataFrame) -> None:
    """Every bar column against the record-level reference run with one-minute buckets."""
    ref = reference_buckets(records_from_file(ESH4), width_ns=MINUTE)
    ref = {k: v for k, v in ref.items() if v["n_records"] > 0}
    bars = esh4_bars
    keys = list(zip((bars["ts"].dt.epoch("ns")).to_list(), bars["instrument_id"].to_list(), strict=True))
    assert len(keys) == len(ref) and set(keys) == set(ref)
    want = reference_columns(keys, ref)
    np.seterr(divide="ignore", invalid="ignore")  # minutes without a valid book: NaN, as the bars' nulls
    got = {c: bars[c].to_numpy() for c in bars.columns if c not in ("ts", "symbol", "trade_date")}

    def same(name: str, expected: np.ndarray, exact: bool = False) -> None:
        actual = got[name].astype(expected.dtype) if expected.dtype.kind != "f" else got[name].astype(float)
        if exact:
            np.testing.assert_array_equal(actual, expected, err_msg=name)
        else:
            np.testing.assert_allclose(actual, expected, rtol=1e-11, atol=1e-9, err_msg=name)

    for name in ("n_records", "n_events", "n_snapshots", "n_crossed_events", "trade_count", "volume"):
        same(name, want[name], exact=True)
    same("buy_volume", want["buy_volume"], exact=True)
    same("sell_volume", want["sell_volume"], exact=True)
    # mean depth per level over the minute's seconds with a valid end-of-second book
    seconds = reference_buckets(records_from_file(ESH4))
    for m in range(1, LEVELS + 1):
        same(f"ofi_l{m}", want[f"ofi_l{m}"], exact=True)
        depths: dict[int, list[float]] = {}
        for (t, _), r in seconds.items():
            if r["status"] == "valid":
                (_, qb), (_, qa) = r["book"]["bid"][m - 1], r["book"]["ask"][m - 1]
                depths.setdefault(t - t % MINUTE, []).append((qb + qa) / 2)
        mean_depth = np.array([np.mean(depths[t]) if t in depths else np.nan for t, _ in keys])
        same(f"ofi_l{m}_norm", np.where(mean_depth > 0, want[f"ofi_l{m}"] / mean_depth, np.nan))
    no_trades = want["trade_count"] == 0
    same("ohlc_from_mid", no_trades, exact=True)
    for col, trade, mid in (
        ("open", "trade_open", "mid_open"),
        ("high", "trade_high", "mid_high"),
        ("low", "trade_low", "mid_low"),
        ("close", "trade_close", "mid_close"),
    ):
        same(col, np.where(no_trades, want[mid], want[trade]))
        same(mid, want[mid])
    same("vwap_num", want["notional"])
    same("vwap_den", want["volume"], exact=True)
    same("microprice_close", want["microprice_close"])
    same("microprice_dev_ticks_close", (want["microprice_close"] - want["mid_close"]) / TICK_SIZE)
    same("microprice_dev_ticks_mean", want["tw_microprice_dev"] / want["valid_s"] / TICK_SIZE)
    spread_close = np.where(want["book_valid"], (want["ask_px_00"] - want["bid_px_00"]) / TICK_SIZE, np.nan)
    same("spread_ticks_close", spread_close)
    same("spread_ticks_mean", want["tw_spread"] / want["valid_s"] / TICK_SIZE)
    qb, qa = want["bid_sz_00"], want["ask_sz_00"]
    same("imbalance_close", np.where(want["book_valid"], qb / (qb + qa), np.nan))
    same("depth_bid_l1", qb, exact=True)
    same("depth_ask_l1", qa, exact=True)
    total = sum(want[f"{s}_sz_{m:02d}"] for s in ("bid", "ask") for m in range(LEVELS))
    same("depth_total", total, exact=True)
    liquidity = want["buy_volume"] / (want["tw_ask_sz_l1"] / want["valid_s"]) + want["sell_volume"] / (
        want["tw_bid_sz_l1"] / want["valid_s"]
    )
    same("liquidity_consumption", liquidity)
    same("crossed_share", want["crossed_s"] / want["book_s"])
    same("valid_s", want["valid_s"])
    same("in_session", want["in_session"], exact=True)
    same("book_valid_close", want["book_valid"], exact=True)
    assert (bars["trade_date"] == dt.date(2023, 12, 26)).all() and (bars["symbol"] == "ESH4").all()
    # the crossed pre-open shows up where it should
    pre = bars.filter(~pl.col("in_session"))
    assert pre["crossed_share"].max() > 0.5 and bars.filter(pl.col("in_session"))["crossed_share"].max() < 0.01


def test_minute_ofi_is_exact_sum_of_seconds(esh4_seconds: pl.DataFrame, esh4_bars: pl.DataFrame) -> None:
    ts = esh4_seconds["ts"].dt.epoch("ns").to_numpy()
    minute = ts - ts % MINUTE
    starts = esh4_bars["ts"].dt.epoch("ns").to_numpy()
    for m in range(1, LEVELS + 1):
        per_second = esh4_seconds[f"ofi_l{m}"].to_numpy()
        sums = np.array([per_second[minute == s].sum() for s in starts])
        np.testing.assert_array_equal(esh4_bars[f"ofi_l{m}"].to_numpy(), sums)
        assert esh4_bars[f"ofi_l{m}"].sum() == per_second.sum()
    assert esh4_bars.schema["ofi_l1"] == pl.Int64


def test_bar_schema(esh4_bars: pl.DataFrame) -> None:
    assert esh4_bars.columns == [c for c in BAR_COLUMNS if c != "microprice_stoikov_close"]
    assert esh4_bars.schema["ts"] == pl.Datetime("ns", "UTC")
    assert esh4_bars.schema["trade_date"] == pl.Date
    assert esh4_bars.schema["symbol"] == pl.String
    assert esh4_bars["ts"].is_sorted()
    assert (esh4_bars["ts"].dt.second() == 0).all()


def test_esm4_snapshot_bar() -> None:
    bars = ofi_bars_1m(seconds_frame(book_ofi_1s([arrays_from_dbn(load(ESM4))])), symbol="ESM4")
    assert bars.height == 1
    row = bars.row(0, named=True)
    assert row["n_snapshots"] == 1 and row["in_session"] and row["trade_count"] == 5
    assert row["ts"] == dt.datetime(2024, 5, 8, tzinfo=dt.UTC)


def test_bars_take_symbol_column_and_ts_in_microseconds(esh4_seconds: pl.DataFrame) -> None:
    """As read back from Delta: microsecond timestamps and a symbol column."""
    frame = esh4_seconds.with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC")), symbol=pl.lit("ESH4"))
    bars = ofi_bars_1m(frame)
    assert (bars["symbol"] == "ESH4").all()
    assert bars.drop("symbol").equals(ofi_bars_1m(esh4_seconds).drop("symbol"))


# --- the synthetic market: the planted order-flow edge -----------------------------------------------


def synthetic_bars(tmp: Path, strength: float) -> list[pl.DataFrame]:
    cfg = SyntheticMarketConfig(records_per_day=60_000, ofi_strength=strength)
    paths = write_range(*SYNTH_DAYS, tmp, cfg)
    return [seconds_of(p) for p in paths]


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> list[pl.DataFrame]:
    return synthetic_bars(tmp_path_factory.mktemp("planted"), 0.6)


@pytest.fixture(scope="module")
def no_edge(tmp_path_factory: pytest.TempPathFactory) -> list[pl.DataFrame]:
    return synthetic_bars(tmp_path_factory.mktemp("no_edge"), 0.0)


def test_ofi_explains_and_predicts_mid_in_planted_market(
    planted: list[pl.DataFrame], no_edge: list[pl.DataFrame]
) -> None:
    edge = ofi_mid_figures(pl.concat([ofi_bars_1m(s) for s in planted]))
    none = ofi_mid_figures(pl.concat([ofi_bars_1m(s) for s in no_edge]))
    assert edge["n_bars"] == none["n_bars"] == 3 * 23 * 60
    assert edge["contemporaneous_r2"] > 0.2 and edge["contemporaneous_beta"] > 0
    assert none["contemporaneous_r2"] > 0.2  # moves add OFI mechanically, edge or not
    assert edge["forward_corr"] > 0.1
    assert abs(none["forward_corr"]) < 0.08
    assert edge["forward_corr"] - none["forward_corr"] > 0.1


def test_synthetic_day_sessions(planted: list[pl.DataFrame]) -> None:
    """Pre-open bars: crossed/locked indicative book, no trades (mid OHLC); continuous: never crossed."""
    bars = ofi_bars_1m(planted[0], symbol="MNQ.v.0")
    pre, cont = bars.filter(~pl.col("in_session")), bars.filter(pl.col("in_session"))
    assert pre.height == 15 and cont.height == 23 * 60
    assert pre["crossed_share"].max() > 0 and (cont["crossed_share"] == 0).all()
    assert pre["trade_count"].sum() == 0 and pre["ohlc_from_mid"].all()
    assert cont["ofi_l1"].abs().sum() > 0 and (cont["spread_ticks_mean"] >= 1 - 1e-9).all()
    assert (bars["trade_date"] == SYNTH_DAYS[0]).all()
    seconds = planted[0]
    assert seconds.filter(pl.col("in_session"))["n_snapshots"].sum() == 0
    assert seconds.filter(~pl.col("in_session"))["n_snapshots"].sum() == 1  # the 16:45 CT snapshot


# --- Stoikov micro-price ----------------------------------------------------------------------------


def hand_chain() -> pl.DataFrame:
    """Seconds alternating H H L L ...: from H (imbalance 0.8) the mid rises a tick, from L (0.2) it
    falls one, and after a move each state follows equally often: g*(H) = +1 tick, g*(L) = -1."""
    states = ["H", "H", "L", "L"] * 50 + ["H"]  # closes the cycle: every transition equally often
    mid, rows = 100.0, []
    t0 = dt.datetime(2024, 3, 12, 0, 0, tzinfo=dt.UTC)
    for k, s in enumerate(states):
        qb, qa = (8, 2) if s == "H" else (2, 8)
        rows.append(
            {
                "ts": t0 + dt.timedelta(seconds=k),
                "instrument_id": 1,
                "trade_date": dt.date(2024, 3, 12),
                "in_session": True,
                "book_valid": True,
                "bid_px_00": mid - 0.125,
                "ask_px_00": mid + 0.125,
                "bid_sz_00": qb,
                "ask_sz_00": qa,
                "mid_close": mid,
            }
        )
        mid += TICK_SIZE if s == "H" else -TICK_SIZE
    return pl.DataFrame(rows).with_columns(pl.col("ts").dt.cast_time_unit("ns"))


def test_stoikov_hand_chain() -> None:
    table = fit_stoikov_adjustment(hand_chain(), n_imbalance_buckets=2, max_spread_ticks=1)
    assert table["adjustment_ticks"].to_list() == pytest.approx([-1.0, 1.0])
    assert table["n_obs"].to_list() == [100, 100]  # the last second has no successor
    applied = apply_stoikov_adjustment(with_l1_columns(hand_chain()), table)
    expected = hand_chain()["mid_close"] + np.where(hand_chain()["bid_sz_00"] == 8, 0.25, -0.25)
    np.testing.assert_allclose(applied["microprice_stoikov"].to_numpy(), expected.to_numpy())


def test_stoikov_fit_on_past_applied_to_future(planted: list[pl.DataFrame]) -> None:
    """Fit on days 1-2, apply to day 3's bars: symmetric table, finite where seen, null off the grid."""
    table = fit_stoikov_adjustment(pl.concat(planted[:2]))
    assert table.height == 20 and table["n_obs"].sum() > 100_000
    adj = table.sort("spread_ticks", "imbalance_bucket")["adjustment_ticks"].to_numpy().reshape(2, 10)
    np.testing.assert_allclose(adj, -adj[:, ::-1], atol=1e-9)  # symmetrised: g(I) = -g(1 - I)
    assert np.isfinite(adj).all() and np.abs(adj).max() < 2.0
    bars = ofi_bars_1m(planted[2], stoikov_table=table)
    assert bars.columns == BAR_COLUMNS
    cont = bars.filter(pl.col("in_session") & pl.col("book_valid_close"))
    gap = (cont["microprice_stoikov_close"] - cont["mid_close"]) / TICK_SIZE
    assert gap.null_count() == 0 and gap.abs().max() < 2.0
    pre = bars.filter(~pl.col("in_session") & ~pl.col("book_valid_close"))
    assert pre.height > 0 and pre["microprice_stoikov_close"].null_count() == pre.height


def test_figures_on_too_few_bars() -> None:
    bars = ofi_bars_1m(seconds_frame(book_ofi_1s([arrays_from_dbn(load(ESM4))])))
    figures = ofi_mid_figures(bars)
    assert figures["n_bars"] == 1 and math.isnan(figures["contemporaneous_r2"])
    assert math.isnan(figures["forward_corr"])
