"""The live node's settings come from the environment when asked, refuse what cannot work with the variable's
name, and never show a secret."""

from __future__ import annotations

import pytest

from phoenix_rl.live.nautilus.venue import mnq_contract as sandbox_contract
from phoenix_rl.live.node import ib
from phoenix_rl.live.node.config import LiveSettings, SettingsError

IB_ENV = {"PHOENIX_LIVE_VENUE": "ib", "IB_ACCOUNT_ID": "DU1234567", "PHOENIX_IB_CONTRACT_MONTH": "202403"}


def test_the_sandbox_needs_nothing_and_ib_names_what_is_missing() -> None:
    assert LiveSettings.from_env({}) == LiveSettings()
    assert LiveSettings.from_env({}).venue == "sandbox"
    with pytest.raises(SettingsError, match="IB_ACCOUNT_ID is not set"):
        LiveSettings.from_env({"PHOENIX_LIVE_VENUE": "ib", "PHOENIX_IB_CONTRACT_MONTH": "202403"})
    with pytest.raises(SettingsError, match="PHOENIX_IB_CONTRACT_MONTH='2024-03'"):
        LiveSettings.from_env(IB_ENV | {"PHOENIX_IB_CONTRACT_MONTH": "2024-03"})
    with pytest.raises(SettingsError, match="IB_GATEWAY_PORT='fourthousand' is not an integer"):
        LiveSettings.from_env(IB_ENV | {"IB_GATEWAY_PORT": "fourthousand"})
    with pytest.raises(SettingsError, match="PHOENIX_LIVE_ALLOW_REAL_MONEY=1"):
        LiveSettings.from_env(IB_ENV | {"IB_TRADING_MODE": "live"})
    with pytest.raises(SettingsError, match="needs IB_USERNAME and IB_PASSWORD"):
        LiveSettings.from_env(IB_ENV | {"IB_DOCKERIZED": "1"})
    with pytest.raises(SettingsError, match="venue 'paper'"):
        LiveSettings.from_env({"PHOENIX_LIVE_VENUE": "paper"})
    with pytest.raises(SettingsError, match="PHOENIX_LIVE_ORDER_TIMEOUT_S='0' must be > 0"):
        LiveSettings.from_env({"PHOENIX_LIVE_ORDER_TIMEOUT_S": "0"})


def test_no_secret_in_the_settings_line_or_the_exec_client_config() -> None:
    env = IB_ENV | {"IB_DOCKERIZED": "1", "IB_USERNAME": "phoenixuser", "IB_PASSWORD": "hunter2-secret"}
    settings = LiveSettings.from_env(env)
    assert settings.ib is not None and settings.ib.password == "hunter2-secret"
    clients, factories = ib.exec_client(settings.ib)
    for shown in (repr(settings), str(settings), repr(clients)):
        assert "hunter2-secret" not in shown and "phoenixuser" not in shown
    assert "password='***'" in repr(settings)
    config = clients[ib.IB_CLIENT]
    assert config.account_id == "DU1234567" and config.dockerized_gateway.trading_mode == "paper"
    assert set(factories) == set(clients) == {"INTERACTIVE_BROKERS"}


def test_the_ib_contract_is_mnq_on_cme_of_the_month_and_must_match_phoenixs_instrument() -> None:
    settings = LiveSettings.from_env(IB_ENV)
    assert settings.ib is not None
    contract = ib.mnq_contract(settings.ib)
    assert (contract.secType, contract.exchange, contract.symbol, contract.lastTradeDateOrContractMonth) == (
        "FUT",
        "CME",
        "MNQ",
        "202403",
    )
    provider = ib.exec_client(settings.ib)[0][ib.IB_CLIENT].instrument_provider
    assert provider.load_contracts == frozenset([contract])
    ib.check_instrument(sandbox_contract(42))  # Phoenix's own MNQ passes
    from nautilus_trader.test_kit.providers import TestInstrumentProvider

    with pytest.raises(ValueError, match=r"has tick .* and multiplier"):
        ib.check_instrument(TestInstrumentProvider.es_future(2024, 3))  # ES: $50 a point
