"""Point-in-time features from `ofi_bars_1m`, as declared in `feature_specs` (YAML).

Rules every feature follows (Qlib-style handler: features look only backward; labels live elsewhere)
    Rows        Continuous-trading bars only (`in_session`); pre-open bars (indicative, often crossed
                book, no trades) are dropped. ts = bar start; bar t closes at t + 1m and a feature of bar t
                uses bars with start <= t only.
    Session     (instrument_id, trade_date): 17:00 CT D-1 to 16:00 CT D (`lib/calendar.py`).
    Transforms  Session-local, all of them: running sums, rolling windows (params.window_minutes, the
                session's bars with start in (t - window, t] by ts, so a missing minute shortens the window
                instead of stretching it; missing values skipped, null when none), previous close (true range,
                log return) and the session VWAP reset at every session start and on instrument change;
                nothing bridges the 16:00-17:00 CT halt.
                    column                x
                    range_pct             (high - low) / close
                    session_vwap_dist     (close - vwap) / vwap, vwap = cumsum(vwap_num) / cumsum(vwap_den)
                    session_time          sin|cos(2 pi m / period), m = minutes from 17:00 CT to bar start
                    rolling_sum/_mean     sum / mean over the window
                    net_gross_ratio       sum(x) / sum(|x|) over the window (0 when all zero): order-flow
                                          persistence, +1 when every minute's OFI pointed up, -1 down
                    atr                   mean of TR = max(high, c_prev) - min(low, c_prev) over the window
                                          (Wilder 1978 with a simple mean; first bar of a session TR = high - low)
                    log_return            ln(close_t / close_t-1), first bar of a session ln(close / open)
                    rolling_rms_log_return sqrt(mean(log_return^2)) over the window
                    hmm_regime            forward-filtered regime from `hmm_regimes` (label or one-hot)
    Z-score     TRAILING: z_t = clip((x_t - m_t) / s_t, +-clip), m_t and s_t (ddof 1) over the last
                `window` bars (of the feature's timeframe) ending at t inclusive, nulls skipped, null until
                `min_periods` values, 0 where s_t == 0. The window spans earlier sessions of the SAME
                instrument (`span_sessions: true`, so the first minutes of a day are scaled by yesterday),
                and restarts on instrument change (roll). Each window is summed afresh (O(window) a bar),
                so a value does not depend on where the input frame starts (bit-identical monthly
                partitions; sliding sums would carry rounding from earlier rows).
    Timeframes  A feature with timeframe 15m is computed on 15-minute bars built from the session's 1m
                bars (`feature_specs.spec.RESAMPLE_AGG`; [s, s+15m) on the UTC grid, which 17:00 CT is on),
                z-scored on the 15m series, and attached to 1m bar t from the last COMPLETED 15m bar of the
                same session: s + 15m <= t + 1m. Null during a session's first 14 minutes.
    warm        True when every feature of the set is non-null, every window_minutes window is full
                (session running >= window) and every z-score has >= min_periods values. `warm_<set>` per
                set when the whole catalogue is computed.

Every transform, window and z-score is computed by one streaming numba kernel (`kernel.FeatureKernel`), row
by row in (instrument_id, ts) order with its state carried between calls: the batch asset runs it over a month,
the live path (`LiveFeatures`) over its history and then one closed bar at a time, with the same values.

`warmup_start(month_start)` says how far back a partition must read so that rows computed alone equal the
same rows inside a longer run (z-score windows reach into earlier sessions; everything else is session-local).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence

import numpy as np
import polars as pl

from feature_specs.spec import (
    TRANSFORMS,
    FeatureCatalog,
    FeatureDef,
    FeatureSet,
    FeatureSpecError,
    load_catalog,
)
from phoenix_assets.lib import calendar as cal
from phoenix_assets.lib.features.kernel import _OPS, FeatureKernel, rolling_zscore

__all__ = [
    "ID_COLUMNS",
    "MIN_SESSION_BARS",
    "bar_features",
    "compute_features",
    "feature_frame",
    "predictive_figures",
    "raw_signals",
    "regime_labels",
    "rolling_zscore",
    "session_bars",
    "warmup_start",
]

ID_COLUMNS = ["ts", "trade_date", "instrument_id"]
PRICE_COLUMNS = ["open", "close"]
SESSION = ["instrument_id", "trade_date"]
MIN_SESSION_BARS = 600  # warm-up sizing: a session has at least this many 1m bars (holiday half days ~1150)
HOLIDAY_MARGIN_DAYS = 1  # weekdays without data (exchange holidays) inside the warm-up
assert set(_OPS) | {"hmm_regime"} == set(TRANSFORMS), "feature_specs.TRANSFORMS and the kernel differ"


# --- bars ---------------------------------------------------------------------------------------------


def session_bars(bars: pl.DataFrame) -> pl.DataFrame:
    """Continuous-session bars sorted by (instrument_id, ts), ts as UTC datetime."""
    f = bars
    # the checks below spare the live path's one bar the query engine (~0.1 ms a call): nothing to filter, cast, sort
    if "in_session" in f.columns and not f["in_session"].all(ignore_nulls=False):
        f = f.filter(pl.col("in_session"))
    if f.schema["ts"] != pl.Datetime("ns", "UTC"):
        f = f.with_columns(pl.col("ts").cast(pl.Datetime("ns", "UTC")))
    return f.sort("instrument_id", "ts") if f.height > 1 else f


# --- the feature table --------------------------------------------------------------------------------


def _resolve(spec: FeatureSet | FeatureCatalog | None) -> tuple[FeatureCatalog | None, FeatureSet]:
    catalog = spec if isinstance(spec, FeatureCatalog) else (load_catalog() if spec is None else None)
    fset = catalog.all_features() if catalog is not None else spec
    assert isinstance(fset, FeatureSet)
    return catalog, fset


def bar_features(fset: FeatureSet) -> list[FeatureDef]:
    """The set's features computed from the bars (`FeatureKernel`); the rest are HMM regimes (a join)."""
    return [d for d in fset.features if d.transform != "hmm_regime"]


def raw_signals(bars: pl.DataFrame, features: Sequence[FeatureDef]) -> pl.DataFrame:
    """Un-normalised 1m transforms (e.g. the HMM inputs): ID_COLUMNS + one column per feature, rows of
    `session_bars(bars)` in (instrument_id, ts) order."""
    for fdef in features:
        if fdef.timeframe != "1m" or fdef.transform == "hmm_regime" or fdef.normalise is not None:
            raise FeatureSpecError(f"feature {fdef.name!r}: raw_signals takes un-normalised 1m bar transforms only")
    f = session_bars(bars)
    values, _ = FeatureKernel(features).run(f)
    return f.select(ID_COLUMNS).with_columns(
        pl.Series(d.name, values[:, k]).fill_nan(None) for k, d in enumerate(features)
    )


def regime_labels(f: pl.DataFrame, regimes: pl.DataFrame | None, defs: Sequence[FeatureDef]) -> np.ndarray:
    """The regime label of each row of `f` (int8, -1 where none) from a `filter_regimes` frame."""
    names = ", ".join(d.name for d in defs)
    if regimes is None:
        raise FeatureSpecError(f"features {names} need `regimes` (hmm_regimes.filter_regimes output); got None")
    if "hmm_regime" not in regimes.columns:
        raise FeatureSpecError(f"regimes frame lacks column 'hmm_regime' (needed by {names})")
    r = regimes.select(pl.col("ts").cast(pl.Datetime("ns", "UTC")), "instrument_id", pl.col("hmm_regime").cast(pl.Int8))
    j = f.select("ts", "instrument_id").join(r, on=["ts", "instrument_id"], how="left", maintain_order="left")
    return j["hmm_regime"].fill_null(-1).to_numpy().astype(np.int8)


def feature_frame(
    f: pl.DataFrame,
    spec: FeatureSet | FeatureCatalog | None,
    values: np.ndarray,
    warm: np.ndarray,
    labels: np.ndarray | None = None,
) -> pl.DataFrame:
    """The feature table of the session bars `f` from `FeatureKernel(bar_features(set)).run(f)` and, for a set
    with HMM features, their regime labels (-1 = none): `compute_features`' columns and rows, the batch and
    live paths' one assembly (built in numpy: the live path assembles one row per bar)."""
    catalog, fset = _resolve(spec)
    cols: dict[str, pl.Series] = {}
    warm_of: dict[str, np.ndarray] = {}
    for k, d in enumerate(bar_features(fset)):
        cols[d.name] = pl.Series(d.name, values[:, k], nan_to_null=True)
        warm_of[d.name] = warm[:, k]
    for d in fset.features:
        if d.transform != "hmm_regime":
            continue
        assert labels is not None, "a set with HMM features needs labels"
        known = labels >= 0
        warm_of[d.name] = known
        if d.params["encoding"] == "label":
            cols[d.outputs[0]] = pl.Series(d.outputs[0], np.ma.masked_array(labels, mask=~known), pl.Int8)
        else:
            for k, col in enumerate(d.outputs):
                one_hot = np.where(known, (labels == k).astype(np.float64), np.nan)
                cols[col] = pl.Series(col, one_hot, nan_to_null=True)
    flags = {"warm": _all(list(warm_of.values()), f.height)}
    if catalog is not None:
        for name, s in catalog.sets.items():
            flags[f"warm_{name}"] = _all([warm_of[d.name] for d in s.features], f.height)
    out = pl.DataFrame(
        [
            *(f[c] for c in (*ID_COLUMNS, *PRICE_COLUMNS)),
            *(cols[c] for c in fset.columns),
            *(pl.Series(n, v) for n, v in flags.items()),
        ]
    )
    return out.sort("ts", "instrument_id") if out.height > 1 else out


def _all(flags: list[np.ndarray], height: int) -> np.ndarray:
    out = np.ones(height, dtype=bool)
    for flag in flags:
        out &= flag
    return out


def compute_features(
    bars: pl.DataFrame,
    spec: FeatureSet | FeatureCatalog | None = None,
    regimes: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Point-in-time feature table (module doc): ts, trade_date, instrument_id, open, close, the feature
    columns of `spec` (a set, or every set of a catalogue; default the shipped catalogue), `warm`, and
    `warm_<set>` per set for a catalogue. `regimes` (`hmm_regimes.filter_regimes`) is needed by sets with
    an HMM feature. Rows: continuous-session bars, sorted by (ts, instrument_id)."""
    _, fset = _resolve(spec)
    f = session_bars(bars)
    missing = sorted({c for d in fset.features for c in d.inputs} - set(f.columns))
    if missing:
        raise FeatureSpecError(f"bars lack columns {missing} needed by feature set {fset.name!r}")
    values, warm = FeatureKernel(bar_features(fset)).run(f)
    hmm_defs = [d for d in fset.features if d.transform == "hmm_regime"]
    labels = regime_labels(f, regimes, hmm_defs) if hmm_defs else None
    return feature_frame(f, spec, values, warm, labels)


# --- partitions ---------------------------------------------------------------------------------------


def warmup_trade_days(
    spec: FeatureSet | FeatureCatalog | None = None, *, holiday_margin_days: int = HOLIDAY_MARGIN_DAYS
) -> int:
    """Trade dates of history a partition needs before its first day: ceil(longest z-score window in
    minutes (window x timeframe) / `MIN_SESSION_BARS`) + a holiday margin. Session-local transforms and
    the HMM filter need none (they restart every session)."""
    _, fset = _resolve(spec)
    longest = max((d.normalise.window * d.timeframe_minutes for d in fset.features if d.normalise), default=0)
    if longest == 0:
        return 0
    return math.ceil(longest / MIN_SESSION_BARS) + holiday_margin_days


def warmup_start(
    month_start: dt.date,
    spec: FeatureSet | FeatureCatalog | None = None,
    *,
    holiday_margin_days: int = HOLIDAY_MARGIN_DAYS,
) -> dt.date:
    """First trade date a partition starting at `month_start` must read: compute features over
    [warmup_start, month_end] and keep trade_date >= month_start; the kept rows equal those of a longer
    run provided the warm-up sessions hold >= MIN_SESSION_BARS bars each (true of CME days)."""
    n = warmup_trade_days(spec, holiday_margin_days=holiday_margin_days)
    day = month_start
    while n > 0:
        day -= dt.timedelta(days=1)
        if cal.is_trade_date(day):
            n -= 1
    return day


# --- what the features predict ------------------------------------------------------------------------


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    if a.size < 3:
        return float("nan")
    ra = pl.Series(a).rank("average").to_numpy()
    rb = pl.Series(b).rank("average").to_numpy()
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def predictive_figures(
    features: pl.DataFrame, bars: pl.DataFrame, columns: Sequence[str] | None = None, warm_only: bool = True
) -> dict[str, float]:
    """Spearman rank correlation of each feature at t with the NEXT bar's mid return
    mid_close(t+1) / mid_close(t) - 1 (next bar = the following minute of the same session), on warm
    rows. Keys: `n_pairs`, `spearman_next_return/<feature>`. A label, computed here only for reporting:
    never feed it back as a feature."""
    b = (
        session_bars(bars)
        .select("ts", "instrument_id", "trade_date", "mid_close")
        .with_columns(
            _next=pl.col("mid_close").shift(-1).over(SESSION),
            _gap=pl.col("ts").shift(-1).over(SESSION) - pl.col("ts"),
        )
        .with_columns(next_return=pl.col("_next") / pl.col("mid_close") - 1.0)
        .filter(pl.col("_gap") == pl.duration(minutes=1))
        .select("ts", "instrument_id", "next_return")
    )
    skip = set(ID_COLUMNS) | set(PRICE_COLUMNS)
    cols = (
        list(columns)
        if columns is not None
        else [
            c for c in features.columns if c not in skip and not c.startswith("warm") and features[c].dtype.is_float()
        ]
    )
    j = features.with_columns(pl.col("ts").cast(pl.Datetime("ns", "UTC"))).join(
        b, on=["ts", "instrument_id"], how="inner"
    )
    if warm_only and "warm" in j.columns:
        j = j.filter(pl.col("warm"))
    j = j.filter(pl.col("next_return").is_not_null())
    out: dict[str, float] = {"n_pairs": float(j.height)}
    for c in cols:
        pair = j.select(c, "next_return").drop_nulls()
        out[f"spearman_next_return/{c}"] = _spearman(pair[c].to_numpy(), pair["next_return"].to_numpy())
    return out
