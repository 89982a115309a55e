"""NautilusTrader's view of real MBP-10 (the book its venue trades against) agrees with the DBN records: ts_event
is ts_recv, only F_LAST records are tradeable books, and the crossed pre-open books it would fill against are
exactly where Phoenix's risk engine refuses new risk."""

from __future__ import annotations

import databento
import numpy as np
import pytest

from phoenix_assets.lib.book_kernel import BookArrays, arrays_from_dbn
from phoenix_assets.lib.mbp10_schema import F_LAST, PRICE_SCALE, UNDEF_PRICE
from phoenix_rl.nautilus_feed import best_quotes, load_depth10
from phoenix_rl.risk import RiskEngine, TradingState
from tests.conftest import ESH4_MBP10  # real ES book 16:00-18:00 CT: the pre-open, then the 17:00 open

OPEN_NS = 1_703_545_200_000_000_000  # 2023-12-25 17:00:00 CT = 23:00 UTC


@pytest.fixture(scope="module")
def records() -> BookArrays:
    store = databento.DBNStore.from_file(ESH4_MBP10)
    return arrays_from_dbn(np.concatenate(list(store.to_ndarray(count=1 << 16))))


def _px(fixed: np.ndarray) -> np.ndarray:
    return np.where(fixed == UNDEF_PRICE, np.nan, fixed / PRICE_SCALE)


def test_nautilus_books_are_the_f_last_records_stamped_with_ts_recv(records: BookArrays) -> None:
    depths = load_depth10(ESH4_MBP10)
    last = (records.flags & F_LAST) != 0
    assert len(depths) == int(last.sum()) < len(records.ts_recv)  # mid-event books dropped
    ts, bid, ask = best_quotes(depths)
    np.testing.assert_array_equal(ts, records.ts_recv[last].astype(np.int64))
    np.testing.assert_array_equal(bid, _px(records.bid_px[last, 0]))
    np.testing.assert_array_equal(ask, _px(records.ask_px[last, 0]))


def test_the_crossed_pre_open_books_nautilus_would_fill_against_are_refused(records: BookArrays) -> None:
    ts, bid, ask = best_quotes(load_depth10(ESH4_MBP10))
    crossed = bid >= ask
    assert crossed[ts < OPEN_NS].sum() > 100 and not crossed[ts >= OPEN_NS + 60_000_000_000].any()
    engine = RiskEngine()
    refused = accepted = 0
    for t, b, a in zip(ts, bid, ask, strict=True):
        engine.on_book(int(t), b, a, in_session=t >= OPEN_NS)
        decision = engine.check_order(int(t), 0, 1)
        if b >= a or t < OPEN_NS:
            refused += not decision.accepted
        else:
            accepted += decision.accepted
    assert refused == int(((bid >= ask) | (ts < OPEN_NS)).sum())  # every pre-open / crossed book refused
    assert accepted > 1_000 and engine.state is TradingState.ACTIVE
