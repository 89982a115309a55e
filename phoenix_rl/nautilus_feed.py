"""MBP-10 as NautilusTrader sees it: the book data a Nautilus venue (paper or L2 backtest) trades against.

Nautilus's Databento loader turns every MBP-10 record into an `OrderBookDepth10` stamped ts_event = DBN
ts_recv, including the records in the middle of an event (no F_LAST), whose book is half-updated: those are
not books anyone could trade against, so `load_depth10` keeps only records with F_LAST (the rule the batch
kernel follows). The pre-open book (16:45-17:00 CT) is often crossed or locked, and a simulated venue would
fill market orders against it: `best_quotes` gives the live loop the top of book to hand to
`phoenix_rl.risk.RiskEngine.on_book`, which refuses new risk there.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

F_LAST = 0x80

__all__ = ["best_quotes", "load_depth10"]


def load_depth10(path: str | Path) -> list:
    """The tradeable books of a DBN MBP-10 file: Nautilus `OrderBookDepth10` of the F_LAST records only."""
    from nautilus_trader.adapters.databento.loaders import DatabentoDataLoader

    data = DatabentoDataLoader().from_dbn_file(Path(path), as_legacy_cython=True)
    return [d for d in data if d.flags & F_LAST]


def best_quotes(depths: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ts_event ns, best bid, best ask) per book; NaN where a side is empty."""
    ts = np.array([d.ts_event for d in depths], dtype=np.int64)
    bid = np.array([float(d.bids[0].price) if d.bids and d.bids[0].size > 0 else np.nan for d in depths])
    ask = np.array([float(d.asks[0].price) if d.asks and d.asks[0].size > 0 else np.nan for d in depths])
    return ts, bid, ask
