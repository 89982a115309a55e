"""Interactive Brokers on the node: NautilusTrader's IB exec client for one MNQ CME future.

The exec client talks to a running IB Gateway / TWS (or NautilusTrader's `DockerizedIBGatewayConfig`, which
needs a Docker daemon) on a paper account (DU...). Its instrument provider loads exactly the configured MNQ
contract month from IB (`load_contracts`: secType FUT, exchange CME, tradingClass MNQ), so IB's contract
details (tick, multiplier 2) are the instrument's; Phoenix's `MNQ` must agree (`check_instrument`). IB names
the instrument `MNQ<month code><year>.CME` (IB_SIMPLIFIED symbology); the roll is a new contract month in
`PHOENIX_IB_CONTRACT_MONTH` after the old one is flattened.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from ibapi.order import Order as IBOrder
from nautilus_trader.adapters.interactive_brokers.client.common import AccountOrderRef
from nautilus_trader.adapters.interactive_brokers.common import IB_VENUE, IBContract
from nautilus_trader.adapters.interactive_brokers.config import (
    DockerizedIBGatewayConfig,
    InteractiveBrokersExecClientConfig,
    InteractiveBrokersInstrumentProviderConfig,
)
from nautilus_trader.adapters.interactive_brokers.execution import InteractiveBrokersExecutionClient
from nautilus_trader.adapters.interactive_brokers.factories import InteractiveBrokersLiveExecClientFactory
from nautilus_trader.cache.cache import Cache
from nautilus_trader.common.component import LiveClock, MessageBus
from nautilus_trader.live.config import RoutingConfig
from nautilus_trader.live.node import TradingNode
from nautilus_trader.model.identifiers import ClientId
from nautilus_trader.model.instruments import Instrument

from phoenix_assets.lib.instrument import MNQ
from phoenix_rl.live.node.config import IBSettings

if TYPE_CHECKING:
    from phoenix_rl.live.node.runner import LiveSession
    from phoenix_rl.live.node.strategy import PhoenixStrategy

__all__ = ["IB_CLIENT", "IBConnection", "PhoenixIBExecClientFactory", "check_instrument", "exec_client", "mnq_contract"]

IB_CLIENT = IB_VENUE.value  # the node's name for the exec client ("INTERACTIVE_BROKERS")


def mnq_contract(settings: IBSettings) -> IBContract:
    """The MNQ future of the configured month on CME, as IB's API names it."""
    return IBContract(
        secType="FUT",
        exchange=MNQ.exchange.removeprefix("X") if MNQ.exchange.startswith("X") else MNQ.exchange,  # XCME -> CME
        symbol=MNQ.root,
        tradingClass=MNQ.root,
        currency="USD",
        lastTradeDateOrContractMonth=settings.contract_month,
    )


def exec_client(settings: IBSettings) -> tuple[dict, dict]:
    """(exec_clients, exec_factories) for `runner.build_node`: IB's exec client on the settings' Gateway."""
    gateway = (
        DockerizedIBGatewayConfig(
            username=settings.username,
            password=settings.password,
            trading_mode=settings.trading_mode,  # type: ignore[arg-type]
            read_only_api=False,  # it places orders
        )
        if settings.dockerized
        else None
    )
    config = InteractiveBrokersExecClientConfig(
        ibg_host=settings.host,
        ibg_port=None if settings.dockerized else settings.port,
        ibg_client_id=settings.client_id,
        account_id=settings.account_id,
        dockerized_gateway=gateway,
        instrument_provider=InteractiveBrokersInstrumentProviderConfig(
            load_contracts=frozenset([mnq_contract(settings)]),
        ),
        connection_timeout=60,
        # IB names the contract by its exchange (MNQM4.CME), not by the client's venue INTERACTIVE_BROKERS: without
        # this route the exec engine finds no client for CME and drops every order
        routing=RoutingConfig(default=True, venues=frozenset([mnq_contract(settings).exchange])),
    )
    return {IB_CLIENT: config}, {IB_CLIENT: PhoenixIBExecClientFactory}


class PhoenixIBExecClientFactory(InteractiveBrokersLiveExecClientFactory):
    """NautilusTrader's IB exec client, with the IB order id -> client order id map keeping Phoenix's whole id.

    NautilusTrader 1.221's `InteractiveBrokersClient.place_order` maps IB's order id to
    `orderRef.rsplit(":", 1)[0]` *before* it appends ":<order id>" to the orderRef: right for Nautilus's own ids
    (no colon), wrong for Phoenix's journal ids (`strategy:bar:purpose`). Every `orderStatus` and order error (a
    rejection 201, a cancel 202, "Cancelled") would then name `strategy:bar`, an order the cache does not have,
    and be dropped: a rejection would never reach the strategy, a cancel would stay PENDING_CANCEL.
    `tests/rl/live/node/test_ib_exec_client.py` fails without this."""

    @staticmethod
    def create(  # type: ignore[override]
        loop: asyncio.AbstractEventLoop,
        name: str,
        config: InteractiveBrokersExecClientConfig,
        msgbus: MessageBus,
        cache: Cache,
        clock: LiveClock,
    ) -> InteractiveBrokersExecutionClient:
        client = InteractiveBrokersLiveExecClientFactory.create(loop, name, config, msgbus, cache, clock)
        ib = client._client
        if not getattr(ib, "_phoenix_order_refs", False):  # the IB client is shared (cached per Gateway)
            place = ib.place_order

            def place_order(order: IBOrder) -> None:
                client_order_id = order.orderRef  # before `place_order` appends ":<order id>"
                place(order)
                ib._order_id_to_order_ref[order.orderId] = AccountOrderRef(order.account, client_order_id)

            ib.place_order = place_order
            ib._phoenix_order_refs = True
        return client


def check_instrument(instrument: Instrument) -> None:
    """IB's contract must be the one Phoenix models (tick, $ per point): one source for the env, the risk engine
    and the broker; a mismatch is refused before the first order."""
    tick, multiplier = float(instrument.price_increment), float(instrument.multiplier)
    if (tick, multiplier) != (MNQ.tick_size, MNQ.point_value):
        raise ValueError(
            f"IB's {instrument.id} has tick {tick} and multiplier {multiplier}; Phoenix's MNQ has "
            f"{MNQ.tick_size} and {MNQ.point_value} (phoenix_assets/lib/instrument.py): wrong contract in "
            "PHOENIX_IB_CONTRACT_MONTH, or the instrument definition changed"
        )


class IBConnection:
    """The IB exec client's link as `LiveSession`'s disconnect / reconnect. NautilusTrader's IB client clears its
    connected flag on IB's "connectivity lost" (error 1100, 2110, a closed socket) and sets it again on 1101 /
    1102, but nothing tells the strategy: `poll` (after every slice) turns each change into
    `LiveSession.on_disconnect` / `on_reconnect`, and the reconnect reconciles through Nautilus's own
    reconciliation with IB's reports (`reconcile`)."""

    def __init__(self, node: TradingNode, strategy: PhoenixStrategy, lookback_mins: int = 24 * 60) -> None:
        client = node.kernel.exec_engine._clients.get(ClientId(IB_CLIENT))
        if not isinstance(client, InteractiveBrokersExecutionClient):
            raise TypeError(f"IBConnection: the node has no IB exec client named {IB_CLIENT} (ib.exec_client)")
        self.node, self.strategy, self.exec_client = node, strategy, client
        self.lookback_mins = lookback_mins  # IB reports the executions of the last 24 h at most
        self.was_connected = True

    @property
    def connected(self) -> bool:
        """IB's side of the link is up (the socket and IB's servers behind the Gateway)."""
        ib = self.exec_client._client
        return ib._is_ib_connected.is_set() and ib._eclient.isConnected()

    def poll(self, session: LiveSession) -> None:
        """Tell the session about a change of the link since the last poll."""
        now = self.connected
        if now == self.was_connected:
            return
        self.was_connected = now
        if now:
            session.on_reconnect(self.reconcile)
        else:
            session.on_disconnect()

    def reconcile(self) -> list[str]:
        """IB's open orders, executions and positions through Nautilus's reconciliation (the cache and the
        portfolio are brought to IB's view; an unknown position becomes an external order), and what differs
        from Phoenix's orders: an order Phoenix counts as open that IB does not report, or IB's open order Phoenix
        never sent. The position itself is the session's check, right after."""
        loop = self.node.get_event_loop()
        mass = loop.run_until_complete(self.exec_client.generate_mass_status(self.lookback_mins))
        if mass is None:
            return ["IB sent no reports: reconciliation failed"]
        self.node.kernel.exec_engine.reconcile_execution_mass_status(mass)
        loop.run_until_complete(asyncio.sleep(0))
        reported = {str(r.client_order_id): r for r in mass.order_reports.values() if r.client_order_id}
        differences = [
            f"IB reports open order {coid} ({r.order_status.name}) that Phoenix never sent"
            for coid, r in reported.items()
            if coid not in self.strategy.sent and r.order_status.name in {"ACCEPTED", "PARTIALLY_FILLED"}
        ]
        for coid, sent in self.strategy.open_orders().items():
            if coid not in reported:
                differences.append(f"Phoenix's order {coid} ({sent.filled:+d} of {sent.quantity:+d}) is not open at IB")
        return differences
