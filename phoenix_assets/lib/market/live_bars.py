"""The live path's bars and features: MBP-10 records as they arrive -> the batch path's own code -> one bar and
one feature row per closed minute.

`./phoenix paper` (live `databento.Live` or a replayed day) feeds records here in arrival order, in chunks of
any size down to one record. The records go through the same `BookOfiState` kernel as `book_snapshots_1s`,
the same `ofi_bars_1m` function as the `ofi_bars_1m` asset, and the same `compute_features` /
`filter_regimes` as `features_1m` / `hmm_regimes`, so a replayed day gives the batch tables' rows bit for bit
(tests/assets/lib/market/test_live_bars.py). A minute closes when a record of a later minute arrives (or at
`close()`, the end of the stream): only then are all of its seconds known, which is also when the batch bar is final.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from feature_specs import FeatureCatalog
from phoenix_assets.lib.features.compute import compute_features
from phoenix_assets.lib.features.hmm_regimes import RegimeModel, filter_regimes
from phoenix_assets.lib.market.bars import ofi_bars_1m, seconds_frame
from phoenix_assets.lib.market.book_kernel import SECOND_COLUMNS, BookArrays, BookOfiState

NS_PER_MINUTE = 60 * 1_000_000_000


class LiveBars:
    """Records in, bars of the minutes that closed out; the kernel's state carries across calls."""

    def __init__(self, *, symbol: str | None = None, stoikov_table: pl.DataFrame | None = None) -> None:
        self._state = BookOfiState()
        self._pending: list[dict[str, np.ndarray]] = []  # completed seconds of minutes still open
        self._symbol = symbol
        self._stoikov = stoikov_table

    def on_records(self, arrays: BookArrays) -> pl.DataFrame:
        """Apply the next records (arrival order); the bars of every minute before the newest record's minute."""
        self._keep(self._state.process_chunk(arrays))
        if len(arrays.ts_recv) == 0:
            return pl.DataFrame()
        return self._bars_before(int(arrays.ts_recv.max()) // NS_PER_MINUTE * NS_PER_MINUTE)

    def close(self) -> pl.DataFrame:
        """End of the stream: the open second and the open minute(s) close."""
        self._keep(self._state.flush())
        return self._bars_before(None)

    def _keep(self, seconds: dict[str, np.ndarray]) -> None:
        if len(seconds["ts"]):
            self._pending.append(seconds)

    def _bars_before(self, minute_ns: int | None) -> pl.DataFrame:
        # no pending second before the minute: nothing closes (the common case of a live feed's single records,
        # which would otherwise concatenate the open minute's seconds at every record)
        if not self._pending or (minute_ns is not None and int(self._pending[0]["ts"].min()) >= minute_ns):
            return pl.DataFrame()
        pending = {k: np.concatenate([p[k] for p in self._pending]) for k in SECOND_COLUMNS}
        closed = np.ones(len(pending["ts"]), dtype=bool) if minute_ns is None else pending["ts"] < minute_ns
        if not closed.any():
            return pl.DataFrame()
        self._pending = [{k: v[~closed] for k, v in pending.items()}] if not closed.all() else []
        seconds = seconds_frame({k: v[closed] for k, v in pending.items()})
        return ofi_bars_1m(seconds, symbol=self._symbol, stoikov_table=self._stoikov)


class LiveFeatures:
    """Bars in, their point-in-time feature rows out: `compute_features` over the warm-up history and the bars
    so far, with regimes forward-filtered by a model fitted earlier (never on the live data). Only the new
    bars' trailing z-scores are computed (`since`): the per-bar cost is the frame's vectorised transforms,
    not the z-score windows of the whole history."""

    def __init__(self, history: pl.DataFrame, catalog: FeatureCatalog, model: RegimeModel | None = None) -> None:
        self._bars = history
        self._catalog = catalog
        self._model = model

    def on_bars(self, bars: pl.DataFrame) -> pl.DataFrame:
        """The feature rows of `bars` (continuous-session bars only; an empty frame for the others)."""
        if bars.is_empty():
            return pl.DataFrame()
        if self._bars.height:  # the history's types: read from the lake, ts is Delta's microseconds
            bars = bars.select(self._bars.columns).cast(dict(self._bars.schema))
            self._bars = pl.concat([self._bars, bars], rechunk=True)  # one chunk: polars is 25x slower on 1000s
        else:
            self._bars = bars
        regimes = filter_regimes(self._model, self._bars, self._catalog.hmm) if self._model is not None else None
        features = compute_features(self._bars, self._catalog, regimes, since=bars["ts"].min())
        keys = bars.select(pl.col("ts").cast(features.schema["ts"]), "instrument_id")
        return features.join(keys, on=["ts", "instrument_id"], how="semi")
