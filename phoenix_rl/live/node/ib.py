"""Interactive Brokers on the node: NautilusTrader's IB exec client for one MNQ CME future.

The exec client talks to a running IB Gateway / TWS (or NautilusTrader's `DockerizedIBGatewayConfig`, which
needs a Docker daemon) on a paper account (DU...). Its instrument provider loads exactly the configured MNQ
contract month from IB (`load_contracts`: secType FUT, exchange CME, tradingClass MNQ), so IB's contract
details (tick, multiplier 2) are the instrument's; Phoenix's `MNQ` must agree (`check_instrument`). IB names
the instrument `MNQ<month code><year>.CME` (IB_SIMPLIFIED symbology); the roll is a new contract month in
`PHOENIX_IB_CONTRACT_MONTH` after the old one is flattened.
"""

from __future__ import annotations

from nautilus_trader.adapters.interactive_brokers.common import IB_VENUE, IBContract
from nautilus_trader.adapters.interactive_brokers.config import (
    DockerizedIBGatewayConfig,
    InteractiveBrokersExecClientConfig,
    InteractiveBrokersInstrumentProviderConfig,
)
from nautilus_trader.adapters.interactive_brokers.factories import InteractiveBrokersLiveExecClientFactory
from nautilus_trader.model.instruments import Instrument

from phoenix_assets.lib.instrument import MNQ
from phoenix_rl.live.node.config import IBSettings

__all__ = ["IB_CLIENT", "check_instrument", "exec_client", "mnq_contract"]

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
    )
    return {IB_CLIENT: config}, {IB_CLIENT: InteractiveBrokersLiveExecClientFactory}


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
