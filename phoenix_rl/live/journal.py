"""The paper/live trading journal: orders and fills in Delta tables, written before anything is sent.

Crash safety without duplicate orders (issue 14): every decision has a deterministic client order id (strategy,
bar), and the order row is merged into `paper_orders` keyed on that id BEFORE the order goes to the venue. A
Delta merge is one atomic commit, so after a crash either the row exists (the restarted loop finds the decision
already taken and sends nothing new; an order without a fill is reconciled with the venue by its client id) or
it does not (the decision was never sent). Fills are merged keyed on the venue's trade id, so a fill reported
twice (a reconnect replays executions) is stored once. Positions and realised PnL are derived from the fills.

Two more tables make the track record the monitoring page, the daily report and the go-live gate read:
`paper_bars` (one row per strategy and closed bar: the decision, the position, equity and drawdown marked at the
bar close, the risk state, the latencies) merged keyed on (strategy, bar_ts), and `paper_risk_events` (every
state change of `phoenix_rl.live.risk.RiskEngine` with its reason) merged keyed on (strategy, ts, state).
"""

from __future__ import annotations

import datetime as dt

import deltalake
import polars as pl
import pyarrow as pa

from phoenix_assets.lib.io.lake import Lake
from phoenix_assets.lib.schema import PAPER_BARS_TABLE, PAPER_FILLS_TABLE, PAPER_ORDERS_TABLE, PAPER_RISK_EVENTS_TABLE

ORDER_SCHEMA = pa.schema(
    [
        ("client_order_id", pa.string()),
        ("strategy", pa.string()),
        ("bar_ts", pa.timestamp("us", "UTC")),
        ("instrument_id", pa.int64()),
        ("quantity", pa.int64()),  # signed contracts: + buy, - sell
        ("reason", pa.string()),  # the policy's or the risk engine's (kill switch) reason
        ("created_ts", pa.timestamp("us", "UTC")),
    ]
)
FILL_SCHEMA = pa.schema(
    [
        ("trade_id", pa.string()),
        ("client_order_id", pa.string()),
        ("instrument_id", pa.int64()),
        ("quantity", pa.int64()),
        ("price", pa.float64()),
        ("commission_usd", pa.float64()),
        ("ts", pa.timestamp("us", "UTC")),
    ]
)


BAR_SCHEMA = pa.schema(
    [
        ("session_id", pa.string()),  # one `./phoenix paper` run (a restart continues with a new id)
        ("strategy", pa.string()),
        ("bar_ts", pa.timestamp("us", "UTC")),  # the bar's start (ofi_bars_1m ts); the decision is at its close
        ("trade_date", pa.date32()),
        ("instrument_id", pa.int64()),
        ("close", pa.float64()),  # the bar's close (index points): equity is marked here
        ("action", pa.float64()),  # the policy's raw action in [-1, 1] (NaN when no decision was taken)
        ("target", pa.int64()),  # contracts the policy asked for (after forced-flat rules)
        ("position", pa.int64()),  # contracts held after this bar's order
        ("capital_usd", pa.float64()),  # the account's starting capital (returns and drawdown % divide by it)
        ("equity_usd", pa.float64()),  # PnL since the strategy started: realised + unrealised - fees, at close
        ("drawdown_usd", pa.float64()),  # peak equity so far - equity (>= 0)
        ("risk_state", pa.string()),  # ACTIVE / REDUCING / HALTED after this bar
        ("risk_reason", pa.string()),  # why the state is not ACTIVE ("" when ACTIVE)
        ("order_reason", pa.string()),  # why the order was refused or changed ("" when sent as asked)
        ("latency_decision_ms", pa.float64()),  # bar-closing record received -> policy decision
        ("latency_order_ms", pa.float64()),  # bar-closing record received -> order handed to the venue (NaN: none)
    ]
)
RISK_EVENT_SCHEMA = pa.schema(
    [
        ("session_id", pa.string()),
        ("strategy", pa.string()),
        ("ts", pa.timestamp("us", "UTC")),
        ("trade_date", pa.date32()),
        ("state", pa.string()),  # the new TradingState
        ("reason", pa.string()),
    ]
)
# HALTED reasons that count as a risk catastrophe for the go-live gate (prefixes of RiskEngine reasons)
CATASTROPHE_REASONS = ("daily loss", "drawdown", "kill switch")


def client_order_id(strategy: str, bar_ts: dt.datetime, purpose: str = "decision") -> str:
    """One id per strategy, bar and purpose: the same decision after a restart gets the same id."""
    return f"{strategy}:{bar_ts.astimezone(dt.UTC):%Y%m%dT%H%M%S}:{purpose}"


class OrderJournal:
    """Merge-only journal of one lake (module doc)."""

    def __init__(self, lake: Lake) -> None:
        self.lake = lake

    def record_order(self, order: dict) -> bool:
        """Journal an order before sending it; False when its client id is already there (do not send)."""
        return self._insert_new(PAPER_ORDERS_TABLE, ORDER_SCHEMA, order, "client_order_id")

    def record_fill(self, fill: dict) -> bool:
        """Journal a venue fill; False when that trade id was stored already (a replayed execution)."""
        return self._insert_new(PAPER_FILLS_TABLE, FILL_SCHEMA, fill, "trade_id")

    def record_bars(self, rows: list[dict]) -> int:
        """Merge closed bars (BAR_SCHEMA dicts) keyed on (strategy, bar_ts); how many were new."""
        return self._merge_new(PAPER_BARS_TABLE, BAR_SCHEMA, rows, ("strategy", "bar_ts"))

    def record_risk_events(self, rows: list[dict]) -> int:
        """Merge risk state changes (RISK_EVENT_SCHEMA dicts) keyed on (strategy, ts, state)."""
        return self._merge_new(PAPER_RISK_EVENTS_TABLE, RISK_EVENT_SCHEMA, rows, ("strategy", "ts", "state"))

    def compact(self) -> dict[str, int]:
        """Rewrite each journal table's small files (one per commit) into one: a merge reads every file of its
        target, so an uncompacted journal's record -> order latency grows with the orders already sent
        (measured: 18 ms at 10 files, 153 ms at 400, 27 ms after compaction). Files removed per table."""
        removed = {}
        for table in (PAPER_ORDERS_TABLE, PAPER_FILLS_TABLE, PAPER_BARS_TABLE, PAPER_RISK_EVENTS_TABLE):
            if self.lake.exists(table):
                removed[table] = int(self.lake.table(table).optimize.compact()["numFilesRemoved"])
        return removed

    def unfilled_orders(self) -> pl.DataFrame:
        """Orders with no fill yet: after a restart, reconcile these with the venue by client id."""
        if not self.lake.exists(PAPER_ORDERS_TABLE):
            return pl.DataFrame(schema=pl.from_arrow(ORDER_SCHEMA.empty_table()).schema)
        orders = self.lake.scan(PAPER_ORDERS_TABLE)
        if not self.lake.exists(PAPER_FILLS_TABLE):
            return orders.collect()
        filled = self.lake.scan(PAPER_FILLS_TABLE).select("client_order_id")
        return orders.join(filled, on="client_order_id", how="anti").collect()

    def positions(self) -> pl.DataFrame:
        """instrument_id, position (contracts), cash flow ($ of fills at `point_value` 1: multiply by the
        contract's point value) and commissions, from the fills alone."""
        if not self.lake.exists(PAPER_FILLS_TABLE):
            return pl.DataFrame(schema={"instrument_id": pl.Int64, "position": pl.Int64, "cash_points": pl.Float64})
        return (
            self.lake.scan(PAPER_FILLS_TABLE)
            .group_by("instrument_id")
            .agg(
                position=pl.col("quantity").sum(),
                cash_points=-(pl.col("quantity") * pl.col("price")).sum(),
                commission_usd=pl.col("commission_usd").sum(),
            )
            .sort("instrument_id")
            .collect()
        )

    def _insert_new(self, table: str, schema: pa.Schema, row: dict, key: str) -> bool:
        return self._merge_new(table, schema, [row], (key,)) == 1

    def _merge_new(self, table: str, schema: pa.Schema, rows: list[dict], keys: tuple[str, ...]) -> int:
        """One atomic commit inserting the rows whose key is not stored yet; how many were inserted."""
        if not rows:
            return 0
        data = pa.Table.from_pylist(rows, schema=schema)
        uri = self.lake.table_uri(table)
        if not self.lake.exists(table):
            try:
                deltalake.write_deltalake(uri, data, mode="error", storage_options=self.lake.options())
                return data.num_rows
            except deltalake.exceptions.DeltaError:  # another writer created it first: merge instead
                if not self.lake.exists(table):
                    raise
        metrics = (
            self.lake.table(table)
            .merge(data, predicate=" AND ".join(f"t.{k} = s.{k}" for k in keys), source_alias="s", target_alias="t")
            .when_not_matched_insert_all()
            .execute()
        )
        return int(metrics["num_target_rows_inserted"])
