"""Issue 24 item 9 on a scripted roll: paper and the env flatten the old contract from the same roll calendar
(third Friday: 2024-03-15), paper counts positions per instrument, and a feed that changes contract off the
calendar gets the old contract flattened by a journaled roll order, never netted against the new one."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from feature_specs import load_catalog
from phoenix_assets.lib.features.compute import compute_features
from phoenix_assets.lib.features.hmm_regimes import filter_regimes, fit_regime_model
from phoenix_assets.lib.io.lake import Lake
from phoenix_assets.lib.market.bars import ofi_bars_1m, seconds_frame
from phoenix_assets.lib.market.book_kernel import BookArrays, book_ofi_1s
from phoenix_assets.lib.market.live_bars import LiveBars, LiveFeatures
from phoenix_assets.lib.synthetic.market import write_day
from phoenix_rl.config import EnvConfig
from phoenix_rl.env.fills import FillConfig
from phoenix_rl.env.trading_env import MnqTradingEnv
from phoenix_rl.live.journal import OrderJournal
from phoenix_rl.live.nautilus.venue import PaperVenue
from phoenix_rl.live.risk import RiskEngine
from phoenix_rl.live.trader import PaperTrader
from tests.rl.live.test_trader import MARKET, RISK, _records

ROLL = dataclasses.replace(MARKET, roll_date=dt.date(2024, 3, 15))
DAYS = [dt.date(2024, 3, d) for d in (12, 13, 14, 15)]


def always_long(obs: dict[str, np.ndarray]) -> float:
    return 1.0


def _trade(records: BookArrays, bars: pl.DataFrame, tmp: Path, name: str) -> tuple[PaperTrader, pl.DataFrame]:
    catalog = load_catalog()
    model = fit_regime_model(bars, catalog.hmm, DAYS[0], DAYS[1])
    cfg = EnvConfig(feature_columns=tuple(catalog.sets["phase2_ofi"].columns), lookback=4, trade_only_warm=False)
    lake = Lake(str(tmp / name))
    venue = PaperVenue(capital_usd=10_000.0, fill=FillConfig.from_env(cfg))
    trader = PaperTrader(
        policy=always_long, env_config=cfg, bars=LiveBars(symbol="MNQ.v.0"),
        features=LiveFeatures(bars.filter(pl.col("trade_date") < DAYS[2]), catalog, model), venue=venue,
        risk=RiskEngine(RISK), journal=OrderJournal(lake), strategy="long", session_id="t", capital_usd=10_000.0,
    )  # fmt: skip
    trader.on_records(records)
    trader.close()
    venue.close()
    return trader, lake.scan("paper_orders").sort("bar_ts").collect()


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("roll")
    records = {d: _records(write_day(d, tmp / "landing", ROLL)) for d in DAYS}
    bars = pl.concat([ofi_bars_1m(seconds_frame(book_ofi_1s(iter([records[d]]))), symbol="MNQ.v.0") for d in DAYS])
    # the roll eve's last two hours and the roll date's first two: one stream through one trader
    eve, day = records[DAYS[2]], records[DAYS[3]]
    t_eve, t_day = eve.ts_recv.astype(np.int64), day.ts_recv.astype(np.int64)
    eve = eve.slice(int(np.searchsorted(t_eve, t_eve[-1] - 2 * 3600 * 10**9)), len(t_eve))
    day = day.slice(0, int(np.searchsorted(t_day, t_day[0] + 3 * 3600 * 10**9)))
    stream = BookArrays(*(np.concatenate([a, b]) for a, b in zip(eve, day, strict=True)))
    return {"tmp": tmp, "bars": bars, "stream": stream, "eve": eve, "day": day}


@pytest.mark.slow
def test_paper_flattens_the_old_contract_at_the_calendar_roll_like_the_env(market: dict) -> None:
    trader, orders = _trade(market["stream"], market["bars"], market["tmp"], "calendar")
    old, new = int(market["eve"].instrument_id[0]), int(market["day"].instrument_id[0])
    assert old != new
    by_instrument = dict(orders.group_by("instrument_id").agg(pl.col("quantity").sum()).iter_rows())
    assert by_instrument == {old: 0, new: 0}  # flat in each contract at the end
    first_new = orders.filter(pl.col("instrument_id") == new)["bar_ts"].min()
    assert (orders.filter(pl.col("instrument_id") == old)["bar_ts"] < first_new).all()
    assert not orders["reason"].str.starts_with("roll").any()  # the calendar flattened it: nothing was left
    assert trader.positions == {old: 0, new: 0}
    # the env on the same bars, from the calendar, is flat over the roll too: its last old-contract bar flat
    bars = market["bars"].filter(pl.col("trade_date").is_in(DAYS[2:]))
    catalog = load_catalog()
    model = fit_regime_model(market["bars"], catalog.hmm, DAYS[0], DAYS[1])
    feats = compute_features(market["bars"], catalog, filter_regimes(model, market["bars"], catalog.hmm))
    feats = feats.filter(pl.col("trade_date").is_in(DAYS[2:]))
    assert bars.height and feats.height
    cfg = EnvConfig(feature_columns=tuple(catalog.sets["phase2_ofi"].columns), lookback=4, trade_only_warm=False)
    env = MnqTradingEnv(feats, cfg)
    iid = feats["instrument_id"].to_numpy()
    last_old = int(np.flatnonzero(iid == old)[-1])
    assert env._flat_next[last_old - 1] and env._flat_next[last_old]


@pytest.mark.slow
def test_a_feed_off_the_calendar_gets_the_old_contract_flattened_by_a_roll_order(market: dict) -> None:
    """The same stream with the roll date's contract id on the eve's last hour too (a feed rolling off the
    calendar, mid-session): the position in the old contract is not netted against the new one."""
    stream = market["stream"]
    ts = stream.ts_recv.astype(np.int64)
    eve_end = len(market["eve"].ts_recv)
    minute = 60 * 10**9
    cut = int(np.searchsorted(ts[:eve_end], (ts[eve_end - 1] - 3600 * 10**9) // minute * minute))  # a minute's start
    iid = np.array(stream.instrument_id, copy=True)
    iid[cut:eve_end] = market["day"].instrument_id[0]
    off = stream._replace(instrument_id=iid)
    _, orders = _trade(off, market["bars"], market["tmp"], "off_calendar")
    roll = orders.filter(pl.col("reason").str.starts_with("roll"))
    assert roll.height == 1 and roll["instrument_id"][0] == int(market["eve"].instrument_id[0])
    assert roll["quantity"][0] == -1  # the old contract's long, flattened in the old contract
    new_orders = orders.filter(pl.col("instrument_id") == int(market["day"].instrument_id[0]))
    assert new_orders["quantity"][0] == 1  # the new contract starts from its own (flat) position
