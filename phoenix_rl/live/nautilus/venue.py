"""The paper venue: NautilusTrader's simulated exchange, fed the live record stream as it arrives.

A Nautilus `BacktestEngine` in streaming mode is the paper broker: every MBP-10 record with F_LAST becomes an
`OrderBookDepth10` (records without F_LAST are half-updated mid-event books; stamped ts_recv), the engine
runs up to the newest record, and market orders submitted between two slices fill against the L2 book at the
first tradeable book that arrives after them (book_type L2_MBP: the spread is crossed and levels are walked,
so the spread is the book's own). With the one fill model (`phoenix_rl.env.fills.FillConfig`, the bar backtest's
convention) an order reaches the matching engine `latency_ns` after it is sent (`LatencyModel`) and fills at the
first tradeable book from then on, and every contract pays fees + slippage ticks per side (`PerContractFeeModel`:
the venue's commission is that whole charge, so its balance is the backtest's cost). Orders pass Nautilus's
RiskEngine (its order-rate throttle) after Phoenix's own `phoenix_rl.live.risk.RiskEngine` (the checks Nautilus
leaves open).

One implementation for the live loop and the L2 backtest: `./phoenix paper` replays or streams records into
`on_records`, and a replay of a held-out day through it is the event-driven backtest of the policy.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from nautilus_trader.backtest.engine import BacktestEngine, BacktestEngineConfig
from nautilus_trader.backtest.models import LatencyModel, PerContractFeeModel
from nautilus_trader.config import LoggingConfig, RiskEngineConfig
from nautilus_trader.model.currencies import USD
from nautilus_trader.model.data import BookOrder, OrderBookDepth10
from nautilus_trader.model.enums import AccountType, AssetClass, BookType, OmsType, OrderSide
from nautilus_trader.model.events import OrderDenied, OrderFilled, OrderRejected
from nautilus_trader.model.identifiers import ClientOrderId, InstrumentId, Symbol, TraderId, Venue
from nautilus_trader.model.instruments import FuturesContract
from nautilus_trader.model.objects import Money, Price, Quantity
from nautilus_trader.trading.config import StrategyConfig
from nautilus_trader.trading.strategy import Strategy

from phoenix_assets.lib.instrument import MNQ
from phoenix_assets.lib.market.book_kernel import BookArrays
from phoenix_assets.lib.schema import F_LAST, PRICE_SCALE, UNDEF_PRICE
from phoenix_rl.env.fills import FillConfig

__all__ = ["PaperVenue", "VenueFill", "depth10_from_arrays", "venue_rows"]

VENUE = MNQ.venue
PRICE_PRECISION = 2  # decimals of an MNQ price (its 0.25 tick)


@dataclass(frozen=True)
class VenueFill:
    """One execution reported by the venue (signed quantity: + bought, - sold)."""

    trade_id: str
    client_order_id: str
    instrument_id: int
    quantity: int
    price: float
    commission_usd: float
    ts_ns: int


def _nautilus_id(instrument_id: int) -> InstrumentId:

    return InstrumentId.from_str(f"{int(instrument_id)}.{VENUE}")


def mnq_contract(instrument_id: int) -> FuturesContract:
    """`MNQ` (phoenix_assets.lib.instrument) as Nautilus models it: its tick, its $ per point as the multiplier,
    whole contracts."""

    nid = _nautilus_id(instrument_id)
    return FuturesContract(
        instrument_id=nid,
        raw_symbol=Symbol(str(int(instrument_id))),
        asset_class=AssetClass.INDEX,
        exchange=MNQ.exchange,
        currency=USD,
        price_precision=PRICE_PRECISION,
        price_increment=Price(MNQ.tick_size, PRICE_PRECISION),
        multiplier=Quantity(MNQ.point_value, 0),
        lot_size=Quantity.from_int(1),
        underlying=MNQ.root,
        activation_ns=0,
        expiration_ns=4_102_444_800_000_000_000,  # 2100-01-01: the roll is Phoenix's business (instrument_id)
        ts_event=0,
        ts_init=0,
    )


def _tradeable(arrays: BookArrays) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The slice's tradeable books (F_LAST rows) with their instrument and ts."""
    rows = np.flatnonzero((arrays.flags & F_LAST) != 0)
    return rows, arrays.instrument_id[rows].astype(np.int64), arrays.ts_recv[rows].astype(np.int64)


def _arrival(iid: np.ndarray, ts: np.ndarray, instrument: int, due: int) -> tuple[np.ndarray, int]:
    """The positions of the instrument's books among the tradeable ones, and which of them is the first at or
    after `due` (an order's arrival at the matching engine; their count when it arrives after the slice)."""
    mine = np.flatnonzero(iid == instrument)
    return mine, int(np.searchsorted(ts[mine], due, side="left"))


def venue_rows(arrays: BookArrays, dues: Iterable[tuple[int, int]] = ()) -> np.ndarray:
    """The tradeable books (F_LAST rows) of a slice that a venue must see: the newest book of each instrument,
    so the venue's view and clock stay current, and around each order in flight (instrument, arrival ns at the
    matching engine) the last book before its arrival and the first at or after it, where it fills. The books in
    between change nothing: a Depth10 is the whole book, and nothing is there to match against it. Feeding every
    book costs ~100 us a record in Nautilus's Python (a 10M-record day: ~20 minutes); these are a few a minute."""
    rows, iid, ts = _tradeable(arrays)
    if not rows.size:
        return rows
    keep = np.zeros(rows.size, dtype=bool)
    for instrument in np.unique(iid).tolist():
        keep[np.flatnonzero(iid == instrument)[-1]] = True
    for instrument, due in dues:
        mine, k = _arrival(iid, ts, instrument, due)
        keep[mine[max(k - 1, 0) : k + 1]] = True
    return rows[keep]


def _arrival_row(arrays: BookArrays, dues: Iterable[tuple[int, int]]) -> int:
    """The slice's row of the last arrival book of the orders in flight (the slice's last book for an order that
    arrives after it)."""
    rows, iid, ts = _tradeable(arrays)
    out = 0
    for instrument, due in dues:
        mine, k = _arrival(iid, ts, instrument, due)
        out = max(out, int(rows[mine[k]]) if k < mine.size else int(rows[-1]))
    return out


def depth10_from_arrays(arrays: BookArrays, rows: np.ndarray | None = None) -> list[OrderBookDepth10]:
    """The tradeable books (F_LAST records; or `rows`, e.g. `venue_rows`) of a slice as Nautilus
    `OrderBookDepth10`, stamped ts_recv. Per-record Python (~30 us a book): Nautilus's objects have no array
    constructor."""

    rows = _tradeable(arrays)[0] if rows is None else rows
    empty = BookOrder(OrderSide.NO_ORDER_SIDE, Price(0, PRICE_PRECISION), Quantity(0, 0), 0)
    ids: dict[int, object] = {}
    books = []
    for k in rows:
        iid = int(arrays.instrument_id[k])
        nid = ids.get(iid) or ids.setdefault(iid, _nautilus_id(iid))
        sides = []
        for side, px, sz in (
            (OrderSide.BUY, arrays.bid_px[k], arrays.bid_sz[k]),
            (OrderSide.SELL, arrays.ask_px[k], arrays.ask_sz[k]),
        ):
            sides.append(
                [
                    BookOrder(side, Price(px[j] / PRICE_SCALE, PRICE_PRECISION), Quantity(int(sz[j]), 0), 0)
                    if px[j] != UNDEF_PRICE and sz[j] > 0
                    else empty
                    for j in range(10)
                ]
            )
        ts = int(arrays.ts_recv[k])
        books.append(OrderBookDepth10(nid, sides[0], sides[1], [1] * 10, [1] * 10, int(arrays.flags[k]), 0, ts, ts))
    return books


class PaperVenue:
    """A Nautilus simulated venue driven slice by slice (module doc); one strategy's orders and fills."""

    def __init__(
        self,
        instrument_ids: list[int] | None = None,
        *,
        capital_usd: float,
        commission_per_side_usd: float | None = None,
        max_orders_per_second: int = 100,
        strategy: str = "agent",
        fill: FillConfig | None = None,
    ) -> None:
        """`fill`: the one fill model (phoenix_rl.env.fills): its latency becomes Nautilus's `LatencyModel` and
        its fees + slippage per contract and side the `PerContractFeeModel`, as the bar backtest charges them.
        Without it, only `commission_per_side_usd` is charged and orders reach the venue with no latency."""
        if fill is None and commission_per_side_usd is None:
            raise ValueError("PaperVenue: give the fill model (fill=FillConfig.from_env(env_config)) or a commission")
        per_side = fill.cost_per_contract_side if fill is not None else float(commission_per_side_usd or 0.0)
        self.fill = fill

        self.engine = BacktestEngine(
            BacktestEngineConfig(
                trader_id=TraderId("PHOENIX-001"),
                logging=LoggingConfig(log_level="ERROR", bypass_logging=True),
                risk_engine=RiskEngineConfig(max_order_submit_rate=f"{max_orders_per_second}/00:00:01"),
            )
        )
        self.engine.add_venue(
            Venue(VENUE),
            oms_type=OmsType.NETTING,
            account_type=AccountType.MARGIN,
            starting_balances=[Money(capital_usd, USD)],
            base_currency=USD,
            book_type=BookType.L2_MBP,
            fee_model=PerContractFeeModel(Money(per_side, USD)),
            latency_model=None if fill is None else LatencyModel(base_latency_nanos=fill.latency_ns),
        )
        self._instruments: set[int] = set()
        for iid in sorted(set(instrument_ids or [])):
            self._add_instrument(iid)
        self._strategy = _OrderRouter(strategy)
        self.engine.add_strategy(self._strategy)
        self._ended = False
        self._clock_ns = 0  # the newest book fed: the engine's clock, from which an order's latency counts
        self._in_flight: dict[str, tuple[int, int]] = {}  # client order id -> (instrument, arrival ns)

    @property
    def latency_ns(self) -> int:
        """Sent -> at the matching engine (the fill model's latency; 0 without one): `PaperTrader.close` feeds
        the last book this much later so the end of the stream's orders fill."""
        return 0 if self.fill is None else int(self.fill.latency_ns)

    def submit(self, instrument_id: int, quantity: int, client_order_id: str) -> None:
        """A market order for `quantity` signed contracts; it fills at the next tradeable book fed in."""
        if quantity:
            self._strategy.market(_nautilus_id(instrument_id), quantity, client_order_id)
            self._in_flight[client_order_id] = (int(instrument_id), self._clock_ns + self.latency_ns)

    def on_records(self, arrays: BookArrays) -> list[VenueFill]:
        """Feed the slice's books that matter (`venue_rows`) and run the venue up to them; the fills that
        happened. An order still open after the book of its arrival gets every later book, as before."""
        for iid in np.unique(arrays.instrument_id).tolist():  # a live feed names its contract (and rolls) as it goes
            if iid not in self._instruments:
                self._add_instrument(iid)
        rows = venue_rows(arrays, self._in_flight.values())
        if self._in_flight and rows.size:  # the books up to the orders' arrival first: do they fill there?
            arrived = _arrival_row(arrays, self._in_flight.values())
            self._run(arrays, rows[rows <= arrived])
            rows = rows[rows > arrived]
            if self._in_flight:  # an order its arrival book did not close: every later book, as they come
                every = _tradeable(arrays)[0]
                rows = every[every > arrived]
        self._run(arrays, rows)
        return self._strategy.drain()

    def _run(self, arrays: BookArrays, rows: np.ndarray) -> None:
        books = depth10_from_arrays(arrays, rows)
        if books:
            self.engine.add_data(books, validate=False, sort=False)
            self.engine.run(streaming=True)
            self.engine.clear_data()
            self._clock_ns = int(arrays.ts_recv[rows[-1]])
        cache = self.engine.cache
        for coid in list(self._in_flight):
            order = cache.order(ClientOrderId(coid))
            if order is not None and order.is_closed:  # filled, rejected, denied or cancelled
                del self._in_flight[coid]

    def _add_instrument(self, instrument_id: int) -> None:
        self.engine.add_instrument(mnq_contract(instrument_id))
        self._instruments.add(int(instrument_id))

    @property
    def rejections(self) -> list[str]:
        """Orders Nautilus refused (its RiskEngine or the venue), with the reason it gave."""
        return list(self._strategy.rejections)

    def balance_usd(self) -> float:
        """The venue account's cash balance (commissions and realised PnL booked)."""

        return float(self.engine.portfolio.account(Venue(VENUE)).balance_total(USD).as_double())

    def close(self) -> None:
        if not self._ended:
            self.engine.end()
            self._ended = True
        self.engine.dispose()


class _OrderRouter(Strategy):
    """Hands Phoenix's orders to the venue and collects what comes back; it decides nothing itself."""

    def __init__(self, name: str) -> None:
        super().__init__(StrategyConfig(strategy_id=f"PHOENIX-{name.upper()}"))
        self._fills: list[VenueFill] = []
        self.rejections: list[str] = []

    def market(self, nid: InstrumentId, quantity: int, client_order_id: str) -> None:
        side = OrderSide.BUY if quantity > 0 else OrderSide.SELL
        order = self.order_factory.market(
            nid, side, Quantity.from_int(abs(quantity)), client_order_id=ClientOrderId(client_order_id)
        )
        self.submit_order(order)

    def on_order_filled(self, event: OrderFilled) -> None:
        qty = int(event.last_qty.as_double())
        self._fills.append(
            VenueFill(
                trade_id=str(event.trade_id),
                client_order_id=str(event.client_order_id),
                instrument_id=int(event.instrument_id.symbol.value),
                quantity=qty if event.order_side == OrderSide.BUY else -qty,
                price=float(event.last_px.as_decimal()),  # as_double is off by ~1e-12
                commission_usd=float(event.commission.as_double()),
                ts_ns=int(event.ts_event),
            )
        )

    def on_order_denied(self, event: OrderDenied) -> None:
        self.rejections.append(f"{event.client_order_id}: denied: {event.reason}")

    def on_order_rejected(self, event: OrderRejected) -> None:
        self.rejections.append(f"{event.client_order_id}: rejected: {event.reason}")

    def drain(self) -> list[VenueFill]:
        out, self._fills = self._fills, []
        return out
