"""Small synthetic `features_1m`-shaped frames for tests and benchmarks (no DBN pipeline needed)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from zoneinfo import ZoneInfo

import numpy as np
import polars as pl

from phoenix_assets.lib.instrument import MNQ

__all__ = ["synthetic_features"]


def synthetic_features(
    columns: Sequence[str],
    *,
    n_sessions: int = 3,
    bars_per_session: int = 120,
    first_trade_date: dt.date = dt.date(2024, 3, 12),
    start_price: float = 17_500.0,
    signal: str | None = "ofi_1min_zscore",
    signal_strength: float = 0.5,
    seed: int = 0,
    instrument_id: int = 42005347,
) -> pl.DataFrame:
    """Sessions of 1-minute bars on consecutive trade dates, each ending at the scheduled 16:00 CT close (the
    session's last `bars_per_session` minutes; the env flattens before it as before a real halt), a random walk
    on MNQ's tick grid, N(0, 1) features, warm everywhere except each session's first 3 bars. When
    `signal` is one of the columns, the next bar's return leans towards its sign (a learnable edge)."""
    rng = np.random.default_rng(seed)
    parts = []
    price = start_price
    for s in range(n_sessions):
        td = first_trade_date + dt.timedelta(days=s)
        n = bars_per_session
        close = dt.datetime.combine(td, dt.time(16, 0), tzinfo=ZoneInfo("America/Chicago")).astimezone(dt.UTC)
        start = close - dt.timedelta(minutes=n)
        feats = rng.standard_normal((n, len(columns)))
        drift = np.zeros(n)
        if signal in columns:
            drift[1:] = signal_strength * np.sign(feats[:-1, list(columns).index(signal)])
        tick = MNQ.tick_size
        steps = np.round(rng.standard_normal(n) * 2 + drift) * tick
        opens = price + np.concatenate([[0.0], np.cumsum(steps)[:-1]]) + np.round(rng.standard_normal(n)) * tick
        closes = price + np.cumsum(steps)
        price = float(closes[-1])
        frame = pl.DataFrame(
            {
                "ts": pl.datetime_range(start, start + dt.timedelta(minutes=n - 1), "1m", eager=True, time_zone="UTC"),
                "trade_date": [td] * n,
                "instrument_id": [instrument_id] * n,
                "open": opens,
                "close": closes,
                **{c: feats[:, k] for k, c in enumerate(columns)},
                "warm": np.arange(n) >= 3,
            }
        )
        parts.append(frame)
    return pl.concat(parts).with_columns(pl.col("ts").dt.cast_time_unit("ns"))
