"""Paper-trading daily report and go-live gate (issue 14): pure polars over the order journal's tables.

Definitions (one strategy, one trade date D; P_t is the journal's `pnl_usd`, the strategy's PnL since it started,
named `equity_usd` in journals before issue 28; the report's pnl_open/close/high/low_usd are that same PnL, named
equity_*_usd before issue 28: `scan_report` reads an older table, `migrate_report_table` rewrites it):
    opening PnL     pnl_usd of the strategy's last paper_bars row before D (0 when D is its first day).
    pnl_usd         last pnl_usd of D - opening PnL: the first bar's change is included, so the days' pnl add
                    up to the strategy's PnL since it started.
    daily_return    pnl_usd / capital_usd (simple return on the fixed account capital, not compounded).
    bar change      dP_t = P_t - P_{t-1} (P_{-1} = opening PnL).
    round trip      a maximal run of bars whose position (after the bar's order) is non-zero and of one sign.
                    Its pnl is the sum of the bar changes it owns: every bar's change belongs to the position
                    held through that bar (the previous bar's position), and an entry bar from flat (whose change
                    is the entry fee) to the position it opens. So a trip owns its entry bar, its bars in the
                    market and its exit bar (the first bar flat or of the other sign); on a flip the exit bar,
                    fees of both legs included, belongs to the trip that closes. Trips are counted per trade
                    date, on each day whose bars they own: a position carried into D continues from D-1's last
                    bar, a position still open at D's last bar counts as a round trip of D marked at that close
                    (and as a new one on D+1; the journal's forced-flat rules make this rare).
                    A win is a trip with pnl > 0 (net of fees, as phoenix_rl.evaluation.metrics.win_rate).
    max drawdown    intraday: max_t (peak_t - P_t), peak_t = max(opening PnL, P_0..P_t), in $.
    latencies       p50/p99 of latency_decision_ms and latency_order_ms over the day's bars (linear
                    interpolation, as numpy.percentile; NaN = no order is left out; null when none).
    risk            events = paper_risk_events rows of D; worst state over events and bars (ACTIVE < REDUCING <
                    HALTED); catastrophe = a HALTED state whose reason starts with one of CATASTROPHE_REASONS
                    (the earliest such reason is reported).
    orders / fills  paper_orders whose bar_ts lies in D's CME window (16:00 CT D-1 .. 16:00 CT D); fills of
                    those orders (by client_order_id); fees = their commission_usd.

Track record over a strategy's last `days` trade dates in paper_daily_report:
    sortino         phoenix_rl.evaluation.metrics.sortino_ratio of the daily returns (sqrt(252) annualisation, downside
                    deviation over all days, target 0; +RATIO_CAP with no down day and a positive mean).
                    The gate judges the issue's 10 days with the formula itself, where compute_metrics would
                    report n/a under MIN_DAYS_FOR_RATIOS (20) for ranking models.
    max drawdown    peak-to-trough of the per-bar PnL over the period, peak starting at the first day's
                    opening PnL, in $ and in % of capital. Exact from the daily rows: on day d it is
                    max(intraday drawdown_d, peak before d - lowest PnL of d).
    win rate        wins / round trips over the period (0 without a round trip).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field

import deltalake
import numpy as np
import polars as pl
import pyarrow as pa

from phoenix_assets.lib import calendar as cal
from phoenix_assets.lib.io.lake import Lake, MissingUpstreamError
from phoenix_assets.lib.schema import (
    PAPER_BARS_TABLE,
    PAPER_FILLS_TABLE,
    PAPER_ORDERS_TABLE,
    PAPER_REPORT_TABLE,
    PAPER_RISK_EVENTS_TABLE,
)
from phoenix_rl.evaluation.metrics import sortino_ratio
from phoenix_rl.live.journal import CATASTROPHE_REASONS, scan_journal, with_current_names

RISK_SEVERITY = {"ACTIVE": 0, "REDUCING": 1, "HALTED": 2}

REPORT_SCHEMA = pa.schema(
    [
        ("trade_date", pa.date32()),
        ("strategy", pa.string()),
        ("capital_usd", pa.float64()),
        ("pnl_open_usd", pa.float64()),  # PnL since the start at the last bar before the day (0 on the first day)
        ("pnl_close_usd", pa.float64()),  # PnL since the start at the day's last bar
        ("pnl_high_usd", pa.float64()),  # max(opening PnL, the day's bar PnLs)
        ("pnl_low_usd", pa.float64()),  # min of the day's bar PnLs
        ("pnl_usd", pa.float64()),
        ("daily_return", pa.float64()),
        ("n_bars", pa.int64()),
        ("n_orders", pa.int64()),
        ("n_fills", pa.int64()),
        ("fees_usd", pa.float64()),
        ("n_round_trips", pa.int64()),
        ("n_wins", pa.int64()),
        ("round_trip_pnl_usd", pa.float64()),
        ("max_drawdown_usd", pa.float64()),
        ("latency_decision_p50_ms", pa.float64()),
        ("latency_decision_p99_ms", pa.float64()),
        ("latency_order_p50_ms", pa.float64()),
        ("latency_order_p99_ms", pa.float64()),
        ("n_risk_events", pa.int64()),
        ("worst_risk_state", pa.string()),
        ("catastrophe", pa.bool_()),
        ("catastrophe_reason", pa.string()),
        ("first_bar_ts", pa.timestamp("us", "UTC")),
        ("last_bar_ts", pa.timestamp("us", "UTC")),
    ]
)
TRACK_RECORD_SCHEMA = pa.schema(
    [
        ("strategy", pa.string()),
        ("first_trade_date", pa.date32()),
        ("last_trade_date", pa.date32()),
        ("n_days", pa.int64()),
        ("capital_usd", pa.float64()),
        ("pnl_usd", pa.float64()),
        ("sortino", pa.float64()),
        ("max_drawdown_usd", pa.float64()),
        ("max_drawdown_pct", pa.float64()),  # of capital
        ("n_round_trips", pa.int64()),
        ("n_wins", pa.int64()),
        ("win_rate", pa.float64()),
        ("n_catastrophes", pa.int64()),
        ("catastrophes", pa.string()),  # "date: reason; ..." ("" when none)
        ("fees_usd", pa.float64()),
    ]
)


@dataclass(frozen=True)
class PaperDay:
    """The journal's rows for one trade date, plus each strategy's last bar before it."""

    trade_date: dt.date
    bars: pl.DataFrame
    prior: pl.DataFrame  # strategy, prior_pnl_usd, prior_position
    orders: pl.DataFrame
    fills: pl.DataFrame
    risk_events: pl.DataFrame


def read_paper_day(lake: Lake, trade_date: dt.date, needed_by: str = PAPER_REPORT_TABLE) -> PaperDay:
    """Read D's rows of the paper tables; missing paper_bars for D is an error, missing other tables are empty."""
    if not lake.exists(PAPER_BARS_TABLE) or lake.read_partition(PAPER_BARS_TABLE, trade_date, ["strategy"]).is_empty():
        raise MissingUpstreamError(
            f"{needed_by} {trade_date}: {PAPER_BARS_TABLE} has no rows for trade date {trade_date} in "
            f"{lake.table_uri(PAPER_BARS_TABLE)}: run `./phoenix paper` on that trade date (or pick a date it traded)"
        )
    bars = with_current_names(lake.read_partition(PAPER_BARS_TABLE, trade_date, order_by="bar_ts"), PAPER_BARS_TABLE)
    prior = (
        with_current_names(lake.scan(PAPER_BARS_TABLE), PAPER_BARS_TABLE)
        .filter(pl.col("trade_date") < trade_date)
        .group_by("strategy")
        .agg(
            prior_pnl_usd=pl.col("pnl_usd").sort_by("bar_ts").last(),
            prior_position=pl.col("position").sort_by("bar_ts").last(),
        )
        .collect()
    )
    start_ns, end_ns = cal.trade_date_window(trade_date)
    start, end = (dt.datetime.fromtimestamp(ns / 1e9, dt.UTC) for ns in (start_ns, end_ns))
    orders = (
        scan_journal(lake, PAPER_ORDERS_TABLE).filter((pl.col("bar_ts") >= start) & (pl.col("bar_ts") < end)).collect()
    )
    fills = (
        scan_journal(lake, PAPER_FILLS_TABLE)
        .filter(pl.col("client_order_id").is_in(orders["client_order_id"].to_list()))
        .collect()
    )
    events = scan_journal(lake, PAPER_RISK_EVENTS_TABLE).filter(pl.col("trade_date") == trade_date).collect()
    return PaperDay(trade_date, bars, prior, orders, fills, events)


def bar_changes(bars: pl.DataFrame, prior: pl.DataFrame) -> pl.DataFrame:
    """The day's bars per strategy in time order with opening PnL, dP (`pnl_change`) and the round trip owning each bar
    (`trip`: null on a flat bar owned by none; 0 is the position carried in from the day before)."""
    b = (
        bars.sort("strategy", "bar_ts")
        .join(prior, on="strategy", how="left")
        .with_columns(
            pnl_open_usd=pl.col("prior_pnl_usd").fill_null(0.0),
            prev_position=pl.col("position").shift(1).over("strategy").fill_null(pl.col("prior_position")).fill_null(0),
        )
        .with_columns(
            pnl_change=pl.col("pnl_usd")
            - pl.col("pnl_usd").shift(1).over("strategy").fill_null(pl.col("pnl_open_usd")),
            run=(pl.col("position").sign() != pl.col("prev_position").sign()).cast(pl.Int64).cum_sum().over("strategy"),
        )
    )
    held = pl.col("run").shift(1).over("strategy").fill_null(0)
    return b.with_columns(
        trip=pl.when(pl.col("prev_position") != 0)
        .then(held)
        .when(pl.col("position") != 0)
        .then(pl.col("run"))
        .otherwise(None)
    )


def round_trips(changes: pl.DataFrame) -> pl.DataFrame:
    """One row per round trip (module doc): strategy, trip, side (+1/-1), n_bars, pnl_usd."""
    return (
        changes.filter(pl.col("trip").is_not_null())
        .group_by("strategy", "trip")
        .agg(
            side=pl.when(pl.col("prev_position") != 0)
            .then(pl.col("prev_position"))
            .otherwise(pl.col("position"))
            .first()
            .sign(),
            n_bars=pl.len(),
            pnl_usd=pl.col("pnl_change").sum(),
        )
        .sort("strategy", "trip")
    )


def _catastrophe(reason: pl.Expr) -> pl.Expr:
    return pl.any_horizontal([reason.str.starts_with(p) for p in CATASTROPHE_REASONS])


def daily_report(day: PaperDay) -> pl.DataFrame:
    """One REPORT_SCHEMA row per strategy with bars on the day (module doc for every definition)."""
    changes = bar_changes(day.bars, day.prior)
    trips = (
        round_trips(changes)
        .group_by("strategy")
        .agg(n_round_trips=pl.len(), n_wins=(pl.col("pnl_usd") > 0).sum(), round_trip_pnl_usd=pl.col("pnl_usd").sum())
    )
    no_nan = {c: pl.col(c).fill_nan(None) for c in ("latency_decision_ms", "latency_order_ms")}
    base = changes.group_by("strategy").agg(
        capital_usd=pl.col("capital_usd").last(),
        pnl_open_usd=pl.col("pnl_open_usd").first(),
        pnl_close_usd=pl.col("pnl_usd").last(),
        pnl_high_usd=pl.max_horizontal(pl.col("pnl_open_usd").first(), pl.col("pnl_usd").max()),
        pnl_low_usd=pl.col("pnl_usd").min(),
        n_bars=pl.len(),
        max_drawdown_usd=(pl.max_horizontal(pl.col("pnl_usd").cum_max(), pl.col("pnl_open_usd")) - pl.col("pnl_usd"))
        .max()
        .clip(lower_bound=0.0),
        latency_decision_p50_ms=no_nan["latency_decision_ms"].quantile(0.5, "linear"),
        latency_decision_p99_ms=no_nan["latency_decision_ms"].quantile(0.99, "linear"),
        latency_order_p50_ms=no_nan["latency_order_ms"].quantile(0.5, "linear"),
        latency_order_p99_ms=no_nan["latency_order_ms"].quantile(0.99, "linear"),
        bar_severity=pl.col("risk_state").replace_strict(RISK_SEVERITY, default=0).max(),
        first_bar_ts=pl.col("bar_ts").first(),
        last_bar_ts=pl.col("bar_ts").last(),
    )
    orders = day.orders.group_by("strategy").agg(n_orders=pl.len())
    fills = (
        day.fills.join(day.orders.select("client_order_id", "strategy"), on="client_order_id")
        .group_by("strategy")
        .agg(n_fills=pl.len(), fees_usd=pl.col("commission_usd").sum())
    )
    states = pl.concat(
        [
            day.bars.select("strategy", ts="bar_ts", state="risk_state", reason="risk_reason"),
            day.risk_events.select("strategy", "ts", "state", "reason"),
        ]
    )
    worst = day.risk_events.group_by("strategy").agg(
        n_risk_events=pl.len(), event_severity=pl.col("state").replace_strict(RISK_SEVERITY, default=0).max()
    )
    catastrophes = (
        states.filter((pl.col("state") == "HALTED") & _catastrophe(pl.col("reason")))
        .sort("ts")
        .group_by("strategy")
        .agg(catastrophe_reason=pl.col("reason").first())
    )
    severity_name = {v: k for k, v in RISK_SEVERITY.items()}
    report = (
        base.join(orders, on="strategy", how="left")
        .join(fills, on="strategy", how="left")
        .join(trips, on="strategy", how="left")
        .join(worst, on="strategy", how="left")
        .join(catastrophes, on="strategy", how="left")
        .with_columns(
            pl.col("n_orders", "n_fills", "n_round_trips", "n_wins", "n_risk_events").fill_null(0),
            pl.col("fees_usd", "round_trip_pnl_usd").fill_null(0.0),
            pnl_usd=pl.col("pnl_close_usd") - pl.col("pnl_open_usd"),
            worst_risk_state=pl.max_horizontal("bar_severity", pl.col("event_severity").fill_null(0)).replace_strict(
                severity_name, return_dtype=pl.String
            ),
            catastrophe=pl.col("catastrophe_reason").is_not_null(),
            trade_date=pl.lit(day.trade_date, pl.Date),
        )
        .with_columns(
            pl.col("catastrophe_reason").fill_null(""),
            daily_return=pl.col("pnl_usd") / pl.col("capital_usd"),
        )
        .sort("strategy")
    )
    return report.select(REPORT_SCHEMA.names)


def report_arrow(report: pl.DataFrame) -> pa.Table:
    return (
        report.with_columns(pl.col("first_bar_ts", "last_bar_ts").cast(pl.Datetime("us", "UTC")))
        .to_arrow()
        .cast(REPORT_SCHEMA)
    )


# report columns renamed in issue 28 (they always held PnL since the strategy started, never account equity)
RENAMED_REPORT_COLUMNS = {
    "equity_open_usd": "pnl_open_usd",
    "equity_close_usd": "pnl_close_usd",
    "equity_high_usd": "pnl_high_usd",
    "equity_low_usd": "pnl_low_usd",
}


def scan_report(lake: Lake) -> pl.LazyFrame:
    """paper_daily_report under the current column names, whether or not `migrate_report_table` has run on it
    (a reader such as paper_track_record may run before the next paper_daily_report does)."""
    scan = lake.scan(PAPER_REPORT_TABLE)
    names = scan.collect_schema().names()
    return scan.rename({old: new for old, new in RENAMED_REPORT_COLUMNS.items() if old in names})


def migrate_report_table(lake: Lake) -> bool:
    """Rewrite a paper_daily_report written before issue 28 under the new column names, in one Delta commit (a
    table overwrite with its schema). Needed before the next partition is written: a partition replaced under the
    new schema makes Delta read the older partitions' equity_*_usd files as null pnl_*_usd columns. The table is
    one row per strategy and day, so the rewrite is small; True when it ran."""
    if not lake.exists(PAPER_REPORT_TABLE):
        return False
    names = lake.scan(PAPER_REPORT_TABLE).collect_schema().names()
    if not any(old in names for old in RENAMED_REPORT_COLUMNS):
        return False
    rows = scan_report(lake).collect()
    missing = [pl.lit(None).alias(c) for c in REPORT_SCHEMA.names if c not in rows.columns]
    table = report_arrow(rows.with_columns(missing).select(REPORT_SCHEMA.names))
    deltalake.write_deltalake(
        lake.table_uri(PAPER_REPORT_TABLE),
        table,
        mode="overwrite",
        schema_mode="overwrite",
        partition_by=["trade_date"],
        storage_options=lake.options(),
    )
    return True


def period_drawdown_usd(days: pl.DataFrame) -> float:
    """Peak-to-trough of the per-bar PnL over consecutive report rows of one strategy (module doc)."""
    rows = days.sort("trade_date")
    if rows.is_empty():
        return 0.0
    peak, worst = float(rows["pnl_open_usd"][0]), 0.0
    for intraday, low, high in rows.select("max_drawdown_usd", "pnl_low_usd", "pnl_high_usd").iter_rows():
        worst = max(worst, intraday, peak - low)  # a handful of days: a loop over rows, not bars
        peak = max(peak, high)
    return worst


def track_record(report: pl.DataFrame, days: int) -> pl.DataFrame:
    """One TRACK_RECORD_SCHEMA row per strategy over its last `days` trade dates in the report."""
    rows = []
    for strategy in sorted(report["strategy"].unique().to_list()):
        window = report.filter(pl.col("strategy") == strategy).sort("trade_date").tail(days)
        capital = float(window["capital_usd"][-1])
        drawdown = period_drawdown_usd(window)
        trips, wins = int(window["n_round_trips"].sum()), int(window["n_wins"].sum())
        bad = window.filter(pl.col("catastrophe"))
        rows.append(
            {
                "strategy": strategy,
                "first_trade_date": window["trade_date"][0],
                "last_trade_date": window["trade_date"][-1],
                "n_days": window.height,
                "capital_usd": capital,
                "pnl_usd": float(window["pnl_usd"].sum()),
                "sortino": float(sortino_ratio(window["daily_return"].to_numpy().astype(np.float64))),
                "max_drawdown_usd": drawdown,
                "max_drawdown_pct": drawdown / capital * 100.0,
                "n_round_trips": trips,
                "n_wins": wins,
                "win_rate": wins / trips if trips else 0.0,
                "n_catastrophes": bad.height,
                "catastrophes": "; ".join(
                    f"{d}: {r}" for d, r in bad.select("trade_date", "catastrophe_reason").rows()
                ),
                "fees_usd": float(window["fees_usd"].sum()),
            }
        )
    return pl.DataFrame(rows, schema=pl.from_arrow(TRACK_RECORD_SCHEMA.empty_table()).schema)


@dataclass(frozen=True)
class GateThresholds:
    """Go-live criteria (issue 14): two weeks of paper trading that a live account could have survived."""

    days: int = field(
        default=10,
        metadata={"doc": "Trade dates judged (the strategy's latest in paper_daily_report), and the least needed"},
    )
    min_sortino: float = field(default=2.0, metadata={"doc": "Sortino of the daily returns (sqrt(252)) must be above"})
    max_drawdown_pct: float = field(
        default=5.0, metadata={"doc": "Max drawdown over the period, % of capital, must be below"}
    )
    min_win_rate: float = field(default=0.55, metadata={"doc": "Share of winning round trips must be above"})


@dataclass(frozen=True)
class Criterion:
    name: str
    value: float | str
    threshold: str
    passed: bool
    detail: str


def gate_criteria(record: dict | None, t: GateThresholds) -> list[Criterion]:
    """Every criterion of the go-live gate with its value, threshold and verdict; `record` is the strategy's
    track_record row (None: no paper history at all)."""
    r = record or {
        "n_days": 0,
        "sortino": 0.0,
        "max_drawdown_pct": 0.0,
        "win_rate": 0.0,
        "n_round_trips": 0,
        "n_catastrophes": 0,
        "catastrophes": "",
    }
    n = int(r["n_days"])
    return [
        Criterion(
            "trade_dates",
            n,
            f">= {t.days}",
            n >= t.days,
            f"{n} trade dates of paper trading" if n >= t.days else f"only {n} trade dates of paper trading",
        ),
        Criterion(
            "sortino", r["sortino"], f"> {t.min_sortino:g}", r["sortino"] > t.min_sortino, f"Sortino {r['sortino']:.3g}"
        ),
        Criterion(
            "max_drawdown_pct",
            r["max_drawdown_pct"],
            f"< {t.max_drawdown_pct:g}",
            r["max_drawdown_pct"] < t.max_drawdown_pct,
            f"max drawdown {r['max_drawdown_pct']:.3g}% of capital",
        ),
        Criterion(
            "win_rate",
            r["win_rate"],
            f"> {t.min_win_rate:g}",
            r["win_rate"] > t.min_win_rate,
            f"win rate {r['win_rate']:.3g} of {int(r['n_round_trips'])} round trips",
        ),
        Criterion(
            "no_catastrophe",
            int(r["n_catastrophes"]),
            "== 0",
            int(r["n_catastrophes"]) == 0,
            f"risk catastrophes: {r['catastrophes']}" if r["n_catastrophes"] else "no risk catastrophe",
        ),
    ]


def criteria_markdown(criteria: list[Criterion]) -> str:
    lines = ["| criterion | value | threshold | passed |", "|---|---|---|---|"]
    for c in criteria:
        value = f"{c.value:.4g}" if isinstance(c.value, float) and math.isfinite(c.value) else str(c.value)
        lines.append(f"| {c.name} | {value} | {c.threshold} | {'yes' if c.passed else '**NO**'} |")
    return "\n".join(lines)


def report_markdown(report: pl.DataFrame) -> str:
    """One field | value table per strategy (Dagster renders the Markdown metadata)."""
    parts = []
    for row in report.iter_rows(named=True):
        lines = [f"### {row['strategy']}", "", "| field | value |", "|---|---|"]
        for key, value in row.items():
            if key == "strategy":
                continue
            text = f"{value:.6g}" if isinstance(value, float) else ("n/a" if value is None else str(value))
            lines.append(f"| {key} | {text} |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)
