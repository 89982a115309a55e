"""Live trading on a real NautilusTrader `TradingNode` with the Sandbox exec client, replaying a synthetic MNQ
day: records -> the paper loop's bars, features, policy and risk engine -> the journal -> the node -> fills.

The paper loop (`PaperVenue`, a streaming BacktestEngine) is the reference: both venues are Nautilus's
`SimulatedExchange` on the same L2 books, orders go out after the bar-closing record, so orders, fills and
positions must agree exactly."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from nautilus_trader.model.enums import OrderSide
from nautilus_trader.model.enums import TradingState as NautilusTradingState
from nautilus_trader.model.objects import Quantity
from nautilus_trader.trading.config import StrategyConfig
from nautilus_trader.trading.strategy import Strategy

from phoenix_assets.lib import calendar as cal
from phoenix_assets.lib.io.lake import Lake
from phoenix_assets.lib.market.live_bars import LiveBars, LiveFeatures
from phoenix_rl.config import EnvConfig
from phoenix_rl.env.fills import FillConfig
from phoenix_rl.live.journal import OrderJournal
from phoenix_rl.live.nautilus.venue import PaperVenue
from phoenix_rl.live.node.config import LiveSettings
from phoenix_rl.live.node.runner import LiveSession, NodeVenue, build_node, sandbox_instrument_id
from phoenix_rl.live.node.strategy import NodeRiskEngine
from phoenix_rl.live.node.wal import WalJournal
from phoenix_rl.live.risk import RiskConfig
from phoenix_rl.live.trader import PaperTrader
from tests.conftest import REPO
from tests.rl.live.test_trader import LIVE_DAY, _previous_day, die_on_send, follow_ofi

pytestmark = pytest.mark.slow  # a day's first hour through the node: ~10-20 s each

RISK = RiskConfig(max_position=1, max_data_age_s=120.0, max_feed_gap_s=900.0, latency_budget_ms=6e4)
MINUTE_NS = 60_000_000_000


class ManualTrader(Strategy):
    """Someone else's order in the same account (a fill the journal knows nothing of)."""

    def __init__(self) -> None:
        super().__init__(StrategyConfig(strategy_id="MANUAL-001"))

    def buy(self, nid: object, contracts: int) -> None:
        self.submit_order(self.order_factory.market(nid, OrderSide.BUY, Quantity.from_int(contracts)))


def run_day(
    root: str,
    landing: str,
    *,
    venue_kind: str = "node",
    minutes: int = 45,
    crash_on_send: int | None = None,
    kill_at_minute: int | None = None,
    manual_at_minute: int | None = None,
    journal_kind: str = "delta",
    latency_ms: float | None = None,
    actions: dict[int, Callable[[LiveSession], None]] | None = None,
    settings: LiveSettings | None = None,
) -> dict:
    """The first `minutes` of the live day for strategy "node" on the node (or the paper venue); crash_on_send=k
    SIGKILLs the process on the k-th order after its journal commit and before the node has it."""
    records, bars, catalog, model = _previous_day(Path(landing))
    live = records[LIVE_DAY]
    ts = live.ts_recv.astype(np.int64)
    open_ns = cal.session_open_ns(LIVE_DAY)
    live = live.slice(0, int(np.searchsorted(ts, open_ns + minutes * MINUTE_NS)))
    cfg = EnvConfig(feature_columns=tuple(catalog.sets["phase2_ofi"].columns), lookback=4, trade_only_warm=False)
    fill = (
        FillConfig.from_env(cfg)
        if latency_ms is None
        else FillConfig.from_env(replace(cfg, fill_latency_ms=latency_ms))
    )
    journal = WalJournal(Lake(root), "node") if journal_kind == "wal" else OrderJournal(Lake(root))
    settings = settings or LiveSettings()
    manual = ManualTrader()
    if venue_kind == "node":
        node, strategy = build_node(settings, strategy="node", capital_usd=10_000.0, fill=fill, log_level="ERROR")
        node.trader.add_strategy(manual)
        venue = NodeVenue(node, strategy, latency_ns=fill.latency_ns)
        venue.start(np.unique(live.instrument_id).tolist())
    else:
        venue = PaperVenue(capital_usd=10_000.0, fill=fill)
    if crash_on_send is not None:
        die_on_send(venue, crash_on_send)
    trader = PaperTrader(
        policy=follow_ofi,
        env_config=cfg,
        bars=LiveBars(symbol="MNQ.v.0"),
        features=LiveFeatures(bars, catalog, model),
        venue=venue,  # type: ignore[arg-type]
        risk=NodeRiskEngine(RISK),
        journal=journal,
        strategy="node",
        session_id=f"pid{os.getpid()}",
        capital_usd=10_000.0,
    )
    session = LiveSession(trader, venue, settings, journal) if venue_kind == "node" else None
    feed = session.on_records if session is not None else trader.on_records
    out: dict = {}
    todo = dict(actions or {})
    if kill_at_minute is not None:

        def kill(session: LiveSession) -> None:
            out["position_at_kill"] = session.trader.position
            session.kill_switch("test")

        todo[kill_at_minute] = kill
    if manual_at_minute is not None:

        def someone_buys(session: LiveSession) -> None:
            manual.buy(sandbox_instrument_id(int(live.instrument_id[0])), 2)
            session.venue.step()

        todo[manual_at_minute] = someone_buys
    at = {int(np.searchsorted(live.ts_recv.astype(np.int64), open_ns + m * MINUTE_NS)): f for m, f in todo.items()}
    cuts = sorted({0, len(live.ts_recv), *at})
    for a, b in itertools.pairwise(cuts):
        for start in range(a, b, 2_000):  # chunks of a live feed's shape
            feed(live.slice(start, min(start + 2_000, b)))
        if session is not None and b in at:
            at[b](session)
    (session or trader).close()
    if session is not None:
        out["net_position"] = venue.net_position(int(live.instrument_id[-1]))
        out["faults"] = list(session.faults)
    venue.close()
    if isinstance(journal, WalJournal):
        journal.close()
    return out | {"trader": trader, "resent": trader.resent}


def _tables(root: str) -> dict[str, pl.DataFrame]:
    lake = Lake(root)
    return {
        "orders": lake.scan("paper_orders").select("client_order_id", "quantity").sort("client_order_id").collect(),
        "fills": lake.scan("paper_fills")
        .select("client_order_id", "quantity", "price", "commission_usd")
        .sort("client_order_id", "price", "quantity")  # an order walking two levels fills twice
        .collect(),
        "bars": lake.scan("paper_bars")
        .select("bar_ts", "target", "position", "drawdown_usd", "risk_state")
        .sort("bar_ts")
        .collect(),
    }


@pytest.fixture(scope="module", params=[0.0, 1500.0], ids=["latency0", "latency1500ms"])
def paper_and_node(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> dict:
    """The same day on the paper venue and on the node, with the fill model's latency 0 and 1.5 s (the thin feed
    has seconds between books: 1.5 s moves many orders to a later book)."""
    tmp = tmp_path_factory.mktemp("node")
    landing = str(tmp / "landing")
    paper = run_day(str(tmp / "paper"), landing, venue_kind="paper", latency_ms=request.param)
    node = run_day(str(tmp / "node"), landing, latency_ms=request.param)
    return {"paper": paper, "node": node, "paper_root": str(tmp / "paper"), "node_root": str(tmp / "node")}


def test_the_node_trades_the_paper_loops_orders_fills_and_positions(paper_and_node: dict) -> None:
    paper, node = _tables(paper_and_node["paper_root"]), _tables(paper_and_node["node_root"])
    assert node["orders"].height > 10  # follow_ofi flips often
    assert node["orders"].equals(paper["orders"])
    # the node's fills: one per order, in full, at the paper venue's prices (the same L2 book)
    assert node["fills"].equals(paper["fills"])
    assert node["bars"].equals(paper["bars"])
    journaled = node["fills"].group_by("client_order_id").agg(pl.col("quantity").sum())
    filled = node["orders"].join(journaled, on="client_order_id", how="left", suffix="_filled")
    assert (filled["quantity"] == filled["quantity_filled"]).all()  # every order, the end of the stream's too
    # the end of the stream's flattening order fills at the last book, the latency after it (`PaperTrader.close`):
    # the day ends flat at the venue, in the trader and in the journal's fills, on the paper venue as on the node
    assert paper_and_node["node"]["net_position"] == paper_and_node["node"]["trader"].position == 0
    assert paper_and_node["paper"]["trader"].position == 0 == node["fills"]["quantity"].sum()
    assert paper_and_node["node"]["faults"] == []


def test_the_kill_switch_cancels_and_closes_through_the_node_and_halts(tmp_path: Path) -> None:
    out = run_day(str(tmp_path / "lake"), str(tmp_path / "landing"), kill_at_minute=20, minutes=30)
    lake = Lake(str(tmp_path / "lake"))
    trader = out["trader"]
    assert out["position_at_kill"] != 0  # follow_ofi holds a contract at almost every bar
    assert trader.risk.state == "HALTED" and trader.risk.reason == "kill switch by test"
    orders = lake.scan("paper_orders").collect()
    kill = orders.filter(pl.col("reason") == "kill switch: flatten")
    assert kill["quantity"].to_list() == [-out["position_at_kill"]]  # close_all_positions' order, journaled
    fills = lake.scan("paper_fills").collect()
    assert (
        fills.filter(pl.col("client_order_id") == kill["client_order_id"][0])["quantity"].sum()
        == -out["position_at_kill"]
    )
    assert fills["quantity"].sum() == 0 == out["net_position"] == trader.position
    bars = lake.scan("paper_bars").sort("bar_ts").collect()
    after = bars.filter(pl.col("bar_ts").dt.epoch("ns") >= cal.session_open_ns(LIVE_DAY) + 20 * MINUTE_NS)
    assert after.height > 5 and (after["position"] == 0).all() and (after["risk_state"] == "HALTED").all()
    events = lake.scan("paper_risk_events").collect()
    assert events["state"].to_list() == ["HALTED"]


def test_someone_elses_position_in_the_account_allows_only_exits_and_names_the_difference(tmp_path: Path) -> None:
    """Another strategy buys 2 contracts in the account at minute 15: the venue's position is no longer the
    journal's, but Phoenix's own at the venue still is. REDUCING with the venue's, Phoenix's and the journal's
    positions and the orders in flight in the reason, journaled once; Phoenix only exits from then on and ends
    flat, the 2 unknown contracts are left to a person."""
    # the thin synthetic feed comes in 2,000-record chunks (hours); a cut at minute 16 checks there, as a live feed's
    # small batches would
    out = run_day(str(tmp_path / "lake"), str(tmp_path / "landing"), manual_at_minute=15, minutes=25,
                  actions={16: lambda session: None})  # fmt: skip
    trader = out["trader"]
    assert trader.risk.state == "REDUCING"
    reason = trader.risk.reason
    assert reason.startswith("broker: position_mismatch: the venue holds ") and "the journal's fills" in reason
    assert "from Phoenix's orders" in reason and "in flight: journal" in reason
    assert reason.endswith("-> exits only; the other position is left to a person")
    lake = Lake(str(tmp_path / "lake"))
    events = lake.scan("paper_risk_events").collect()
    assert events["state"].to_list() == ["REDUCING"] and events["reason"][0] == reason
    assert trader.position == 0 and out["net_position"] == 2  # Phoenix flat; the unknown 2 contracts remain
    assert [f.kind for _, f, _ in out["faults"]] == ["position_mismatch"]
    bars = lake.scan("paper_bars").sort("bar_ts").collect()
    after = bars.filter(pl.col("risk_state") == "REDUCING")
    assert after.height > 5 and (after["position"].abs().diff().drop_nulls() <= 0).all()  # only towards flat


def test_a_fill_the_journal_lost_halts_and_flattens_what_the_venue_says_phoenix_holds(tmp_path: Path) -> None:
    """From minute 15 the journal misses one fill of Phoenix's own orders: Phoenix's position at the venue is not
    the journal's, so the risk limits, marked on the journal's fills, watch the wrong position. HALTED (not
    REDUCING), the difference named, and the kill switch closes what the venue says Phoenix holds: the account
    ends flat."""
    lost: list = []

    def journal_loses_a_fill(session: LiveSession) -> None:
        drain = session.venue.strategy.drain_fills

        def drain_losing_one() -> list:
            fills = drain()
            if fills and not lost:
                lost.append(fills.pop(0))
            return fills

        session.venue.strategy.drain_fills = drain_losing_one  # type: ignore[method-assign]

    out = run_day(str(tmp_path / "lake"), str(tmp_path / "landing"), minutes=25, actions={15: journal_loses_a_fill})
    trader = out["trader"]
    assert lost and trader.risk.state == "HALTED"
    assert trader.risk.reason.startswith("kill switch by position mismatch (the venue holds ")
    assert [f.kind for _, f, _ in out["faults"]] == ["position_mismatch"]
    events = Lake(str(tmp_path / "lake")).scan("paper_risk_events").sort("ts").collect()
    assert events["state"].to_list() == ["HALTED"] and events["reason"][0] == trader.risk.reason
    assert out["net_position"] == 0  # the venue's Phoenix position closed


@pytest.mark.parametrize("journal_kind", ["delta", "wal"])
def test_a_crash_between_journal_and_send_resumes_on_the_node_without_a_duplicate(
    tmp_path: Path, journal_kind: str
) -> None:
    """kill -9 after the 6th order's journal write, before the node has it; the restarted node replays the day:
    the journal ends equal to an uninterrupted node run's, each order and fill once. With the write-ahead journal
    the rows the dead process had only logged reach Delta when the next session opens the journal."""
    landing = str(tmp_path / "landing")
    run_day(str(tmp_path / "clean"), landing, minutes=30)
    crashed = str(tmp_path / "crashed")
    script = (
        "from tests.rl.live.node.test_live_node import run_day; "
        f"run_day({crashed!r}, {landing!r}, minutes=30, crash_on_send=6, journal_kind={journal_kind!r})"
    )
    killed = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    if journal_kind == "wal":
        WalJournal(Lake(crashed), "node").close()  # what the next session does first: the log into Delta
    assert OrderJournal(Lake(crashed)).unfilled_orders().height == 1  # journaled, never sent
    restarted = run_day(crashed, landing, minutes=30, journal_kind=journal_kind)
    assert restarted["resent"] == 6  # the journal's orders, not journaled twice
    want, got = _tables(str(tmp_path / "clean")), _tables(crashed)
    assert want["orders"].height > 6 and got["orders"].equals(want["orders"])
    assert got["fills"].equals(want["fills"])
    assert restarted["net_position"] == 0 == restarted["trader"].position


def test_an_order_nautilus_denies_is_void_and_leaves_only_exits(tmp_path: Path) -> None:
    """Nautilus's own RiskEngine halts at minute 10 (as a broker refusing orders would): the next order is
    denied, its contracts leave the in-flight count, the strategy goes REDUCING with the order named; the venue
    and the journal agree on the position throughout, and after Nautilus resumes only exits go out."""

    def nautilus_halts(session: LiveSession) -> None:
        session.venue.node.kernel.risk_engine.set_trading_state(NautilusTradingState.HALTED)

    def nautilus_resumes(session: LiveSession) -> None:
        session.venue.node.kernel.risk_engine.set_trading_state(NautilusTradingState.ACTIVE)

    out = run_day(str(tmp_path / "lake"), str(tmp_path / "landing"), minutes=25,
                  actions={10: nautilus_halts, 12: nautilus_resumes})  # fmt: skip
    trader, faults = out["trader"], out["faults"]
    assert faults and {f.kind for _, f, _ in faults} == {"denied"}
    first = faults[0][1]
    assert first.unfilled != 0 and first.detail.endswith("TradingState.HALTED")
    assert trader.risk.state == "REDUCING"
    assert trader.risk.reason.startswith(
        f"broker: denied {faults[-1][1].client_order_id}: denied by Nautilus's RiskEngine"
    )
    lake = Lake(str(tmp_path / "lake"))
    events = lake.scan("paper_risk_events").collect()
    assert (events["state"] == "REDUCING").all() and events.height == len(faults)  # one row per fault
    orders = lake.scan("paper_orders").collect()
    unfilled = OrderJournal(lake).unfilled_orders()
    assert sorted(unfilled["client_order_id"]) == sorted(f.client_order_id for _, f, _ in faults)
    assert out["net_position"] == trader.position  # the venue holds what the journal's fills say
    bars = lake.scan("paper_bars").sort("bar_ts").collect()
    after = bars.filter(pl.col("risk_state") == "REDUCING")
    assert after.height > 5 and (after["position"].abs().diff().drop_nulls() <= 0).all()  # only towards flat
    assert orders.height > len(faults)


def test_a_disconnect_allows_only_exits_and_halts_after_max_disconnect(tmp_path: Path) -> None:
    """The exec client drops at minute 8 and is back at minute 11: REDUCING at once (exits only), HALTED once it
    has been away longer than max_disconnect_s (60 s), and the reconnect's position check finds the venue and the
    journal agreeing."""
    out = run_day(str(tmp_path / "lake"), str(tmp_path / "landing"), minutes=20,
                  actions={8: LiveSession.on_disconnect, 11: LiveSession.on_reconnect})  # fmt: skip
    trader, faults = out["trader"], out["faults"]
    assert [f.kind for _, f, _ in faults] == ["disconnected", "disconnected", "reconnected"]
    assert faults[1][1].detail == "still disconnected after 60 s" and faults[2][1].detail == "no difference"
    events = Lake(str(tmp_path / "lake")).scan("paper_risk_events").sort("ts").collect()
    assert events["state"].to_list() == ["REDUCING", "HALTED", "HALTED"]
    assert events["reason"][0] == "broker: disconnected: exec client disconnected -> orders held"
    assert out["net_position"] == trader.position == 0


def test_an_order_decided_while_disconnected_goes_out_with_its_id_after_the_reconnect(tmp_path: Path) -> None:
    """The link drops right as an order is handed over (minute 8's next decision): the order waits, journaled;
    after the reconnect (minute 12) it goes out under its journaled client order id and fills at a book after
    the reconnect; nothing is sent twice."""
    held: dict = {}

    def drop_on_next_order(session: LiveSession) -> None:
        venue, submit = session.venue, session.venue.submit

        def submit_then_drop(iid: int, quantity: int, coid: str) -> None:
            submit(iid, quantity, coid)
            if "coid" not in held:
                held["coid"] = coid
                session.on_disconnect()

        venue.submit = submit_then_drop  # type: ignore[method-assign]

    def back(session: LiveSession) -> None:
        held["pending"] = [p[2] for p in session.venue._pending]
        held["at"] = session.venue.now_ns
        session.on_reconnect()

    out = run_day(str(tmp_path / "lake"), str(tmp_path / "landing"), minutes=20,
                  actions={8: drop_on_next_order, 12: back}, settings=LiveSettings(max_disconnect_s=3600))  # fmt: skip
    assert held["pending"] == [held["coid"]]  # decided before the drop, held
    assert [f.kind for _, f, _ in out["faults"]] == ["disconnected", "reconnected"]
    lake = Lake(str(tmp_path / "lake"))
    fills = lake.scan("paper_fills").filter(pl.col("client_order_id") == held["coid"]).collect()
    assert fills.height >= 1 and (fills["ts"].dt.epoch("ns") >= held["at"]).all()
    orders = lake.scan("paper_orders").collect()
    assert orders["client_order_id"].n_unique() == orders.height
    assert out["net_position"] == out["trader"].position == 0
