"""Point-in-time features from `ofi_bars_1m`, as declared in `feature_specs` (YAML).

Rules every feature follows (Qlib-style handler: features look only backward; labels live elsewhere)
    Rows        Continuous-trading bars only (`in_session`); pre-open bars (indicative, often crossed
                book, no trades) are dropped. ts = bar start; bar t closes at t + 1m and a feature of bar t
                uses bars with start <= t only.
    Session     (instrument_id, trade_date): 17:00 CT D-1 to 16:00 CT D (`lib/calendar.py`).
    Transforms  Session-local, all of them: running sums, rolling windows (params.window_minutes, the
                session's bars with start in (t - window, t], polars `rolling_*_by` on ts so a missing
                minute shortens the window instead of stretching it), previous close (true range,
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
                and restarts on instrument change (roll). Computed by an O(n x window) numba kernel that
                sums each window afresh, so a value does not depend on where the input frame starts
                (bit-identical monthly partitions; sliding sums would carry rounding from earlier rows).
    Timeframes  A feature with timeframe 15m is computed on 15-minute bars built from the session's 1m
                bars (`feature_specs.spec.RESAMPLE_AGG`; [s, s+15m) on the UTC grid, which 17:00 CT is on),
                z-scored on the 15m series, and attached to 1m bar t from the last COMPLETED 15m bar of the
                same session: s + 15m <= t + 1m. Null during a session's first 14 minutes.
    warm        True when every feature of the set is non-null, every window_minutes window is full
                (session running >= window) and every z-score has >= min_periods values. `warm_<set>` per
                set when the whole catalogue is computed.

`warmup_start(month_start)` says how far back a partition must read so that rows computed alone equal the
same rows inside a longer run (z-score windows reach into earlier sessions; everything else is session-local).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Sequence

import numpy as np
import polars as pl
from numba import njit

from feature_specs.spec import (
    RESAMPLE_AGG,
    TRANSFORMS,
    FeatureCatalog,
    FeatureDef,
    FeatureSet,
    FeatureSpecError,
    load_catalog,
)
from phoenix_assets.lib import calendar as cal

__all__ = [
    "ID_COLUMNS",
    "MIN_SESSION_BARS",
    "compute_features",
    "predictive_figures",
    "raw_signals",
    "rolling_zscore",
    "session_bars",
    "warmup_start",
]

ID_COLUMNS = ["ts", "trade_date", "instrument_id"]
PRICE_COLUMNS = ["open", "close"]
SESSION = ["instrument_id", "trade_date"]
MIN_SESSION_BARS = 600  # warm-up sizing: a session has at least this many 1m bars (holiday half days ~1150)
HOLIDAY_MARGIN_DAYS = 1  # weekdays without data (exchange holidays) inside the warm-up
_CT = "America/Chicago"
_SESSION_OPEN_MINUTE = 17 * 60


# --- bars ---------------------------------------------------------------------------------------------


def session_bars(bars: pl.DataFrame) -> pl.DataFrame:
    """Continuous-session bars sorted by (instrument_id, ts), ts as UTC datetime."""
    f = bars
    if "in_session" in f.columns:
        f = f.filter(pl.col("in_session"))
    return f.with_columns(pl.col("ts").cast(pl.Datetime("ns", "UTC"))).sort("instrument_id", "ts")


def _resample(f: pl.DataFrame, minutes: int, columns: Sequence[str]) -> pl.DataFrame:
    """Coarser bars [s, s + minutes) per session from sorted 1m bars (aggregation by RESAMPLE_AGG)."""
    agg = {"first": "first", "last": "last", "sum": "sum", "max": "max", "min": "min", "mean": "mean"}
    exprs = []
    for c in columns:
        how = agg[RESAMPLE_AGG[c]]
        e = pl.col(c).drop_nulls() if how in ("first", "last") else pl.col(c)
        exprs.append(getattr(e, how)().alias(c))
    return (
        f.with_columns(_start=pl.col("ts").dt.truncate(f"{minutes}m"))
        .group_by(*SESSION, "_start", maintain_order=True)
        .agg(*exprs)
        .rename({"_start": "ts"})
        .sort("instrument_id", "ts")
    )


# --- transforms: (raw value, window-full flag) as polars expressions over a session-sorted frame ------


def _over(e: pl.Expr) -> pl.Expr:
    return e.over(SESSION)


def _window_full(fdef: FeatureDef) -> pl.Expr:
    """Session has run long enough that the window (t - window, t] lies inside it."""
    w = fdef.params.get("window_minutes")
    if w is None:
        return pl.lit(True)
    need = dt.timedelta(minutes=w - fdef.timeframe_minutes)
    return (pl.col("ts") - _over(pl.col("ts").first())) >= need


def _rolling(e: pl.Expr, fdef: FeatureDef, how: str) -> pl.Expr:
    window = f"{fdef.params['window_minutes']}m"
    return _over(getattr(e, f"rolling_{how}_by")("ts", window_size=window, min_samples=1))


def _f(col: str) -> pl.Expr:
    return pl.col(col).cast(pl.Float64)


def _log_return(fdef: FeatureDef) -> pl.Expr:
    o, c = (_f(x) for x in fdef.inputs)
    prev = _over(c.shift(1))
    return (c / pl.coalesce(prev, o)).log()


def _t_column(fdef: FeatureDef) -> pl.Expr:
    return _f(fdef.inputs[0])


def _t_range_pct(fdef: FeatureDef) -> pl.Expr:
    h, lo, c = (_f(x) for x in fdef.inputs)
    return (h - lo) / c


def _t_session_vwap_dist(fdef: FeatureDef) -> pl.Expr:
    num, den, c = (_f(x) for x in fdef.inputs)
    cum_den = _over(den.cum_sum())
    vwap = pl.when(cum_den > 0).then(_over(num.cum_sum()) / cum_den)
    return (c - vwap) / vwap


def _t_session_time(fdef: FeatureDef) -> pl.Expr:
    local = pl.col("ts").dt.convert_time_zone(_CT)
    minutes = (local.dt.hour().cast(pl.Int64) * 60 + local.dt.minute() - _SESSION_OPEN_MINUTE) % 1440
    phase = minutes.cast(pl.Float64) * (2.0 * math.pi / fdef.params["period_minutes"])
    return phase.sin() if fdef.params["component"] == "sin" else phase.cos()


def _t_rolling_sum(fdef: FeatureDef) -> pl.Expr:
    return _rolling(_f(fdef.inputs[0]), fdef, "sum")


def _t_rolling_mean(fdef: FeatureDef) -> pl.Expr:
    return _rolling(_f(fdef.inputs[0]), fdef, "mean")


def _t_net_gross_ratio(fdef: FeatureDef) -> pl.Expr:
    x = _f(fdef.inputs[0])
    net, gross = _rolling(x, fdef, "sum"), _rolling(x.abs(), fdef, "sum")
    return pl.when(gross > 0).then(net / gross).when(gross == 0).then(0.0)


def _t_atr(fdef: FeatureDef) -> pl.Expr:
    h, lo, c = (_f(x) for x in fdef.inputs)
    prev = _over(c.shift(1))
    tr = pl.max_horizontal(h, prev) - pl.min_horizontal(lo, prev)
    return _rolling(tr, fdef, "mean")


def _t_log_return(fdef: FeatureDef) -> pl.Expr:
    return _log_return(fdef)


def _t_rolling_rms_log_return(fdef: FeatureDef) -> pl.Expr:
    return _rolling(_log_return(fdef).pow(2), fdef, "mean").sqrt()


_IMPLEMENTATIONS: dict[str, Callable[[FeatureDef], pl.Expr]] = {
    "column": _t_column,
    "range_pct": _t_range_pct,
    "session_vwap_dist": _t_session_vwap_dist,
    "session_time": _t_session_time,
    "rolling_sum": _t_rolling_sum,
    "rolling_mean": _t_rolling_mean,
    "net_gross_ratio": _t_net_gross_ratio,
    "atr": _t_atr,
    "log_return": _t_log_return,
    "rolling_rms_log_return": _t_rolling_rms_log_return,
}
assert set(_IMPLEMENTATIONS) | {"hmm_regime"} == set(TRANSFORMS), "feature_specs.TRANSFORMS and features.py differ"


def raw_signals(bars: pl.DataFrame, features: Sequence[FeatureDef]) -> pl.DataFrame:
    """Un-normalised 1m transforms (e.g. the HMM inputs): ID_COLUMNS + one column per feature, rows of
    `session_bars(bars)` in (instrument_id, ts) order."""
    f = session_bars(bars)
    for fdef in features:
        if fdef.timeframe != "1m" or fdef.transform == "hmm_regime":
            raise FeatureSpecError(f"feature {fdef.name!r}: raw_signals takes 1m bar transforms only")
    return f.select(*ID_COLUMNS, *[_IMPLEMENTATIONS[d.transform](d).alias(d.name) for d in features])


# --- trailing z-score ---------------------------------------------------------------------------------


@njit(cache=True)
def _zscore_kernel(
    x: np.ndarray,
    group: np.ndarray,
    window: int,
    min_periods: int,
    clip: float,
    out: np.ndarray,
    count: np.ndarray,
    wanted: np.ndarray,
) -> None:
    start = 0
    for i in range(x.shape[0]):
        if i == 0 or group[i] != group[i - 1]:
            start = i
        if not wanted[i]:  # the live path asks for its newest rows only; the rest stay NaN
            count[i] = 0
            out[i] = np.nan
            continue
        lo = max(start, i - window + 1)
        s = 0.0
        c = 0
        big = 0.0
        for j in range(lo, i + 1):
            v = x[j]
            if not np.isnan(v):
                s += v
                c += 1
                big = max(big, abs(v))
        count[i] = c
        if c < min_periods or c < 2 or np.isnan(x[i]):
            out[i] = np.nan
            continue
        m = s / c
        ss = 0.0
        for j in range(lo, i + 1):
            v = x[j]
            if not np.isnan(v):
                ss += (v - m) * (v - m)
        sd = math.sqrt(ss / (c - 1))
        if sd <= 1e-12 * big:  # constant window (up to rounding of the mean): no scale, neutral value
            out[i] = 0.0
        else:
            out[i] = min(max((x[i] - m) / sd, -clip), clip)


def rolling_zscore(
    values: np.ndarray,
    group: np.ndarray,
    window: int,
    min_periods: int,
    clip: float,
    wanted: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Trailing z-score per contiguous run of `group` (see module doc); NaN = missing. Returns (z, count
    of non-missing values in the window). `wanted` (bool per row) computes only those rows, bit for bit the
    same values: the live path's newest bars without recomputing the history's."""
    x = np.ascontiguousarray(values, dtype=np.float64)
    g = np.ascontiguousarray(group, dtype=np.int64)
    want = np.ones(x.shape[0], dtype=np.bool_) if wanted is None else np.ascontiguousarray(wanted, dtype=np.bool_)
    out = np.empty_like(x)
    count = np.empty(x.shape[0], dtype=np.int64)
    _zscore_kernel(x, g, int(window), int(min_periods), float(clip), out, count, want)
    return out, count


def _group_ids(f: pl.DataFrame, span_sessions: bool) -> np.ndarray:
    keys = ["instrument_id"] if span_sessions else SESSION
    return f.select(pl.struct(keys).rle_id()).to_series().to_numpy()


# --- the feature table --------------------------------------------------------------------------------


def _compute_timeframe(f: pl.DataFrame, defs: Sequence[FeatureDef], since: dt.datetime | None = None) -> pl.DataFrame:
    """Raw + normalised values and their warm flags for features sharing one timeframe, on `f`'s rows
    (z-scores only of rows with ts >= `since` when given)."""
    f = f.with_columns(
        *[_IMPLEMENTATIONS[d.transform](d).alias(f"_raw_{d.name}") for d in defs],
        *[_window_full(d).alias(f"_full_{d.name}") for d in defs],
    )
    groups = {span: _group_ids(f, span) for span in (True, False)}
    wanted = None if since is None else (f["ts"] >= since).to_numpy()
    cols: list[pl.Series] = []
    for d in defs:
        raw = f[f"_raw_{d.name}"]
        full = f[f"_full_{d.name}"]
        if d.normalise is None:
            cols += [
                raw.fill_nan(None).alias(d.name),
                (full & raw.is_not_null() & raw.is_not_nan()).alias(f"_warm_{d.name}"),
            ]
            continue
        n = d.normalise
        z, count = rolling_zscore(
            raw.fill_null(np.nan).to_numpy(), groups[n.span_sessions], n.window, n.min_periods, n.clip, wanted
        )
        zs = pl.Series(d.name, z).fill_nan(None)
        cols += [zs, (full & zs.is_not_null() & pl.Series(count >= n.min_periods)).alias(f"_warm_{d.name}")]
    return f.select(*ID_COLUMNS).with_columns(cols)


def _regime_columns(
    f: pl.DataFrame, defs: Sequence[FeatureDef], regimes: pl.DataFrame | None, n_states: int
) -> pl.DataFrame:
    if regimes is None:
        names = ", ".join(d.name for d in defs)
        raise FeatureSpecError(f"features {names} need `regimes` (hmm_regimes.filter_regimes output); got None")
    if "hmm_regime" not in regimes.columns:
        raise FeatureSpecError(f"regimes frame lacks column 'hmm_regime' (needed by {defs[0].name!r})")
    r = regimes.select(
        pl.col("ts").cast(pl.Datetime("ns", "UTC")), "instrument_id", pl.col("hmm_regime").alias("_regime")
    )
    j = f.select("ts", "instrument_id").join(r, on=["ts", "instrument_id"], how="left", maintain_order="left")
    out = []
    for d in defs:
        label = pl.col("_regime")
        warm = label.is_not_null().alias(f"_warm_{d.name}")
        if d.params["encoding"] == "label":
            out += [label.cast(pl.Int8).alias(d.outputs[0]), warm]
        else:
            out += [(label == k).cast(pl.Float64).alias(col) for k, col in enumerate(d.outputs)] + [warm]
    return j.select(out)


def _attach_context(f: pl.DataFrame, ctx: pl.DataFrame, minutes: int, names: Sequence[str]) -> pl.DataFrame:
    """Value of the last completed coarse bar: [s, s + minutes) with s + minutes <= t + 1m, same session."""
    key = ((pl.col("ts") + pl.duration(minutes=1)).dt.truncate(f"{minutes}m") - pl.duration(minutes=minutes)).cast(
        pl.Datetime("ns", "UTC")
    )
    keep = [c for n in names for c in (n, f"_warm_{n}")]
    j = f.select(*SESSION, _ctx=key).join(
        ctx.select(*SESSION, pl.col("ts").alias("_ctx"), *keep),
        on=[*SESSION, "_ctx"],
        how="left",
        maintain_order="left",
    )
    return j.select(*[pl.col(c).fill_null(False) if c.startswith("_warm_") else pl.col(c) for c in keep])


def compute_features(
    bars: pl.DataFrame,
    spec: FeatureSet | FeatureCatalog | None = None,
    regimes: pl.DataFrame | None = None,
    *,
    since: dt.datetime | None = None,
) -> pl.DataFrame:
    """Point-in-time feature table (module doc): ts, trade_date, instrument_id, open, close, the feature
    columns of `spec` (a set, or every set of a catalogue; default the shipped catalogue), `warm`, and
    `warm_<set>` per set for a catalogue. `regimes` (`hmm_regimes.filter_regimes`) is needed by sets with
    an HMM feature. Rows: continuous-session bars, sorted by (ts, instrument_id). With `since`, only the
    rows with ts >= since, bit for bit those of the whole run (the live path: `bars` is the warm-up history
    plus the new bars, and only the new bars' trailing z-scores are computed)."""
    catalog = spec if isinstance(spec, FeatureCatalog) else (load_catalog() if spec is None else None)
    fset = catalog.all_features() if catalog is not None else spec
    assert isinstance(fset, FeatureSet)
    f = session_bars(bars)
    missing = sorted({c for d in fset.features for c in d.inputs} - set(f.columns))
    if missing:
        raise FeatureSpecError(f"bars lack columns {missing} needed by feature set {fset.name!r}")
    parts = [f.select(*ID_COLUMNS, *PRICE_COLUMNS)]
    hmm_defs = [d for d in fset.features if d.transform == "hmm_regime"]
    by_tf: dict[int, list[FeatureDef]] = {}
    for d in fset.features:
        if d.transform != "hmm_regime":
            by_tf.setdefault(d.timeframe_minutes, []).append(d)
    for minutes, defs in sorted(by_tf.items()):
        if minutes == 1:
            parts.append(_compute_timeframe(f, defs, since).drop(ID_COLUMNS))
        else:
            inputs = sorted({c for d in defs for c in d.inputs})
            coarse_since = None if since is None else since - dt.timedelta(minutes=2 * minutes)  # context bars
            ctx = _compute_timeframe(_resample(f, minutes, inputs), defs, coarse_since)
            parts.append(_attach_context(f, ctx, minutes, [d.name for d in defs]))
    if hmm_defs:
        n_states = fset.hmm.n_states if fset.hmm else 3
        parts.append(_regime_columns(f, hmm_defs, regimes, n_states))
    out = pl.concat(parts, how="horizontal")
    warm_of = {d.name: pl.col(f"_warm_{d.name}") for d in fset.features}
    out = out.with_columns(warm=pl.all_horizontal(list(warm_of.values())))
    if catalog is not None:
        out = out.with_columns(
            pl.all_horizontal([warm_of[d.name] for d in s.features]).alias(f"warm_{name}")
            for name, s in catalog.sets.items()
        )
    out = out.drop([c for c in out.columns if c.startswith("_warm_")])
    if since is not None:
        out = out.filter(pl.col("ts") >= since)
    return out.select(*ID_COLUMNS, *PRICE_COLUMNS, *fset.columns, pl.col("^warm.*$")).sort("ts", "instrument_id")


# --- partitions ---------------------------------------------------------------------------------------


def warmup_trade_days(
    spec: FeatureSet | FeatureCatalog | None = None, *, holiday_margin_days: int = HOLIDAY_MARGIN_DAYS
) -> int:
    """Trade dates of history a partition needs before its first day: ceil(longest z-score window in
    minutes (window x timeframe) / `MIN_SESSION_BARS`) + a holiday margin. Session-local transforms and
    the HMM filter need none (they restart every session)."""
    catalog = spec if isinstance(spec, FeatureCatalog) else (load_catalog() if spec is None else None)
    fset = catalog.all_features() if catalog is not None else spec
    assert isinstance(fset, FeatureSet)
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
