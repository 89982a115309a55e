"""Point-in-time features: hand-checked values, no look-ahead, session/roll resets, partition warm-up
equality, and the planted order-flow edge of the synthetic market."""

from __future__ import annotations

import copy
import datetime as dt
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import databento
import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from feature_specs import FeatureCatalog, FeatureSet, load_catalog, parse_catalog
from feature_specs.spec import load_documents
from phoenix_assets.lib import calendar as cal
from phoenix_assets.lib.features.compute import (
    bar_features,
    compute_features,
    predictive_figures,
    rolling_zscore,
    session_bars,
    warmup_start,
    warmup_trade_days,
)
from phoenix_assets.lib.features.hmm_regimes import filter_regimes, fit_regime_model
from phoenix_assets.lib.features.kernel import FeatureKernel
from phoenix_assets.lib.market.bars import ofi_bars_1m, seconds_frame
from phoenix_assets.lib.market.book_kernel import arrays_from_dbn, book_ofi_1s
from phoenix_assets.lib.synthetic.market import SyntheticMarketConfig, write_range
from tests.assets.lib.features.polars_reference import reference_features

DAYS = (dt.date(2024, 3, 11), dt.date(2024, 3, 13))  # Mon-Wed, one contract (default roll 2024-03-15)
CATALOG = load_catalog()
ALL_COLUMNS = list(CATALOG.all_features().columns)


# --- synthetic bars through the real pipeline ----------------------------------------------------------


def synthetic_bars(
    folder: Path, strength: float, records: int = 50_000, days: Sequence[dt.date] = DAYS
) -> pl.DataFrame:
    """DBN files -> databento chunks -> book kernel -> 1m bars, all days concatenated."""
    cfg = SyntheticMarketConfig(records_per_day=records, ofi_strength=strength)
    parts = []
    for path in write_range(days[0], days[-1], folder, cfg):
        store = databento.DBNStore.from_file(path)
        seconds = book_ofi_1s(arrays_from_dbn(chunk) for chunk in store.to_ndarray(count=1 << 16))
        parts.append(ofi_bars_1m(seconds_frame(seconds), symbol=cfg.continuous_symbol))
    return pl.concat(parts)


def regimes_for(bars: pl.DataFrame, catalog: FeatureCatalog = CATALOG, model: Any = None) -> tuple[Any, pl.DataFrame]:
    """Fit on the first trade date only (the training window), filter everything."""
    if model is None:
        first = bars["trade_date"].min()
        model = fit_regime_model(bars, catalog.hmm, first, first, n_starts=2)
    return model, filter_regimes(model, bars, catalog.hmm)


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> pl.DataFrame:
    return synthetic_bars(tmp_path_factory.mktemp("planted"), 0.8)


@pytest.fixture(scope="module")
def planted_model(planted: pl.DataFrame) -> Any:
    return regimes_for(planted)[0]


# --- hand-made bars ------------------------------------------------------------------------------------

N_TOY = 20
OFI = [3, -1, 4, -1, 5, -9, 2, 6, -5, 3, 5, -8, 9, 7, -9, 3, 2, -3, 8, 4]
OPEN = [100.0 + i for i in range(N_TOY)]
CLOSE = [100.5 + i if i != 3 else 110.0 for i in range(N_TOY)]
HIGH = [max(o, c) + 1.0 for o, c in zip(OPEN, CLOSE, strict=True)]
LOW = [min(o, c) - 1.0 for o, c in zip(OPEN, CLOSE, strict=True)]
VOLUME = [10 + i for i in range(N_TOY)]
VWAP_NUM = [v * (o + 0.25) for v, o in zip(VOLUME, OPEN, strict=True)]
MP_CLOSE = [0.1 * i - 0.5 for i in range(N_TOY)]
MP_MEAN = [0.05 * i for i in range(N_TOY)]
LIQ = [0.5 + 0.1 * i for i in range(N_TOY)]
SPREAD = [1.0 + 0.5 * (i % 2) for i in range(N_TOY)]


def toy_bars(trade_date: dt.date = dt.date(2024, 3, 12), instrument_id: int = 1, scale: float = 1.0) -> pl.DataFrame:
    """N_TOY in-session bars from 17:00 CT (session open of `trade_date`), values from the lists above."""
    start = cal.session_open_ns(trade_date)
    return pl.DataFrame(
        {
            "ts": [start + i * cal.NS_PER_MINUTE for i in range(N_TOY)],
            "trade_date": [trade_date] * N_TOY,
            "instrument_id": [instrument_id] * N_TOY,
            "in_session": [True] * N_TOY,
            "open": [x * scale for x in OPEN],
            "high": [x * scale for x in HIGH],
            "low": [x * scale for x in LOW],
            "close": [x * scale for x in CLOSE],
            "mid_close": [x * scale for x in CLOSE],
            "volume": VOLUME,
            "vwap_num": [x * scale for x in VWAP_NUM],
            "vwap_den": VOLUME,
            "ofi_l1": OFI,
            "microprice_dev_ticks_close": MP_CLOSE,
            "microprice_dev_ticks_mean": MP_MEAN,
            "liquidity_consumption": LIQ,
            "spread_ticks_mean": SPREAD,
        }
    ).with_columns(pl.col("ts").cast(pl.Datetime("ns", "UTC")))


def toy_regimes(bars: pl.DataFrame) -> pl.DataFrame:
    return bars.select("ts", "instrument_id", hmm_regime=(pl.int_range(pl.len()) % 3).cast(pl.Int8))


def raw_catalog() -> FeatureCatalog:
    """The shipped features without their z-score (so the transform itself can be checked by hand)."""
    features_doc, sets_doc = copy.deepcopy(load_documents())
    for f in features_doc["features"].values():
        f.pop("normalise", None)
    return parse_catalog(features_doc, sets_doc, source="raw")


def _tr(i: int) -> float:
    prev = CLOSE[i - 1] if i > 0 else None
    if prev is None:
        return HIGH[i] - LOW[i]
    return max(HIGH[i], prev) - min(LOW[i], prev)


def _log_ret(i: int) -> float:
    return math.log(CLOSE[i] / (CLOSE[i - 1] if i else OPEN[i]))


R = 5  # the row checked by hand: 17:05 CT, six bars into the session
HAND: dict[str, tuple[int, float]] = {  # column -> (row, expected raw value)
    "volume_zscore": (R, 15.0),
    "high_low_pct": (R, (HIGH[R] - LOW[R]) / CLOSE[R]),  # (106.5 - 104) / 105.5
    "session_vwap_dist": (
        2,
        (CLOSE[2] - (10 * 100.25 + 11 * 101.25 + 12 * 102.25) / 33) / ((10 * 100.25 + 11 * 101.25 + 12 * 102.25) / 33),
    ),
    "hmm_regime": (R, 2.0),  # toy label = row % 3
    "time_sin": (R, math.sin(2 * math.pi * 5 / 1380)),
    "time_cos": (345, 0.0),  # a quarter of the trading day; row index = minutes since 17:00 (see test)
    "ofi_1min_zscore": (R, -9.0),
    "ofi_3min_cumulative_zscore": (R, -1 + 5 - 9),
    "ofi_persistence_zscore": (R, (3 - 1 + 4 - 1 + 5 - 9) / (3 + 1 + 4 + 1 + 5 + 9)),  # window 10m, 6 bars so far
    "microprice_dev_zscore": (R, 0.0),
    "microprice_5min_avg_zscore": (R, (0.05 + 0.10 + 0.15 + 0.20 + 0.25) / 5),  # rows 1..5
    "liquidity_consumption_zscore": (R, 1.0),
    "spread_zscore": (R, 1.5),
    "atr_zscore": (R, (2.5 + 2.5 + 2.5 + (111.0 - 102.0) + (110.0 - 103.0) + 2.5) / 6),  # row 3 jumps to 110
    "hmm_regime_0": (R, 0.0),
    "hmm_regime_1": (R, 0.0),
    "hmm_regime_2": (R, 1.0),
    # last completed 15m bar at row 14 is [17:00, 17:15): rows 0..14
    "ofi_15m_zscore": (14, float(sum(OFI[:15]))),
    "ofi_persistence_15m_zscore": (14, float(np.sign(sum(OFI[:15])))),  # one 15m bar: sum / |sum|
    "microprice_dev_15m_zscore": (19, sum(MP_MEAN[:15]) / 15),
    "liquidity_consumption_15m_zscore": (14, sum(LIQ[:15])),
    "spread_15m_zscore": (14, sum(SPREAD[:15]) / 15),
    "atr_15m_zscore": (14, max(HIGH[:15]) - min(LOW[:15])),
}


def test_hand_table_covers_every_shipped_feature() -> None:
    assert set(HAND) == set(ALL_COLUMNS)
    assert [_tr(i) for i in range(6)] == [2.5, 2.5, 2.5, 111.0 - 102.0, 110.0 - 103.0, 2.5]  # as written in atr


@pytest.mark.parametrize("column", ALL_COLUMNS)
def test_feature_value_by_hand(column: str) -> None:
    row, expected = HAND[column]
    bars = toy_bars()
    if row >= N_TOY:  # time features: a bar `row` minutes after the open
        bars = bars.with_columns(pl.col("ts") + pl.duration(minutes=row - R)).slice(R, 1)
        row = 0
    out = compute_features(bars, raw_catalog(), toy_regimes(bars))
    assert out[column][row] == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_15m_context_waits_for_the_bar_to_complete() -> None:
    out = compute_features(toy_bars(), raw_catalog(), toy_regimes(toy_bars()))
    assert out["ofi_15m_zscore"][:14].null_count() == 14  # bar [17:00, 17:15) closes with row 14
    assert out["ofi_15m_zscore"][14:].to_list() == [float(sum(OFI[:15]))] * 6


def test_hmm_inputs_by_hand() -> None:
    out = compute_features(toy_bars(), FeatureSet("hmm", "", CATALOG.hmm.inputs, None))
    assert out["hmm_log_return"][0] == pytest.approx(_log_ret(0))
    assert out["hmm_log_return"][R] == pytest.approx(_log_ret(R))
    assert out["hmm_realised_vol"][R] == pytest.approx(math.sqrt(sum(_log_ret(i) ** 2 for i in range(R + 1)) / (R + 1)))


def test_zscore_by_hand_and_warm() -> None:
    features_doc, sets_doc = copy.deepcopy(load_documents())
    features_doc["defaults"]["normalise"]["1m"].update(window=3, min_periods=2, clip=1.0)
    catalog = parse_catalog(features_doc, sets_doc)
    fset = FeatureSet(
        "z", "", (catalog.features["volume_zscore"], catalog.features["ofi_3min_cumulative_zscore"]), None
    )
    out = compute_features(toy_bars(), fset)
    z = out["volume_zscore"].to_list()
    assert z[0] is None  # one value < min_periods
    assert z[1] == pytest.approx((11 - 10.5) / math.sqrt(0.5))  # [10, 11]: mean 10.5, std 0.7071
    assert z[5] == pytest.approx(1.0)  # [13, 14, 15]: (15 - 14) / 1
    # 3-minute sums 3, 2, 6: mean 11/3, std sqrt(13/3), z = 1.12 -> clipped to 1
    assert out["ofi_3min_cumulative_zscore"][2] == pytest.approx(1.0)
    assert out["ofi_3min_cumulative_zscore"][1] == pytest.approx(-0.5 / math.sqrt(0.5))  # [3, 2]: (2 - 2.5) / 0.7071
    # warm: z has min_periods values (row 1) and the 3-minute window is full (row 2)
    assert out["warm"].to_list()[:4] == [False, False, True, True]


def slow_zscore(x: list[float], groups: list[int], window: int, min_periods: int, clip: float) -> list[float]:
    out = []
    for i in range(len(x)):
        vals = [x[j] for j in range(max(0, i - window + 1), i + 1) if groups[j] == groups[i] and not math.isnan(x[j])]
        if len(vals) < max(min_periods, 2) or math.isnan(x[i]):
            out.append(math.nan)
            continue
        m = sum(vals) / len(vals)
        sd = math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1))
        out.append(0.0 if sd <= 1e-12 * max(abs(v) for v in vals) else max(-clip, min(clip, (x[i] - m) / sd)))
    return out


def test_zscore_kernel_matches_slow_reference() -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_t(3, 400) * 5
    x[rng.random(400) < 0.1] = np.nan
    x[100:150] = 7.0  # a constant stretch: std 0 -> 0
    groups = np.repeat([1, 2, 3], [150, 130, 120])
    z, _ = rolling_zscore(x, groups, 30, 10, 3.0)
    ref = np.array(slow_zscore(list(x), list(groups), 30, 10, 3.0))
    np.testing.assert_allclose(z, ref, rtol=1e-12, atol=1e-12)
    assert np.all(z[130:150] == 0.0)
    assert np.isnan(z[150:159]).all()  # a new group starts from scratch


# --- sessions and rolls -------------------------------------------------------------------------------


def test_session_state_resets_at_17_ct() -> None:
    """Day 2 of the same instrument: every session-local transform equals day 2 computed alone."""
    d1, d2 = toy_bars(dt.date(2024, 3, 12)), toy_bars(dt.date(2024, 3, 13), scale=1.3)
    both, alone = pl.concat([d1, d2]), d2
    raw = raw_catalog()
    session_local = FeatureSet(
        "local", "", tuple(f for f in raw.all_features().features if f.transform != "hmm_regime"), None
    )
    a = compute_features(both, session_local).filter(pl.col("trade_date") == d2["trade_date"][0])
    b = compute_features(alone, session_local)
    assert_frame_equal(a, b)


def test_windows_never_mix_instruments(planted: pl.DataFrame, planted_model: Any) -> None:
    """Roll: day 3 relabelled as a new contract -> its rows equal day 3 computed alone (z-scores refill)."""
    rolled = planted.with_columns(
        instrument_id=pl.when(pl.col("trade_date") == DAYS[1]).then(99).otherwise(pl.col("instrument_id"))
    )
    _, regimes = regimes_for(rolled, model=planted_model)
    both = compute_features(rolled, CATALOG, regimes).filter(pl.col("instrument_id") == 99)
    day3 = rolled.filter(pl.col("instrument_id") == 99)
    alone = compute_features(day3, CATALOG, regimes_for(day3, model=planted_model)[1])
    assert_frame_equal(both, alone)
    assert both["volume_zscore"][:238].null_count() == 238  # min_periods 240: nothing borrowed from 42005347
    assert not both["warm"][:239].any()


# --- no look-ahead ------------------------------------------------------------------------------------

CUT = dt.datetime(2024, 3, 12, 15, 7, tzinfo=dt.UTC)  # 10:07 CDT on trade date 2024-03-12, mid-session


def scramble_future(bars: pl.DataFrame, cut: dt.datetime) -> pl.DataFrame:
    """Reverse every value column over the rows after `cut` (ids and timestamps kept)."""
    keep = {"ts", "trade_date", "instrument_id", "symbol", "in_session"}
    past = bars.filter(pl.col("ts") <= cut)
    future = bars.filter(pl.col("ts") > cut)
    future = future.with_columns(pl.col(c).reverse() for c in future.columns if c not in keep)
    return pl.concat([past, future])


@pytest.fixture(scope="module")
def lookahead_runs(planted: pl.DataFrame, planted_model: Any) -> dict[str, pl.DataFrame]:
    runs = {}
    for name, bars in {
        "base": planted,
        "scrambled": scramble_future(planted, CUT),
        "deleted": planted.filter(pl.col("ts") <= CUT),
    }.items():
        runs[name] = compute_features(bars, CATALOG, regimes_for(bars, model=planted_model)[1])
    return runs


@pytest.mark.parametrize("column", [*ALL_COLUMNS, "warm"])
def test_no_lookahead(column: str, lookahead_runs: dict[str, pl.DataFrame]) -> None:
    base = lookahead_runs["base"]
    past = base.filter(pl.col("ts") <= CUT)
    assert past.filter(pl.col("trade_date") == dt.date(2024, 3, 12)).height > 900
    for name in ("scrambled", "deleted"):
        other = lookahead_runs[name].filter(pl.col("ts") <= CUT)
        assert_frame_equal(past.select("ts", column), other.select("ts", column), check_exact=True)
    if not column.startswith("time_"):  # the scramble does reach the future values (test not vacuous)
        after = base.filter(pl.col("ts") > CUT).select(column).to_series()
        changed = lookahead_runs["scrambled"].filter(pl.col("ts") > CUT).select(column).to_series()
        assert not after.equals(changed)


# --- partitions ---------------------------------------------------------------------------------------


def test_warmup_start_shipped_catalog() -> None:
    assert warmup_trade_days(CATALOG) == 4  # ceil(1380 / 600) + 1 holiday
    assert warmup_start(dt.date(2024, 4, 1), CATALOG) == dt.date(2024, 3, 26)  # 4 weekdays before Mon 1 Apr


def test_partition_with_warmup_equals_longer_run(planted: pl.DataFrame, planted_model: Any) -> None:
    features_doc, sets_doc = copy.deepcopy(load_documents())
    features_doc["defaults"]["normalise"]["1m"].update(window=500, min_periods=100)
    features_doc["defaults"]["normalise"]["15m"].update(window=30, min_periods=8)
    catalog = parse_catalog(features_doc, sets_doc)
    last = DAYS[1]
    start = warmup_start(last, catalog, holiday_margin_days=0)
    assert start == dt.date(2024, 3, 12)  # one session of >= 600 bars covers a 500-bar window

    def run(bars: pl.DataFrame) -> pl.DataFrame:
        out = compute_features(bars, catalog, regimes_for(bars, catalog, planted_model)[1])
        return out.filter(pl.col("trade_date") == last)

    longer = run(planted)
    partition = run(planted.filter(pl.col("trade_date") >= start))
    assert_frame_equal(longer, partition, check_exact=True)
    assert longer["warm"].mean() > 0.9
    alone = run(planted.filter(pl.col("trade_date") == last))  # without warm-up: different
    assert not alone.equals(longer)


def _with_holes(bars: pl.DataFrame) -> pl.DataFrame:
    """Missing inputs and missing minutes, as real feeds have: nulls in some columns, 20 bars deleted."""
    rng = np.random.default_rng(5)
    n = bars.height
    holes = {c: pl.Series(rng.random(n) < 0.03) for c in ("ofi_l1", "close", "high", "microprice_dev_ticks_mean")}
    out = bars.with_columns(pl.when(holes[c]).then(None).otherwise(pl.col(c)).alias(c) for c in holes)
    return out.filter(~pl.Series(np.isin(np.arange(n), rng.choice(n, 20, replace=False))))


@pytest.mark.parametrize("holes", [False, True], ids=["clean", "nulls and gaps"])
def test_kernel_equals_the_polars_reference(planted: pl.DataFrame, holes: bool) -> None:
    """Every bar feature and its warm flag against the transforms written as polars expressions (an independent
    implementation), three sessions of the planted day with a roll on the third."""
    bars = planted.with_columns(
        instrument_id=pl.when(pl.col("trade_date") == DAYS[1]).then(7).otherwise(pl.col("instrument_id"))
    )
    bars = _with_holes(bars) if holes else bars
    fset = FeatureSet("bars", "", tuple(bar_features(CATALOG.all_features())), None)
    ours = compute_features(bars, fset)
    ref = reference_features(bars, fset)
    assert ours.height == ref.height > 4000
    for d in fset.features:
        a, b = ours[d.name].to_numpy(), ref[d.name].cast(pl.Float64).fill_nan(None).to_numpy()
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12, err_msg=d.name)
        assert (ours[d.name].is_null() == ref[d.name].fill_nan(None).is_null()).all(), d.name
        one = compute_features(bars, FeatureSet(d.name, "", (d,), None))["warm"]  # the feature's own flag
        assert one.equals(ref[f"_warm_{d.name}"], check_names=False), d.name
    assert ours["warm"].equals(ref.select(pl.all_horizontal(pl.col("^_warm_.*$"))).to_series(), check_names=False)


def test_kernel_windows_that_are_not_a_multiple_of_the_timeframe(planted: pl.DataFrame) -> None:
    """A 20-minute window on 15m bars holds two of them ((t - 20m, t]), a 7-minute one on 1m bars seven; and a
    z-score with span_sessions: false."""
    import dataclasses

    base = CATALOG.features
    defs = (
        dataclasses.replace(base["ofi_persistence_15m_zscore"], params={"window_minutes": 20}),
        dataclasses.replace(base["atr_15m_zscore"], params={"window_minutes": 50}),
        dataclasses.replace(base["ofi_3min_cumulative_zscore"], params={"window_minutes": 7}),
        dataclasses.replace(  # a z-score that restarts every session
            base["volume_zscore"], normalise=dataclasses.replace(base["volume_zscore"].normalise, span_sessions=False)
        ),
    )
    fset = FeatureSet("odd", "", defs, None)
    ours, ref = compute_features(planted, fset), reference_features(planted, fset)
    for d in defs:
        np.testing.assert_allclose(ours[d.name].to_numpy(), ref[d.name].to_numpy(), rtol=1e-9, err_msg=d.name)


def test_kernel_fed_bar_by_bar_equals_one_call(planted: pl.DataFrame) -> None:
    """The live path feeds its history, then one closed bar at a time: the same values bit for bit, 15m context
    and z-scores spanning sessions included."""
    f = session_bars(planted)
    defs = bar_features(CATALOG.all_features())
    whole_v, whole_w = FeatureKernel(defs).run(f)
    kernel, parts = FeatureKernel(defs), []
    rng = np.random.default_rng(2)
    i = 0
    while i < f.height:
        step = 1 if i > f.height - 300 else int(rng.integers(1, 700))
        parts.append(kernel.run(f.slice(i, step)))
        i += step
    np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), whole_v)
    np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), whole_w)
    assert np.isfinite(whole_v[-300:]).mean() > 0.9


# --- the planted edge ---------------------------------------------------------------------------------


def test_ofi_predicts_next_return_only_when_planted(planted: pl.DataFrame, tmp_path: Path) -> None:
    probe = FeatureSet("probe", "", (CATALOG.features["ofi_1min_zscore"],), None)
    later = pl.col("trade_date") > DAYS[0]
    edge = predictive_figures(compute_features(planted, probe).filter(later), planted)
    null_bars = synthetic_bars(tmp_path, 0.0)
    none = predictive_figures(compute_features(null_bars, probe).filter(later), null_bars)
    key = "spearman_next_return/ofi_1min_zscore"
    assert edge["n_pairs"] > 2000 and none["n_pairs"] > 2000
    assert edge[key] > 0.1, edge
    assert abs(none[key]) < 0.06, none
