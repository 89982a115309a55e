"""The live path's bars and features: MBP-10 records as they arrive -> the batch path's own code -> one bar and
one feature row per closed minute.

`./phoenix paper` (live `databento.Live` or a replayed day) feeds records here in arrival order, in chunks of
any size down to one record. The records go through the same `BookOfiState` kernel as `book_snapshots_1s`,
the same `minute_bars` as the `ofi_bars_1m` asset, and the same streaming kernels as `features_1m` /
`hmm_regimes` (`FeatureKernel`, `RegimeFilter`), so a replayed day gives the batch tables' rows bit for bit
(tests/assets/lib/market/test_live_bars.py). A minute closes when a record of a later minute arrives (or at
`close()`, the end of the stream): only then are all of its seconds known, which is also when the batch bar is final.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from feature_specs import FeatureCatalog
from feature_specs.spec import FeatureSpecError
from phoenix_assets.lib import calendar as cal
from phoenix_assets.lib.features.compute import bar_features, feature_frame, session_bars
from phoenix_assets.lib.features.hmm_regimes import RegimeFilter, RegimeModel
from phoenix_assets.lib.features.kernel import FeatureKernel
from phoenix_assets.lib.market.bars import minute_bars
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
        pieces = self._pending  # one piece (the usual close): no copy
        pending = {k: np.concatenate([p[k] for p in pieces]) if pieces[1:] else pieces[0][k] for k in SECOND_COLUMNS}
        closed = np.ones(len(pending["ts"]), dtype=bool) if minute_ns is None else pending["ts"] < minute_ns
        if not closed.any():
            return pl.DataFrame()
        if closed.all():  # the usual close: every pending second is the closing minute's
            self._pending, seconds = [], pending
        else:
            self._pending = [{k: v[~closed] for k, v in pending.items()}]
            seconds = {k: v[closed] for k, v in pending.items()}  # the kernel's order: (instrument_id, ts) per call
        return minute_bars(seconds, symbol=self._symbol, stoikov_table=self._stoikov)


class LiveFeatures:
    """Bars in, their point-in-time feature rows out: the batch's own streaming kernels (`FeatureKernel` for the
    transforms and z-scores, `RegimeFilter` for the regimes, forward-filtered with a model fitted earlier, never
    on the live data), primed with the warm-up history and then fed each closed bar once. A bar costs its
    windows (O(window)), not a recompute of the history."""

    def __init__(self, history: pl.DataFrame, catalog: FeatureCatalog, model: RegimeModel | None = None) -> None:
        self._catalog = catalog
        fset = catalog.all_features()
        self._kernel = FeatureKernel(bar_features(fset))
        self._regimes = RegimeFilter(model, catalog.hmm) if model is not None and catalog.hmm else None
        self._needs_regimes = any(d.transform == "hmm_regime" for d in fset.features)
        self._newest: tuple[int, int] | None = None  # (instrument_id, ts ns) of the newest bar fed
        if history.height:
            self._feed(session_bars(history))

    def on_bars(self, bars: pl.DataFrame) -> pl.DataFrame:
        """The feature rows of `bars` (continuous-session bars only; no row for the others). Bars are fed once,
        in time order: a bar at or before one already fed is refused (its state has moved on)."""
        if not bars.height:
            return pl.DataFrame()
        rows = session_bars(bars)  # pre-open bars: no row, the frame's columns still there
        values, warm, labels = self._feed(rows)
        return feature_frame(rows, self._catalog, values, warm, labels)

    def _feed(self, rows: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        if rows.height:
            ts = cal.ts_ns(rows["ts"])
            first = (int(rows["instrument_id"][0]), int(ts[0]))
            if self._newest is not None and first[0] == self._newest[0] and first[1] <= self._newest[1]:
                raise ValueError(f"bar {rows['ts'][0]} of instrument {first[0]} was fed already (or is out of order)")
            self._newest = (int(rows["instrument_id"][-1]), int(ts[-1]))
        values, warm = self._kernel.run(rows)
        labels = None
        if self._needs_regimes:
            if self._regimes is None:
                raise FeatureSpecError("the catalogue has HMM features: LiveFeatures needs a regime model")
            probs = self._regimes.run(rows)
            labels = probs.argmax(axis=1).astype(np.int8)
        return values, warm, labels
