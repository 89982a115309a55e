"""`./phoenix paper`: paper-trade the latest `mamba_sac_model` through NautilusTrader's simulated L2 venue, on
replayed trade dates (the default) or on `databento.Live`, and compare a replay with the bar backtest.

    ./phoenix paper                            the model's test window from raw_mbp10, strategy "agent"
    ./phoenix paper --start 2024-03-13 --end 2024-03-15 --strategy agent_b
    ./phoenix paper --dbn landing/glbx-mdp3-mnq-20240314.mbp-10.dbn.zst   replay DBN files
    ./phoenix paper --live                     today's session from databento.Live ($DATABENTO_API_KEY)

Every source goes, record by record in feed order, through `phoenix_rl.live.trader.PaperTrader` (the batch path's
kernel and feature code, the policy at each bar close, `phoenix_rl.live.risk`, the order journal, the venue), one
trader per trade date (the PnL since the start carries over). The track record lands in the lake (`paper_bars`,
`paper_orders`, `paper_fills`, `paper_risk_events`) where `./phoenix monitor` shows it and `paper_daily_report` / the
`go_live_gate` check judge it. A day the strategy already traded (a bar, an order, a fill or a risk event
journaled) is refused unless `--resume`: after a crash the day is replayed with the journal's decisions up
to the crash, then traded on (`phoenix_rl.live.trader`). One session per strategy and lake at a time.

SIGUSR1 pulls the kill switch (halt and flatten); the halt is the strategy's, journaled: it holds across trade
dates and restarts until a person lifts it (`--lift-halt NAME`). Ctrl-C stops the stream, flattens and
flushes. A failure mid-stream (a damaged file, a broken feed, the journal) halts and flattens before the error
is shown; every day ends with its position checked against the journal's fills.
"""

from __future__ import annotations

import argparse
import datetime as dt
import signal
import sys
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import databento_dbn
import numpy as np
import polars as pl

from feature_specs import FeatureCatalog, load_catalog
from phoenix_assets.defs.resources import DatabentoResource, LakeResource
from phoenix_assets.lib import calendar as cal
from phoenix_assets.lib.features.compute import warmup_start
from phoenix_assets.lib.instrument import MNQ
from phoenix_assets.lib.io.artifacts import features_between, latest_regime_model, load_latest_model
from phoenix_assets.lib.io.dbn_reader import DbnFileError
from phoenix_assets.lib.io.lake import Lake
from phoenix_assets.lib.io.raw_reader import iter_raw_partition
from phoenix_assets.lib.io.replay_files import (
    ReplayPlan,
    ReplayPlanError,
    iter_replay_arrays,
    validate_replay_files,
)
from phoenix_assets.lib.market.book_kernel import BookArrays, arrays_from_dbn, arrays_from_raw, arrays_from_records
from phoenix_assets.lib.market.live_bars import NS_PER_MINUTE, LiveBars, LiveFeatures
from phoenix_assets.lib.market.microstructure import (
    KERNEL_INPUTS,
    STOIKOV_TRAIN_DAYS,
    stoikov_table_for,
    symbols_of_day,
)
from phoenix_assets.lib.schema import BARS_TABLE, FEATURES_TABLE, PAPER_BARS_TABLE, RAW_TABLE
from phoenix_rl.config import EnvConfig
from phoenix_rl.env.fills import FillConfig
from phoenix_rl.evaluation.backtest import run_backtest
from phoenix_rl.live.journal import OrderJournal, StrategyLocked, scan_journal, strategy_lock
from phoenix_rl.live.nautilus.venue import PaperVenue
from phoenix_rl.live.risk import RiskConfig, RiskEngine
from phoenix_rl.live.trader import PaperTrader

CHUNK_RECORDS = 65_536


# --- sources: chunks of records in feed order, none spanning two trade dates --------------------------


def raw_records(lake: Lake, days: list[dt.date]) -> Iterator[BookArrays]:
    """Trade dates of the raw_mbp10 table (what the batch assets read)."""
    for day in days:
        for batch in iter_raw_partition(lake, day, KERNEL_INPUTS):
            yield arrays_from_raw(pl.from_arrow(batch))


def dbn_records(plan: ReplayPlan) -> Iterator[BookArrays]:
    """The trade dates of a validated replay plan (`validate_replay_files`: the whole files were read before
    the first order, so damage, another instrument or a range they do not cover are refused up front), in
    chunks that never span two trade dates."""
    for _, chunk in iter_replay_arrays(plan, CHUNK_RECORDS):
        yield arrays_from_dbn(chunk)


def live_records(client: Iterable[Any], max_records: int = 256) -> Iterator[BookArrays]:
    """`databento.Live` records as they arrive, in small batches: a batch ends at max_records or before the
    first record of a new minute, so a bar closes the moment its next minute begins."""
    batch: list[Any] = []
    for record in client:
        if not isinstance(record, databento_dbn.MBP10Msg):
            continue  # symbol mappings, system and error messages
        if batch and (
            len(batch) >= max_records or record.ts_recv // NS_PER_MINUTE != batch[-1].ts_recv // NS_PER_MINUTE
        ):
            yield from _by_trade_date(arrays_from_records(batch))
            batch = []
        batch.append(record)
    if batch:
        yield from _by_trade_date(arrays_from_records(batch))


def _by_trade_date(arrays: BookArrays) -> Iterator[BookArrays]:
    ts = arrays.ts_recv.astype(np.int64)
    while len(ts):
        _, hi = cal.trade_date_window(_trade_date_of(int(ts[0])))
        cut = int(np.searchsorted(ts, hi))
        yield arrays.slice(0, cut)
        arrays, ts = arrays.slice(cut, len(ts)), ts[cut:]


def _trade_date_of(ts_ns: int) -> dt.date:
    day = cal.trade_date_of(ts_ns)
    if day is None:
        raise ValueError(f"./phoenix paper: a record at {ts_ns} ns lies in no CME trade date (a weekend)")
    return day


# --- is the replay the stored day? -----------------------------------------------------------------

_MIX = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xC2B2AE3D27D4EB4F), np.uint64(0x165667B19E3779F9))


@dataclass
class DayFingerprint:
    """What identifies a trade date's records: their count, first and last ts_recv, and an order-free digest of
    (ts_recv, price, size) (a wrapping uint64 sum of mixed fields: equal records, equal digest; one record
    different, a different digest but for a 2^-64 chance)."""

    records: int = 0
    first_ns: int | None = None
    last_ns: int | None = None
    digest: int = 0

    def add(self, ts_recv: np.ndarray, price: np.ndarray, size: np.ndarray) -> None:
        if not len(ts_recv):
            return
        ts = np.asarray(ts_recv).astype(np.int64)
        self.records += len(ts)
        self.first_ns = int(ts.min()) if self.first_ns is None else min(self.first_ns, int(ts.min()))
        self.last_ns = int(ts.max()) if self.last_ns is None else max(self.last_ns, int(ts.max()))
        u = [np.asarray(a).astype(np.int64).view(np.uint64) for a in (ts, price, size)]
        with np.errstate(over="ignore"):
            mixed = (u[0] * _MIX[0]) ^ (u[1] * _MIX[1]) ^ (u[2] * _MIX[2])
            self.digest = int((np.uint64(self.digest) + mixed.sum(dtype=np.uint64)) & np.uint64(0xFFFFFFFFFFFFFFFF))

    def describe(self) -> str:
        if not self.records or self.first_ns is None or self.last_ns is None:
            return "no records"
        span = " to ".join(
            dt.datetime.fromtimestamp(t / 1e9, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
            for t in (self.first_ns, self.last_ns)
        )
        return f"{self.records:,} records, {span} UTC, digest {self.digest:016x}"


def stored_fingerprint(lake: Lake, day: dt.date) -> DayFingerprint:
    """The fingerprint of raw_mbp10's partition of a trade date (empty when the lake has none)."""
    found = DayFingerprint()
    if not lake.exists(RAW_TABLE):
        return found
    for batch in iter_raw_partition(lake, day, KERNEL_INPUTS):
        arrays = arrays_from_raw(pl.from_arrow(batch))  # the replay's representation (an empty price: UNDEF)
        found.add(arrays.ts_recv, arrays.price, arrays.size)
    return found


def replay_differences(lake: Lake, replayed: dict[dt.date, DayFingerprint]) -> list[str]:
    """Per replayed trade date whose records are not raw_mbp10's partition: what differs ([] when all equal)."""
    out = []
    for day, seen in sorted(replayed.items()):
        stored = stored_fingerprint(lake, day)
        if (seen.records, seen.first_ns, seen.last_ns, seen.digest) != (
            stored.records,
            stored.first_ns,
            stored.last_ns,
            stored.digest,
        ):
            out.append(f"{day}: replayed {seen.describe()}; stored {stored.describe()}")
    return out


# --- the run ----------------------------------------------------------------------------------------


def compare_with_bar_backtest(paper: pl.DataFrame, bar_equity: pl.DataFrame) -> dict[str, float]:
    """The L2 paper run against the bar backtest of the same bars: PnL of each, and how often their positions
    agree (same decisions: differences come from fills, costs and risk refusals)."""
    both = paper.select(pl.col("bar_ts").cast(pl.Datetime("ns", "UTC")).alias("ts"), "position").join(
        bar_equity.select(pl.col("ts").cast(pl.Datetime("ns", "UTC")), pl.col("position").alias("bar_position")),
        on="ts",
        how="inner",
    )
    # the env's position column is held THROUGH bar i (decided at i-1); the paper's is decided AT bar i
    shifted = both.with_columns(pl.col("bar_position").shift(-1)).drop_nulls()
    return {
        "paper_pnl_usd": float(paper["pnl_usd"][-1] - paper["pnl_usd"][0]) if paper.height else 0.0,
        "bar_pnl_usd": float(bar_equity["pnl"].sum() - bar_equity["cost"].sum()),
        "bars_compared": shifted.height,
        "position_agreement": float((shifted["position"] == shifted["bar_position"]).mean() or 0.0),
    }


def _feature_frame_columns(lake: Lake) -> list[str]:
    """Every column of features_1m (raises FileNotFoundError, as features_between does, when there is none)."""
    if not lake.exists(FEATURES_TABLE):
        raise FileNotFoundError(f"no {FEATURES_TABLE} table under {lake.root}")
    return lake.scan(FEATURES_TABLE).collect_schema().names()


def _warmup_rows(lake: Lake, day: dt.date, lookback: int) -> pl.DataFrame | None:
    """features_1m's last `lookback` rows before the trade date: the first observations of the day see them, as
    the bar backtest's `history` does (None without a features_1m table)."""
    if not lake.exists(FEATURES_TABLE):
        return None
    return lake.scan(FEATURES_TABLE).filter(pl.col("trade_date") < day).sort("ts").tail(lookback).collect()


def _history(lake: Lake, day: dt.date, catalog: FeatureCatalog) -> pl.DataFrame:
    """ofi_bars_1m of the warm-up trade dates before `day` (what features_1m reads for it)."""
    first, last = warmup_start(day, catalog), day - dt.timedelta(days=1)
    return lake.scan(BARS_TABLE).filter(pl.col("trade_date").is_between(first, last)).collect().sort("ts")


def _refuse_traded_day(journal: OrderJournal, strategy: str, day: dt.date, resume: bool) -> None:
    traded = "" if resume else journal.traded(strategy, day)
    if traded:
        sys.exit(
            f"./phoenix paper: strategy {strategy!r} already paper-traded {day} (the journal holds {traded}): "
            "pick another --strategy, or --resume after a crash"
        )


def _refuse_open_positions(journal: OrderJournal, strategy: str, resume: bool) -> None:
    """Every trade date ends flat: a day whose fills leave contracts open crashed and must be resumed first
    (with --resume, the days replayed settle it: the end of each is checked)."""
    open_days = journal.open_positions(strategy)
    if open_days and not resume:
        held = ", ".join(f"{d}: {q:+d}" for d, q in open_days.items())
        sys.exit(
            f"./phoenix paper: the journal's fills leave strategy {strategy!r} holding contracts ({held}): "
            f"resume that day first (--resume --start D --end D)"
        )


def _check_day_against_journal(journal: OrderJournal, trader: PaperTrader, day: dt.date) -> None:
    """The invariant position = sum of fills, at the end of every day (which ends flat)."""
    filled = journal.day_record(trader.strategy, day).filled
    if trader.position != filled or filled != 0:
        raise RuntimeError(
            f"./phoenix paper: strategy {trader.strategy!r} on {day}: the loop holds {trader.position} contracts, "
            f"the journal's fills add up to {filled}; a day must end flat"
        )


def _stoikov(lake: Lake, day: dt.date) -> pl.DataFrame | None:
    """Stoikov's microprice adjustment as ofi_bars_1m fits it for the day (earlier days only)."""
    return stoikov_table_for(lake, day, STOIKOV_TRAIN_DAYS)[0]


def _symbol(lake: Lake, day: dt.date) -> str | None:
    try:
        symbols = symbols_of_day(lake, day)["symbol"].to_list()
    except Exception:  # no raw table (a DBN or live source): the bars carry no symbol
        return None
    return symbols[0] if symbols else None


def risk_config(env_cfg: EnvConfig, latency_budget_ms: float) -> RiskConfig:
    """The risk limits of a paper session in the model's contract terms: its env's max contracts and $ per point
    (the env config the model was trained with; MNQ's when it stored none), so the notional limit measures the
    same dollars the model's equity does."""
    return RiskConfig(
        max_position=env_cfg.max_contracts, point_value=env_cfg.point_value, latency_budget_ms=latency_budget_ms
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="./phoenix paper", description=__doc__.split("\n\n")[0])
    parser.add_argument("--start", type=dt.date.fromisoformat, help="first trade date (default: model's test window)")
    parser.add_argument("--end", type=dt.date.fromisoformat, help="last trade date (default: model's test window)")
    parser.add_argument("--dbn", type=Path, nargs="+", help="replay these DBN MBP-10 files instead of raw_mbp10")
    parser.add_argument("--live", action="store_true", help="trade databento.Live (key from $DATABENTO_API_KEY)")
    parser.add_argument("--strategy", default="agent", help="strategy name in the journal (default: agent)")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="replay days the strategy already has rows for (after a crash): the journal keeps one row per key",
    )
    parser.add_argument(
        "--latency-budget-ms",
        type=float,
        default=RiskConfig().latency_budget_ms,
        help="record -> order budget; 3 decisions in a row over it allow only exits (default %(default)s)",
    )
    parser.add_argument(
        "--drift-psi-limit",
        type=float,
        default=None,
        help="enable the drift monitor: a feature whose PSI against the training rows of the same session "
        "minutes exceeds this (checked every 240 bars on the day so far) allows only exits (default: off)",
    )
    parser.add_argument("--lake", default=None, help="lake root (default: $PHOENIX_LAKE_URI, else <repo>/lake)")
    parser.add_argument(
        "--lift-halt",
        metavar="NAME",
        help="lift the strategy's HALTED/REDUCING state (a kill switch holds until a person does), journaled "
        "with NAME, and exit",
    )
    args = parser.parse_args(argv)

    lake = LakeResource(uri=args.lake).lake()
    journal = OrderJournal(lake)
    try:
        with strategy_lock(lake, args.strategy):  # a lift too: not under a running session's feet
            if not args.lift_halt:
                return _trade(args, lake, journal)
            lifted = journal.lift_halt(args.strategy, args.lift_halt, session_id=f"lift-{uuid.uuid4().hex[:8]}")
    except StrategyLocked as exc:
        sys.exit(f"./phoenix paper: {exc}")
    print(
        f"strategy {args.strategy!r} was {lifted[0]} ({lifted[1]}): lifted by {args.lift_halt}"
        if lifted
        else f"strategy {args.strategy!r} is not halted: nothing to lift"
    )
    return 0


def _trade(args: argparse.Namespace, lake: Lake, journal: OrderJournal) -> int:
    version, model, saved = load_latest_model(lake)
    # one decision before the feed: the Mamba scan's numba kernel compiles or loads from its cache here (0.6-8 s),
    # not on the first bar, where the latency budget would count it
    model.predict(model.observation_space.sample(), deterministic=True)
    tc = saved["train_config"]
    env_cfg = EnvConfig(**saved["env_config"])
    capital = float(tc.get("capital", 10_000.0))
    if args.live:
        source = live_records(DatabentoResource().live_client())  # raises naming the missing key
    elif args.dbn:
        try:  # the whole files, before the first order
            plan = validate_replay_files(args.dbn, MNQ, args.start, args.end, CHUNK_RECORDS)
        except (DbnFileError, ReplayPlanError) as exc:
            sys.exit(f"./phoenix paper: refusing the replay: {exc}")
        print(f"./phoenix paper: {plan.summary()}")
        source = dbn_records(plan)
    else:
        start = args.start or dt.date.fromisoformat(tc["test_start"])
        end = args.end or dt.date.fromisoformat(tc["test_end"])
        source = raw_records(lake, cal.trade_dates_between(start, end))
    catalog, regimes = load_catalog(), latest_regime_model(lake)
    # the drift monitor's reference: the feature rows the model was trained on (opt-in, docs/paper-trading.md says why)
    drift: dict[str, Any] = {}
    if args.drift_psi_limit is not None:
        columns = ["ts", *env_cfg.feature_columns, "warm"]
        drift = {
            "drift_reference": features_between(lake, tc["train_start"], tc["train_end"], columns),
            "drift_psi_limit": args.drift_psi_limit,
            "drift_every_bars": 240,
        }
    session = f"{args.strategy}-{uuid.uuid4().hex[:8]}"
    print(f"paper session {session}: model {version}, strategy {args.strategy}, lake {lake.root}")
    _refuse_open_positions(journal, args.strategy, resume=args.resume)
    # the strategy's risk state is the journal's, not this process's: one engine for all the days
    risk = RiskEngine(risk_config(env_cfg, args.latency_budget_ms))
    latest = journal.risk_state(args.strategy)
    if latest is not None and latest[0] != "ACTIVE":
        risk.restore(*latest)
        print(
            f"strategy {args.strategy!r} is {latest[0]} ({latest[1]}) as journaled: only exits until a person "
            f"lifts it (./phoenix paper --strategy {args.strategy} --lift-halt NAME)"
        )
    stop = {"now": False, "kill": False}
    current: dict[str, Any] = {}

    def on_usr1(*_: object) -> None:
        if current:
            current["trader"].kill_switch("SIGUSR1")
        else:  # between two days: the next day's trader pulls it before its first record
            stop["kill"] = True

    signal.signal(signal.SIGINT, lambda *_: stop.update(now=True))
    signal.signal(signal.SIGUSR1, on_usr1)
    equity = peak = 0.0
    traded: list[dt.date] = []

    def start_day(day: dt.date) -> None:
        _refuse_traded_day(journal, args.strategy, day, args.resume)
        journaled = journal.day_record(args.strategy, day) if args.resume else None
        resuming = journaled is not None and not journaled.empty
        if resuming:
            # replayed from the day's start: the state the crashed session began the day in, then its events
            risk.restore(*(journal.state_entering(args.strategy, journaled) or ("ACTIVE", "")))
            print(f"{day}: resuming after the journal's {journaled.orders.height} orders")
        current["trader"] = PaperTrader(
            policy=lambda obs: model.predict(obs, deterministic=True)[0],
            env_config=env_cfg,
            bars=LiveBars(symbol=_symbol(lake, day), stoikov_table=_stoikov(lake, day)),
            features=LiveFeatures(_history(lake, day, catalog), catalog, regimes),
            venue=PaperVenue(capital_usd=capital, fill=FillConfig.from_env(env_cfg)),
            risk=risk,
            journal=journal,
            strategy=args.strategy,
            session_id=session,
            capital_usd=capital,
            pnl_start_usd=equity,
            peak_start_usd=peak,
            journaled=journaled,
            resume_state=journal.risk_state(args.strategy) if resuming else None,
            warmup_rows=_warmup_rows(lake, day, env_cfg.lookback),
            **drift,
        )
        current["began"] = time.perf_counter()
        traded.append(day)
        if stop["kill"]:
            stop["kill"] = False
            current["trader"].kill_switch("SIGUSR1")

    def finish_day() -> None:
        nonlocal equity, peak
        trader: PaperTrader = current.pop("trader")
        took = time.perf_counter() - current.pop("began")
        try:
            trader.close()
        except Exception as exc:  # the last bar's decision or the journal's flush: halt and flatten too
            _fail_safe(trader, exc)
            raise
        trader.venue.close()
        _check_day_against_journal(journal, trader, traded[-1])
        equity, peak = trader.pnl_usd, trader.peak_usd
        state = f"{trader.risk.state}" + (f" ({trader.risk.reason})" if trader.risk.reason else "")
        print(f"{traded[-1]}: {len(trader.fills)} fills, PnL since start ${equity:+,.2f}, risk {state}, {took:.0f} s")

    source_is_stored = not (args.live or args.dbn)  # raw_mbp10's partitions: what the bars were built from
    replayed: dict[dt.date, DayFingerprint] | None = None if source_is_stored else {}
    try:
        for arrays in source:
            day = _trade_date_of(int(arrays.ts_recv[0]))
            if replayed is not None:
                replayed.setdefault(day, DayFingerprint()).add(arrays.ts_recv, arrays.price, arrays.size)
            if not traded or day != traded[-1]:
                if current:
                    finish_day()
                start_day(day)
            current["trader"].on_records(arrays)
            if stop["now"]:
                break
        if current:
            finish_day()
    except Exception as exc:  # the feed, the loop or the journal failed mid-day: halt and flatten, then show it
        if "trader" in current:
            _fail_safe(current.pop("trader"), exc)
        raise
    paper = (
        scan_journal(lake, PAPER_BARS_TABLE)
        .filter((pl.col("strategy") == args.strategy) & pl.col("trade_date").is_in(traded))
        .collect()
        .sort("bar_ts")
    )  # whole days: a resumed day's bars from before the crash too
    if paper.is_empty():
        print("no bar was traded")
        return 1
    _report(paper, lake, model, env_cfg, capital, traded, replayed)
    return 0


def _fail_safe(trader: PaperTrader, error: Exception) -> None:
    """HALTED and flat at the last book (`PaperTrader.fail_safe`), the day's last bars journaled if possible."""
    trader.fail_safe(error)
    try:
        trader.flush(compact=False)
    except Exception as journal_error:
        error.add_note(f"the day's last bars could not be journaled: {journal_error}")
    trader.venue.close()
    print(f"./phoenix paper: {type(error).__name__} mid-day: strategy {trader.strategy!r} halted, held "
          f"{trader.position} contracts after flattening", file=sys.stderr)  # fmt: skip


def _report(
    paper: pl.DataFrame,
    lake: Lake,
    model: Any,
    env_cfg: EnvConfig,
    capital: float,
    days: list[dt.date],
    replayed: dict[dt.date, DayFingerprint] | None = None,
) -> None:
    """The session's numbers and, where features_1m holds the days, the bar backtest of the same bars. A replay
    of files or a live feed (`replayed`: its days' fingerprints) is compared only where its records are the
    stored raw_mbp10 partitions the bars were built from (issue 28: a different file's day was compared with
    the stored day's backtest)."""
    lat = {c: paper[c].drop_nans().drop_nulls() for c in ("latency_decision_ms", "latency_order_ms")}
    p = {c: [float(np.percentile(v, q)) if len(v) else float("nan") for q in (50, 99)] for c, v in lat.items()}
    print(
        f"latency p50/p99: record->decision {p['latency_decision_ms'][0]:.1f}/{p['latency_decision_ms'][1]:.1f} ms, "
        f"record->order {p['latency_order_ms'][0]:.1f}/{p['latency_order_ms'][1]:.1f} ms"
    )
    from phoenix_assets.defs.model.assets import evaluation_rows

    try:  # with each bar's decision book (the one fill model) and the bars before the days (warm-up)
        rows, history = evaluation_rows(
            lake, min(days).isoformat(), max(days).isoformat(), list(_feature_frame_columns(lake)), env_cfg.lookback
        )
    except FileNotFoundError:
        return
    if rows.height < 2:
        return
    if replayed is not None and (differ := replay_differences(lake, {d: replayed[d] for d in days if d in replayed})):
        print(
            "not compared with the bar backtest: the replayed file is not the stored raw_mbp10 partition ("
            + "; ".join(differ)
            + "): ingest the file (raw_mbp10, then ofi_bars_1m and features_1m) to compare on its data"
        )
        return
    bar = run_backtest(model, rows, env_cfg, capital=capital, name="agent", history=history)
    cmp = compare_with_bar_backtest(paper, bar.equity)
    orders = int((paper["position"].diff().fill_null(paper["position"][0]) != 0).sum())
    print(f"{'same days':<26}{'PnL $':>12}{'position changes':>18}")
    print(f"{'L2 paper (Nautilus venue)':<26}{cmp['paper_pnl_usd']:>12,.2f}{orders:>18}")
    bar_changes = int((bar.equity["traded"] != 0).sum())
    print(f"{'bar backtest (env)':<26}{cmp['bar_pnl_usd']:>12,.2f}{bar_changes:>18}")
    print(f"positions agree on {cmp['position_agreement']:.1%} of {cmp['bars_compared']} bars")


if __name__ == "__main__":
    raise SystemExit(main())
