"""`./phoenix live`: trade the latest `mamba_sac_model` through NautilusTrader's `TradingNode`, on the Sandbox
venue (the default, no credentials) or Interactive Brokers (`--venue ib`, a running Gateway/TWS, settings from
the environment: `phoenix_rl/live/node/config.py`, docs/live-trading.md).

    ./phoenix live --dbn landing/glbx-mdp3-mnq-20240314.mbp-10.dbn.zst     replay a DBN day on the Sandbox node
    ./phoenix live --start 2024-03-13 --end 2024-03-15 --strategy node_a    raw_mbp10 days on the Sandbox node
    ./phoenix live --live --venue ib                                        databento.Live -> IB paper account

The decision path is `./phoenix paper`'s (the same sources, `LiveBars` / `LiveFeatures`, policy, risk engine and
journal, the same strategy lock and refusals of a day already traded); the venue is the node
(`phoenix_rl.live.node.runner`). SIGUSR1 pulls the kill switch (cancel_all_orders + close_all_positions +
HALTED); Ctrl-C stops the stream, flattens and flushes. Secrets never reach a log line: the settings line
prints `***` for them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from feature_specs import load_catalog
from phoenix_assets.cli.paper import (
    CHUNK_RECORDS,
    _history,
    _refuse_open_positions,
    _refuse_traded_day,
    _stoikov,
    _symbol,
    _trade_date_of,
    dbn_records,
    live_records,
    raw_records,
    risk_config,
)
from phoenix_assets.defs.resources import DatabentoResource, LakeResource
from phoenix_assets.lib import calendar as cal
from phoenix_assets.lib.instrument import MNQ
from phoenix_assets.lib.io.artifacts import latest_regime_model, load_latest_model
from phoenix_assets.lib.io.dbn_reader import DbnFileError
from phoenix_assets.lib.io.replay_files import ReplayPlanError, validate_replay_files
from phoenix_assets.lib.market.live_bars import LiveBars, LiveFeatures
from phoenix_rl.config import EnvConfig
from phoenix_rl.env.fills import FillConfig
from phoenix_rl.live.journal import OrderJournal, StrategyLocked, strategy_lock
from phoenix_rl.live.node.config import LiveSettings, SettingsError
from phoenix_rl.live.node.runner import LiveSession, NodeVenue, build_node
from phoenix_rl.live.node.strategy import NodeRiskEngine
from phoenix_rl.live.node.wal import WalJournal
from phoenix_rl.live.risk import RiskConfig
from phoenix_rl.live.trader import PaperTrader


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="./phoenix live", description=__doc__.split("\n\n")[0])
    parser.add_argument("--venue", choices=["sandbox", "ib"], help="exec client (default $PHOENIX_LIVE_VENUE, sandbox)")
    parser.add_argument("--start", type=dt.date.fromisoformat, help="first trade date (default: model's test window)")
    parser.add_argument("--end", type=dt.date.fromisoformat, help="last trade date")
    parser.add_argument("--dbn", type=Path, nargs="+", help="replay these DBN MBP-10 files instead of raw_mbp10")
    parser.add_argument("--live", action="store_true", help="trade databento.Live (key from $DATABENTO_API_KEY)")
    parser.add_argument("--strategy", default="node", help="strategy name in the journal (default: node)")
    parser.add_argument("--resume", action="store_true", help="replay days the strategy already traded (a crash)")
    parser.add_argument("--lake", default=None, help="lake root (default: $PHOENIX_LAKE_URI, else <repo>/lake)")
    parser.add_argument("--log-level", default="WARNING", help="NautilusTrader's log level (default WARNING)")
    args = parser.parse_args(argv)
    try:
        settings = LiveSettings.from_env(venue=args.venue)
    except SettingsError as exc:
        sys.exit(f"./phoenix live: {exc}")
    if settings.venue == "ib" and not args.live:
        sys.exit("./phoenix live: --venue ib trades a real (paper) account: it takes --live data only, not a replay")
    print(f"./phoenix live: {settings!r}")  # secrets show as ***
    lake = LakeResource(uri=args.lake).lake()
    try:
        with strategy_lock(lake, args.strategy):
            # the write-ahead journal: a dead session's logged rows reach Delta here, before anything reads
            journal = WalJournal(lake, args.strategy)
            try:
                return _trade(args, settings, lake, journal)
            finally:
                journal.close()
    except StrategyLocked as exc:
        sys.exit(f"./phoenix live: {exc}")


def _source(args: argparse.Namespace, lake: Any, tc: dict) -> Any:
    if args.live:
        return live_records(DatabentoResource().live_client())
    if args.dbn:
        try:
            plan = validate_replay_files(args.dbn, MNQ, args.start, args.end, CHUNK_RECORDS)
        except (DbnFileError, ReplayPlanError) as exc:
            sys.exit(f"./phoenix live: refusing the replay: {exc}")
        print(f"./phoenix live: {plan.summary()}")
        return dbn_records(plan)
    start = args.start or dt.date.fromisoformat(tc["test_start"])
    end = args.end or dt.date.fromisoformat(tc["test_end"])
    return raw_records(lake, cal.trade_dates_between(start, end))


def _node_venue(settings: LiveSettings, strategy: str, capital: float, env_cfg: EnvConfig, log_level: str) -> NodeVenue:
    fill = FillConfig.from_env(env_cfg)
    exec_clients: dict[str, Any] = {}
    if settings.venue == "ib":
        from phoenix_rl.live.node import ib

        assert settings.ib is not None
        clients, factories = ib.exec_client(settings.ib)
        exec_clients = {"exec_clients": clients, "exec_factories": factories}
    node, phoenix = build_node(
        settings, strategy=strategy, capital_usd=capital, fill=fill, log_level=log_level, **exec_clients
    )
    if settings.venue == "ib":
        # IB's own market moves its orders: the node gets no books; the one contract is the provider's
        return NodeVenue(node, phoenix, instrument_of=lambda _iid: _ib_instrument(node), feed_books=False, venue="CME")
    return NodeVenue(node, phoenix, latency_ns=fill.latency_ns)


def _ib_instrument(node: Any) -> Any:
    from phoenix_rl.live.node import ib

    instruments = [i for i in node.cache.instruments() if i.id.symbol.value.startswith(MNQ.root)]
    if len(instruments) != 1:
        raise RuntimeError(f"IB's instrument provider loaded {len(instruments)} MNQ contracts: expected the one set")
    ib.check_instrument(instruments[0])
    return instruments[0]


def _trade(args: argparse.Namespace, settings: LiveSettings, lake: Any, journal: OrderJournal) -> int:
    version, model, saved = load_latest_model(lake)
    model.predict(model.observation_space.sample(), deterministic=True)  # compile before the first bar
    tc = saved["train_config"]
    env_cfg = EnvConfig(**saved["env_config"])
    capital = float(tc.get("capital", 10_000.0))
    source = _source(args, lake, tc)
    catalog, regimes = load_catalog(), latest_regime_model(lake)
    session_id = f"{args.strategy}-{uuid.uuid4().hex[:8]}"
    print(f"live session {session_id}: model {version}, strategy {args.strategy}, venue {settings.venue}")
    _refuse_open_positions(journal, args.strategy, resume=args.resume)
    risk = NodeRiskEngine(risk_config(env_cfg, RiskConfig().latency_budget_ms))
    latest = journal.risk_state(args.strategy)
    if latest is not None and latest[0] != "ACTIVE":
        risk.restore(*latest)
        print(f"strategy {args.strategy!r} is {latest[0]} ({latest[1]}) as journaled: exits only")
    stop = {"now": False}
    current: dict[str, Any] = {}
    signal.signal(signal.SIGINT, lambda *_: stop.update(now=True))
    signal.signal(signal.SIGUSR1, lambda *_: current and current["session"].kill_switch("SIGUSR1"))
    pnl = peak = 0.0
    traded: list[dt.date] = []

    def start_day(day: dt.date, first_ids: list[int]) -> None:
        _refuse_traded_day(journal, args.strategy, day, args.resume)
        venue = _node_venue(settings, args.strategy, capital, env_cfg, args.log_level)
        venue.start(first_ids if settings.venue == "sandbox" else [])
        trader = PaperTrader(
            policy=lambda obs: model.predict(obs, deterministic=True)[0],
            env_config=env_cfg,
            bars=LiveBars(symbol=_symbol(lake, day), stoikov_table=_stoikov(lake, day)),
            features=LiveFeatures(_history(lake, day, catalog), catalog, regimes),
            venue=venue,  # type: ignore[arg-type]
            risk=risk,
            journal=journal,
            strategy=args.strategy,
            session_id=session_id,
            capital_usd=capital,
            pnl_start_usd=pnl,
            peak_start_usd=peak,
        )
        current.update(session=LiveSession(trader, venue, settings, journal), began=time.perf_counter())
        if settings.venue == "ib":  # IB's connectivity lost / restored -> the session's disconnect / reconnect
            from phoenix_rl.live.node import ib

            current["link"] = ib.IBConnection(venue.node, venue.strategy)
        traded.append(day)

    def finish_day() -> None:
        nonlocal pnl, peak
        session: LiveSession = current.pop("session")
        current.pop("link", None)
        try:
            session.close()
        finally:
            session.venue.close()
        trader = session.trader
        pnl, peak = trader.pnl_usd, trader.peak_usd
        state = f"{trader.risk.state}" + (f" ({trader.risk.reason})" if trader.risk.reason else "")
        took = time.perf_counter() - current.pop("began")
        faults = ", ".join(f"{f.kind}: {r}" for _, f, r in session.faults) or "none"
        print(
            f"{traded[-1]}: {len(trader.fills)} fills, PnL since start ${pnl:+,.2f}, risk {state}, "
            f"faults {faults}, {took:.0f} s"
        )

    try:
        for arrays in source:
            day = _trade_date_of(int(arrays.ts_recv[0]))
            if not traded or day != traded[-1]:
                if current:
                    finish_day()
                start_day(day, np.unique(arrays.instrument_id).tolist())
            current["session"].on_records(arrays)
            if "link" in current:
                current["link"].poll(current["session"])
            if stop["now"]:
                break
        if current:
            finish_day()
    except Exception as exc:
        if current:
            session = current.pop("session")
            session.trader.fail_safe(exc)
            session.venue.close()
        raise
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
