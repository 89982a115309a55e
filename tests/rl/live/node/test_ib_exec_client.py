"""The Interactive Brokers venue of `./phoenix live` against a scripted IB Gateway (conftest: ibapi's `EClient`
without a socket, canned `EWrapper` callbacks, NautilusTrader's own test approach).

The node is Phoenix's: `runner.build_node` with `ib.exec_client`'s config, so the real IB factory builds the real
`InteractiveBrokersExecutionClient` and instrument provider (it loads MNQ Jun 2024 from the canned contract
details); `PhoenixStrategy` sends the orders and files the faults; `LiveSession` reacts and journals the risk
events. What the Gateway says is scripted per test: submit -> ack (openOrder / orderStatus Submitted) -> partial
fill -> fill (execDetails + commissionReport) -> cancel; rejection (error 201); an order never acknowledged; a
fill for an order nobody sent; IB's connectivity lost / restored (1100 / 1102) with reconciliation.

The node runs on its own loop, stepped by the test (`NodeVenue`'s way), and is stopped and disposed in the
fixture: each test takes well under a second.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from ibapi.order import Order as IBOrder
from nautilus_trader.model.enums import OrderStatus
from nautilus_trader.model.identifiers import ClientOrderId, InstrumentId

from phoenix_assets.lib.instrument import MNQ
from phoenix_assets.lib.io.lake import Lake
from phoenix_assets.lib.market.book_kernel import BookArrays
from phoenix_rl.env.fills import FillConfig
from phoenix_rl.live.journal import PAPER_RISK_EVENTS_TABLE, OrderJournal, scan_journal
from phoenix_rl.live.nautilus.venue import VenueFill
from phoenix_rl.live.node import ib
from phoenix_rl.live.node.config import IBSettings, LiveSettings
from phoenix_rl.live.node.runner import LiveSession, NodeVenue, build_node
from phoenix_rl.live.node.strategy import BrokerFault, NodeRiskEngine, PhoenixStrategy
from phoenix_rl.live.risk import RiskConfig, TradingState
from tests.rl.live.node.conftest import ACCOUNT, CONTRACT_MONTH, FakeGateway, Placed, mnq_contract

FILL = FillConfig(latency_ns=0, slippage_ticks=0.0, commission_per_side_usd=MNQ.commission_per_side_usd,
                  tick_size=MNQ.tick_size, point_value=MNQ.point_value)  # fmt: skip
SETTINGS = LiveSettings(venue="ib", ib=IBSettings(account_id=ACCOUNT, contract_month=CONTRACT_MONTH),
                        order_timeout_s=30.0, max_disconnect_s=60.0)  # fmt: skip
MNQ_IB = InstrumentId.from_str("MNQM4.CME")  # IB_SIMPLIFIED symbology of MNQ Jun 2024
DATABENTO_ID = 42  # the Databento instrument id of the traded contract, as the record stream names it
T0 = 1_710_426_600_000_000_000  # 2024-03-14 14:30 UTC
S = 1_000_000_000


@dataclass
class IBNode:
    """Phoenix's node on the IB exec client, started against the scripted Gateway."""

    gateway: FakeGateway
    venue: NodeVenue
    strategy: PhoenixStrategy
    connection: ib.IBConnection

    def settle(self) -> None:
        """Run the node's loop until the IB client's message-handler queue and the engines' queues are empty:
        each canned callback has become Nautilus events and the strategy has heard them."""
        client = self.connection.exec_client._client
        handler_queue = client._msg_handler_task_queue

        async def drained() -> None:
            idle = 0
            while idle < 3:
                await asyncio.sleep(0)  # callbacks are handed to the loop with call_soon_threadsafe
                await asyncio.wait_for(handler_queue.join(), 5)
                busy = handler_queue.qsize() or any(q() for q in self._engine_queues())
                idle = 0 if busy else idle + 1

        self.venue.loop.run_until_complete(drained())

    def _engine_queues(self) -> tuple:
        k = self.venue.node.kernel
        return (k.risk_engine.cmd_qsize, k.risk_engine.evt_qsize, k.exec_engine.cmd_qsize, k.exec_engine.evt_qsize)

    def send(self, coid: str, quantity: int, now_ns: int = T0) -> Placed:
        self.strategy.send(MNQ_IB, quantity, coid, now_ns)
        self.settle()
        return self.gateway.placed[-1]

    def status(self, coid: str) -> OrderStatus:
        return self.venue.node.cache.order(ClientOrderId(coid)).status


@pytest.fixture
def ib_node(ib_gateway: FakeGateway) -> Iterator[IBNode]:
    clients, factories = ib.exec_client(SETTINGS.ib)
    node, strategy = build_node(SETTINGS, strategy="ib", capital_usd=10_000.0, fill=FILL, exec_clients=clients,
                                exec_factories=factories, log_level="ERROR")  # fmt: skip
    venue = NodeVenue(node, strategy, instrument_of=lambda _iid: node.cache.instrument(MNQ_IB), feed_books=False,
                      venue="CME")  # fmt: skip
    venue.start([])
    try:
        yield IBNode(ib_gateway, venue, strategy, ib.IBConnection(node, strategy))
    finally:
        venue.close()
    assert not ib_gateway.unscripted, (
        f"the IB client asked the Gateway what the script does not answer: {ib_gateway.unscripted}"
    )


def test_the_ib_exec_client_connects_with_phoenixs_contract_and_account(ib_node: IBNode) -> None:
    instrument = ib_node.venue.node.cache.instrument(MNQ_IB)
    assert instrument is not None and instrument.expiration_ns > 0
    ib.check_instrument(instrument)  # IB's contract details are Phoenix's MNQ: tick 0.25, $2 a point
    assert ib_node.connection.exec_client.is_connected and ib_node.connection.connected
    assert str(ib_node.connection.exec_client.account_id) == f"{ib.IB_CLIENT}-{ACCOUNT}"


def test_submit_ack_partial_fill_fill(ib_node: IBNode) -> None:
    gw = ib_node.gateway
    gw.on_place = gw.ack
    placed = ib_node.send("ib:20240314T1430:decision", 2)
    order = placed.order
    assert (order.action, order.orderType, order.totalQuantity, order.account) == ("BUY", "MKT", Decimal(2), ACCOUNT)
    assert placed.ref == f"ib:20240314T1430:decision:{placed.order_id}"  # IB carries the journal's id
    sent = ib_node.strategy.sent["ib:20240314T1430:decision"]
    assert sent.acknowledged and ib_node.status("ib:20240314T1430:decision") is OrderStatus.ACCEPTED

    gw.fill(placed, 1, 18_000.25, commission=0.62, exec_id="e1")
    ib_node.settle()
    first = ib_node.strategy.drain_fills()
    assert [(f.client_order_id, f.trade_id, f.quantity, f.price) for f in first] == [
        ("ib:20240314T1430:decision", "e1", 1, 18_000.25)
    ]
    assert first[0].commission_usd == pytest.approx(MNQ.commission_per_side_usd)  # Phoenix's fee model, per side
    assert not sent.done and ib_node.status("ib:20240314T1430:decision") is OrderStatus.PARTIALLY_FILLED

    gw.fill(placed, 1, 18_000.50, exec_id="e2")
    ib_node.settle()
    assert [f.quantity for f in ib_node.strategy.drain_fills()] == [1]
    assert sent.done and sent.filled == 2 and ib_node.status("ib:20240314T1430:decision") is OrderStatus.FILLED
    assert ib_node.venue.node.portfolio.net_position(MNQ_IB) == 2
    assert not ib_node.strategy.drain_faults()


def test_a_fill_only_counts_once_its_commission_report_arrives(ib_node: IBNode) -> None:
    """IB sends execDetails and commissionReport as two messages; the fill is the pair."""
    gw = ib_node.gateway
    gw.on_place = gw.ack
    placed = ib_node.send("ib:c:decision", -1)
    gw.wrapper.execDetails(-1, mnq_contract(), _execution(placed, "e9", 1, 18_000.0))
    ib_node.settle()
    assert ib_node.strategy.drain_fills() == []
    gw.wrapper.commissionReport(_commission("e9"))
    ib_node.settle()
    assert [(f.quantity, f.price) for f in ib_node.strategy.drain_fills()] == [(-1, 18_000.0)]


def test_cancel_of_a_partly_filled_order_files_the_unfilled_rest(ib_node: IBNode) -> None:
    gw = ib_node.gateway
    gw.on_place = gw.ack
    placed = ib_node.send("ib:p:decision", 3)
    gw.fill(placed, 1, 18_000.25)
    ib_node.settle()
    ib_node.strategy.cancel_order(ib_node.venue.node.cache.order(ClientOrderId("ib:p:decision")))
    ib_node.settle()
    assert gw.cancelled == [placed.order_id]  # cancelled by IB's order id, learnt from the ack
    assert ib_node.status("ib:p:decision") is OrderStatus.CANCELED
    assert ib_node.strategy.drain_faults() == [BrokerFault("canceled", "ib:p:decision", "cancelled", unfilled=2)]


def test_ib_rejects_an_order_error_201(ib_node: IBNode) -> None:
    gw = ib_node.gateway
    reason = "Order rejected - reason:YOUR ORDER IS NOT ACCEPTED. IN ORDER TO OBTAIN THE DESIRED POSITION..."
    gw.on_place = lambda p: gw.error(p.order_id, 201, reason)
    ib_node.send("ib:r:decision", 1)
    assert ib_node.status("ib:r:decision") is OrderStatus.REJECTED
    (fault,) = ib_node.strategy.drain_faults()
    assert (fault.kind, fault.client_order_id, fault.unfilled) == ("rejected", "ib:r:decision", 1)
    assert reason in fault.detail


def test_an_order_ib_never_acknowledges_is_queried_then_cancelled(ib_node: IBNode) -> None:
    """Nautilus's IB client answers `query_order` for an order IB does not list as open by cancelling it."""
    ib_node.send("ib:u:decision", 1)  # the Gateway says nothing
    assert ib_node.status("ib:u:decision") is OrderStatus.SUBMITTED
    assert not ib_node.strategy.sent["ib:u:decision"].acknowledged
    ib_node.strategy.query_order(ib_node.venue.node.cache.order(ClientOrderId("ib:u:decision")))
    ib_node.settle()
    assert ib_node.status("ib:u:decision") is OrderStatus.CANCELED
    assert ib_node.strategy.drain_faults() == [BrokerFault("canceled", "ib:u:decision", "cancelled", unfilled=1)]


def test_a_fill_for_an_order_nobody_sent_is_dropped_by_the_client_and_found_by_reconciliation(
    ib_node: IBNode,
) -> None:
    """IB's exec client drops an execution whose orderRef is not in the cache (no event): only IB's position
    report shows it, through the reconciliation `IBConnection` runs on reconnect."""
    gw = ib_node.gateway
    stranger = Placed(999, _ib_order("manual:1", "BUY", 2))
    gw.fill(stranger, 2, 18_001.0)
    ib_node.settle()
    assert ib_node.strategy.drain_fills() == [] and ib_node.strategy.drain_faults() == []
    assert ib_node.venue.node.portfolio.net_position(MNQ_IB) == 0
    gw.positions = [(mnq_contract(), Decimal(2), 36_002.0)]
    ib_node.connection.reconcile()
    ib_node.settle()
    assert ib_node.venue.node.portfolio.net_position(MNQ_IB) == 2


# --- the session's reactions and the risk-event rows ----------------------------------------------------


class IBDayTrader:
    """The part of `PaperTrader` that `LiveSession` and `NodeVenue` use, without bars, features or a policy:
    the session's reactions are under test, not the decision. Fills are counted per instrument id as
    `PaperTrader._on_fills` counts them; risk events are journaled as `PaperTrader._journal_events` does."""

    def __init__(self, venue: NodeVenue, journal: OrderJournal) -> None:
        self.venue, self.journal, self.strategy = venue, journal, "ib"
        self.risk = NodeRiskEngine(RiskConfig(max_position=2))
        self.positions: dict[int, int] = {}
        self.instrument, self._in_flight, self._seen, self.now = DATABENTO_ID, 0, 0, T0

    @property
    def position(self) -> int:
        return self.positions.get(self.instrument, 0)

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def order(self, coid: str, quantity: int) -> None:
        self._in_flight += quantity
        self.venue.submit(self.instrument, quantity, coid)

    def on_records(self, arrays: BookArrays) -> None:
        self.now = int(arrays.ts_recv[-1])
        self._on_fills(self.venue.on_records(arrays))

    def on_fills(self, fills: list[VenueFill]) -> None:
        self._on_fills(fills)

    def _on_fills(self, fills: list[VenueFill]) -> None:
        for f in fills:
            self.positions[f.instrument_id] = self.positions.get(f.instrument_id, 0) + f.quantity
            if f.instrument_id == self.instrument:
                self._in_flight -= f.quantity

    def orders_sent(self, contracts: int) -> None:
        self._in_flight += contracts

    def orders_void(self, contracts: int) -> None:
        self._in_flight -= contracts

    def journal_risk_events(self) -> None:
        events = self.risk.events[self._seen :]
        self.journal.record_risk_events([
            {"session_id": "test", "strategy": self.strategy, "ts": pl.from_epoch(pl.Series([ts]), "ns")[0],
             "trade_date": pl.from_epoch(pl.Series([ts]), "ns")[0].date(), "state": str(st), "reason": why}
            for ts, st, why in events
        ])  # fmt: skip
        self._seen += len(events)

    def close(self) -> None:
        self.journal_risk_events()


def _tick(ts_ns: int) -> BookArrays:
    """One record's worth of arrays: the session's clock (IB's own market fills the orders)."""
    one = np.zeros(1, dtype=np.int64)
    return BookArrays(np.array([ts_ns], dtype=np.int64), np.array([DATABENTO_ID]), *(one.astype(np.uint8),) * 3,
                      one, one, *(np.zeros((1, 10), dtype=np.int64),) * 4)  # fmt: skip


@pytest.fixture
def session(ib_node: IBNode, tmp_path: Path) -> tuple[IBNode, LiveSession, IBDayTrader]:
    journal = OrderJournal(Lake(str(tmp_path)))
    trader = IBDayTrader(ib_node.venue, journal)
    return ib_node, LiveSession(trader, ib_node.venue, SETTINGS, journal), trader  # type: ignore[arg-type]


def _feed(node: IBNode, session: LiveSession, ts_ns: int) -> None:
    """IB's messages so far are handled (as if read off the socket), then a slice: fills to the trader, the
    session's reactions and position check."""
    node.settle()
    session.on_records(_tick(ts_ns))
    node.settle()


def _risk_rows(trader: IBDayTrader) -> list[tuple[str, str]]:
    """The journal's `paper_risk_events` rows of the strategy, in time order: (state, reason)."""
    rows = scan_journal(trader.journal.lake, PAPER_RISK_EVENTS_TABLE).filter(pl.col("strategy") == "ib")
    return [(r["state"], r["reason"]) for r in rows.sort("ts").collect().iter_rows(named=True)]


def test_a_rejection_leaves_only_exits_with_its_row(session: tuple[IBNode, LiveSession, IBDayTrader]) -> None:
    node, live, trader = session
    gw = node.gateway
    gw.on_place = lambda p: gw.error(p.order_id, 201, "Order rejected - reason:margin")
    trader.order("ib:1:decision", 1)
    _feed(node, live, T0)
    assert trader.risk.state is TradingState.REDUCING and trader.in_flight == 0
    assert _risk_rows(trader) == [("REDUCING", "broker: rejected ib:1:decision: rejected by the venue: "
                                   "Order rejected - reason:margin -> order void; exits only")]  # fmt: skip


def test_a_partial_fill_is_cancelled_after_the_timeout_and_the_position_is_what_filled(
    session: tuple[IBNode, LiveSession, IBDayTrader],
) -> None:
    node, live, trader = session
    gw = node.gateway
    gw.on_place = gw.ack
    trader.order("ib:2:decision", 2)
    _feed(node, live, T0)
    gw.fill(gw.placed[0], 1, 18_000.25)
    _feed(node, live, T0 + 1 * S)
    assert gw.cancelled == []
    _feed(node, live, T0 + 31 * S)  # past PHOENIX_LIVE_ORDER_TIMEOUT_S: cancelled
    assert gw.cancelled == [gw.placed[0].order_id]
    _feed(node, live, T0 + 32 * S)  # IB's "Cancelled" is the session's at the next slice
    assert trader.position == 1 and trader.in_flight == 0 and trader.risk.state is TradingState.REDUCING
    assert ("REDUCING", "broker: canceled ib:2:decision: cancelled -> rest cancelled, +1 filled; exits only") in (
        _risk_rows(trader)
    )


def test_an_order_never_acknowledged_is_queried_then_void(session: tuple[IBNode, LiveSession, IBDayTrader]) -> None:
    node, live, trader = session
    trader.order("ib:3:decision", 1)
    _feed(node, live, T0)
    _feed(node, live, T0 + 31 * S)  # the timeout: query_order; IB does not list it, Nautilus cancels it
    _feed(node, live, T0 + 32 * S)
    kinds = [(f.kind, reaction) for _, f, reaction in live.faults]
    assert kinds[:2] == [("unacknowledged", "queried the venue"), ("canceled", "rest cancelled, +0 filled; exits only")]
    assert trader.in_flight == 0 and trader.risk.state is TradingState.REDUCING


def test_ib_connectivity_lost_holds_orders_and_restored_reconciles_and_sends_them_with_the_same_id(
    session: tuple[IBNode, LiveSession, IBDayTrader],
) -> None:
    node, live, trader = session
    gw = node.gateway
    gw.on_place = gw.ack
    _feed(node, live, T0)
    gw.error(-1, 1100, "Connectivity between IB and Trader Workstation has been lost.")
    node.settle()
    node.connection.poll(live)
    assert not node.venue.connected and trader.risk.state is TradingState.REDUCING
    trader.order("ib:4:decision", 1)
    _feed(node, live, T0 + 5 * S)
    assert gw.placed == []  # held while IB is away
    gw.error(-1, 1102, "Connectivity between IB and TWS has been restored - data maintained.")
    node.settle()
    node.connection.poll(live)
    assert node.venue.connected
    _feed(node, live, T0 + 6 * S)
    assert [p.ref for p in gw.placed] == [f"ib:4:decision:{gw.placed[0].order_id}"]
    rows = _risk_rows(trader)
    assert rows[0] == ("REDUCING", "broker: disconnected: exec client disconnected -> orders held")
    assert [f.kind for _, f, _ in live.faults] == ["disconnected", "reconnected"]
    assert live.faults[1][1].detail == "no difference"


def test_a_disconnect_longer_than_the_limit_halts(session: tuple[IBNode, LiveSession, IBDayTrader]) -> None:
    node, live, trader = session
    _feed(node, live, T0)
    node.gateway.error(-1, 1100, "Connectivity between IB and Trader Workstation has been lost.")
    node.settle()
    node.connection.poll(live)
    _feed(node, live, T0 + 61 * S)
    assert trader.risk.state is TradingState.HALTED
    assert _risk_rows(trader)[-1] == ("HALTED", "broker: disconnected: still disconnected after 60 s -> halted")


def test_a_disconnect_before_the_first_record_starts_its_clock_with_the_data(
    session: tuple[IBNode, LiveSession, IBDayTrader],
) -> None:
    node, live, trader = session
    node.gateway.error(-1, 1100, "Connectivity between IB and Trader Workstation has been lost.")
    node.settle()
    node.connection.poll(live)  # no record yet: the venue's clock is 0
    _feed(node, live, T0)
    assert trader.risk.state is TradingState.REDUCING  # not "disconnected for 54 years"
    _feed(node, live, T0 + 61 * S)
    assert trader.risk.state is TradingState.HALTED


def test_a_fill_heard_between_slices_reaches_the_trader_before_the_position_check(
    session: tuple[IBNode, LiveSession, IBDayTrader],
) -> None:
    node, live, trader = session
    gw = node.gateway
    gw.on_place = gw.ack
    trader.order("ib:6:decision", 1)
    _feed(node, live, T0)
    gw.fill(gw.placed[0], 1, 18_000.25)
    node.settle()  # the node hears IB's fill between two slices (the socket's reader does not wait for data)
    live.react()  # the session reacts (a timer, a fault) before the next record hands the fill over
    assert trader.position == 1 and trader.in_flight == 0
    assert trader.risk.state is TradingState.ACTIVE and not any("mismatch" in r for _, r in _risk_rows(trader))


def test_reconnect_finds_a_position_nobody_journaled_and_names_it(
    session: tuple[IBNode, LiveSession, IBDayTrader],
) -> None:
    node, live, trader = session
    gw = node.gateway
    _feed(node, live, T0)
    gw.error(-1, 1100, "Connectivity between IB and Trader Workstation has been lost.")
    node.settle()
    node.connection.poll(live)
    gw.positions = [(mnq_contract(), Decimal(2), 36_002.0)]  # a manual trade in TWS meanwhile
    gw.error(-1, 1102, "Connectivity between IB and TWS has been restored - data maintained.")
    node.settle()
    node.connection.poll(live)
    assert trader.risk.state is not TradingState.ACTIVE  # someone else's position: exits only (runner's rule)
    (mismatch,) = [f for _, f, _ in live.faults if f.kind == "position_mismatch"]
    assert "the venue holds +2 contracts of 42" in mismatch.detail
    assert any(reason.startswith("broker: position_mismatch") for _, reason in _risk_rows(trader))


def test_an_ib_fill_counts_for_the_traded_contract(session: tuple[IBNode, LiveSession, IBDayTrader]) -> None:
    """IB names the contract MNQM4.CME: the fill is counted on the Databento contract Phoenix traded."""
    node, live, trader = session
    gw = node.gateway
    gw.on_place = lambda p: (gw.ack(p), gw.fill(p, 1, 18_000.25))
    trader.order("ib:5:decision", 1)
    _feed(node, live, T0)
    _feed(node, live, T0 + S)
    assert trader.position == 1 and trader.in_flight == 0
    assert trader.risk.state is TradingState.ACTIVE


# --- canned IB objects ------------------------------------------------------------------------------------


def _ib_order(ref: str, action: str, quantity: int) -> IBOrder:
    order = IBOrder()
    order.orderRef, order.action, order.totalQuantity, order.account, order.orderType = (
        f"{ref}:999", action, Decimal(quantity), ACCOUNT, "MKT",
    )  # fmt: skip
    return order


def _execution(p: Placed, exec_id: str, shares: int, price: float):
    from ibapi.execution import Execution

    e = Execution()
    e.execId, e.time, e.acctNumber, e.exchange, e.orderId, e.orderRef = (
        exec_id,
        "20240314 14:30:00 UTC",
        ACCOUNT,
        "CME",
        p.order_id,
        p.ref,
    )
    e.side, e.shares, e.price = ("BOT" if p.order.action == "BUY" else "SLD"), Decimal(shares), price
    return e


def _commission(exec_id: str):
    from ibapi.commission_report import CommissionReport

    c = CommissionReport()
    c.execId, c.commission, c.currency = exec_id, 0.62, "USD"
    return c
