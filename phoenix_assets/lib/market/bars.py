"""One-minute order-flow bars (`ofi_bars_1m`) from the 1-second book table, plus Stoikov's microprice.

Everything here is vectorised polars over `book_snapshots_1s` rows (`book_kernel.SECOND_COLUMNS`);
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

from phoenix_assets.lib.instrument import MNQ
from phoenix_assets.lib.market.book_kernel import COUNT_COLUMNS, SECOND_COLUMNS
from phoenix_assets.lib.schema import BAR_COLUMNS, N_LEVELS, level_columns

__all__ = [
    "TICK_SIZE",
    "apply_stoikov_adjustment",
    "fit_stoikov_adjustment",
    "ofi_bars_1m",
    "ofi_mid_figures",
    "seconds_frame",
    "with_l1_columns",
]

TICK_SIZE = MNQ.tick_size  # minimum price increment, index points (NQ and ES share MNQ's 0.25)
LEVELS = range(1, N_LEVELS + 1)
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


def _safe_div(num: pl.Expr, den: pl.Expr) -> pl.Expr:
    return pl.when(den > 0).then(num / den).otherwise(None)


def with_l1_columns(frame_1s: pl.DataFrame, tick_size: float = TICK_SIZE) -> pl.DataFrame:
    """Add the end-of-second `spread_ticks_close` and `imbalance_close` (null unless the book is valid)."""
    valid = pl.col("book_valid")
    qb, qa = pl.col("bid_sz_00"), pl.col("ask_sz_00")
    return frame_1s.with_columns(
        spread_ticks_close=pl.when(valid).then((pl.col("ask_px_00") - pl.col("bid_px_00")) / tick_size),
        imbalance_close=pl.when(valid).then(_safe_div(qb.cast(pl.Float64), (qb + qa).cast(pl.Float64))),
    )


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
    f = frame_1s.with_columns(pl.col("ts").cast(pl.Datetime("ns", "UTC"))).sort("instrument_id", "ts")
    if "symbol" not in f.columns:
        f = f.with_columns(symbol=pl.lit(symbol, dtype=pl.String))
    f = f.with_columns(
        minute=pl.col("ts").dt.truncate("1m"),
        depth_bid_total=pl.sum_horizontal(level_columns("bid_sz")),
        depth_ask_total=pl.sum_horizontal(level_columns("ask_sz")),
        **{
            f"_depth_l{m}": pl.when("book_valid").then(
                (pl.col(f"bid_sz_{m - 1:02d}") + pl.col(f"ask_sz_{m - 1:02d}")) / 2.0
            )
            for m in LEVELS
        },
    )
    sums = [
        *COUNT_COLUMNS,
        "notional",
        *[f"ofi_l{m}" for m in LEVELS],
        "book_s",
        "valid_s",
        "crossed_s",
        "tw_spread",
        "tw_microprice_dev",
        "tw_bid_sz_l1",
        "tw_ask_sz_l1",
    ]
    last = [
        "book_valid",
        "bid_px_00",
        "ask_px_00",
        "bid_sz_00",
        "ask_sz_00",
        "depth_bid_total",
        "depth_ask_total",
        "mid_close",
        "microprice_close",
    ]
    g = f.group_by("instrument_id", "minute").agg(
        pl.col("trade_date").first(),
        pl.col("symbol").first(),
        pl.col("in_session").first(),
        pl.col("trade_open").drop_nulls().first(),
        pl.col("trade_high").max(),
        pl.col("trade_low").min(),
        pl.col("trade_close").drop_nulls().last(),
        pl.col("mid_open").drop_nulls().first(),
        pl.col("mid_high").max(),
        pl.col("mid_low").min(),
        *[pl.col(c).sum() for c in sums],
        *[pl.col(c).last() for c in last],
        *[pl.col(f"_depth_l{m}").mean() for m in LEVELS],
    )
    g = g.filter(pl.col("n_records") > 0)
    valid_s = pl.col("valid_s")
    no_trades = pl.col("trade_count") == 0
    bars = g.with_columns(
        ohlc_from_mid=pl.col("trade_open").is_null(),
        open=pl.coalesce("trade_open", "mid_open"),
        high=pl.coalesce("trade_high", "mid_high"),
        low=pl.coalesce("trade_low", "mid_low"),
        close=pl.coalesce("trade_close", "mid_close"),
        vwap_num=pl.col("notional"),
        vwap_den=pl.col("volume"),
        vwap=pl.when(no_trades).then(None).otherwise(_safe_div(pl.col("notional"), pl.col("volume"))),
        **{f"ofi_l{m}_norm": _safe_div(pl.col(f"ofi_l{m}").cast(pl.Float64), pl.col(f"_depth_l{m}")) for m in LEVELS},
        microprice_dev_ticks_close=(pl.col("microprice_close") - pl.col("mid_close")) / tick_size,
        microprice_dev_ticks_mean=_safe_div(pl.col("tw_microprice_dev"), valid_s) / tick_size,
        spread_ticks_close=pl.when("book_valid").then((pl.col("ask_px_00") - pl.col("bid_px_00")) / tick_size),
        spread_ticks_mean=_safe_div(pl.col("tw_spread"), valid_s) / tick_size,
        imbalance_close=pl.when("book_valid").then(
            _safe_div(pl.col("bid_sz_00").cast(pl.Float64), (pl.col("bid_sz_00") + pl.col("ask_sz_00")))
        ),
        liquidity_consumption=(
            _safe_div(pl.col("buy_volume").cast(pl.Float64), _safe_div(pl.col("tw_ask_sz_l1"), valid_s))
            + _safe_div(pl.col("sell_volume").cast(pl.Float64), _safe_div(pl.col("tw_bid_sz_l1"), valid_s))
        ),
        crossed_share=_safe_div(pl.col("crossed_s"), pl.col("book_s")),
        depth_bid_l1=pl.col("bid_sz_00"),
        depth_ask_l1=pl.col("ask_sz_00"),
        depth_total=pl.col("depth_bid_total") + pl.col("depth_ask_total"),
    ).rename({"minute": "ts", "book_valid": "book_valid_close"})
    if stoikov_table is not None:
        bars = apply_stoikov_adjustment(bars, stoikov_table, tick_size=tick_size, out="microprice_stoikov_close")
    cols = [c for c in BAR_COLUMNS if c in bars.columns]
    return bars.select(cols).sort("ts", "instrument_id")


# --- Stoikov (2018) micro-price -----------------------------------------------------------------------


def _state_index(spread_ticks: pl.Expr, imbalance: pl.Expr, n_imb: int, max_spread: int) -> pl.Expr:
    """(spread in ticks, imbalance bucket) -> 0..max_spread*n_imb-1, null outside the grid."""
    s = spread_ticks.round(0).cast(pl.Int64)
    b = (imbalance * n_imb).floor().cast(pl.Int64).clip(0, n_imb - 1)
    return pl.when((s >= 1) & (s <= max_spread)).then((s - 1) * n_imb + b)


def _mirror(x: pl.Expr, n_imb: int) -> pl.Expr:
    """State index with the imbalance bucket mirrored (b -> n - 1 - b), spread kept."""
    return x - x % n_imb + (n_imb - 1 - x % n_imb)


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
    f = (
        with_l1_columns(train_1s.with_columns(pl.col("ts").cast(pl.Datetime("ns", "UTC"))), tick_size)
        .sort("instrument_id", "ts")
        .select(
            "ts",
            *run,
            x=_state_index(pl.col("spread_ticks_close"), pl.col("imbalance_close"), n, smax),
            mid=pl.col("mid_close"),
        )
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


def apply_stoikov_adjustment(
    frame: pl.DataFrame,
    table: pl.DataFrame,
    *,
    tick_size: float = TICK_SIZE,
    out: str = "microprice_stoikov",
) -> pl.DataFrame:
    """Add `out` = mid_close + g*(imbalance_close, spread_ticks_close) x tick; null where the state is
    off the table (crossed, wider spread, never seen in training). Needs those three columns (bars
    have them; for 1-second rows call `with_l1_columns` first)."""
    n = int(table["imbalance_bucket"].max()) + 1
    smax = int(table["spread_ticks"].max())
    lookup = table.select(
        _key=(pl.col("spread_ticks") - 1) * n + pl.col("imbalance_bucket"), _adj=pl.col("adjustment_ticks")
    )
    keyed = frame.with_columns(_key=_state_index(pl.col("spread_ticks_close"), pl.col("imbalance_close"), n, smax))
    joined = keyed.join(lookup, on="_key", how="left", maintain_order="left")
    return joined.with_columns((pl.col("mid_close") + pl.col("_adj") * tick_size).alias(out)).drop("_key", "_adj")


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
