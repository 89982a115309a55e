"""The one definition of the traded contract: MNQ's facts, carried by one object the way NautilusTrader's
instrument carries tick size, multiplier and fees, so no contract constant is typed twice.

The env's costs (`phoenix_rl.config.EnvConfig`), the risk engine's notional (`phoenix_rl.live.risk`), the
Nautilus contract of the paper venue, the bar and quality checks' tick grid and the synthetic market all read
`MNQ`. A leaf module (no imports), so `phoenix_rl.config` stays cheap to load.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MNQ", "Instrument"]


@dataclass(frozen=True)
class Instrument:
    """A CME Globex equity-index future as Phoenix trades it (prices in index points, money in USD)."""

    root: str  # the product code, Nautilus's `underlying`
    name: str
    tick_size: float  # index points per tick (the price grid)
    point_value: float  # $ per index point per contract (Nautilus's `multiplier`)
    commission_per_side_usd: float  # default all-in fee per contract per side (trading_env.py's module doc)
    dataset: str  # Databento dataset of its MBP-10 data
    continuous_symbol: str  # Databento's front-month continuous symbol (stype_in continuous)
    venue: str  # Nautilus venue of the instrument ids
    exchange: str  # ISO 10383 MIC of the listing exchange


MNQ = Instrument(
    root="MNQ",
    name="Micro E-mini Nasdaq-100",
    tick_size=0.25,
    point_value=2.0,
    commission_per_side_usd=0.62,
    dataset="GLBX.MDP3",
    continuous_symbol="MNQ.v.0",
    venue="GLBX",
    exchange="XCME",
)
