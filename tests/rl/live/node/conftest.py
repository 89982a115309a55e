"""A scripted IB Gateway for the node's IB exec client: ibapi's `EClient` with its socket replaced by canned
`EWrapper` callbacks, the way NautilusTrader's own IB tests do it (`tests/integration_tests/adapters/
interactive_brokers/`: `MockEClient` + a patched `get_cached_ib_client`).

Everything above the socket is real: `InteractiveBrokersClient` (its message-handler queue, order-ref mapping,
error-code handling), the instrument provider (it parses the canned MNQ contract details), the
`InteractiveBrokersExecutionClient` built by Phoenix's `ib.exec_client` config through the IB factory, and the
`TradingNode` with Phoenix's strategy. What is not run: the client's socket reader and its connection watchdog
(a 1 s poll, then a 5 s back-off and a socket reconnect); a lost connection is IB's own signal instead (error
1100 / 1102, `connectionClosed`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from unittest.mock import patch

import pytest
from ibapi.client import EClient
from ibapi.commission_report import CommissionReport
from ibapi.contract import Contract, ContractDetails
from ibapi.execution import Execution
from ibapi.order import Order as IBOrder
from ibapi.order_state import OrderState
from nautilus_trader.adapters.interactive_brokers.client import InteractiveBrokersClient
from nautilus_trader.adapters.interactive_brokers.client.wrapper import InteractiveBrokersEWrapper

ACCOUNT = "DU1234567"
CONTRACT_MONTH = "202406"
CON_ID = 672387468  # MNQ Jun 2024 on CME (any id works: the provider maps it to the instrument)
EXEC_TIME = "20240314 14:30:00 UTC"


def mnq_details() -> ContractDetails:
    """What a Gateway answers to `reqContractDetails` for MNQ Jun 2024 on CME."""
    contract = Contract()
    contract.conId, contract.symbol, contract.secType = CON_ID, "MNQ", "FUT"
    contract.lastTradeDateOrContractMonth, contract.multiplier = "20240621", "2"
    contract.exchange, contract.currency, contract.localSymbol, contract.tradingClass = "CME", "USD", "MNQM4", "MNQ"
    details = ContractDetails()
    details.contract, details.marketName, details.minTick, details.priceMagnifier = contract, "MNQ", 0.25, 1
    details.contractMonth, details.timeZoneId, details.underSymbol, details.underSecType = (
        CONTRACT_MONTH,
        "US/Central",
        "MNQ",
        "IND",
    )
    details.realExpirationDate, details.orderTypes, details.validExchanges = "20240621", "MKT,LMT", "CME"
    return details


def mnq_contract() -> Contract:
    return mnq_details().contract


@dataclass
class Placed:
    """An order the Gateway received (`placeOrder`)."""

    order_id: int
    order: IBOrder
    ref: str = ""  # orderRef as sent, "<client order id>:<IB order id>" (the IB client rewrites the order later)

    def __post_init__(self) -> None:
        self.ref = self.ref or self.order.orderRef


@dataclass
class FakeGateway:
    """The Gateway's side of the conversation: state it reports (positions, open orders, executions) and a
    script for `placeOrder` (`on_place`); every answer goes through the real `EWrapper` callbacks."""

    positions: list[tuple[Contract, Decimal, float]] = field(default_factory=list)
    open_orders: list[tuple[int, IBOrder, str]] = field(default_factory=list)  # (order id, order, status)
    executions: list[tuple[Execution, CommissionReport]] = field(default_factory=list)
    placed: list[Placed] = field(default_factory=list)
    cancelled: list[int] = field(default_factory=list)
    unscripted: list[str] = field(default_factory=list)
    on_place: Callable[[Placed], None] | None = None
    wrapper: InteractiveBrokersEWrapper | None = None
    exec_seq: int = 0

    # --- what the Gateway sends -------------------------------------------------------------------------

    def ack(self, p: Placed, status: str = "Submitted") -> None:
        state = OrderState()
        state.status = status
        self.wrapper.openOrder(p.order_id, mnq_contract(), p.order, state)
        self.wrapper.orderStatus(p.order_id, status, Decimal(0), p.order.totalQuantity, 0.0, 1, 0, 0.0, 1, "", 0.0)

    def fill(self, p: Placed, shares: int, price: float, commission: float = 0.62, exec_id: str = "") -> str:
        """One execution and its commission report (IB sends them as two messages)."""
        self.exec_seq += 1
        execution = Execution()
        execution.execId = exec_id or f"0000e0d5.{self.exec_seq:08d}.01.01"
        execution.time, execution.acctNumber, execution.exchange = EXEC_TIME, ACCOUNT, "CME"
        execution.side = "BOT" if p.order.action == "BUY" else "SLD"
        execution.shares, execution.price, execution.orderId = Decimal(shares), price, p.order_id
        execution.orderRef, execution.clientId, execution.permId = p.ref, 1, p.order_id
        report = CommissionReport()
        report.execId, report.commission, report.currency = execution.execId, commission, "USD"
        self.wrapper.execDetails(-1, mnq_contract(), execution)
        self.wrapper.commissionReport(report)
        self.executions.append((execution, report))
        return execution.execId

    def error(self, req_id: int, code: int, text: str) -> None:
        self.wrapper.error(req_id, code, text)

    # --- what the client asks (`ScriptedEClient` forwards here) -----------------------------------------

    def start_api(self) -> None:
        self.wrapper.managedAccounts(f"{ACCOUNT},")
        self.wrapper.nextValidId(101)

    def contract_details(self, req_id: int) -> None:
        self.wrapper.contractDetails(req_id, mnq_details())
        self.wrapper.contractDetailsEnd(req_id)

    def account_summary(self, req_id: int) -> None:
        for tag, value in (("NetLiquidation", "10000"), ("FullAvailableFunds", "9000"),
                           ("FullInitMarginReq", "1000"), ("FullMaintMarginReq", "900")):  # fmt: skip
            self.wrapper.accountSummary(req_id, ACCOUNT, tag, value, "USD")
        self.wrapper.accountSummaryEnd(req_id)

    def report_positions(self) -> None:
        for contract, quantity, avg_cost in self.positions:
            self.wrapper.position(ACCOUNT, contract, quantity, avg_cost)
        self.wrapper.positionEnd()

    def report_open_orders(self) -> None:
        for order_id, order, status in self.open_orders:
            state = OrderState()
            state.status = status
            self.wrapper.openOrder(order_id, mnq_contract(), order, state)
        self.wrapper.openOrderEnd()

    def report_executions(self, req_id: int) -> None:
        for execution, report in self.executions:
            self.wrapper.execDetails(req_id, mnq_contract(), execution)
            self.wrapper.commissionReport(report)
        self.wrapper.execDetailsEnd(req_id)

    def place(self, order_id: int, order: IBOrder) -> None:
        placed = Placed(order_id, order)
        self.placed.append(placed)
        if self.on_place is not None:
            self.on_place(placed)

    def cancel(self, order_id: int) -> None:
        self.cancelled.append(order_id)
        self.wrapper.orderStatus(order_id, "Cancelled", Decimal(0), Decimal(0), 0.0, 1, 0, 0.0, 1, "", 0.0)


class ScriptedEClient(EClient):
    """ibapi's `EClient` without a socket: each request the IB client makes is answered by the `FakeGateway`;
    a request nobody scripted is recorded (`unscripted`), never sent."""

    def __init__(self, wrapper: InteractiveBrokersEWrapper, gateway: FakeGateway) -> None:
        super().__init__(wrapper)
        self.gateway = gateway
        gateway.wrapper = wrapper
        self.serverVersion_ = 0  # ibapi >= 10.43 asks it before protobuf messages
        self.up = True

    def isConnected(self) -> bool:
        return self.up

    def disconnect(self) -> None:
        self.up = False

    def sendMsg(self, msg: Any) -> None:  # pragma: no cover - a request the script does not know
        self.gateway.unscripted.append(repr(msg)[:80])

    def startApi(self) -> None:
        self.gateway.start_api()

    def reqIds(self, numIds: int) -> None:
        pass

    def reqContractDetails(self, reqId: int, contract: Contract) -> None:
        self.gateway.contract_details(reqId)

    def reqAccountSummary(self, reqId: int, groupName: str, tags: str) -> None:
        self.gateway.account_summary(reqId)

    def cancelAccountSummary(self, reqId: int) -> None:
        pass

    def reqPositions(self) -> None:
        self.gateway.report_positions()

    def reqOpenOrders(self) -> None:
        self.gateway.report_open_orders()

    def reqAllOpenOrders(self) -> None:
        self.gateway.report_open_orders()

    def reqExecutions(self, reqId: int, execFilter: Any) -> None:
        self.gateway.report_executions(reqId)

    def placeOrder(self, orderId: int, contract: Contract, order: IBOrder) -> None:
        self.gateway.place(orderId, order)

    def cancelOrder(self, orderId: int, orderCancel: Any = None) -> None:
        self.gateway.cancel(orderId)


class ScriptedIBClient(InteractiveBrokersClient):
    """The real `InteractiveBrokersClient` on a `ScriptedEClient`: its start runs the handshake (managed
    accounts, next valid id) and the message-handler queue, not the socket reader or the watchdog."""

    gateway: FakeGateway

    def __init__(self, *args: Any, gateway: FakeGateway, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._eclient = ScriptedEClient(InteractiveBrokersEWrapper(nautilus_logger=self._log, client=self), gateway)
        self.gateway = gateway

    async def _start_async(self) -> None:
        self._start_internal_msg_queue_processor()
        self._eclient.startApi()
        await asyncio.wait_for(self._is_ib_connected.wait(), 5)
        self._is_client_ready.set()


@pytest.fixture
def ib_gateway() -> Iterator[FakeGateway]:
    """A `FakeGateway`; while the fixture is active the IB factory's client cache hands out a
    `ScriptedIBClient` on it (no socket, no Gateway)."""
    gateway = FakeGateway()

    def client_on_gateway(loop: Any, msgbus: Any, cache: Any, clock: Any, host: str, port: int, client_id: int,
                          **_: Any) -> ScriptedIBClient:  # fmt: skip
        client = ScriptedIBClient(loop=loop, msgbus=msgbus, cache=cache, clock=clock, host=host, port=port,
                                  client_id=client_id, gateway=gateway)  # fmt: skip
        client.start()
        return client

    with (
        patch("nautilus_trader.adapters.interactive_brokers.factories.get_cached_ib_client", new=client_on_gateway),
        patch("nautilus_trader.adapters.interactive_brokers.factories.IB_INSTRUMENT_PROVIDERS", new={}),
    ):
        yield gateway
