"""The feature transforms written as polars expressions (how `compute.py` computed them before the streaming
kernel): an independent reference the kernel must equal to rounding. Slow (it recomputes every window per
row in numpy for the z-scores); for tests only."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Sequence

import numpy as np
import polars as pl

from feature_specs.spec import RESAMPLE_AGG, TRANSFORMS, FeatureCatalog, FeatureDef, FeatureSet, load_catalog
from phoenix_assets.lib.features.compute import ID_COLUMNS, PRICE_COLUMNS, SESSION, session_bars

_CT = "America/Chicago"
_SESSION_OPEN_MINUTE = 17 * 60


def numpy_zscore(
    x: np.ndarray, group: np.ndarray, window: int, min_periods: int, clip: float
) -> tuple[np.ndarray, np.ndarray]:
    """The trailing z-score, one window at a time with numpy's nan-aware reductions."""
    out, count = np.full(x.shape[0], np.nan), np.zeros(x.shape[0], dtype=np.int64)
    start = 0
    for i in range(x.shape[0]):
        if i == 0 or group[i] != group[i - 1]:
            start = i
        w = x[max(start, i - window + 1) : i + 1]
        w = w[~np.isnan(w)]
        count[i] = w.size
        if w.size < max(min_periods, 2) or np.isnan(x[i]):
            continue
        sd = w.std(ddof=1)
        out[i] = 0.0 if sd <= 1e-12 * np.abs(w).max() else min(max((x[i] - w.mean()) / sd, -clip), clip)
    return out, count


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
assert set(_IMPLEMENTATIONS) | {"hmm_regime"} == set(TRANSFORMS), "the reference lacks a transform"


def _group_ids(f: pl.DataFrame, span_sessions: bool) -> np.ndarray:
    keys = ["instrument_id"] if span_sessions else SESSION
    return f.select(pl.struct(keys).rle_id()).to_series().to_numpy()


# --- the feature table --------------------------------------------------------------------------------


def _compute_timeframe(f: pl.DataFrame, defs: Sequence[FeatureDef]) -> pl.DataFrame:
    """Raw + normalised values and their warm flags for features sharing one timeframe, on `f`'s rows."""
    f = f.with_columns(
        *[_IMPLEMENTATIONS[d.transform](d).alias(f"_raw_{d.name}") for d in defs],
        *[_window_full(d).alias(f"_full_{d.name}") for d in defs],
    )
    groups = {span: _group_ids(f, span) for span in (True, False)}
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
        z, count = numpy_zscore(
            raw.fill_null(np.nan).to_numpy(), groups[n.span_sessions], n.window, n.min_periods, n.clip
        )
        zs = pl.Series(d.name, z).fill_nan(None)
        cols += [zs, (full & zs.is_not_null() & pl.Series(count >= n.min_periods)).alias(f"_warm_{d.name}")]
    return f.select(*ID_COLUMNS).with_columns(cols)


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


def reference_features(bars: pl.DataFrame, spec: FeatureSet | FeatureCatalog | None = None) -> pl.DataFrame:
    """Bar features (no HMM) of `spec` with their warm flags `_warm_<name>`, rows as `compute_features`."""
    catalog = spec if isinstance(spec, FeatureCatalog) else (load_catalog() if spec is None else None)
    fset = catalog.all_features() if catalog is not None else spec
    assert isinstance(fset, FeatureSet)
    f = session_bars(bars)
    parts = [f.select(*ID_COLUMNS, *PRICE_COLUMNS)]
    by_tf: dict[int, list[FeatureDef]] = {}
    for d in fset.features:
        if d.transform != "hmm_regime":
            by_tf.setdefault(d.timeframe_minutes, []).append(d)
    for minutes, defs in sorted(by_tf.items()):
        if minutes == 1:
            parts.append(_compute_timeframe(f, defs).drop(ID_COLUMNS))
        else:
            inputs = sorted({c for d in defs for c in d.inputs})
            ctx = _compute_timeframe(_resample(f, minutes, inputs), defs)
            parts.append(_attach_context(f, ctx, minutes, [d.name for d in defs]))
    return pl.concat(parts, how="horizontal").sort("ts", "instrument_id")
