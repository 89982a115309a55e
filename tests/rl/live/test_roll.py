"""Issue 24 item 9 on a scripted roll: paper and the env flatten the old contract from the same roll calendar
(third Friday: 2024-03-15), paper counts positions per instrument, and a feed that changes contract off the
calendar gets the old contract flattened by a journaled roll order, never netted against the new one.

Issue 28: the same roll on a NautilusTrader `TradingNode` (Sandbox venue, `LiveSession`): the node starts with the
old contract only, takes on the new one when its first book arrives (checked against the env's contract), and
trades the paper loop's orders and fills, each contract flat at the venue after the roll."""

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
from phoenix_rl.live.node.config import LiveSettings
from phoenix_rl.live.node.runner import LiveSession, NodeVenue, build_node
from phoenix_rl.live.node.strategy import NodeRiskEngine
from phoenix_rl.live.risk import RiskEngine
from phoenix_rl.live.trader import PaperTrader
from tests.rl.live.test_trader import MARKET, RISK, _records

ROLL = dataclasses.replace(MARKET, roll_date=dt.date(2024, 3, 15))
DAYS = [dt.date(2024, 3, d) for d in (12, 13, 14, 15)]
# wall-clock latency never moves the risk state here: the paper venue and the node decide alike on a busy machine
ROLL_RISK = dataclasses.replace(RISK, latency_budget_ms=6e4)


def always_long(obs: dict[str, np.ndarray]) -> float:
    return 1.0


def _trade(
    records: BookArrays, bars: pl.DataFrame, tmp: Path, name: str, node: dict | None = None
) -> tuple[PaperTrader, pl.DataFrame]:
    """The stream through one trader on the paper venue, or with `node` (a dict the node's faults and the venue's
    net position per contract are put in) on a Sandbox `TradingNode` started with the stream's first contract only,
    fed in chunks of 500 records (the position check runs after each)."""
    catalog = load_catalog()
    model = fit_regime_model(bars, catalog.hmm, DAYS[0], DAYS[1])
    cfg = EnvConfig(feature_columns=tuple(catalog.sets["phase2_ofi"].columns), lookback=4, trade_only_warm=False)
    lake = Lake(str(tmp / name))
    fill = FillConfig.from_env(cfg)
    journal = OrderJournal(lake)
    if node is None:
        venue: PaperVenue | NodeVenue = PaperVenue(capital_usd=10_000.0, fill=fill)
    else:
        built, strategy = build_node(LiveSettings(), strategy="long", capital_usd=10_000.0, fill=fill)
        venue = NodeVenue(built, strategy, latency_ns=fill.latency_ns)
        venue.start([int(records.instrument_id[0])])  # the new contract joins at its first book: the roll
    trader = PaperTrader(
        policy=always_long, env_config=cfg, bars=LiveBars(symbol="MNQ.v.0"),
        features=LiveFeatures(bars.filter(pl.col("trade_date") < DAYS[2]), catalog, model), venue=venue,  # type: ignore[arg-type]
        risk=RiskEngine(ROLL_RISK) if node is None else NodeRiskEngine(ROLL_RISK), journal=journal, strategy="long",
        session_id="t", capital_usd=10_000.0,
    )  # fmt: skip
    if node is None:
        trader.on_records(records)
        trader.close()
    else:
        assert isinstance(venue, NodeVenue)
        session = LiveSession(trader, venue, LiveSettings(), journal)
        n = len(records.ts_recv)
        for start in range(0, n, 500):
            session.on_records(records.slice(start, min(start + 500, n)))
        session.close()
        node["faults"] = list(session.faults)
        node["net_position"] = {iid: venue.net_position(iid) for iid in np.unique(records.instrument_id).tolist()}
        node["instruments"] = {str(i.id): (float(i.multiplier), float(i.price_increment)) for i in venue.registered()}
    venue.close()
    return trader, lake.scan("paper_orders").sort("bar_ts").collect()


def _fills(tmp: Path, name: str) -> pl.DataFrame:
    return (
        Lake(str(tmp / name))
        .scan("paper_fills")
        .select("client_order_id", "instrument_id", "quantity", "price", "commission_usd")
        .sort("client_order_id", "price", "quantity")
        .collect()
    )


def roll_market(tmp: Path) -> dict:
    """The roll eve's last two hours and the roll date's first three, as one stream, and the four days' bars."""
    records = {d: _records(write_day(d, tmp / "landing", ROLL)) for d in DAYS}
    bars = pl.concat([ofi_bars_1m(seconds_frame(book_ofi_1s(iter([records[d]]))), symbol="MNQ.v.0") for d in DAYS])
    # the roll eve's last two hours and the roll date's first two: one stream through one trader
    eve, day = records[DAYS[2]], records[DAYS[3]]
    t_eve, t_day = eve.ts_recv.astype(np.int64), day.ts_recv.astype(np.int64)
    eve = eve.slice(int(np.searchsorted(t_eve, t_eve[-1] - 2 * 3600 * 10**9)), len(t_eve))
    day = day.slice(0, int(np.searchsorted(t_day, t_day[0] + 3 * 3600 * 10**9)))
    stream = BookArrays(*(np.concatenate([a, b]) for a, b in zip(eve, day, strict=True)))
    return {"tmp": tmp, "bars": bars, "stream": stream, "eve": eve, "day": day}


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return roll_market(tmp_path_factory.mktemp("roll"))


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
    _, orders = _trade(_off_calendar(market), market["bars"], market["tmp"], "off_calendar")
    roll = orders.filter(pl.col("reason").str.starts_with("roll"))
    assert roll.height == 1 and roll["instrument_id"][0] == int(market["eve"].instrument_id[0])
    assert roll["quantity"][0] == -1  # the old contract's long, flattened in the old contract
    new_orders = orders.filter(pl.col("instrument_id") == int(market["day"].instrument_id[0]))
    assert new_orders["quantity"][0] == 1  # the new contract starts from its own (flat) position


def _off_calendar(market: dict) -> BookArrays:
    """The stream with the roll date's contract id on the eve's last hour too, from a minute's start."""
    stream = market["stream"]
    ts = stream.ts_recv.astype(np.int64)
    eve_end = len(market["eve"].ts_recv)
    minute = 60 * 10**9
    cut = int(np.searchsorted(ts[:eve_end], (ts[eve_end - 1] - 3600 * 10**9) // minute * minute))  # a minute's start
    iid = np.array(stream.instrument_id, copy=True)
    iid[cut:eve_end] = market["day"].instrument_id[0]
    return stream._replace(instrument_id=iid)


@pytest.mark.slow
@pytest.mark.parametrize("calendar", [True, False], ids=["calendar", "off_calendar"])
def test_the_node_flattens_the_old_contract_and_trades_the_new_one_as_paper_does(market: dict, calendar: bool) -> None:
    """The roll on a Sandbox `TradingNode`: the node starts with the old contract only and takes on the new one
    at its first book (multiplier and tick checked against the env's); its orders and fills are the paper loop's,
    the old contract's all before the new one's, and each contract ends flat at the venue and in the journal, with
    no position mismatch. Off the calendar, the old contract's long is closed by the journaled roll order on the
    node too (at that contract's last book: the feed no longer carries it)."""
    stream = market["stream"] if calendar else _off_calendar(market)
    name = "calendar" if calendar else "off_calendar"
    paper_trader, paper_orders = _trade(stream, market["bars"], market["tmp"], f"{name}_paper")
    node: dict = {}
    trader, orders = _trade(stream, market["bars"], market["tmp"], f"{name}_node", node=node)
    old, new = int(market["eve"].instrument_id[0]), int(market["day"].instrument_id[0])
    assert orders.select("client_order_id", "instrument_id", "quantity", "reason").equals(
        paper_orders.select("client_order_id", "instrument_id", "quantity", "reason")
    )
    fills = _fills(market["tmp"], f"{name}_node")
    assert fills.height >= orders.height and fills.equals(_fills(market["tmp"], f"{name}_paper"))
    assert dict(fills.group_by("instrument_id").agg(pl.col("quantity").sum()).iter_rows()) == {old: 0, new: 0}
    assert node["net_position"] == {old: 0, new: 0} and trader.positions == paper_trader.positions == {old: 0, new: 0}
    assert node["faults"] == []
    first_new = orders.filter(pl.col("instrument_id") == new)["bar_ts"].min()
    assert (orders.filter(pl.col("instrument_id") == old)["bar_ts"] <= first_new).all()
    assert set(node["instruments"].values()) == {(2.0, 0.25)} and len(node["instruments"]) == 2  # MNQ's, both
    roll = orders.filter(pl.col("reason").str.starts_with("roll"))
    if calendar:
        assert roll.is_empty()  # the calendar's forced flat left nothing in the old contract
    else:
        assert roll["instrument_id"].to_list() == [old] and roll["quantity"].to_list() == [-1]
        assert fills.filter(pl.col("client_order_id") == roll["client_order_id"][0])["quantity"].sum() == -1


@pytest.mark.slow
def test_the_node_refuses_a_contract_that_is_not_the_envs(tmp_path: Path) -> None:
    """The node's instrument and the env must be one contract (multiplier and tick): an env priced as NQ ($20 a
    point) on the node's MNQ is refused before any order, naming both."""
    cfg = EnvConfig(feature_columns=("f",), point_value=20.0)
    fill = FillConfig.from_env(cfg)
    built, strategy = build_node(LiveSettings(), strategy="nq", capital_usd=10_000.0, fill=fill)
    venue = NodeVenue(built, strategy)
    venue.start([42005347])
    try:
        trader = PaperTrader(
            policy=always_long, env_config=cfg, bars=LiveBars(symbol="MNQ.v.0"), features=None,  # type: ignore[arg-type]
            venue=venue, risk=NodeRiskEngine(dataclasses.replace(ROLL_RISK, point_value=20.0)),  # type: ignore[arg-type]
            journal=OrderJournal(Lake(str(tmp_path / "lake"))), strategy="nq", session_id="t", capital_usd=10_000.0,
        )  # fmt: skip
        with pytest.raises(
            ValueError, match=r"multiplier 2 and tick 0\.25, the env's contract \(EnvConfig\) 20 and 0\.25"
        ):
            LiveSession(trader, venue, LiveSettings(), trader.journal)
    finally:
        venue.close()
