"""The paper venue under the one fill model (issue 24 item 8), on a scripted book: the order reaches the matching
engine `fill_latency_ms` after it is sent and fills at the first book from then on, crossing the spread; every
contract pays fees + slippage per side (the bar backtest's charge)."""

from __future__ import annotations

import numpy as np
import pytest

from phoenix_assets.lib.market.book_kernel import BookArrays
from phoenix_assets.lib.schema import F_LAST, PRICE_SCALE, UNDEF_PRICE
from phoenix_rl.config import EnvConfig
from phoenix_rl.env.fills import FillConfig
from phoenix_rl.live.nautilus.venue import PaperVenue

IID = 42005347
T0 = 1_710_400_000_000_000_000  # 2024-03-14 07:06:40 UTC


def books(ts_offsets_ms: list[float], asks: list[float]) -> BookArrays:
    """One F_LAST record per moment: best bid = ask - 0.25, 5 contracts a side, nine more levels a tick apart."""
    n = len(asks)
    ask = np.array(asks)[:, None] + 0.25 * np.arange(10)[None, :]
    bid = np.array(asks)[:, None] - 0.25 - 0.25 * np.arange(10)[None, :]
    px = lambda a: np.round(a * PRICE_SCALE).astype(np.int64)  # noqa: E731
    return BookArrays(
        ts_recv=np.array([T0 + int(ms * 1e6) for ms in ts_offsets_ms], dtype=np.uint64),
        instrument_id=np.full(n, IID, dtype=np.uint32),
        action=np.full(n, ord("A"), dtype=np.uint8),
        side=np.full(n, ord("B"), dtype=np.uint8),
        flags=np.full(n, F_LAST, dtype=np.uint8),
        price=np.full(n, UNDEF_PRICE, dtype=np.int64),
        size=np.zeros(n, dtype=np.uint32),
        bid_px=px(bid),
        ask_px=px(ask),
        bid_sz=np.full((n, 10), 5, dtype=np.uint32),
        ask_sz=np.full((n, 10), 5, dtype=np.uint32),
    )


def fill_after(latency_ms: float, quantity: int = 1) -> tuple[float, float, int]:
    fill = FillConfig.from_env(EnvConfig(feature_columns=("f",), fill_latency_ms=latency_ms))
    venue = PaperVenue([IID], capital_usd=10_000.0, fill=fill)
    try:
        venue.on_records(books([0.0], [18000.0]))  # the book the decision saw
        venue.submit(IID, quantity, "o-1")  # decided: sent now (data time 0 ms)
        fills = venue.on_records(books([10.0, 60.0, 200.0], [18000.25, 18001.0, 18002.0]))
    finally:
        venue.close()
    assert len(fills) == 1 and fills[0].quantity == quantity
    return fills[0].price, fills[0].commission_usd, fills[0].ts_ns - T0


def test_latency_zero_fills_at_the_first_book_after_the_order_crossing_the_spread() -> None:
    price, fee, at = fill_after(0.0)
    assert price == 18000.25 and at == 10_000_000  # the ask of the first book fed after the order
    assert fee == pytest.approx(0.62 + 1 * 0.25 * 2.0)  # fees + 1 tick of slippage, per contract and side


def test_latency_moves_the_fill_to_the_first_book_at_or_after_decision_plus_latency() -> None:
    assert fill_after(50.0)[:1] == (18001.0,) and fill_after(50.0)[2] == 60_000_000
    assert fill_after(100.0)[:1] == (18002.0,)
    sell = fill_after(50.0, quantity=-1)
    assert sell[0] == 18001.0 - 0.25  # a sell crosses to the bid


def test_without_the_fill_model_only_the_commission_is_charged() -> None:
    venue = PaperVenue([IID], capital_usd=10_000.0, commission_per_side_usd=0.62)
    venue.on_records(books([0.0], [18000.0]))
    venue.submit(IID, 1, "o-1")
    fills = venue.on_records(books([10.0], [18000.0]))
    venue.close()
    assert fills[0].commission_usd == pytest.approx(0.62)
