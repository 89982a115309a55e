"""`./phoenix paper`: paper-trade the latest `mamba_sac_model` on replayed trade dates of the raw Delta table,
through NautilusTrader's simulated L2 venue, and compare the run with the bar backtest of the same days.

    ./phoenix paper                       the model's test window, strategy "agent"
    ./phoenix paper --start 2024-03-13 --end 2024-03-15 --strategy agent_paper

Each trade date's `raw_mbp10` records go, in feed order, through `phoenix_rl.paper.PaperTrader` (the batch
path's kernel and feature code, the policy at each bar close, `phoenix_rl.risk`, the order journal, the venue).
The track record lands in the lake (`paper_bars`, `paper_orders`, `paper_fills`, `paper_risk_events`) where
`./phoenix monitor` shows it live and `paper_daily_report` / `go_live_gate` judge it. A re-run of a day
already traded by the strategy is refused (pick another --strategy): the journal never holds a day twice.
SIGUSR1 pulls the kill switch (halt and flatten); Ctrl-C stops after flattening.
"""

from __future__ import annotations

import argparse
import datetime as dt
import signal
import sys
import time
import uuid

import numpy as np
import polars as pl

from feature_specs import load_catalog
from phoenix_assets.defs.features.assets import latest_model
from phoenix_assets.defs.microstructure.assets import OfiBarsConfig, _stoikov_table
from phoenix_assets.defs.model.assets import _features, _load_model
from phoenix_assets.defs.resources import LakeResource
from phoenix_assets.lib import cme_calendar as cal
from phoenix_assets.lib.book_kernel import arrays_from_raw
from phoenix_assets.lib.features import warmup_start
from phoenix_assets.lib.lake import Lake
from phoenix_assets.lib.live_bars import LiveBars, LiveFeatures
from phoenix_assets.lib.microstructure import BARS_TABLE, KERNEL_INPUTS, symbols_of_day
from phoenix_assets.lib.order_journal import BARS_TABLE as PAPER_BARS
from phoenix_assets.lib.order_journal import OrderJournal
from phoenix_assets.lib.raw_ingest import RAW_TABLE
from phoenix_assets.lib.raw_reader import iter_raw_partition
from phoenix_rl.backtest import run_backtest
from phoenix_rl.config import EnvConfig
from phoenix_rl.nautilus_venue import PaperVenue
from phoenix_rl.paper import PaperTrader
from phoenix_rl.risk import RiskConfig, RiskEngine


def compare_with_bar_backtest(paper: pl.DataFrame, bar_equity: pl.DataFrame) -> dict[str, float]:
    """The L2 paper run against the bar backtest of the same bars: PnL of each, and how often their positions
    agree (same decisions: differences come from fills, costs and risk refusals)."""
    both = paper.select(pl.col("bar_ts").cast(pl.Datetime("ns", "UTC")).alias("ts"), "position").join(
        bar_equity.select("ts", pl.col("position").alias("bar_position")), on="ts", how="inner"
    )
    # the env's position column is held THROUGH bar i (decided at i-1); the paper's is decided AT bar i
    shifted = both.with_columns(pl.col("bar_position").shift(-1)).drop_nulls()
    return {
        "paper_pnl_usd": float(paper["equity_usd"][-1] - paper["equity_usd"][0]) if paper.height else 0.0,
        "bar_pnl_usd": float(bar_equity["pnl"].sum() - bar_equity["cost"].sum()),
        "bars_compared": shifted.height,
        "position_agreement": float((shifted["position"] == shifted["bar_position"]).mean() or 0.0),
    }


def _history(lake: Lake, day: dt.date, catalog) -> pl.DataFrame:
    first = warmup_start(day, catalog)
    return (
        lake.scan(BARS_TABLE)
        .filter(pl.col("trade_date").is_between(first, day - dt.timedelta(days=1)))
        .collect()
        .sort("ts")
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="./phoenix paper", description=__doc__.split("\n\n")[0])
    parser.add_argument("--start", type=dt.date.fromisoformat, help="first trade date (default: model's test window)")
    parser.add_argument("--end", type=dt.date.fromisoformat, help="last trade date (default: model's test window)")
    parser.add_argument("--strategy", default="agent", help="strategy name in the journal (default: agent)")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="replay days the strategy already has rows for (after a crash): the journal keeps one row per key",
    )
    parser.add_argument("--lake", default=None, help="lake root (default: $PHOENIX_LAKE_URI, else <repo>/lake)")
    args = parser.parse_args(argv)

    lake = LakeResource(uri=args.lake).lake()
    version, model, saved = _load_model(lake)
    tc = saved["train_config"]
    env_cfg = EnvConfig(**saved["env_config"])
    capital = float(tc.get("capital", 10_000.0))
    start = args.start or dt.date.fromisoformat(tc["test_start"])
    end = args.end or dt.date.fromisoformat(tc["test_end"])
    days = cal.trade_dates_between(start, end)
    if lake.exists(PAPER_BARS):
        done = lake.scan(PAPER_BARS).filter((pl.col("strategy") == args.strategy) & pl.col("trade_date").is_in(days))
        traded = sorted(done.select("trade_date").unique().collect()["trade_date"].to_list())
        if traded and not args.resume:
            sys.exit(
                f"./phoenix paper: strategy {args.strategy!r} already paper-traded {traded}: "
                "pick another --strategy, or --resume after a crash"
            )
    catalog, regimes = load_catalog(), latest_model(lake)
    journal, session = OrderJournal(lake), f"{args.strategy}-{uuid.uuid4().hex[:8]}"
    print(f"paper session {session}: model {version}, {len(days)} trade dates {start}..{end}, lake {lake.root}")
    trader: PaperTrader | None = None
    stop = {"now": False}
    signal.signal(signal.SIGINT, lambda *_: stop.update(now=True))
    signal.signal(signal.SIGUSR1, lambda *_: trader.kill_switch("SIGUSR1") if trader else None)
    equity = peak = 0.0
    for day in days:
        if stop["now"]:
            break
        ids = lake.scan(RAW_TABLE).filter(pl.col("trade_date") == day).select("instrument_id").unique().collect()
        if ids.is_empty():
            print(f"{day}: no raw_mbp10 records, skipped")
            continue
        symbols = symbols_of_day(lake, day)["symbol"].to_list()
        stoikov, _ = _stoikov_table(lake, day, OfiBarsConfig().stoikov_train_days)
        venue = PaperVenue(
            ids["instrument_id"].to_list(), capital_usd=capital, commission_per_side_usd=env_cfg.commission_per_side_usd
        )
        trader = PaperTrader(
            policy=lambda obs: model.predict(obs, deterministic=True)[0],
            env_config=env_cfg,
            bars=LiveBars(symbol=symbols[0] if symbols else None, stoikov_table=stoikov),
            features=LiveFeatures(_history(lake, day, catalog), catalog, regimes),
            venue=venue,
            risk=RiskEngine(RiskConfig(max_position=env_cfg.max_contracts)),
            journal=journal,
            strategy=args.strategy,
            session_id=session,
            capital_usd=capital,
            equity_start_usd=equity,
            peak_start_usd=peak,
        )
        began = time.perf_counter()
        for batch in iter_raw_partition(lake, day, KERNEL_INPUTS):
            trader.on_records(arrays_from_raw(pl.from_arrow(batch)))
            if stop["now"]:
                break
        trader.close()
        venue.close()
        equity, peak = trader.equity_usd, trader.peak_usd
        print(
            f"{day}: {len(trader.fills)} fills, equity ${equity:,.2f}, risk {trader.risk.state}"
            f"{' (' + trader.risk.reason + ')' if trader.risk.reason else ''}, {time.perf_counter() - began:.0f} s"
        )
    paper = lake.scan(PAPER_BARS).filter(pl.col("session_id") == session).collect().sort("bar_ts")
    if paper.is_empty():
        return 1
    rows = _features(lake, start.isoformat(), end.isoformat())
    bar = run_backtest(model, rows, env_cfg, capital=capital, name="agent")
    cmp = compare_with_bar_backtest(paper, bar.equity)
    lat = paper["latency_order_ms"].drop_nans()
    print(f"{'run':<24}{'PnL $':>12}{'fills/trades':>14}")
    print(f"{'L2 paper (Nautilus)':<24}{cmp['paper_pnl_usd']:>12,.2f}{paper['position'].diff().abs().gt(0).sum():>14}")
    print(f"{'bar backtest (env)':<24}{cmp['bar_pnl_usd']:>12,.2f}{bar.trades.height:>14}")
    print(
        f"position agreement {cmp['position_agreement']:.1%} over {cmp['bars_compared']} bars; "
        f"record->order latency p50 {np.nanpercentile(lat, 50) if len(lat) else float('nan'):.1f} ms "
        f"p99 {np.nanpercentile(lat, 99) if len(lat) else float('nan'):.1f} ms"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
