"""Phoenix's side of a NautilusTrader `TradingNode`: the strategy that carries Phoenix's orders to the configured
exec client and hears back from it, and the risk engine's broker-fault states.

The decision itself is `phoenix_rl.live.trader.PaperTrader`'s (the same `LiveBars` / `LiveFeatures` / policy /
`RiskEngine` / `OrderJournal` path as `./phoenix paper`): the node is its venue (`runner.NodeVenue`). This
strategy never decides; it submits market orders with the journal's client order ids, turns the node's events
into Phoenix fills, and files every broker fault (a rejection, a denial by Nautilus's own RiskEngine, a
cancellation, an order the venue never acknowledged) for the runner to react to (`runner.LiveSession`).

Commission: the Sandbox venue's fee model is Nautilus's maker/taker rate on notional, not a fee per contract, so
the fill's commission is Phoenix's per-contract, per-side fee (`MNQ.commission_per_side_usd`, the backtest's), as
`PerContractFeeModel` charges it on the paper venue; the Nautilus account's balance excludes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nautilus_trader.model.enums import OrderSide
from nautilus_trader.model.events import (
    OrderAccepted,
    OrderCanceled,
    OrderDenied,
    OrderFilled,
    OrderRejected,
)
from nautilus_trader.model.identifiers import ClientOrderId, InstrumentId
from nautilus_trader.model.objects import Quantity
from nautilus_trader.trading.config import StrategyConfig
from nautilus_trader.trading.strategy import Strategy

from phoenix_rl.live.nautilus.venue import VenueFill
from phoenix_rl.live.risk import RiskEngine, TradingState

__all__ = ["BrokerFault", "NodeRiskEngine", "PhoenixStrategy"]

_SEVERITY = {TradingState.ACTIVE: 0, TradingState.REDUCING: 1, TradingState.HALTED: 2}


@dataclass(frozen=True)
class BrokerFault:
    """Something the venue did that the decision loop did not ask for; `unfilled` contracts of the order will
    never fill (signed, as sent)."""

    kind: str  # rejected | denied | canceled | unacknowledged | unknown_fill | disconnected | reconnected
    client_order_id: str
    detail: str
    unfilled: int = 0


@dataclass
class _Sent:
    """An order handed to the node: its signed size, what filled, whether the venue acknowledged it."""

    quantity: int
    sent_ns: int  # data time of the send (the book it was sent after)
    filled: int = 0
    acknowledged: bool = False
    done: bool = False
    chased: int = 0  # times the order was queried after the timeout


class NodeRiskEngine(RiskEngine):
    """Phoenix's `RiskEngine` plus the node's broker faults: each one is a journaled state change with its reason,
    recorded even when the state is already as strict (a second fault is its own row), and it never lifts a
    stricter state."""

    def on_broker_fault(self, ts_ns: int, state: TradingState, reason: str) -> None:
        worst = state if _SEVERITY[state] >= _SEVERITY[self.state] else self.state
        self._to(worst, ts_ns, f"broker: {reason}", force=True)


@dataclass
class _Book:
    faults: list[BrokerFault] = field(default_factory=list)
    fills: list[VenueFill] = field(default_factory=list)


class PhoenixStrategy(Strategy):
    """Phoenix's orders on the node (module doc): `send` a market order under a journaled client order id, read
    back `drain_fills` and `drain_faults`."""

    def __init__(self, name: str, commission_per_side_usd: float) -> None:
        super().__init__(StrategyConfig(strategy_id=f"PHOENIX-{name.upper()}"))
        self.commission_per_side_usd = commission_per_side_usd
        self.sent: dict[str, _Sent] = {}
        self.rejections: list[str] = []
        # the node's instrument -> Databento instrument id (NodeVenue._nid fills it): a broker names the contract
        # its own way (IB: MNQM4.CME), so a fill is counted on the contract Phoenix traded, not on `-1`
        self.databento_ids: dict[InstrumentId, int] = {}
        self._out = _Book()

    # --- orders out -------------------------------------------------------------------------------------

    def send(
        self, nid: InstrumentId, quantity: int, client_order_id: str, now_ns: int, reduce_only: bool = False
    ) -> None:
        """A market order for `quantity` signed contracts under the journal's client order id."""
        side = OrderSide.BUY if quantity > 0 else OrderSide.SELL
        order = self.order_factory.market(
            nid,
            side,
            Quantity.from_int(abs(quantity)),
            client_order_id=ClientOrderId(client_order_id),
            reduce_only=reduce_only,
        )
        self.sent[client_order_id] = _Sent(int(quantity), now_ns)
        self.submit_order(order)

    def claim_unsent(self, now_ns: int) -> list[tuple[str, int, int]]:
        """Orders of this strategy that Nautilus created and Phoenix did not send (`close_all_positions`'s):
        (client order id, signed quantity, Databento instrument id), now counted as Phoenix's."""
        claimed = []
        for order in self.cache.orders(strategy_id=self.id):
            coid = str(order.client_order_id)
            if coid in self.sent:
                continue
            qty = int(order.quantity.as_double())
            signed = qty if order.side == OrderSide.BUY else -qty
            self.sent[coid] = _Sent(signed, now_ns)
            claimed.append((coid, signed, self.databento_id(order.instrument_id)))
        return claimed

    def open_orders(self) -> dict[str, _Sent]:
        """Phoenix's orders the venue has not finished (neither filled in full, cancelled nor rejected)."""
        return {coid: s for coid, s in self.sent.items() if not s.done}

    # --- events in --------------------------------------------------------------------------------------

    def on_order_accepted(self, event: OrderAccepted) -> None:
        sent = self.sent.get(str(event.client_order_id))
        if sent is not None:
            sent.acknowledged = True

    def on_order_filled(self, event: OrderFilled) -> None:
        coid = str(event.client_order_id)
        qty = int(event.last_qty.as_double())
        signed = qty if event.order_side == OrderSide.BUY else -qty
        sent = self.sent.get(coid)
        if sent is None:  # an order of this strategy that Phoenix did not send (reconciled from the venue)
            self._out.faults.append(BrokerFault("unknown_fill", coid, f"fill of {signed:+d} @ {event.last_px}"))
            return
        sent.acknowledged = True
        sent.filled += signed
        sent.done = sent.filled == sent.quantity
        self._out.fills.append(
            VenueFill(
                trade_id=str(event.trade_id),
                client_order_id=coid,
                instrument_id=self.databento_id(event.instrument_id),
                quantity=signed,
                price=float(event.last_px.as_decimal()),
                commission_usd=qty * self.commission_per_side_usd,
                ts_ns=int(event.ts_event),
            )
        )

    def on_order_rejected(self, event: OrderRejected) -> None:
        self._void(str(event.client_order_id), "rejected", f"rejected by the venue: {event.reason}")

    def on_order_denied(self, event: OrderDenied) -> None:
        self._void(str(event.client_order_id), "denied", f"denied by Nautilus's RiskEngine: {event.reason}")

    def on_order_canceled(self, event: OrderCanceled) -> None:
        self._void(str(event.client_order_id), "canceled", "cancelled")

    def _void(self, coid: str, kind: str, detail: str) -> None:
        self.rejections.append(f"{coid}: {detail}")
        sent = self.sent.get(coid)
        unfilled = 0
        if sent is not None and not sent.done:
            unfilled, sent.done = sent.quantity - sent.filled, True
        self._out.faults.append(BrokerFault(kind, coid, detail, unfilled))

    def note(self, fault: BrokerFault) -> None:
        """A fault the runner found (disconnect, an order never acknowledged): filed with the venue's."""
        self._out.faults.append(fault)

    def databento_id(self, nid: InstrumentId) -> int:
        """The Databento instrument id Phoenix traded as `nid` (the venue's map; the Sandbox's `<id>.GLBX` too)."""
        return self.databento_ids.get(nid, _databento_id(nid))

    def drain_fills(self) -> list[VenueFill]:
        out, self._out.fills = self._out.fills, []
        return out

    def drain_faults(self) -> list[BrokerFault]:
        out, self._out.faults = self._out.faults, []
        return out


def _databento_id(nid: InstrumentId) -> int:
    """The Databento instrument id of a Sandbox instrument (`<id>.GLBX`); -1 for a broker's own symbol."""
    symbol = nid.symbol.value
    return int(symbol) if symbol.isdigit() else -1
