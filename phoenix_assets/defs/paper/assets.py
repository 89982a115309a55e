"""Paper-trading stage: the order journal's tables (written by `./phoenix paper`) -> `paper_daily_report` (one
row per strategy and trade date) -> `paper_track_record` (the last two weeks per strategy) with the blocking
`go_live_gate` check. Definitions of every number: phoenix_rl/live/report.py.
"""

import datetime as dt

import dagster as dg
import polars as pl
from pydantic import Field

from phoenix_assets.defs.checks import CheckTable, check_results, check_specs
from phoenix_assets.defs.config import config_from_dataclass
from phoenix_assets.defs.partitions import trade_date_partitions
from phoenix_assets.defs.resources import LakeResource
from phoenix_assets.lib.check_outcome import CheckOutcome
from phoenix_assets.lib.io.lake import MissingUpstreamError
from phoenix_assets.lib.schema import PAPER_BARS_TABLE, PAPER_REPORT_TABLE, PAPER_TRACK_RECORD_TABLE
from phoenix_rl.live import report as pr

REPORT_CHECKS: CheckTable = {
    "orders_filled": ("Every order journaled on the trade date has a fill (else: reconcile it with the venue)", False),
}
GATE_CHECKS: CheckTable = {
    "go_live_gate": (
        "The strategy's last N trade dates of paper trading: enough of them, Sortino, max drawdown % of capital, "
        "win rate and no risk catastrophe all within their thresholds (config of paper_track_record)",
        True,
    ),
}


@dg.asset(
    partitions_def=trade_date_partitions,
    group_name="paper",
    kinds={"deltalake", "polars"},
    check_specs=check_specs(PAPER_REPORT_TABLE, REPORT_CHECKS, trade_date_partitions),
    description=(
        "One row per paper-trading strategy and trade date from paper_bars, paper_orders, paper_fills and "
        "paper_risk_events: PnL and return on capital (the day's and, as pnl_open/close/high/low_usd, the PnL since "
        "the strategy started), bars, orders, fills, fees, round trips and wins, intraday "
        "max drawdown, decision/order latency p50/p99, risk events, worst risk state, catastrophe and its reason."
    ),
)
def paper_daily_report(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    trade_date = dt.date.fromisoformat(context.partition_key)
    the_lake = lake.lake()
    day = pr.read_paper_day(the_lake, trade_date, needed_by="paper_daily_report")
    report = pr.daily_report(day)
    table = pr.report_arrow(report)
    if pr.migrate_report_table(the_lake):  # a table of the equity_*_usd names (before issue 28): renamed first
        context.log.info(
            f"{PAPER_REPORT_TABLE}: columns equity_*_usd renamed pnl_*_usd (they held PnL since the start)"
        )
    version = the_lake.replace_partition(PAPER_REPORT_TABLE, table.schema, table.to_batches(), "trade_date", trade_date)
    unfilled = day.orders.join(day.fills, on="client_order_id", how="anti")["client_order_id"].to_list()
    context.log.info(f"{trade_date}: {report.height} strategies, {day.bars.height} {PAPER_BARS_TABLE} rows")
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": report.height,
            "strategies": report["strategy"].to_list(),
            "first_bar": str(report["first_bar_ts"].min()),
            "last_bar": str(report["last_bar_ts"].max()),
            "report": dg.MetadataValue.md(pr.report_markdown(report)),
            "catastrophes": [
                f"{s}: {r}" for s, r in report.filter("catastrophe").select("strategy", "catastrophe_reason").rows()
            ]
            or ["none"],
            "delta_version": version,
        },
        check_results=check_results(
            PAPER_REPORT_TABLE,
            REPORT_CHECKS,
            {
                "orders_filled": CheckOutcome(
                    not unfilled,
                    f"{len(unfilled)} of {day.orders.height} orders without a fill",
                    {"unfilled_orders": unfilled[:50] or ["none"]},
                )
            },
        ),
    )


_GateSettings = config_from_dataclass(
    "GateSettings", pr.GateThresholds, "phoenix_rl.live.report.GateThresholds: the go-live criteria"
)


class PaperGateConfig(_GateSettings):  # type: ignore[misc,valid-type]
    """The go-live thresholds (fields and defaults from `GateThresholds`, the one definition) and the strategy."""

    strategy: str = Field(default="agent", description="go_live_gate judges this strategy's paper track record")

    def thresholds(self) -> pr.GateThresholds:
        return pr.GateThresholds(**self.model_dump(exclude={"strategy"}))


def gate_outcome(record: pl.DataFrame, config: PaperGateConfig) -> CheckOutcome:
    """go_live_gate on the track record: passes only when every criterion passes; the description names the
    failed ones."""
    rows = record.filter(pl.col("strategy") == config.strategy).to_dicts()
    criteria = pr.gate_criteria(rows[0] if rows else None, config.thresholds())
    failed = [c for c in criteria if not c.passed]
    verdict = (
        f"{config.strategy}: go live (all {len(criteria)} criteria pass)"
        if not failed
        else f"{config.strategy}: NOT ready to go live, failed: "
        + "; ".join(f"{c.name} ({c.detail}, needs {c.threshold})" for c in failed)
    )
    metadata: dict = {"strategy": config.strategy, "failed": [c.name for c in failed] or ["none"]}
    for c in criteria:
        metadata |= {f"{c.name}_value": c.value, f"{c.name}_threshold": c.threshold, f"{c.name}_passed": c.passed}
    metadata["criteria"] = dg.MetadataValue.md(pr.criteria_markdown(criteria))
    return CheckOutcome(not failed, verdict, metadata)


@dg.asset(
    group_name="paper",
    kinds={"deltalake", "polars"},
    deps=[paper_daily_report],
    check_specs=check_specs(PAPER_TRACK_RECORD_TABLE, GATE_CHECKS, None),
    description=(
        "Per strategy over its last N trade dates of paper_daily_report: PnL, Sortino (daily returns, sqrt(252)), "
        "max drawdown in $ and % of capital, win rate of round trips, risk catastrophes (partition: strategy). "
        "The blocking go_live_gate check judges the configured strategy against the go-live thresholds."
    ),
)
def paper_track_record(
    context: dg.AssetExecutionContext, config: PaperGateConfig, lake: LakeResource
) -> dg.MaterializeResult:
    the_lake = lake.lake()
    if not the_lake.exists(PAPER_REPORT_TABLE):
        raise MissingUpstreamError(
            f"paper_track_record: no {PAPER_REPORT_TABLE} table in {the_lake.table_uri(PAPER_REPORT_TABLE)}: "
            "materialize paper_daily_report for the trade dates paper trading ran"
        )
    report = pr.scan_report(the_lake).collect()
    record = pr.track_record(report, config.days)
    versions = {}
    for strategy in record["strategy"].to_list():
        table = record.filter(pl.col("strategy") == strategy).to_arrow().cast(pr.TRACK_RECORD_SCHEMA)
        versions[strategy] = the_lake.replace_partition(
            PAPER_TRACK_RECORD_TABLE, table.schema, table.to_batches(), "strategy", strategy
        )
    outcome = gate_outcome(record, config)
    context.log.info(outcome.description)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": record.height,
            "trade_dates": f"{report['trade_date'].min()}..{report['trade_date'].max()}" if report.height else "none",
            "track_record": dg.MetadataValue.md(_record_markdown(record)),
            "delta_versions": dg.MetadataValue.json(versions),
        },
        check_results=check_results(PAPER_TRACK_RECORD_TABLE, GATE_CHECKS, {"go_live_gate": outcome}),
    )


def _record_markdown(record: pl.DataFrame) -> str:
    cols = [c for c in record.columns if c != "strategy"]
    lines = ["| strategy | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for row in record.iter_rows(named=True):
        cells = [f"{row[c]:.4g}" if isinstance(row[c], float) else str(row[c]) for c in cols]
        lines.append(f"| {row['strategy']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
