"""The feature transforms and their trailing z-scores as one streaming numba kernel, shared by the batch and
the live path.

`FeatureKernel(defs).run(rows)` walks session bars one row at a time and keeps its state (the session's
running sums, each window's recent values, each z-score's trailing values, the open coarse bar of every
timeframe) between calls. `features_1m` runs it once over a month and its warm-up; `LiveFeatures` runs the
warm-up history through it once, then each new bar as it closes. Both run the same code in the same row order, so
a live bar's values are those of the batch bit for bit, and a bar costs O(window) instead of a recompute of the
history. The rules (sessions, windows, z-scores, timeframes, warm) are `compute.py`'s module doc. Missing inputs
(null or NaN) are skipped by windows and sums. A value is NaN where the row has nothing to show.

Why one kernel and not polars expressions: the live decision needs a bar's features in well under a
millisecond. Polars over the history costs about 20 ms a bar on a 1,400-bar session. A second, incremental
implementation beside the batch one would have to be kept equal by tests alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import polars as pl
from numba import njit

from feature_specs.spec import RESAMPLE_AGG, FeatureDef, FeatureSpecError
from phoenix_assets.lib import calendar as cal

__all__ = ["FeatureKernel", "rolling_zscore", "session_minutes"]

NS_PER_MINUTE = 60 * 1_000_000_000
_NONE = np.int64(-(2**62))  # no session yet

# transforms (feature_specs.TRANSFORMS; hmm_regime is a join, not a transform of the bars)
_OPS = {
    "column": 0,
    "range_pct": 1,
    "session_vwap_dist": 2,
    "session_time": 3,
    "rolling_sum": 4,
    "rolling_mean": 5,
    "net_gross_ratio": 6,
    "atr": 7,
    "log_return": 8,
    "rolling_rms_log_return": 9,
}
_AGG = {"first": 0, "last": 1, "sum": 2, "max": 3, "min": 4, "mean": 5}

# plan_i columns
_OP, _LEVEL, _A, _B, _C, _WIN_ROWS, _ZWIN, _ZMIN, _ZSPAN, _SIN = range(10)
# plan_f columns
_WIN_NS, _FULL_NS, _PERIOD, _ZCLIP = range(4)
# level_i columns: the level's session, its previous row, its open coarse bar, its last completed coarse bar
_INST, _DATE, _FIRST_TS, _HAS_PREV, _BK_OPEN, _BK_ID, _BK_INST, _BK_DATE, _AT_VALID, _AT_START, _AT_INST, _AT_DATE = (
    range(12)
)
# def_f columns: session running sums, the value attached from the last completed coarse bar
_CUM1, _CUM2, _AT_VAL, _AT_WARM = range(4)
# def_i columns: window ring and z-score ring (count, next slot)
_RING_N, _RING_HEAD, _Z_N, _Z_HEAD = range(4)


class KernelState(NamedTuple):
    """The plan (what each def computes: `plan_i` / `plan_f` columns above, each timeframe's minutes, each input
    column's resampling rule) and the state the kernel carries from bar to bar (the `level_*`, `def_*`, bucket
    and ring columns above), passed to the numba functions as one value."""

    level_minutes: np.ndarray
    col_agg: np.ndarray
    plan_i: np.ndarray
    plan_f: np.ndarray
    level_i: np.ndarray
    level_prev: np.ndarray
    bk_agg: np.ndarray
    bk_cnt: np.ndarray
    def_f: np.ndarray
    def_i: np.ndarray
    ring_ts: np.ndarray
    ring_v: np.ndarray
    zring: np.ndarray


# --- the trailing z-score -------------------------------------------------------------------------------


@njit(cache=True, error_model="numpy")
def _zscore_push(ring: np.ndarray, state: np.ndarray, x: float, min_periods: int, clip: float) -> tuple[float, int]:
    """Append x to the trailing window `ring` (state = [count, next slot]) and z-score it against the window's
    values, oldest first: (z, non-missing count). Sums afresh, so a value never carries rounding from rows
    that left the window: a partition computed alone equals the same rows inside a longer run."""
    cap = ring.shape[0]
    ring[state[1]] = x
    state[1] = (state[1] + 1) % cap
    state[0] = min(state[0] + 1, cap)
    n = state[0]
    first = (state[1] - n) % cap
    s = 0.0
    c = 0
    big = 0.0
    for k in range(n):
        v = ring[(first + k) % cap]
        if not np.isnan(v):
            s += v
            c += 1
            big = max(big, abs(v))
    if c < min_periods or c < 2 or np.isnan(x):
        return np.nan, c
    m = s / c
    ss = 0.0
    for k in range(n):
        v = ring[(first + k) % cap]
        if not np.isnan(v):
            ss += (v - m) * (v - m)
    sd = math.sqrt(ss / (c - 1))
    if sd <= 1e-12 * big:  # constant window (up to rounding of the mean): no scale, neutral value
        return 0.0, c
    return min(max((x - m) / sd, -clip), clip), c


@njit(cache=True)
def _zscore_series(x: np.ndarray, group: np.ndarray, window: int, min_periods: int, clip: float, out, count) -> None:
    ring = np.empty(window)
    state = np.zeros(2, dtype=np.int64)
    for i in range(x.shape[0]):
        if i == 0 or group[i] != group[i - 1]:
            state[0] = 0
            state[1] = 0
        out[i], count[i] = _zscore_push(ring, state, x[i], min_periods, clip)


def rolling_zscore(
    values: np.ndarray, group: np.ndarray, window: int, min_periods: int, clip: float
) -> tuple[np.ndarray, np.ndarray]:
    """Trailing z-score of a series per contiguous run of `group` (NaN = missing): (z, non-missing count in the
    window). The kernel's own z-score, for a series outside a feature set."""
    x = np.ascontiguousarray(values, dtype=np.float64)
    out = np.empty_like(x)
    count = np.empty(x.shape[0], dtype=np.int64)
    g = np.ascontiguousarray(group, dtype=np.int64)
    _zscore_series(x, g, int(window), int(min_periods), float(clip), out, count)
    return out, count


# --- one row of one timeframe -----------------------------------------------------------------------------


@njit(cache=True, error_model="numpy")
def _nan_max(a: float, b: float) -> float:
    return b if np.isnan(a) else (a if np.isnan(b) else max(a, b))


@njit(cache=True, error_model="numpy")
def _nan_min(a: float, b: float) -> float:
    return b if np.isnan(a) else (a if np.isnan(b) else min(a, b))


@njit(cache=True, error_model="numpy")
def _level_row(
    level: int,
    x: np.ndarray,
    ts: int,
    inst: int,
    date: int,
    minute: int,
    st: KernelState,
    out_val: np.ndarray,
    out_warm: np.ndarray,
) -> None:
    """The features of one bar of `level`'s timeframe (its defs only), from the level's state; then the bar
    becomes the level's previous bar."""
    plan_i, plan_f, level_i, level_prev = st.plan_i, st.plan_f, st.level_i, st.level_prev
    def_f, def_i, ring_ts, ring_v, zring = st.def_f, st.def_i, st.ring_ts, st.ring_v, st.zring
    new_group = level_i[level, _INST] != inst
    new_session = new_group or level_i[level, _DATE] != date
    if new_session:
        level_i[level, _INST] = inst
        level_i[level, _DATE] = date
        level_i[level, _FIRST_TS] = ts
        level_i[level, _HAS_PREV] = 0
    has_prev = level_i[level, _HAS_PREV] == 1
    for d in range(plan_i.shape[0]):
        if plan_i[d, _LEVEL] != level:
            continue
        if new_session:
            def_f[d, _CUM1] = 0.0
            def_f[d, _CUM2] = 0.0
            def_i[d, _RING_N] = 0
            def_i[d, _RING_HEAD] = 0
            if new_group or plan_i[d, _ZSPAN] == 0:
                def_i[d, _Z_N] = 0
                def_i[d, _Z_HEAD] = 0
        op, a, b, c = plan_i[d, _OP], plan_i[d, _A], plan_i[d, _B], plan_i[d, _C]
        element = np.nan  # the value a window transform adds to its window
        v = np.nan
        if op == 0:
            v = x[a]
        elif op == 1:
            v = (x[a] - x[b]) / x[c]
        elif op == 2:
            if not np.isnan(x[a]):
                def_f[d, _CUM1] += x[a]
            if not np.isnan(x[b]):
                def_f[d, _CUM2] += x[b]
            if def_f[d, _CUM2] > 0.0:
                vwap = def_f[d, _CUM1] / def_f[d, _CUM2]
                v = (x[c] - vwap) / vwap
        elif op == 3:
            phase = minute * (2.0 * math.pi / plan_f[d, _PERIOD])
            v = math.sin(phase) if plan_i[d, _SIN] == 1 else math.cos(phase)
        elif op == 4 or op == 5 or op == 6:
            element = x[a]
        elif op == 7:
            prev = level_prev[level, c] if has_prev else np.nan
            element = _nan_max(x[a], prev) - _nan_min(x[b], prev)
        elif op == 8 or op == 9:
            prev = level_prev[level, b] if has_prev else np.nan
            base = x[a] if np.isnan(prev) else prev
            lr = np.log(x[b] / base)
            if op == 8:
                v = lr
            else:
                element = lr * lr
        if op >= 4 and op != 8:  # a window over the session's bars with start in (t - window, t]
            cap = plan_i[d, _WIN_ROWS]
            head = def_i[d, _RING_HEAD]
            ring_ts[d, head] = ts
            ring_v[d, head] = element
            def_i[d, _RING_HEAD] = (head + 1) % cap
            n = min(def_i[d, _RING_N] + 1, cap)
            def_i[d, _RING_N] = n
            first = (def_i[d, _RING_HEAD] - n) % cap
            lo = ts - int(plan_f[d, _WIN_NS])
            s = 0.0
            gross = 0.0
            cnt = 0
            for k in range(n):
                j = (first + k) % cap
                e = ring_v[d, j]
                if ring_ts[d, j] > lo and not np.isnan(e):
                    s += e
                    gross += abs(e)
                    cnt += 1
            if cnt > 0:
                if op == 4:
                    v = s
                elif op == 5 or op == 7:
                    v = s / cnt
                elif op == 6:
                    v = s / gross if gross > 0.0 else 0.0
                else:
                    v = math.sqrt(s / cnt)
        full = ts - level_i[level, _FIRST_TS] >= int(plan_f[d, _FULL_NS])
        zwin = plan_i[d, _ZWIN]
        if zwin == 0:
            out_val[d] = v
            out_warm[d] = full and not np.isnan(v)
        else:
            state = def_i[d, _Z_N : _Z_HEAD + 1]
            z, count = _zscore_push(zring[d, :zwin], state, v, plan_i[d, _ZMIN], plan_f[d, _ZCLIP])
            out_val[d] = z
            out_warm[d] = full and not np.isnan(z) and count >= plan_i[d, _ZMIN]
    for k in range(x.shape[0]):
        level_prev[level, k] = x[k]
    level_i[level, _HAS_PREV] = 1


# --- coarse timeframes ------------------------------------------------------------------------------------


@njit(cache=True, error_model="numpy")
def _close_bucket(level: int, st: KernelState, val: np.ndarray, warm: np.ndarray) -> None:
    """The open coarse bar is complete: its features become the value attached to the 1m bars after it."""
    col_agg, bk_agg, bk_cnt, level_i, plan_i, def_f = st.col_agg, st.bk_agg, st.bk_cnt, st.level_i, st.plan_i, st.def_f
    x = np.empty(col_agg.shape[0])
    for k in range(col_agg.shape[0]):
        if col_agg[k] == 2:  # a sum of nothing is 0 (polars' sum of nulls), everything else is missing
            x[k] = bk_agg[level, k]
        elif bk_cnt[level, k] == 0:
            x[k] = np.nan
        elif col_agg[k] == 5:
            x[k] = bk_agg[level, k] / bk_cnt[level, k]
        else:
            x[k] = bk_agg[level, k]
    start = level_i[level, _BK_ID] * st.level_minutes[level] * NS_PER_MINUTE
    _level_row(level, x, start, level_i[level, _BK_INST], level_i[level, _BK_DATE], 0, st, val, warm)
    for d in range(plan_i.shape[0]):
        if plan_i[d, _LEVEL] == level:
            def_f[d, _AT_VAL] = val[d]
            def_f[d, _AT_WARM] = 1.0 if warm[d] else 0.0
    level_i[level, _AT_VALID] = 1
    level_i[level, _AT_START] = start
    level_i[level, _AT_INST] = level_i[level, _BK_INST]
    level_i[level, _AT_DATE] = level_i[level, _BK_DATE]
    level_i[level, _BK_OPEN] = 0


@njit(cache=True, error_model="numpy")
def _add_to_bucket(level: int, x: np.ndarray, st: KernelState) -> None:
    col_agg, bk_agg, bk_cnt = st.col_agg, st.bk_agg, st.bk_cnt
    for k in range(x.shape[0]):
        v = x[k]
        how = col_agg[k]
        if np.isnan(v):
            continue
        first = bk_cnt[level, k] == 0
        bk_cnt[level, k] += 1
        if how == 0:
            if first:
                bk_agg[level, k] = v
        elif how == 1:
            bk_agg[level, k] = v
        elif how == 2 or how == 5:
            bk_agg[level, k] += v
        elif how == 3:
            bk_agg[level, k] = v if first else max(bk_agg[level, k], v)
        else:
            bk_agg[level, k] = v if first else min(bk_agg[level, k], v)


@njit(cache=True, error_model="numpy")
def _run(
    x: np.ndarray,
    ts: np.ndarray,
    inst: np.ndarray,
    date: np.ndarray,
    minute: np.ndarray,
    st: KernelState,
    out_val: np.ndarray,
    out_warm: np.ndarray,
) -> None:
    level_minutes, plan_i, level_i, def_f = st.level_minutes, st.plan_i, st.level_i, st.def_f
    n_defs = plan_i.shape[0]
    val = np.empty(n_defs)
    warm = np.zeros(n_defs, dtype=np.bool_)
    for i in range(x.shape[0]):
        t = ts[i]
        for level in range(1, level_minutes.shape[0]):  # coarse bars [s, s + m): close, then add the 1m bar
            span = level_minutes[level] * NS_PER_MINUTE
            bucket = t // span
            same = (
                level_i[level, _BK_ID] == bucket
                and level_i[level, _BK_INST] == inst[i]
                and level_i[level, _BK_DATE] == date[i]
            )
            if level_i[level, _BK_OPEN] == 1 and not same:
                _close_bucket(level, st, val, warm)
            if level_i[level, _BK_OPEN] == 0:
                level_i[level, _BK_OPEN] = 1
                level_i[level, _BK_ID] = bucket
                level_i[level, _BK_INST] = inst[i]
                level_i[level, _BK_DATE] = date[i]
                st.bk_agg[level, :] = 0.0
                st.bk_cnt[level, :] = 0
            _add_to_bucket(level, x[i], st)
            if t + NS_PER_MINUTE == (bucket + 1) * span:  # the bar's last minute: complete now
                _close_bucket(level, st, val, warm)
        _level_row(0, x[i], t, inst[i], date[i], minute[i], st, val, warm)
        for d in range(n_defs):
            level = plan_i[d, _LEVEL]
            if level == 0:
                out_val[i, d] = val[d]
                out_warm[i, d] = warm[d]
                continue
            span = level_minutes[level] * NS_PER_MINUTE
            key = (t + NS_PER_MINUTE) // span * span - span  # the last coarse bar complete at t's close
            attached = (
                level_i[level, _AT_VALID] == 1
                and level_i[level, _AT_START] == key
                and level_i[level, _AT_INST] == inst[i]
                and level_i[level, _AT_DATE] == date[i]
            )
            out_val[i, d] = def_f[d, _AT_VAL] if attached else np.nan
            out_warm[i, d] = attached and def_f[d, _AT_WARM] > 0.0


# --- the plan and its state -------------------------------------------------------------------------------


def session_minutes(ts_ns: np.ndarray, trade_date: np.ndarray) -> np.ndarray:
    """Minutes from the session open (17:00 CT on D-1) to each bar start of trade date D (`trade_date` in days
    since 1970). A session never spans a DST change (they happen at 02:00 CT on a Sunday, with the market
    shut), so this is the wall-clock minute of the CT day minus 17:00."""
    return (ts_ns - cal.session_opens_ns(trade_date)) // NS_PER_MINUTE


class FeatureKernel:
    """The transforms and z-scores of `defs` (any timeframes; not `hmm_regime`) over bars fed in
    (instrument_id, ts) order, in one call or many: state carries over, so feeding a history and then one bar
    at a time gives the values of one call over everything."""

    def __init__(self, defs: Sequence[FeatureDef]) -> None:
        self.defs = tuple(defs)
        for d in self.defs:
            if d.transform not in _OPS:
                raise FeatureSpecError(f"feature {d.name!r}: transform {d.transform!r} is not a bar transform")
        self.columns = sorted({c for d in self.defs for c in d.inputs})
        coarse = [c for d in self.defs if d.timeframe_minutes > 1 for c in d.inputs]
        unknown = sorted({c for c in coarse if c not in RESAMPLE_AGG})
        if unknown:
            raise FeatureSpecError(f"columns {unknown} have no RESAMPLE_AGG rule: they cannot feed a coarser timeframe")
        minutes = sorted({1, *(d.timeframe_minutes for d in self.defs)})
        self._level_minutes = np.array(minutes, dtype=np.int64)
        self._col_agg = np.array([_AGG[RESAMPLE_AGG.get(c, "last")] for c in self.columns], dtype=np.int64)
        n, col = len(self.defs), {c: k for k, c in enumerate(self.columns)}
        self._plan_i = np.full((n, 10), -1, dtype=np.int64)
        self._plan_f = np.zeros((n, 4))
        for k, d in enumerate(self.defs):
            tf = d.timeframe_minutes
            window = d.params.get("window_minutes")
            norm = d.normalise
            inputs = [col[c] for c in d.inputs] + [-1] * (3 - len(d.inputs))
            self._plan_i[k] = [
                _OPS[d.transform],
                minutes.index(tf),
                *inputs,
                max(1, -(-(window or tf) // tf)),  # rows a window can hold: bars start >= tf apart
                norm.window if norm else 0,
                norm.min_periods if norm else 0,
                int(norm.span_sessions) if norm else 0,
                int(d.params.get("component") == "sin"),
            ]
            self._plan_f[k] = [
                (window or 0) * NS_PER_MINUTE,
                max(0, (window or tf) - tf) * NS_PER_MINUTE,
                float(d.params.get("period_minutes", 1)),
                norm.clip if norm else 0.0,
            ]
        self._needs_minutes = any(d.transform == "session_time" for d in self.defs)
        self.reset()

    def reset(self) -> None:
        """Forget every bar seen."""
        n, levels, cols = len(self.defs), len(self._level_minutes), len(self.columns)
        level_i = np.full((levels, 12), _NONE, dtype=np.int64)
        level_i[:, [_HAS_PREV, _BK_OPEN, _AT_VALID]] = 0
        win = max([1, *self._plan_i[:, _WIN_ROWS].tolist()])
        self._state = KernelState(
            level_minutes=self._level_minutes,
            col_agg=self._col_agg,
            plan_i=self._plan_i,
            plan_f=self._plan_f,
            level_i=level_i,
            level_prev=np.full((levels, cols), np.nan),
            bk_agg=np.zeros((levels, cols)),
            bk_cnt=np.zeros((levels, cols), dtype=np.int64),
            def_f=np.zeros((n, 4)),
            def_i=np.zeros((n, 4), dtype=np.int64),
            ring_ts=np.zeros((n, win), dtype=np.int64),
            ring_v=np.zeros((n, win)),
            zring=np.zeros((n, max([1, *self._plan_i[:, _ZWIN].tolist()]))),
        )

    def run(self, rows: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(values, warm), one row per bar of `rows` (continuous-session bars, (instrument_id, ts) order: ts,
        trade_date, instrument_id and the defs' inputs) and one column per def; NaN where there is no value."""
        n = rows.height
        x = np.empty((n, len(self.columns)))
        for k, c in enumerate(self.columns):  # column by column (nulls -> NaN): no query engine, as cheap at 1 row
            x[:, k] = rows[c].cast(pl.Float64).to_numpy()
        ts = cal.ts_ns(rows["ts"])
        inst = rows["instrument_id"].to_numpy().astype(np.int64)
        date = cal.day_numbers(rows["trade_date"])
        minute = session_minutes(ts, date) if self._needs_minutes else np.zeros(n, dtype=np.int64)
        values = np.empty((n, len(self.defs)))
        warm = np.empty((n, len(self.defs)), dtype=np.bool_)
        _run(x, ts, inst, date, minute, self._state, values, warm)
        return values, warm
