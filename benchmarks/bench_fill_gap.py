"""Paper - backtest fill gap per side (issue 24 item 8): the same decisions filled by the paper venue (Nautilus, L2,
record by record) and by the bar backtest (`MnqTradingEnv`), on the demo's test days of a lake `./phoenix demo`
built (raw_mbp10, ofi_bars_1m, features_1m, the HMM).

The decisions come from a fixed rule (the OFI threshold baseline on `ofi_1min_zscore`, k = 1: it trades often, and
what decides does not change how fills are priced), so both paths send the same orders at the same bar closes.
For every order both paths filled, the price paid per side is measured against the next minute's opening mid
(ofi_bars_1m `mid_open` of bar i+1, as the issue measured it), in ticks: + = paid more than the mid. `charged`
adds the slippage ticks each path charges on top of the price (the fill model's `slippage_ticks_per_side`; paper
before issue 24 charged none). gap = paper - backtest per side (target |gap| <= 0.1 tick).

Rows: the fill model (backtest: the decision book's touch; paper: Nautilus with `fill_latency_ms`) at each latency
asked for, and the conventions before issue 24 (backtest: the next open; paper: the touch, no slippage charged).

    PHOENIX_LAKE_URI=/path/to/demo/lake python benchmarks/bench_fill_gap.py [--latency-ms 0 50] [--days ...]
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import polars as pl  # noqa: E402
from table import print_table  # noqa: E402

TEST_DAYS = [dt.date(2024, 3, d) for d in (11, 12, 13, 14, 15)]  # the demo's test window


def paper_orders(lake, day: dt.date, cfg, policy, fill_latency_ms: float, work: Path) -> pl.DataFrame:
    """Replay raw_mbp10's day through `PaperTrader` (the venue with the fill model at that latency): per order
    bar_ts, quantity, average fill price."""
    from feature_specs import load_catalog
    from phoenix_assets.lib.features.compute import warmup_start
    from phoenix_assets.lib.io.artifacts import latest_regime_model
    from phoenix_assets.lib.io.lake import Lake
    from phoenix_assets.lib.io.raw_reader import iter_raw_partition
    from phoenix_assets.lib.market.book_kernel import arrays_from_raw
    from phoenix_assets.lib.market.live_bars import LiveBars, LiveFeatures
    from phoenix_assets.lib.market.microstructure import KERNEL_INPUTS, STOIKOV_TRAIN_DAYS, stoikov_table_for
    from phoenix_assets.lib.schema import BARS_TABLE
    from phoenix_rl.env.fills import FillConfig
    from phoenix_rl.live.journal import OrderJournal
    from phoenix_rl.live.nautilus.venue import PaperVenue
    from phoenix_rl.live.risk import RiskConfig, RiskEngine
    from phoenix_rl.live.trader import PaperTrader

    catalog = load_catalog()
    history = (
        lake.scan(BARS_TABLE)
        .filter(pl.col("trade_date").is_between(warmup_start(day, catalog), day - dt.timedelta(days=1)))
        .collect()
        .sort("ts")
    )
    cfg = cfg.replace(fill_latency_ms=fill_latency_ms)
    journal_lake = Lake(str(work / f"journal-{day}-{fill_latency_ms}"))
    venue = PaperVenue(capital_usd=10_000.0, fill=FillConfig.from_env(cfg))
    trader = PaperTrader(
        policy=policy,
        env_config=cfg,
        bars=LiveBars(symbol="MNQ.v.0", stoikov_table=stoikov_table_for(lake, day, STOIKOV_TRAIN_DAYS)[0]),
        features=LiveFeatures(history, catalog, latest_regime_model(lake)),
        venue=venue,
        risk=RiskEngine(RiskConfig(max_position=1, latency_budget_ms=1e9)),  # wall clock is not measured here
        journal=OrderJournal(journal_lake),
        strategy="fill_gap",
        session_id="bench",
        capital_usd=10_000.0,
        flush_every_bars=10_000,
    )
    for batch in iter_raw_partition(lake, day, KERNEL_INPUTS):
        trader.on_records(arrays_from_raw(pl.from_arrow(batch)))
    trader.close()
    venue.close()
    orders = journal_lake.scan("paper_orders").collect()
    fills = journal_lake.scan("paper_fills").collect()
    return (
        fills.join(orders.select("client_order_id", "bar_ts"), on="client_order_id")
        .group_by("bar_ts")
        .agg(
            pl.col("quantity").sum().alias("paper_qty"),
            ((pl.col("price") * pl.col("quantity").abs()).sum() / pl.col("quantity").abs().sum()).alias("paper_px"),
        )
        .with_columns(pl.col("bar_ts").cast(pl.Datetime("us", "UTC")))
    )


def backtest_fills(rows: pl.DataFrame, history: pl.DataFrame, cfg, policy) -> pl.DataFrame:
    """The bar backtest's fills: per decision bar_ts, quantity and price."""
    from phoenix_rl.evaluation.backtest import run_backtest

    eq = run_backtest(policy, rows, cfg, history=history).equity
    prev_ts = pl.col("ts").shift(1)
    return (
        eq.with_columns(bar_ts=prev_ts)
        .filter(pl.col("traded") != 0)
        .select(
            pl.col("bar_ts").cast(pl.Datetime("us", "UTC")),
            pl.col("traded").alias("bt_qty"),
            pl.col("fill_price").alias("bt_px"),
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lake", default=None, help="the demo's lake (default: $PHOENIX_LAKE_URI, else <repo>/lake)")
    parser.add_argument("--days", nargs="+", type=dt.date.fromisoformat, default=TEST_DAYS)
    parser.add_argument("--latency-ms", nargs="+", type=float, default=[0.0])
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "fill_gap_cpu.txt"))
    args = parser.parse_args()

    from phoenix_assets.defs.model.assets import evaluation_rows
    from phoenix_assets.defs.resources import LakeResource
    from phoenix_assets.lib.schema import BARS_TABLE
    from phoenix_rl.config import EnvConfig
    from phoenix_rl.evaluation.baselines import OfiThresholdPolicy

    lake = LakeResource(uri=args.lake).lake()
    cfg = EnvConfig(
        feature_columns=("ofi_1min_zscore",), lookback=1, max_contracts=1, trade_only_warm=True, episode_mode="whole"
    )
    policy = OfiThresholdPolicy(0, 1.0)
    tick = cfg.tick_size
    start, end = min(args.days).isoformat(), max(args.days).isoformat()
    columns = ["ts", "trade_date", "instrument_id", "open", "close", "ofi_1min_zscore", "warm"]
    rows, history = evaluation_rows(lake, start, end, columns, cfg.lookback)
    rows = rows.filter(pl.col("trade_date").is_in(args.days))
    mids = (
        lake.scan(BARS_TABLE)
        .filter(pl.col("trade_date").is_in(args.days))
        .select(
            (pl.col("ts").cast(pl.Datetime("us", "UTC")) - pl.duration(minutes=1)).alias("bar_ts"),
            pl.col("mid_open").alias("next_mid_open"),
        )
        .collect()
    )
    # the backtest per day (each day's own run, warmed by the bars before it), with and without the book
    bt_new, bt_old = [], []
    for day in args.days:
        day_rows = rows.filter(pl.col("trade_date") == day)
        before = pl.concat([history, rows.filter(pl.col("trade_date") < day).select(history.columns)]).tail(1)
        bt_new.append(backtest_fills(day_rows, before, cfg, policy))
        bt_old.append(backtest_fills(day_rows.drop("mid_close", "spread_ticks_close"), before, cfg, policy))
    backtests = {"touch": pl.concat(bt_new), "open": pl.concat(bt_old)}

    def side_stats(frame: pl.DataFrame, px: str, qty: str) -> tuple[float, int]:
        signed = (frame[px] - frame["next_mid_open"]) * frame[qty].sign() / tick
        return float(signed.mean()), frame.height

    table: list[list[str]] = []
    lines: list[str] = []
    slip = cfg.slippage_ticks_per_side
    with tempfile.TemporaryDirectory() as tmp:
        for latency in args.latency_ms:
            t0 = time.perf_counter()
            paper = pl.concat([paper_orders(lake, d, cfg, policy, latency, Path(tmp)) for d in args.days])
            took = time.perf_counter() - t0
            for label, bt_key, paper_slip in (
                (f"fill model, latency {latency:g} ms", "touch", slip),
                (f"before issue 24 (bt: next open; paper: touch, latency {latency:g} ms, no slippage)", "open", 0.0),
            ):
                both = (
                    paper.join(backtests[bt_key], on="bar_ts", how="inner")
                    .filter(pl.col("paper_qty") == pl.col("bt_qty"))
                    .join(mids, on="bar_ts", how="inner")
                    .drop_nulls("next_mid_open")
                )
                bt_px, n = side_stats(both, "bt_px", "bt_qty")
                paper_px, _ = side_stats(both, "paper_px", "paper_qty")
                gap_px = paper_px - bt_px
                gap = (paper_px + paper_slip) - (bt_px + slip)
                table.append(
                    [
                        label,
                        f"{n:,}",
                        f"{bt_px:+.3f} / {bt_px + slip:+.3f}",
                        f"{paper_px:+.3f} / {paper_px + paper_slip:+.3f}",
                        f"{gap_px:+.3f}",
                        f"{gap:+.3f}",
                    ]
                )
            lines.append(f"paper replay at latency {latency:g} ms: {paper.height:,} orders in {took:.0f} s")
    header = [
        "convention",
        "orders matched",
        "backtest price / charged (ticks vs next mid_open)",
        "paper price / charged",
        "price gap paper-bt",
        "charged gap paper-bt",
    ]
    print_table(header, table)
    for line in lines:
        print(line)
    text = [
        f"bench_fill_gap: {date_line()} lake {lake.root}, days {', '.join(map(str, args.days))}, "
        f"rule ofi_1min_zscore k=1, slippage {slip:g} tick/side",
        " | ".join(header),
        *(" | ".join(r) for r in table),
        *lines,
    ]
    Path(args.out).write_text("\n".join(text) + "\n")
    print(f"written {args.out}")


def date_line() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC,")


if __name__ == "__main__":
    main()
