"""The live node's settings: one frozen config read from the environment when the CLI asks (never at import),
with the secrets kept out of its repr, so a settings line can go to a log or the journal as it is.

    PHOENIX_LIVE_VENUE          sandbox (default) | ib
    PHOENIX_LIVE_TRADER_ID      Nautilus trader id (default PHOENIX-001)
    PHOENIX_LIVE_RECONCILE      1 (default) | 0: Nautilus's start-up reconciliation with the venue's reports
    PHOENIX_LIVE_ORDER_TIMEOUT_S  an order neither filled nor cancelled this long (data time) is chased (default 30)
    PHOENIX_LIVE_MAX_DISCONNECT_S a venue disconnected this long halts the strategy (default 60)
    IB_ACCOUNT_ID               the IB account, a paper one is DU... (required for --venue ib)
    IB_GATEWAY_HOST / IB_GATEWAY_PORT / IB_CLIENT_ID   a running Gateway/TWS (127.0.0.1 / 4002 / 1)
    IB_TRADING_MODE             paper (default) | live: live also needs PHOENIX_LIVE_ALLOW_REAL_MONEY=1
    IB_DOCKERIZED               1: start NautilusTrader's DockerizedIBGateway (needs a Docker daemon)
    IB_USERNAME / IB_PASSWORD   only for the dockerized Gateway; never printed (repr shows "***")
    PHOENIX_IB_CONTRACT_MONTH   MNQ contract month YYYYMM (required for --venue ib: the roll is the caller's)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields

__all__ = ["IBSettings", "LiveSettings", "SettingsError"]

VENUES = ("sandbox", "ib")


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable and what to set."""


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not an integer: set it to a whole number or unset it") from None


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number: set it to seconds or unset it") from None
    if value <= 0:
        raise SettingsError(f"{name}={raw!r} must be > 0")
    return value


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw not in {"0", "1", "true", "false", "yes", "no"}:
        raise SettingsError(f"{name}={raw!r}: use 1 or 0")
    return raw in {"1", "true", "yes"}


@dataclass(frozen=True)
class IBSettings:
    """Where the Interactive Brokers Gateway is and which account and contract to trade."""

    account_id: str
    contract_month: str  # YYYYMM of the MNQ future traded
    host: str = "127.0.0.1"
    port: int = 4002  # IB Gateway's paper port (live: 4001; TWS: 7497 / 7496)
    client_id: int = 1
    trading_mode: str = "paper"
    dockerized: bool = False
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.account_id:
            raise SettingsError("IB_ACCOUNT_ID is not set: the IB account to trade (a paper account is DU...)")
        if len(self.contract_month) != 6 or not self.contract_month.isdigit():
            raise SettingsError(
                f"PHOENIX_IB_CONTRACT_MONTH={self.contract_month!r}: set the MNQ contract month as YYYYMM (e.g. 202412)"
            )
        if self.trading_mode not in {"paper", "live"}:
            raise SettingsError(f"IB_TRADING_MODE={self.trading_mode!r}: use paper or live")
        if self.dockerized and not (self.username and self.password):
            raise SettingsError("IB_DOCKERIZED=1 needs IB_USERNAME and IB_PASSWORD (the Gateway logs in with them)")

    def __repr__(self) -> str:  # no secret in a log line
        shown = {f.name: getattr(self, f.name) for f in fields(self) if f.repr}
        secret = {n: "***" for n in ("username", "password") if getattr(self, n)}
        return f"IBSettings({', '.join(f'{k}={v!r}' for k, v in {**shown, **secret}.items())})"


@dataclass(frozen=True)
class LiveSettings:
    """Everything `./phoenix live` takes from the environment (module doc)."""

    venue: str = "sandbox"
    trader_id: str = "PHOENIX-001"
    reconcile: bool = True
    order_timeout_s: float = 30.0
    max_disconnect_s: float = 60.0
    ib: IBSettings | None = None

    def __post_init__(self) -> None:
        if self.venue not in VENUES:
            raise SettingsError(f"venue {self.venue!r}: use one of {', '.join(VENUES)} (PHOENIX_LIVE_VENUE or --venue)")
        if self.venue == "ib" and self.ib is None:
            raise SettingsError("--venue ib needs the IB settings: IB_ACCOUNT_ID and PHOENIX_IB_CONTRACT_MONTH")
        if "-" not in self.trader_id:
            raise SettingsError(f"PHOENIX_LIVE_TRADER_ID={self.trader_id!r}: Nautilus wants NAME-TAG, e.g. PHOENIX-001")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, venue: str | None = None) -> LiveSettings:
        """Read the settings now (the CLI calls this; nothing reads the environment at import)."""
        env = os.environ if env is None else env
        venue = venue or env.get("PHOENIX_LIVE_VENUE", "").strip() or "sandbox"
        ib = None
        if venue == "ib":
            allow_live = _flag(env, "PHOENIX_LIVE_ALLOW_REAL_MONEY", False)
            mode = env.get("IB_TRADING_MODE", "paper").strip() or "paper"
            if mode == "live" and not allow_live:
                raise SettingsError(
                    "IB_TRADING_MODE=live trades real money: set PHOENIX_LIVE_ALLOW_REAL_MONEY=1 as well if you mean it"
                )
            ib = IBSettings(
                account_id=env.get("IB_ACCOUNT_ID", "").strip(),
                contract_month=env.get("PHOENIX_IB_CONTRACT_MONTH", "").strip(),
                host=env.get("IB_GATEWAY_HOST", "").strip() or "127.0.0.1",
                port=_int(env, "IB_GATEWAY_PORT", 4002),
                client_id=_int(env, "IB_CLIENT_ID", 1),
                trading_mode=mode,
                dockerized=_flag(env, "IB_DOCKERIZED", False),
                username=env.get("IB_USERNAME") or None,
                password=env.get("IB_PASSWORD") or None,
            )
        return cls(
            venue=venue,
            trader_id=env.get("PHOENIX_LIVE_TRADER_ID", "").strip() or "PHOENIX-001",
            reconcile=_flag(env, "PHOENIX_LIVE_RECONCILE", True),
            order_timeout_s=_float(env, "PHOENIX_LIVE_ORDER_TIMEOUT_S", 30.0),
            max_disconnect_s=_float(env, "PHOENIX_LIVE_MAX_DISCONNECT_S", 60.0),
            ib=ib,
        )
