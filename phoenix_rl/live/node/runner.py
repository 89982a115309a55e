"""A NautilusTrader `TradingNode` as Phoenix's venue, and the live session around it.

Market data: Phoenix's own record path. MBP-10 records (a replayed DBN day, `raw_mbp10`, or `databento.Live`
through `./phoenix paper`'s sources) go to `PaperTrader.on_records`, whose `LiveBars` / `LiveFeatures` are the
batch assets' kernel and feature code; Nautilus's Databento data client would decode MBP-10 into
`OrderBookDepth10`, dropping each record's action, side, price and size that the OFI kernel reads, so a second
feature implementation would be needed. The node receives the tradeable books (F_LAST records as
`OrderBookDepth10`, stamped ts_recv) through its DataEngine: the Sandbox venue's matching engine, the cache and
the portfolio see the same market as Phoenix.

Orders: `PaperTrader` decides at each bar close and calls `NodeVenue.submit` after the journal commit; the order
waits for the next book and goes out right after the node has processed it (`PhoenixStrategy.send`): a market
order fills at the first tradeable book after its decision, as on `./phoenix paper`'s venue, never at the bar's
own close. The node's engines run on its asyncio loop, which this module steps until their queues are empty
after every slice (`NodeVenue.step`), so a replay is deterministic; with a live feed the same steps run as the
records arrive.

Faults (`LiveSession.react`), each a journaled risk event through `NodeRiskEngine.on_broker_fault`:
    rejected / denied       the order is void (its contracts leave the in-flight count); REDUCING: a refused
                            order is the broker's answer, the strategy may only exit until a person resumes it.
    partial fill            the rest is cancelled when the order is not done `order_timeout_s` (data time) after
                            it was sent; the position is what filled; REDUCING.
    never acknowledged      chased `order_timeout_s` after it was sent: `query_order` (Nautilus asks the venue
                            for the order's status by its client id); still nothing after a second timeout:
                            cancelled, REDUCING (it may yet fill: the position check below catches that).
    position mismatch       the venue's net position is not the journal's, the difference named and journaled
                            (`LiveSession._check_position`): someone else's position in the account (a manual
                            trade, another strategy; Phoenix's own at the venue is the journal's) -> REDUCING,
                            what Phoenix did not trade is left to a person; Phoenix's own position at the venue
                            is not the journal's -> HALTED and flattened through the kill switch (the risk
                            limits are marked on the journal's fills: they would watch the wrong position).
    disconnect              orders wait (sent with the same client order id on reconnect); REDUCING at once,
                            HALTED after `max_disconnect_s`; on reconnect Nautilus reconciles and the position
                            check runs.
The kill switch (`LiveSession.kill_switch`): HALTED journaled first, orders not yet sent dropped, working orders
cancelled (`cancel_all_orders`), the strategy's positions closed (`close_all_positions`), whose orders are
journaled before the node's loop hands them to the venue.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import time
from collections.abc import Callable

from nautilus_trader.adapters.sandbox.config import SandboxExecutionClientConfig
from nautilus_trader.adapters.sandbox.factory import SandboxLiveExecClientFactory
from nautilus_trader.config import LiveExecEngineConfig, LiveRiskEngineConfig, LoggingConfig, TradingNodeConfig
from nautilus_trader.data.engine import DataEngine
from nautilus_trader.live.node import TradingNode
from nautilus_trader.model.currencies import USD
from nautilus_trader.model.identifiers import ClientId, ClientOrderId, InstrumentId, TraderId, Venue
from nautilus_trader.model.instruments import Instrument

from phoenix_assets.lib.market.book_kernel import BookArrays
from phoenix_rl.env.fills import FillConfig
from phoenix_rl.live.journal import OrderJournal
from phoenix_rl.live.nautilus.venue import VENUE, VenueFill, depth10_from_arrays, mnq_contract, venue_rows
from phoenix_rl.live.node.config import LiveSettings
from phoenix_rl.live.node.strategy import BrokerFault, NodeRiskEngine, PhoenixStrategy
from phoenix_rl.live.risk import TradingState
from phoenix_rl.live.trader import PaperTrader

__all__ = ["LiveSession", "NodeVenue", "build_node", "sandbox_instrument_id"]

NS_PER_S = 1_000_000_000


def sandbox_instrument_id(instrument_id: int) -> InstrumentId:
    """The Sandbox venue's id of a Databento instrument id (the paper venue's: `<id>.GLBX`)."""
    return mnq_contract(instrument_id).id


def build_node(
    settings: LiveSettings,
    *,
    strategy: str,
    capital_usd: float,
    fill: FillConfig,
    exec_clients: dict | None = None,
    exec_factories: dict | None = None,
    log_level: str = "ERROR",
) -> tuple[TradingNode, PhoenixStrategy]:
    """A built (not started) `TradingNode` with Phoenix's strategy and the settings' exec client: the Sandbox
    venue (L2 book from the fed depth-10 snapshots, the capital as its balance) unless `exec_clients` /
    `exec_factories` name another (`ib.exec_client`). Fills are charged the fill model's fees + slippage per
    contract and side (`phoenix_rl.env.fills`, as the paper venue and the backtest charge them)."""
    if exec_clients is None:
        exec_clients = {
            VENUE: SandboxExecutionClientConfig(
                venue=VENUE,
                starting_balances=[f"{capital_usd:.2f} USD"],
                base_currency="USD",
                oms_type="NETTING",
                account_type="MARGIN",
                book_type="L2_MBP",
                bar_execution=False,
            )
        }
        exec_factories = {VENUE: SandboxLiveExecClientFactory}
    config = TradingNodeConfig(
        trader_id=TraderId(settings.trader_id),
        logging=LoggingConfig(log_level=log_level),  # a live kernel may not bypass its logger
        exec_engine=LiveExecEngineConfig(reconciliation=settings.reconcile, inflight_check_interval_ms=0),
        # Phoenix's RiskEngine throttles in data time; Nautilus's counts wall time, which a replay outruns
        risk_engine=LiveRiskEngineConfig(max_order_submit_rate="1000/00:00:01"),
        exec_clients=exec_clients,
        timeout_connection=20.0,
        timeout_reconciliation=10.0,
        timeout_portfolio=10.0,
        timeout_disconnection=2.0,
        timeout_post_stop=0.5,
    )
    loop = asyncio.new_event_loop()
    node = TradingNode(config=config, loop=loop)
    for name, factory in (exec_factories or {}).items():
        node.add_exec_client_factory(name, factory)
    node.build()
    phoenix = PhoenixStrategy(strategy, fill.cost_per_contract_side)
    node.trader.add_strategy(phoenix)
    return node, phoenix


class NodeVenue:
    """`PaperTrader`'s venue over a running `TradingNode` (module doc): `submit` queues, `on_records` feeds the
    books, sends the queued orders after the first one, steps the node and returns the fills."""

    def __init__(
        self,
        node: TradingNode,
        strategy: PhoenixStrategy,
        *,
        instrument_of: Callable[[int], Instrument] = mnq_contract,
        feed_books: bool = True,
        venue: str = VENUE,
        latency_ns: int = 0,
    ) -> None:
        self.node, self.strategy = node, strategy
        self.loop = node.get_event_loop()
        self._instrument_of, self._feed_books = instrument_of, feed_books
        self._venue = Venue(venue)
        self._nids: dict[int, InstrumentId] = {}
        self._pending: list[tuple[int, int, str, int]] = []  # instrument, contracts, client order id, due (ns)
        self.latency_ns = latency_ns
        self._book_ns = 0  # the newest book the node has: the venue's clock when an order is sent
        self._queued_at: dict[str, int] = {}  # client order id -> perf_counter_ns of `submit`
        self.handoff_ms: list[float] = []  # `submit` -> the node's engines done with the order (fill included)
        self.node_ms: list[float] = []  # the send itself: strategy -> risk -> exec engine -> venue -> fill events
        self.connected = True  # the runner's view of the exec client (`LiveSession.on_disconnect`)
        self.now_ns = 0
        self._closed = False
        # refuses an instrument that is not the env's contract (`LiveSession`), the roll's next one included
        self.contract_check: Callable[[Instrument], None] | None = None

    # --- lifecycle --------------------------------------------------------------------------------------

    def start(self, instrument_ids: list[int]) -> None:
        """Register the instruments and start the node: connect the exec client, reconcile, start the strategy."""
        for iid in instrument_ids:
            self._nid(iid)
        self._task = self.loop.create_task(self.node.run_async())

        async def running() -> None:
            for _ in range(20_000):
                if self.node.is_running() and self.strategy.is_running:
                    return
                if self._task.done():
                    self._task.result()
                await asyncio.sleep(0.001)
            raise TimeoutError("the TradingNode did not start in 20 s: see its log (exec client connection)")

        self.loop.run_until_complete(running())

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.node.stop()
        self.loop.run_until_complete(asyncio.sleep(0.05))
        self.node.dispose()

    # --- the venue protocol -----------------------------------------------------------------------------

    def submit(self, instrument_id: int, quantity: int, client_order_id: str) -> None:
        """Queue a market order (journaled already): it reaches the venue `latency_ns` after the newest book and
        goes out right after the first book from then on (the paper venue's `LatencyModel`, module doc)."""
        if quantity:
            self._pending.append((int(instrument_id), int(quantity), client_order_id, self._book_ns + self.latency_ns))
            self._queued_at[client_order_id] = time.perf_counter_ns()

    def on_records(self, arrays: BookArrays) -> list[VenueFill]:
        if len(arrays.ts_recv):
            self.now_ns = int(arrays.ts_recv[-1])
        if not self._feed_books:  # a broker's own market: orders go out as they come
            self._send_due(self.now_ns, due_by=None)
        else:
            engine = self.node.kernel.data_engine
            rows = venue_rows(arrays, [(iid, due) for iid, _, _, due in self._pending])
            for book in depth10_from_arrays(arrays, rows):
                self._nid(int(book.instrument_id.symbol.value))
                DataEngine.process(engine, book)  # the engine's own handling, synchronous (not its queue)
                self._book_ns = int(book.ts_init)
                if self._pending:
                    self._send_due(self._book_ns, due_by=self._book_ns)
        self.step()
        return self.strategy.drain_fills()

    def _send_due(self, now_ns: int, due_by: int | None) -> None:
        """Send the queued orders that are due (all of them when `due_by` is None) and let the node carry them
        to the venue before the next book moves it."""
        if not self.connected:
            return  # held: the same client order ids go out after the reconnect
        due = [p for p in self._pending if due_by is None or p[3] <= due_by]
        if not due:
            return
        self._pending = [p for p in self._pending if p not in due]
        sending = time.perf_counter_ns()
        for iid, quantity, coid, _ in due:
            if coid in self.strategy.sent:  # the same client order id after a reconnect: the venue has it
                continue
            reduce_only = coid.endswith((":kill", ":failsafe"))
            self.strategy.send(self._nid(iid), quantity, coid, now_ns, reduce_only=reduce_only)
        self.step()
        done = time.perf_counter_ns()
        self.node_ms.append((done - sending) / 1e6)
        self.handoff_ms += [(done - self._queued_at.pop(p[2], done)) / 1e6 for p in due]

    def drop_pending(self) -> list[tuple[int, int, str, int]]:
        """The queued orders, removed (the kill switch: they never reach the venue)."""
        dropped, self._pending = self._pending, []
        return dropped

    def instruments(self) -> list[InstrumentId]:
        return list(self._nids.values())

    def registered(self) -> list[Instrument]:
        """The instruments the node trades so far (as its cache holds them)."""
        return [self.node.cache.instrument(nid) for nid in self._nids.values()]

    @property
    def rejections(self) -> list[str]:
        return list(self.strategy.rejections)

    def balance_usd(self) -> float:
        """The venue account's cash (Nautilus's; Phoenix's per-contract commission is not in it)."""
        account = self.node.portfolio.account(self._venue)
        return math.nan if account is None else float(account.balance_total(USD).as_double())

    def net_position(self, instrument_id: int) -> int:
        """The account's net contracts in the instrument as the node sees the venue (every strategy's)."""
        return int(self.node.portfolio.net_position(self._nid(instrument_id)))

    def strategy_position(self, instrument_id: int) -> int:
        """Phoenix's own net contracts in the instrument as the node counts them from the venue's fills of
        Phoenix's orders (Nautilus's positions of the strategy), whatever the journal says."""
        nid = self._nid(instrument_id)
        return int(
            sum(p.signed_qty for p in self.node.cache.positions_open(instrument_id=nid, strategy_id=self.strategy.id))
        )

    def working_contracts(self) -> tuple[int, int]:
        """Phoenix's orders not done at the node: (count, signed contracts unfilled), queued ones included."""
        working = self.strategy.open_orders()
        queued = [q for _, q, coid, _ in self._pending if coid not in working]
        return len(working) + len(queued), sum(s.quantity - s.filled for s in working.values()) + sum(queued)

    # --- the node's loop --------------------------------------------------------------------------------

    def step(self) -> None:
        """Run the node's loop until its engines' queues are empty (commands, events, data)."""
        self.loop.run_until_complete(self._drain())

    async def _drain(self) -> None:
        k = self.node.kernel
        sizes = (
            k.data_engine.cmd_qsize,
            k.data_engine.data_qsize,
            k.risk_engine.cmd_qsize,
            k.risk_engine.evt_qsize,
            k.exec_engine.cmd_qsize,
            k.exec_engine.evt_qsize,
        )
        idle = 0
        while idle < 2:  # two quiet turns: a handler that ran in the last turn may have queued more
            await asyncio.sleep(0)
            idle = idle + 1 if not any(size() for size in sizes) else 0

    def _nid(self, instrument_id: int) -> InstrumentId:
        nid = self._nids.get(instrument_id)
        if nid is None:  # a new contract (the roll): into the cache and the venue's matching engines
            instrument = self._instrument_of(instrument_id)
            if self.contract_check is not None:
                self.contract_check(instrument)
            nid = instrument.id
            if self.node.cache.instrument(nid) is None:
                self.node.cache.add_instrument(instrument)
                client = self.node.kernel.exec_engine._clients.get(ClientId(self._venue.value))
                if client is not None and hasattr(client, "exchange") and self.node.is_running():
                    client.exchange.add_instrument(instrument)  # the Sandbox venue loads instruments at connect
            self._nids[instrument_id] = nid
            self.strategy.databento_ids[nid] = instrument_id
        return nid


class LiveSession:
    """One strategy's trading day on the node: `PaperTrader` (the decision) + `NodeVenue` (the node) + the
    reactions to broker faults and the position check after every slice (module doc)."""

    def __init__(self, trader: PaperTrader, venue: NodeVenue, settings: LiveSettings, journal: OrderJournal) -> None:
        if not isinstance(trader.risk, NodeRiskEngine):
            raise TypeError("LiveSession: build the trader's risk engine as NodeRiskEngine (broker-fault states)")
        self.trader, self.venue, self.settings, self.journal = trader, venue, settings, journal
        self.risk: NodeRiskEngine = trader.risk
        self.faults: list[tuple[int, BrokerFault, str]] = []  # (data ts, fault, reaction)
        self._disconnected_at: int | None = None
        self._last_fault_ns = 0
        self._named: dict[int, tuple[int, int]] = {}  # instrument -> the position difference named last
        venue.contract_check = self._same_contract
        for instrument in venue.registered():
            self._same_contract(instrument)

    def _same_contract(self, instrument: Instrument) -> None:
        """The node's instrument (its multiplier and tick: Nautilus's `mnq_contract` from `MNQ`, or the broker's)
        must be the contract the env priced the model's PnL and fills in (`EnvConfig.point_value` / `tick_size`,
        also from `MNQ`): one source, checked where the two meet, the roll's new contract included."""
        cfg = getattr(self.trader, "cfg", None)  # PaperTrader's EnvConfig; a stand-in without an env has no contract
        multiplier, tick = float(instrument.multiplier), float(instrument.price_increment)
        if cfg is not None and (multiplier, tick) != (cfg.point_value, cfg.tick_size):
            raise ValueError(
                f"LiveSession: the node's instrument {instrument.id} has multiplier {multiplier:g} and tick {tick:g}, "
                f"the env's contract (EnvConfig) {cfg.point_value:g} and {cfg.tick_size:g}: trade the contract the "
                "model was trained on, or train it on this one"
            )

    def on_records(self, arrays: BookArrays) -> None:
        self.trader.on_records(arrays)
        self.react()

    def close(self) -> None:
        self.trader.close()
        self.react()

    # --- faults -----------------------------------------------------------------------------------------

    def react(self) -> None:
        """Chase late orders, apply each fault's reaction, check the venue's position against the journal's."""
        now = self.venue.now_ns
        timeout = int(self.settings.order_timeout_s * NS_PER_S)
        for coid, sent in self.venue.strategy.open_orders().items():
            if now - sent.sent_ns < timeout * (sent.chased + 1):
                continue
            order = self.venue.node.cache.order(ClientOrderId(coid))
            if order is None:
                continue
            if not sent.acknowledged and sent.chased == 0:
                sent.chased = 1
                self.venue.strategy.query_order(order)
                self._record(now, BrokerFault("unacknowledged", coid, "no ack"), "queried the venue", None)
                continue
            sent.chased += 1
            self.venue.strategy.cancel_order(order)
        self.venue.step()
        # a fill the step brought (a broker's, e.g. IB's) reaches the trader before the position check compares
        self.trader.on_fills(self.venue.strategy.drain_fills())
        limit = self.settings.max_disconnect_s * NS_PER_S
        if self._disconnected_at == 0:  # lost before the first record: the disconnect's clock starts with the data
            self._disconnected_at = now
        if self._disconnected_at is not None and now - self._disconnected_at > limit:
            self._disconnected_at = now  # once per period
            self._record(
                now,
                BrokerFault("disconnected", "", f"still disconnected after {self.settings.max_disconnect_s:.0f} s"),
                "halted",
                TradingState.HALTED,
            )
        for fault in self.venue.strategy.drain_faults():
            self._apply(now, fault)
        self._check_position(now)
        self.trader.journal_risk_events()

    def _apply(self, now: int, fault: BrokerFault) -> None:
        if fault.unfilled:
            self.trader.orders_void(fault.unfilled)
        if fault.kind in {"rejected", "denied"}:
            self._record(now, fault, "order void; exits only", TradingState.REDUCING)
        elif fault.kind == "canceled":
            sent = self.venue.strategy.sent.get(fault.client_order_id)
            filled = sent.filled if sent is not None else 0
            if self.risk.state is TradingState.HALTED and filled == 0:
                return  # the kill switch's own cancellation of a working order: no fault
            self._record(now, fault, f"rest cancelled, {filled:+d} filled; exits only", TradingState.REDUCING)
        elif fault.kind == "unknown_fill":
            self._record(now, fault, "halted", TradingState.HALTED)

    def _check_position(self, now: int) -> None:
        """Reconcile each contract the strategy traded: the venue's net position against the journal's (the
        trader's fills). A difference is named once (again only when it changes), with the venue's and the
        journal's positions, Phoenix's own at the venue and the orders in flight, and journaled as a risk event:

        - Phoenix's own position at the venue (Nautilus's, from the fills of Phoenix's orders) is the journal's:
          the difference is someone else's (a manual trade, another strategy in the account). REDUCING: the
          strategy may still exit, sized on a position the venue confirms; what it did not trade is left to a
          person.
        - Phoenix's own position at the venue is not the journal's (a fill the journal lost, or one journaled that
          the venue never made): HALTED, not REDUCING, and flattened through the kill switch (`close_all_positions`
          closes what the venue says Phoenix holds). Why not REDUCING: the risk engine marks PnL, the daily loss
          and the drawdown on the journal's fills, so its limits would watch a position Phoenix does not hold
          (after a lost fill of +2, a fall against the real 2 contracts never reaches the daily-loss halt), and
          REDUCING lets the strategy keep those contracts for the rest of the day.
        """
        if not self.venue.connected:
            return
        for iid in sorted({self.trader.instrument, *self.trader.positions} - {0}):
            venue_pos, journal_pos = self.venue.net_position(iid), self.trader.positions.get(iid, 0)
            if venue_pos == journal_pos:
                self._named.pop(iid, None)
                continue
            own = self.venue.strategy_position(iid)
            difference = (venue_pos - journal_pos, own - journal_pos)
            if self._named.get(iid) == difference:
                continue  # named already; a person resolves it
            self._named[iid] = difference
            orders, working = self.venue.working_contracts()
            what = (
                f"the venue holds {venue_pos:+d} contracts of {iid} ({own:+d} from Phoenix's orders), the journal's "
                f"fills {journal_pos:+d}; in flight: journal {self.trader.in_flight:+d}, node {working:+d} in "
                f"{orders} orders"
            )
            fault = BrokerFault("position_mismatch", "", what)
            if own == journal_pos:
                self._record(now, fault, "exits only; the other position is left to a person", TradingState.REDUCING)
            else:
                self._record(now, fault, "halted, Phoenix's position at the venue flattened", None)
                self.kill_switch(f"position mismatch ({what})")

    def kill_switch(self, who: str) -> None:
        """HALTED (journaled first), orders not yet sent dropped, working orders cancelled (`cancel_all_orders`),
        the strategy's positions closed (`close_all_positions`); the closing orders are journaled before the
        node's loop hands them to the venue (module doc)."""
        now = self.venue.now_ns
        self.risk.kill_switch(now, self.trader.position + self.trader.in_flight, who)
        self.trader.journal_risk_events()
        for _, quantity, _, _ in self.venue.drop_pending():
            self.trader.orders_void(quantity)  # journaled, never sent: they will not fill
        for nid in self.venue.instruments():
            self.venue.strategy.cancel_all_orders(nid)
        self.venue.step()
        for fault in self.venue.strategy.drain_faults():
            if fault.unfilled:
                self.trader.orders_void(fault.unfilled)
        for nid in self.venue.instruments():
            self.venue.strategy.close_all_positions(nid, tags=["phoenix-kill"])
        when = dt.datetime.fromtimestamp(now / 1e9, tz=dt.UTC)
        for coid, quantity, iid in self.venue.strategy.claim_unsent(now):  # created, still in the node's queues
            self.journal.record_order(
                {
                    "client_order_id": coid,
                    "strategy": self.trader.strategy,
                    "bar_ts": when,
                    "instrument_id": iid,
                    "quantity": quantity,
                    "reason": "kill switch: flatten",
                    "created_ts": dt.datetime.now(dt.UTC),
                }
            )
            self.trader.orders_sent(quantity)
        self.venue.step()

    def on_disconnect(self) -> None:
        """The exec client lost the venue: orders wait, exits only."""
        self.venue.connected = False
        self._disconnected_at = self.venue.now_ns
        fault = BrokerFault("disconnected", "", "exec client disconnected")
        self._record(self.venue.now_ns, fault, "orders held", TradingState.REDUCING)
        self.trader.journal_risk_events()

    def on_reconnect(self, reconcile: Callable[[], list[str]] | None = None) -> None:
        """The exec client is back: Nautilus's reconciliation (`reconcile`, the venue's reports), then the held
        orders go out with their client order ids at the next book, and the position check runs."""
        self.venue.connected = True
        self._disconnected_at = None
        differences = reconcile() if reconcile is not None else []
        self._record(self.venue.now_ns, BrokerFault("reconnected", "", "; ".join(differences) or "no difference"),
                     "reconciled", TradingState.REDUCING if differences else self.risk.state)  # fmt: skip
        self._check_position(self.venue.now_ns)
        self.trader.journal_risk_events()

    def _record(self, now: int, fault: BrokerFault, reaction: str, state: TradingState | None) -> None:
        # a microsecond apart (the journal's resolution): faults found in one slice keep a row each (the risk
        # events are keyed on strategy, ts, state)
        now = max(now, self._last_fault_ns + 1_000)
        self._last_fault_ns = now
        self.faults.append((now, fault, reaction))
        if state is not None:
            where = f" {fault.client_order_id}" if fault.client_order_id else ""
            self.risk.on_broker_fault(now, state, f"{fault.kind}{where}: {fault.detail} -> {reaction}")
