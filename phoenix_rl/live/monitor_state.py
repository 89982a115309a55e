"""What the live monitoring page shows (issue 14), read from the paper-trading tables of one lake.

`./phoenix paper` journals every closed bar of every strategy (`paper_bars`), every risk state change
(`paper_risk_events`), its orders and fills (`paper_orders`, `paper_fills`; see `phoenix_rl.live.journal`). The page
polls `monitor_state`, which turns those tables into one JSON-ready dict for one strategy: the numbers are the
loop's own (PnL and drawdown as marked at each bar close, latencies as measured), nothing is re-simulated.

Definitions (all per strategy, across its sessions: a restarted loop continues the same PnL):
- PnL is `pnl_usd` of the latest bar (realised + unrealised - fees since the strategy started).
- PnL today is that minus the PnL at the last bar of an earlier trade date (0 before the first), the same
  "since the trade date began" that `RiskEngine`'s daily loss limit uses.
- Drawdown is the latest bar's `drawdown_usd`; max drawdown the largest over all bars; % of `capital_usd`.
- Latency p50/p99 over the strategy's last `latency_bars` bars, linear interpolation between order statistics
  (numpy's default), bars without a measurement (NaN: no decision, or no order sent) left out.
- The PnL series keeps, of each of at most `(max_points - 2) // 2` consecutive buckets of bars, the lowest
  and highest PnL (plus the first and last bar), so a drawdown never disappears from the downsampled chart.

No dagster import: the monitor process and the tests call it directly.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import polars as pl

from phoenix_assets.lib.io.lake import Lake
from phoenix_assets.lib.schema import PAPER_BARS_TABLE, PAPER_FILLS_TABLE, PAPER_ORDERS_TABLE, PAPER_RISK_EVENTS_TABLE
from phoenix_rl.live.journal import with_current_names

DEFAULT_LATENCY_BARS = 500
DEFAULT_MAX_POINTS = 500
DEFAULT_RISK_EVENTS = 5
NO_SESSION = "no paper session yet: start one with ./phoenix paper (the page updates by itself once it runs)"
_ISO_TS = "%Y-%m-%dT%H:%M:%S%.fZ"  # UTC, fractional seconds only where there are any


def monitor_state(
    lake: Lake,
    strategy: str | None = None,
    *,
    latency_bars: int = DEFAULT_LATENCY_BARS,
    max_points: int = DEFAULT_MAX_POINTS,
    risk_events: int = DEFAULT_RISK_EVENTS,
) -> dict[str, Any]:
    """The page state of `strategy` (default: the strategy with the latest bar; ties by name); module doc.

    `status` is "ok", "no_session" (no paper_bars yet) or "unknown_strategy"; `message` says what to do.
    """
    if latency_bars < 1 or max_points < 4:
        raise ValueError(f"latency_bars >= 1 and max_points >= 4 needed, got {latency_bars}, {max_points}")
    base: dict[str, Any] = {"status": "no_session", "message": NO_SESSION, "lake": lake.root, "strategy": strategy}
    if not lake.exists(PAPER_BARS_TABLE):
        return base | {"strategies": []}
    all_bars = with_current_names(lake.scan(PAPER_BARS_TABLE), PAPER_BARS_TABLE)  # an older journal's equity_usd
    by_latest = (
        all_bars.group_by("strategy")
        .agg(pl.col("bar_ts").max())
        .sort(["bar_ts", "strategy"], descending=[True, False])
        .collect()
    )
    strategies = by_latest["strategy"].to_list()
    base["strategies"] = strategies
    if not strategies:
        return base
    if strategy is None:
        strategy = strategies[0]
    elif strategy not in strategies:
        message = f"no paper bars for strategy {strategy!r} in {lake.root}; strategies there: {', '.join(strategies)}"
        return base | {"status": "unknown_strategy", "message": message}

    bars = all_bars.filter(pl.col("strategy") == strategy).sort("bar_ts").collect()
    last = bars.row(-1, named=True)
    today = last["trade_date"]
    capital = last["capital_usd"]
    summary = bars.select(
        max_drawdown_usd=pl.col("drawdown_usd").max(),
        pnl_before_today=pl.col("pnl_usd").filter(pl.col("trade_date") < today).last(),
        sessions=pl.col("session_id").n_unique(),
    ).row(0, named=True)
    pnl_today = last["pnl_usd"] - (summary["pnl_before_today"] or 0.0)

    return base | {
        "status": "ok",
        "message": "",
        "strategy": strategy,
        "session_id": last["session_id"],
        "sessions": summary["sessions"],
        "instrument_id": last["instrument_id"],
        "last_bar_ts": _iso(last["bar_ts"]),
        "trade_date": today.isoformat(),
        "bars": bars.height,
        "close": _num(last["close"]),
        "action": _num(last["action"]),
        "target": last["target"],
        "position": last["position"],
        "order_reason": last["order_reason"],
        "capital_usd": _num(capital),
        "pnl_usd": _num(last["pnl_usd"]),
        "return_pct": _pct(last["pnl_usd"], capital),
        "pnl_today_usd": _num(pnl_today),
        "drawdown_usd": _num(last["drawdown_usd"]),
        "drawdown_pct": _pct(last["drawdown_usd"], capital),
        "max_drawdown_usd": _num(summary["max_drawdown_usd"]),
        "max_drawdown_pct": _pct(summary["max_drawdown_usd"], capital),
        "risk_state": last["risk_state"],
        "risk_reason": last["risk_reason"],
        "latency": latency_summary(bars, latency_bars),
        **_order_counts(lake, strategy, bars.select("bar_ts", "trade_date"), today),
        "risk_events": _risk_events(lake, strategy, risk_events),
        "pnl_series": pnl_series(bars, max_points),
    }


def latency_summary(bars: pl.DataFrame, window_bars: int) -> dict[str, Any]:
    """p50/p99 (ms) of both latency legs over the last `window_bars` bars (sorted by bar_ts); module doc."""
    window = bars.tail(window_bars)
    legs = {"decision_ms": "latency_decision_ms", "order_ms": "latency_order_ms"}
    stats = window.select(
        pl.struct(
            p50=pl.col(col).fill_nan(None).quantile(0.5, "linear"),
            p99=pl.col(col).fill_nan(None).quantile(0.99, "linear"),
            n=pl.col(col).fill_nan(None).count(),
        ).alias(leg)
        for leg, col in legs.items()
    ).row(0, named=True)
    out: dict[str, Any] = {"window_bars": window_bars, "bars": window.height}
    for leg in legs:
        out[leg] = {"p50": _num(stats[leg]["p50"]), "p99": _num(stats[leg]["p99"]), "n": stats[leg]["n"]}
    return out


def pnl_series(bars: pl.DataFrame, max_points: int) -> dict[str, Any]:
    """PnL since the start at each bar (bar_ts as epoch ms) downsampled to <= max_points, keeping each bucket's
    extremes."""
    n = bars.height
    buckets = (max_points - 2) // 2
    size = max(1, math.ceil(n / buckets))
    i, eq = pl.col("i"), pl.col("pnl_usd")
    kept = bars.select("bar_ts", "pnl_usd")
    if size > 1:
        kept = (
            kept.with_row_index("i")
            .with_columns(bucket=i // size)
            .filter(
                (i == 0)
                | (i == n - 1)
                | (i == i.get(eq.arg_min()).over("bucket"))
                | (i == i.get(eq.arg_max()).over("bucket"))
            )
        )
    return {
        "bars": n,
        "points": kept.height,
        "ts_ms": kept["bar_ts"].dt.epoch("ms").to_list(),
        "pnl_usd": kept["pnl_usd"].to_list(),
    }


def _order_counts(lake: Lake, strategy: str, bar_dates: pl.DataFrame, today: dt.date) -> dict[str, Any]:
    """Orders and fills of the strategy, in all and on the latest trade date (an order's date is its bar's)."""
    orders = {"total": 0, "today": 0, "unfilled": 0}
    fills = {"total": 0, "today": 0}
    if not lake.exists(PAPER_ORDERS_TABLE):
        return {"orders": orders, "fills": fills}
    mine = (
        lake.scan(PAPER_ORDERS_TABLE)
        .filter(pl.col("strategy") == strategy)
        .select("client_order_id", "bar_ts")
        .join(bar_dates.lazy(), on="bar_ts", how="left")
        .collect()
    )
    is_today = (pl.col("trade_date") == today).sum()
    orders |= mine.select(total=pl.len(), today=is_today).row(0, named=True)
    orders["unfilled"] = mine.height
    if lake.exists(PAPER_FILLS_TABLE):
        mine_fills = (
            lake.scan(PAPER_FILLS_TABLE).select("client_order_id").join(mine.lazy(), on="client_order_id").collect()
        )
        fills = mine_fills.select(total=pl.len(), today=is_today).row(0, named=True)
        orders["unfilled"] = mine.join(mine_fills, on="client_order_id", how="anti").height
    return {"orders": orders, "fills": fills}


def _risk_events(lake: Lake, strategy: str, count: int) -> list[dict[str, Any]]:
    """The strategy's last `count` risk state changes, newest first."""
    if not lake.exists(PAPER_RISK_EVENTS_TABLE):
        return []
    return (
        lake.scan(PAPER_RISK_EVENTS_TABLE)
        .filter(pl.col("strategy") == strategy)
        .sort("ts", descending=True)
        .head(count)
        .select(pl.col("ts").dt.strftime(_ISO_TS), "state", "reason", "session_id")
        .collect()
        .to_dicts()
    )


def _iso(ts: dt.datetime) -> str:
    return ts.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _num(x: float | None) -> float | None:
    """JSON has no NaN: a missing number is null."""
    return None if x is None or math.isnan(x) else float(x)


def _pct(x: float | None, capital: float | None) -> float | None:
    if x is None or not capital or math.isnan(x) or math.isnan(capital):
        return None
    return 100.0 * x / capital
