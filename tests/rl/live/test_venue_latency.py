"""The paper venue under the one fill model (issue 24 item 8), on a scripted book: the order reaches the matching
engine `fill_latency_ms` after it is sent and fills at the first book from then on, crossing the spread; every
contract pays fees + slippage per side (the bar backtest's charge)."""

from __future__ import annotations

import itertools

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


class _EveryBook(PaperVenue):
    """The venue fed every tradeable book of every slice (what `on_records` did before `venue_rows`)."""

    def on_records(self, arrays: BookArrays) -> list:
        for iid in np.unique(arrays.instrument_id).tolist():
            if iid not in self._instruments:
                self._add_instrument(iid)
        self._run(arrays, np.flatnonzero((arrays.flags & F_LAST) != 0))
        return self._strategy.drain()


@pytest.mark.parametrize("latency_ms", [0.0, 50.0, 1500.0])
def test_feeding_only_the_books_that_matter_gives_every_books_fills(latency_ms: float, tmp_path) -> None:
    """A synthetic MNQ day, an order at every minute's first record (the trader's slices): the venue fed the
    newest book and the books around each order's arrival fills exactly as the venue fed every book."""
    import datetime as dt

    import databento

    from phoenix_assets.lib.market.book_kernel import arrays_from_dbn
    from phoenix_assets.lib.synthetic.market import SyntheticMarketConfig, write_day

    path = write_day(dt.date(2024, 3, 13), tmp_path, SyntheticMarketConfig(records_per_day=20_000))
    records = arrays_from_dbn(np.concatenate(list(databento.DBNStore.from_file(path).to_ndarray(count=1 << 16))))
    fill = FillConfig.from_env(EnvConfig(feature_columns=("f",), fill_latency_ms=latency_ms))
    ts = records.ts_recv.astype(np.int64)
    cuts = [0, *(np.flatnonzero(np.diff(ts // 60_000_000_000)) + 1).tolist(), len(ts)]
    got = {}
    for name, kind in (("books that matter", PaperVenue), ("every book", _EveryBook)):
        venue, fills = kind(capital_usd=10_000.0, fill=fill), []
        try:
            for k, (start, stop) in enumerate(itertools.pairwise(cuts)):
                fills += venue.on_records(records.slice(start, start + 1))  # the bar-closing record
                if k % 3 == 0 and k < len(cuts) - 5:
                    venue.submit(int(records.instrument_id[start]), (1, -2, 1)[k % 9 // 3], f"o-{k}")
                fills += venue.on_records(records.slice(start + 1, stop))
        finally:
            venue.close()
        got[name] = fills
    assert len(got["every book"]) > 300
    assert got["books that matter"] == got["every book"]
