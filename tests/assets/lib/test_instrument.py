"""MNQ's contract facts are defined once (phoenix_assets.lib.instrument) and every user takes them from there."""

from __future__ import annotations

from nautilus_trader.model.objects import Price, Quantity

from phoenix_assets.defs.resources import DatabentoResource, LandingResource, QualityThresholds
from phoenix_assets.lib.instrument import MNQ
from phoenix_assets.lib.market import bars
from phoenix_assets.lib.synthetic import market as synthetic
from phoenix_rl.config import EnvConfig
from phoenix_rl.live.nautilus.venue import VENUE, mnq_contract
from phoenix_rl.live.risk import RiskConfig


def test_the_mnq_contract_facts() -> None:
    """CME's Micro E-mini Nasdaq-100: 0.25 index points a tick, $2 a point (so $0.50 a tick), on Globex."""
    assert (MNQ.root, MNQ.tick_size, MNQ.point_value) == ("MNQ", 0.25, 2.0)
    assert MNQ.commission_per_side_usd == 0.62  # trading_env.py's module doc: the all-in retail rate
    assert (MNQ.dataset, MNQ.continuous_symbol) == ("GLBX.MDP3", "MNQ.v.0")
    assert (MNQ.venue, MNQ.exchange) == ("GLBX", "XCME")


def test_every_user_takes_the_facts_from_the_instrument() -> None:
    env = EnvConfig()
    assert (env.tick_size, env.point_value, env.commission_per_side_usd) == (
        MNQ.tick_size,
        MNQ.point_value,
        MNQ.commission_per_side_usd,
    )
    assert RiskConfig().point_value == MNQ.point_value
    contract = mnq_contract(42005347)
    assert contract.price_increment == Price.from_str("0.25") and contract.price_increment.as_double() == MNQ.tick_size
    assert contract.multiplier == Quantity.from_int(2) and contract.multiplier.as_double() == MNQ.point_value
    assert (contract.underlying, contract.exchange, VENUE) == (MNQ.root, MNQ.exchange, MNQ.venue)
    assert MNQ.tick_size == bars.TICK_SIZE
    assert MNQ.tick_size == synthetic.TICK_POINTS and synthetic.TICK == 250_000_000  # DBN's 1e-9 fixed point
    assert synthetic.SyntheticMarketConfig().continuous_symbol == MNQ.continuous_symbol
    assert QualityThresholds().tick_size == MNQ.tick_size
    assert LandingResource().dataset == DatabentoResource().dataset == MNQ.dataset
    assert DatabentoResource().symbols == [MNQ.continuous_symbol]
