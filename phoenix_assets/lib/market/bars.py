"""One-minute order-flow bars (`ofi_bars_1m`) from the 1-second book table, plus Stoikov's microprice.

Everything here is vectorised numpy over `book_snapshots_1s` rows (`book_kernel.SECOND_COLUMNS`), by the
minutes' row ranges (`np.*.reduceat`): the batch asset and the live path (`LiveBars`, one closed minute at a
time) run the same `minute_bars`;
the definitions of the per-second inputs (OFI, states, time weighting) live in `book_kernel`.
Because the 1-second grid is dense inside a run (quiet seconds included), summing the seconds of a
minute gives the exact minute figures: OFI, volumes and counts are int64 sums (bit-exact), the
time-weighted means are ratios of summed integrals.

Bar definitions (minute [t, t+60s) by `ts_recv`; bars exist for minutes with at least one record)
    open/high/low/close    first / max / min / last trade price; a minute without trades falls back to
                           the mid (first valid mid, its high / low, end-of-minute mid), `ohlc_from_mid`.
    vwap_num, vwap_den     sum of price x size and of size over trades; vwap = num / den.
    ofi_lm                 sum of the seconds' ofi_lm (contracts), m = 1..10.
    ofi_lm_norm            ofi_lm / mean depth at level m, the mean being the average of
                           (bid + ask size at level m) / 2 over the minute's seconds whose end-of-second
                           book is valid (the dense grid makes this a 1-second-sampled time average):
                           depth-normalised OFI as in Cont, Cucuringu & Zhang (2023), "Cross-impact of
                           order flow imbalance in equity markets", Quantitative Finance 23(10), eq. (3),
                           with time instead of event averaging and one level's depth per level.
    mid_open / mid_close   mid at the minute's start (or its first valid mid) / at its end (null when
                           the end-of-minute book is not valid); mid_high / mid_low over valid states.
    microprice_close       imbalance-weighted mid of the end-of-minute book.
    microprice_dev_ticks_* (microprice - mid) in ticks, at the close and time-weighted over valid time.
    spread_ticks_*         best ask - best bid in ticks, at the close and time-weighted.
    imbalance_close        qb / (qb + qa) at the best level, in [0, 1] (Stoikov 2018's I).
    depth_*                end-of-minute resting sizes: best bid, best ask, each side's 10 levels, total.
    liquidity_consumption  buy_volume / mean best-ask size + sell_volume / mean best-bid size (means
                           time-weighted over the minute's valid time): how many times the aggressors
                           ate the displayed top of book on the side they traded against.
    crossed_share          time crossed or locked / time with a book.
    in_session             continuous trading (not the 16:00-17:00 CT halt and pre-open).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from phoenix_assets.lib import calendar as cal
from phoenix_assets.lib.instrument import MNQ
from phoenix_assets.lib.market.book_kernel import COUNT_COLUMNS, SECOND_COLUMNS
from phoenix_assets.lib.schema import BAR_COLUMNS, N_LEVELS, level_columns

__all__ = [
    "STOIKOV_INPUTS",
    "TICK_SIZE",
    "apply_stoikov_adjustment",
    "fit_stoikov_adjustment",
    "minute_bars",
    "ofi_bars_1m",
    "ofi_mid_figures",
    "seconds_arrays",
    "seconds_frame",
    "state_index",
    "stoikov_microprice",
    "with_l1_columns",
]

TICK_SIZE = MNQ.tick_size  # minimum price increment, index points (NQ and ES share MNQ's 0.25)
LEVELS = range(1, N_LEVELS + 1)
NS_PER_MINUTE = 60 * 1_000_000_000
OFI_COLUMNS = [f"ofi_l{m}" for m in LEVELS]
TW_COLUMNS = ["book_s", "valid_s", "crossed_s", "tw_spread", "tw_microprice_dev", "tw_bid_sz_l1", "tw_ask_sz_l1"]
_NULLABLE_FLOATS = [
    *level_columns("bid_px"),
    *level_columns("ask_px"),
    "trade_open",
    "trade_high",
    "trade_low",
    "trade_close",
    "mid_open",
    "mid_high",
    "mid_low",
    "mid_close",
    "microprice_close",
]


def seconds_frame(columns: dict[str, np.ndarray]) -> pl.DataFrame:
    """Kernel output -> the `book_snapshots_1s` frame: ts as UTC datetime[ns], trade_date as date,
    NaN (no trade, no valid book, empty level) as null."""
    frame = pl.DataFrame({k: columns[k] for k in SECOND_COLUMNS})
    return frame.with_columns(
        pl.col("ts").cast(pl.Datetime("ns", "UTC")),
        pl.col("trade_date").cast(pl.Date),
        *[pl.col(c).fill_nan(None) for c in _NULLABLE_FLOATS],
    )


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den where den > 0, else NaN (missing)."""
    ok = den > 0
    return np.divide(num.astype(np.float64), den, out=np.full(len(num), np.nan), where=ok)


def with_l1_columns(frame_1s: pl.DataFrame, tick_size: float = TICK_SIZE) -> pl.DataFrame:
    """Add the end-of-second `spread_ticks_close` and `imbalance_close` (null unless the book is valid)."""
    valid = pl.col("book_valid")
    qb, qa = pl.col("bid_sz_00"), pl.col("ask_sz_00")
    return frame_1s.with_columns(
        spread_ticks_close=pl.when(valid).then((pl.col("ask_px_00") - pl.col("bid_px_00")) / tick_size),
        imbalance_close=pl.when(valid).then(
            pl.when((qb + qa) > 0).then(qb.cast(pl.Float64) / (qb + qa).cast(pl.Float64))
        ),
    )


def seconds_arrays(frame_1s: pl.DataFrame) -> dict[str, np.ndarray]:
    """`book_snapshots_1s` rows -> the kernel's numpy columns (ts in ns, trade_date in days, null -> NaN),
    sorted by (instrument_id, ts); `symbol` kept when the frame has it."""
    f = frame_1s.sort("instrument_id", "ts")
    out = {c: f[c].to_numpy() for c in SECOND_COLUMNS if c not in ("ts", "trade_date")}
    out["ts"] = cal.ts_ns(f["ts"])
    out["trade_date"] = cal.day_numbers(f["trade_date"]).astype(np.int32)
    if "symbol" in f.columns:
        out["symbol"] = f["symbol"].to_numpy()
    return out


def ofi_bars_1m(
    frame_1s: pl.DataFrame,
    *,
    symbol: str | None = None,
    tick_size: float = TICK_SIZE,
    stoikov_table: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """1-second rows -> one bar per (instrument_id, minute) with at least one record (see module doc).

    `symbol` fills the symbol column when the frame has none. With `stoikov_table` (fit on earlier
    data only, `fit_stoikov_adjustment`) the bars also get `microprice_stoikov_close`.
    """
    return minute_bars(seconds_arrays(frame_1s), symbol=symbol, tick_size=tick_size, stoikov_table=stoikov_table)


def minute_bars(
    s: dict[str, np.ndarray],
    *,
    symbol: str | None = None,
    tick_size: float = TICK_SIZE,
    stoikov_table: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """`ofi_bars_1m` from the seconds' numpy columns (`seconds_arrays`, or the book kernel's output as the live
    path holds it; sorted by (instrument_id, ts) here if they are not). Vectorised numpy over the minutes' row
    ranges: a minute's figures depend only on its own seconds, so a live minute equals the batch's bit for bit."""
    ts, iid = s["ts"].astype(np.int64), s["instrument_id"].astype(np.int64)
    n = len(ts)
    if n > 1 and ((np.diff(iid) < 0) | ((np.diff(iid) == 0) & (np.diff(ts) < 0))).any():  # e.g. a roll's overlap
        order = np.lexsort((ts, iid))
        s = {k: v[order] for k, v in s.items()}
        ts, iid = ts[order], iid[order]
    minute = ts - ts % NS_PER_MINUTE
    starts = np.flatnonzero(np.r_[True, (iid[1:] != iid[:-1]) | (minute[1:] != minute[:-1])]) if n else np.zeros(0, int)
    ends = np.r_[starts[1:], n] - 1 if n else starts
    row = np.arange(n)

    def add(x: np.ndarray) -> np.ndarray:
        return np.add.reduceat(x, starts) if n else x[:0]

    def first_valid(x: np.ndarray) -> np.ndarray:
        at = np.minimum.reduceat(np.where(np.isnan(x), n, row), starts) if n else row[:0]
        return np.where(at < n, x[np.minimum(at, n - 1)], np.nan)

    def last_valid(x: np.ndarray) -> np.ndarray:
        at = np.maximum.reduceat(np.where(np.isnan(x), -1, row), starts) if n else row[:0]
        return np.where(at >= 0, x[at], np.nan)

    def extreme(x: np.ndarray, ufunc: np.ufunc) -> np.ndarray:  # NaN-skipping; NaN when none
        return ufunc.reduceat(x, starts) if n else x[:0]

    valid = s["book_valid"].astype(bool)
    b: dict[str, np.ndarray] = {
        "ts": minute[starts],
        "trade_date": s["trade_date"][starts],
        "instrument_id": iid[starts],
        "in_session": s["in_session"][starts],
    }
    sym = s["symbol"][starts] if "symbol" in s else np.full(len(starts), symbol, dtype=object)
    trade_open, mid_open = first_valid(s["trade_open"]), first_valid(s["mid_open"])
    trade_close = last_valid(s["trade_close"])
    trade_high, trade_low = extreme(s["trade_high"], np.fmax), extreme(s["trade_low"], np.fmin)
    mid_high, mid_low = extreme(s["mid_high"], np.fmax), extreme(s["mid_low"], np.fmin)
    sums = {c: add(s[c]) for c in (*COUNT_COLUMNS, "notional", *OFI_COLUMNS, *TW_COLUMNS)}
    last = {
        c: s[c][ends] for c in ("bid_px_00", "ask_px_00", "bid_sz_00", "ask_sz_00", "mid_close", "microprice_close")
    }
    book_valid_close = valid[ends]
    depth_bid_total = sum(s[c][ends] for c in level_columns("bid_sz"))
    depth_ask_total = sum(s[c][ends] for c in level_columns("ask_sz"))
    mid_close = last["mid_close"]
    b |= {
        "open": np.where(np.isnan(trade_open), mid_open, trade_open),
        "high": np.where(np.isnan(trade_high), mid_high, trade_high),
        "low": np.where(np.isnan(trade_low), mid_low, trade_low),
        "close": np.where(np.isnan(trade_close), mid_close, trade_close),
        "ohlc_from_mid": np.isnan(trade_open),
        "volume": sums["volume"],
        "buy_volume": sums["buy_volume"],
        "sell_volume": sums["sell_volume"],
        "trade_count": sums["trade_count"],
        "vwap_num": sums["notional"],
        "vwap_den": sums["volume"],
        "vwap": np.where(sums["trade_count"] == 0, np.nan, _safe_div(sums["notional"], sums["volume"])),
    }
    for m in LEVELS:
        size = s[f"bid_sz_{m - 1:02d}"] + s[f"ask_sz_{m - 1:02d}"]
        depth = np.where(valid, size / 2.0, 0.0)
        seen = add(valid.astype(np.int64))
        mean_depth = np.divide(add(depth), seen, out=np.full(len(starts), np.nan), where=seen > 0)
        b[f"ofi_l{m}"] = sums[f"ofi_l{m}"]
        b[f"_norm_{m}"] = _safe_div(sums[f"ofi_l{m}"], mean_depth)
    for m in LEVELS:
        b[f"ofi_l{m}_norm"] = b.pop(f"_norm_{m}")
    valid_s = sums["valid_s"]
    b |= {
        "mid_open": mid_open,
        "mid_high": mid_high,
        "mid_low": mid_low,
        "mid_close": mid_close,
        "microprice_close": last["microprice_close"],
        "microprice_dev_ticks_close": (last["microprice_close"] - mid_close) / tick_size,
        "microprice_dev_ticks_mean": _safe_div(sums["tw_microprice_dev"], valid_s) / tick_size,
        "spread_ticks_close": np.where(book_valid_close, (last["ask_px_00"] - last["bid_px_00"]) / tick_size, np.nan),
        "spread_ticks_mean": _safe_div(sums["tw_spread"], valid_s) / tick_size,
        "imbalance_close": np.where(
            book_valid_close, _safe_div(last["bid_sz_00"], last["bid_sz_00"] + last["ask_sz_00"]), np.nan
        ),
        "depth_bid_l1": last["bid_sz_00"],
        "depth_ask_l1": last["ask_sz_00"],
        "depth_bid_total": depth_bid_total,
        "depth_ask_total": depth_ask_total,
        "depth_total": depth_bid_total + depth_ask_total,
        "liquidity_consumption": _safe_div(sums["buy_volume"], _safe_div(sums["tw_ask_sz_l1"], valid_s))
        + _safe_div(sums["sell_volume"], _safe_div(sums["tw_bid_sz_l1"], valid_s)),
        **{c: sums[c] for c in ("n_records", "n_events", "n_snapshots", "n_crossed_events", "valid_s")},
        "crossed_share": _safe_div(sums["crossed_s"], sums["book_s"]),
        "book_valid_close": book_valid_close,
    }
    if stoikov_table is not None:
        b["microprice_stoikov_close"] = stoikov_microprice(
            mid_close, b["imbalance_close"], b["spread_ticks_close"], stoikov_table, tick_size
        )
    keep = sums["n_records"] > 0
    order = np.lexsort((b["instrument_id"][keep], b["ts"][keep]))
    columns = []
    for c in BAR_COLUMNS:
        if c == "symbol":
            columns.append(pl.Series(c, sym[keep][order], pl.String))
        elif c in b:
            v = b[c][keep][order]
            v = v.astype(np.int32) if c == "trade_date" else v  # days since 1970: Date's physical type
            series = pl.Series(c, v, nan_to_null=True) if v.dtype.kind == "f" else pl.Series(c, v)
            columns.append(series.cast(_CAST[c]) if c in _CAST else series)
    return pl.DataFrame(columns)  # Series casts, not a with_columns: the live path builds this frame every minute


_CAST = {"ts": pl.Datetime("ns", "UTC"), "trade_date": pl.Date}


# --- Stoikov (2018) micro-price -----------------------------------------------------------------------


def state_index(spread_ticks: np.ndarray, imbalance: np.ndarray, n_imb: int, max_spread: int) -> np.ndarray:
    """(spread in ticks, imbalance bucket) -> 0..max_spread*n_imb-1, -1 outside the grid or where missing."""
    with np.errstate(invalid="ignore"):
        s = np.floor(spread_ticks + 0.5)  # spreads sit on the tick grid: the nearest whole tick
        on_grid = np.isfinite(s) & np.isfinite(imbalance) & (s >= 1) & (s <= max_spread)
        bucket = np.clip(np.floor(np.where(on_grid, imbalance, 0.0) * n_imb), 0, n_imb - 1)
    return np.where(on_grid, (np.where(on_grid, s, 1) - 1) * n_imb + bucket, -1).astype(np.int64)


def _mirror(x: pl.Expr, n_imb: int) -> pl.Expr:
    """State index with the imbalance bucket mirrored (b -> n - 1 - b), spread kept."""
    return x - x % n_imb + (n_imb - 1 - x % n_imb)


# the 1-second columns the fit reads (a month's backfill reads 5 earlier days of them for every trade date)
STOIKOV_INPUTS = [
    "ts",
    "instrument_id",
    "trade_date",
    "in_session",
    "book_valid",
    "bid_px_00",
    "ask_px_00",
    "bid_sz_00",
    "ask_sz_00",
    "mid_close",
]


def fit_stoikov_adjustment(
    train_1s: pl.DataFrame,
    *,
    n_imbalance_buckets: int = 10,
    max_spread_ticks: int = 2,
    tick_size: float = TICK_SIZE,
    max_iter: int = 500,
    tol: float = 1e-10,
) -> pl.DataFrame:
    """Estimate Stoikov's micro-price adjustment g*(I, S) in ticks from past 1-second rows.

    Stoikov (2018), "The micro-price: a high-frequency estimator of future prices", Quantitative
    Finance 18(12), Sec. 3: states x = (imbalance bucket, spread), observed at consecutive seconds of a
    run (valid books, spread <= max_spread_ticks). From the transitions, Q (mid unchanged, x -> y),
    T (mid changed, then state y) and R (sum of the mid changes) per starting state give
    G1 = (1 - Q)^-1 R and B = (1 - Q)^-1 T, and g* = sum_i B^i G1 (the expected mid change until
    the mid's long-run value, iterated until the terms fall below `tol`). The data are symmetrised
    (I -> 1 - I, dM -> -dM) as in the paper, so g*(I) = -g*(1 - I).
    Sampling at 1-second steps (not at every quote change as in the paper) keeps it on the dense grid.

    Pass only data that precedes whatever the table is applied to (point in time): the caller picks
    the training window. Symmetrising mirrors imbalance buckets (b -> n - 1 - b), so g* is exactly
    antisymmetric in the bucket index. Returns one row per state: spread_ticks, imbalance_bucket, imbalance_lo,
    imbalance_hi, adjustment_ticks, n_obs (observed transitions out of the state, before symmetrising).
    """
    n, smax = n_imbalance_buckets, max_spread_ticks
    k = n * smax
    run = ["instrument_id", "trade_date", "in_session"]
    f = with_l1_columns(train_1s.with_columns(pl.col("ts").cast(pl.Datetime("ns", "UTC"))), tick_size).sort(
        "instrument_id", "ts"
    )
    x = state_index(f["spread_ticks_close"].to_numpy(), f["imbalance_close"].to_numpy(), n, smax)
    f = (
        f.with_columns(_x=pl.Series(x))
        .select("ts", *run, x=pl.when(pl.col("_x") >= 0).then(pl.col("_x")), mid=pl.col("mid_close"))
        .with_columns(xm=_mirror(pl.col("x"), n))  # the same state with bid and ask swapped
        .with_columns(
            y=pl.col("x").shift(-1).over(run),
            ym=pl.col("xm").shift(-1).over(run),
            dm=((pl.col("mid").shift(-1).over(run) - pl.col("mid")) / tick_size),
            step=pl.col("ts").shift(-1).over(run) - pl.col("ts"),
        )
        .filter(pl.col("x").is_not_null() & pl.col("y").is_not_null() & (pl.col("step") == pl.duration(seconds=1)))
    )
    x = np.concatenate([f["x"].to_numpy(), f["xm"].to_numpy()])
    y = np.concatenate([f["y"].to_numpy(), f["ym"].to_numpy()])
    dm = np.concatenate([f["dm"].to_numpy(), -f["dm"].to_numpy()])
    moved = dm != 0
    q_cnt = np.bincount(x[~moved] * k + y[~moved], minlength=k * k).reshape(k, k).astype(np.float64)
    t_cnt = np.bincount(x[moved] * k + y[moved], minlength=k * k).reshape(k, k).astype(np.float64)
    r_sum = np.bincount(x[moved], weights=dm[moved], minlength=k)
    total = q_cnt.sum(axis=1) + t_cnt.sum(axis=1)
    seen = total > 0
    inv_total = np.divide(1.0, total, out=np.zeros(k), where=seen)
    q = q_cnt * inv_total[:, None]
    t = t_cnt * inv_total[:, None]
    solve = np.linalg.pinv(np.eye(k) - q)
    g1 = solve @ (r_sum * inv_total)
    b = solve @ t
    g = g1.copy()
    term = g1
    for _ in range(max_iter):
        term = b @ term
        g += term
        if np.max(np.abs(term)) < tol:
            break
    n_obs = np.bincount(f["x"].to_numpy(), minlength=k)
    bucket = np.arange(k) % n
    return pl.DataFrame(
        {
            "spread_ticks": (np.arange(k) // n + 1).astype(np.int64),
            "imbalance_bucket": bucket.astype(np.int64),
            "imbalance_lo": bucket / n,
            "imbalance_hi": (bucket + 1) / n,
            "adjustment_ticks": np.where(seen, g, np.nan),
            "n_obs": n_obs.astype(np.int64),
        }
    ).with_columns(pl.col("adjustment_ticks").fill_nan(None))


def stoikov_microprice(
    mid_close: np.ndarray,
    imbalance_close: np.ndarray,
    spread_ticks_close: np.ndarray,
    table: pl.DataFrame,
    tick_size: float = TICK_SIZE,
) -> np.ndarray:
    """mid_close + g*(imbalance_close, spread_ticks_close) x tick; NaN where the state is off the table (crossed,
    wider spread, never seen in training)."""
    n = int(table["imbalance_bucket"].max()) + 1
    smax = int(table["spread_ticks"].max())
    lut = np.full(n * smax, np.nan)
    keys = ((table["spread_ticks"] - 1) * n + table["imbalance_bucket"]).to_numpy()
    lut[keys] = table["adjustment_ticks"].cast(pl.Float64).to_numpy()
    key = state_index(spread_ticks_close, imbalance_close, n, smax)
    return np.where(key >= 0, mid_close + lut[np.maximum(key, 0)] * tick_size, np.nan)


def apply_stoikov_adjustment(
    frame: pl.DataFrame,
    table: pl.DataFrame,
    *,
    tick_size: float = TICK_SIZE,
    out: str = "microprice_stoikov",
) -> pl.DataFrame:
    """Add `out` (`stoikov_microprice`, null off the table). Needs mid_close, imbalance_close and
    spread_ticks_close (bars have them; for 1-second rows call `with_l1_columns` first)."""
    value = stoikov_microprice(
        *(frame[c].cast(pl.Float64).to_numpy() for c in ("mid_close", "imbalance_close", "spread_ticks_close")),
        table,
        tick_size,
    )
    return frame.with_columns(pl.Series(out, value, nan_to_null=True))


# --- what the OFI explains -----------------------------------------------------------------------------


def ofi_mid_figures(
    bars: pl.DataFrame, *, ofi_column: str = "ofi_l1", tick_size: float = TICK_SIZE
) -> dict[str, float]:
    """How much per-minute OFI explains the mid: figures for the asset's metadata.

    On in-session bars: `contemporaneous_r2` (R^2 of the OLS of the bar's mid change, close - open in
    ticks, on its OFI, with intercept; CKS 2014 Sec. 3), `contemporaneous_beta` (ticks per contract),
    and `forward_corr`, the correlation of a bar's OFI with the next minute's mid change (the next bar
    must be the following minute of the same run). NaN where fewer than 3 pairs exist.
    """
    run = ["instrument_id", "trade_date"]
    b = (
        bars.filter(pl.col("in_session"))
        .sort("instrument_id", "ts")
        .with_columns(d_mid=(pl.col("mid_close") - pl.col("mid_open")) / tick_size)
        .with_columns(
            next_d_mid=pl.col("d_mid").shift(-1).over(run),
            next_gap=pl.col("ts").shift(-1).over(run) - pl.col("ts"),
        )
    )
    ofi = pl.col(ofi_column).cast(pl.Float64)
    now = b.filter(pl.col("d_mid").is_not_null() & ofi.is_not_null())
    fwd = b.filter(
        pl.col("next_d_mid").is_not_null() & ofi.is_not_null() & (pl.col("next_gap") == pl.duration(minutes=1))
    )

    def corr(frame: pl.DataFrame, a: str, c: str) -> float:
        if frame.height < 3:
            return float("nan")
        xa = frame[a].cast(pl.Float64).to_numpy()
        xc = frame[c].cast(pl.Float64).to_numpy()
        if xa.std() == 0 or xc.std() == 0:
            return float("nan")
        return float(np.corrcoef(xa, xc)[0, 1])

    r = corr(now, ofi_column, "d_mid")
    beta = float("nan")
    if now.height >= 3:
        xa = now[ofi_column].cast(pl.Float64).to_numpy()
        if xa.var() > 0:
            beta = float(np.cov(xa, now["d_mid"].to_numpy())[0, 1] / xa.var(ddof=1))
    return {
        "n_bars": float(now.height),
        "contemporaneous_r2": r * r,
        "contemporaneous_beta": beta,
        "n_forward": float(fwd.height),
        "forward_corr": corr(fwd, ofi_column, "next_d_mid"),
    }
