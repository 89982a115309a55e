"""Paper trading end to end on a replayed synthetic MNQ day: records -> the batch path's features -> the policy ->
risk -> journal -> NautilusTrader's simulated L2 venue -> fills -> the track record in Delta.

The policy here is a fixed OFI rule (the loop does not care what decides): it makes the checks exact. The
policy sees, bar for bar, the observation the env builds from the batch `features_1m`; its targets equal the
env's; every order is journaled once, fills after its bar's close at a real book in the continuous session,
and the equity the loop marks matches the Nautilus account to the cent."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import databento
import numpy as np
import polars as pl
import pytest

from feature_specs import FeatureCatalog, load_catalog
from phoenix_assets.lib import calendar as cal
from phoenix_assets.lib.features.compute import compute_features
from phoenix_assets.lib.features.hmm_regimes import RegimeModel, filter_regimes, fit_regime_model
from phoenix_assets.lib.io.lake import Lake
from phoenix_assets.lib.market.bars import ofi_bars_1m, seconds_frame
from phoenix_assets.lib.market.book_kernel import BookArrays, arrays_from_dbn, book_ofi_1s
from phoenix_assets.lib.market.live_bars import LiveBars, LiveFeatures
from phoenix_assets.lib.synthetic.market import SyntheticMarketConfig, write_day
from phoenix_rl.config import EnvConfig
from phoenix_rl.env.fills import FillConfig
from phoenix_rl.env.trading_env import MnqTradingEnv
from phoenix_rl.evaluation.backtest import run_backtest
from phoenix_rl.live.journal import OrderJournal
from phoenix_rl.live.nautilus.venue import PaperVenue
from phoenix_rl.live.risk import RiskConfig, RiskEngine
from phoenix_rl.live.trader import PaperTrader
from tests.conftest import REPO

MARKET = SyntheticMarketConfig(records_per_day=20_000, ofi_strength=0.5)
DAYS = [dt.date(2024, 3, d) for d in (11, 12, 13)]
LIVE_DAY = DAYS[-1]
LIVE_MINUTES = 150  # the live day's first 2.5 hours of continuous trading: the loop recomputes features per bar
# The synthetic feed is thin (20k records a day, seconds between books): staleness and gap limits to match
RISK = RiskConfig(max_position=1, max_data_age_s=120.0, max_feed_gap_s=900.0)


def die_on_send(venue: object, n: int) -> None:
    """SIGKILL this process as the `n`th order is handed to `venue` (after the journal wrote it, before the send):
    the crash a restart must recover from without a duplicate or a lost order."""
    submit, sent = venue.submit, []  # type: ignore[attr-defined]

    def submit_or_die(*args: object) -> None:
        sent.append(args)
        if len(sent) == n:
            os.kill(os.getpid(), signal.SIGKILL)
        submit(*args)

    venue.submit = submit_or_die  # type: ignore[attr-defined]


def _records(path: Path) -> BookArrays:
    store = databento.DBNStore.from_file(path)
    return arrays_from_dbn(np.concatenate(list(store.to_ndarray(count=1 << 16))))


class RecordingRule:
    """Long above +0.5, short below -0.5 of the first feature at the window's last row; keeps what it saw."""

    def __init__(self) -> None:
        self.seen: list[dict[str, np.ndarray]] = []

    def __call__(self, obs: dict[str, np.ndarray]) -> float:
        self.seen.append({k: v.copy() for k, v in obs.items()})
        x = float(obs["window"][-1, 0])
        return 1.0 if x > 0.5 else (-1.0 if x < -0.5 else 0.0)


@pytest.fixture(scope="module")
def replay(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("paper")
    records = {d: _records(write_day(d, tmp / "landing", MARKET)) for d in DAYS}
    cutoff = cal.session_open_ns(LIVE_DAY) + LIVE_MINUTES * 60_000_000_000
    live = records[LIVE_DAY]
    records[LIVE_DAY] = live.slice(0, int(np.searchsorted(live.ts_recv.astype(np.int64), cutoff)))
    bars = pl.concat([ofi_bars_1m(seconds_frame(book_ofi_1s(iter([records[d]]))), symbol="MNQ.v.0") for d in DAYS])
    catalog = load_catalog()
    model = fit_regime_model(bars, catalog.hmm, DAYS[0], DAYS[1])
    batch = compute_features(bars, catalog, filter_regimes(model, bars, catalog.hmm))
    columns = list(catalog.sets["phase2_ofi"].columns)
    cfg = EnvConfig(
        feature_columns=tuple(columns), lookback=4, max_contracts=1, action_mode="deadband", trade_only_warm=False
    )
    lake = Lake(str(tmp / "lake"))
    live = records[LIVE_DAY]  # the batch path above saw the same truncated day: the same data end
    venue = PaperVenue(
        np.unique(live.instrument_id).tolist(),
        capital_usd=10_000.0,
        commission_per_side_usd=cfg.commission_per_side_usd,
    )
    policy = RecordingRule()
    trader = PaperTrader(
        policy=policy,
        env_config=cfg,
        bars=LiveBars(symbol="MNQ.v.0"),
        features=LiveFeatures(bars.filter(pl.col("trade_date") < LIVE_DAY), catalog, model),
        venue=venue,
        risk=RiskEngine(RISK),
        journal=OrderJournal(lake),
        strategy="rule",
        session_id="test",
        capital_usd=10_000.0,
    )
    n = len(live.ts_recv)
    for start in range(0, n, 5_000):  # chunks of the live feed's shape: any size
        trader.on_records(live.slice(start, min(start + 5_000, n)))
    trader.close()
    balance = venue.balance_usd()
    venue.close()
    day = batch.filter(pl.col("trade_date") == LIVE_DAY)
    return {"trader": trader, "policy": policy, "lake": lake, "cfg": cfg, "day": day, "balance": balance}


def test_the_policy_sees_the_envs_observations_of_the_batch_features(replay: dict) -> None:
    day, cfg, seen = replay["day"], replay["cfg"], replay["policy"].seen
    assert len(seen) == day.height > 100  # one decision per continuous-session bar (minutes with records)
    env = MnqTradingEnv(day, cfg)
    expected = np.stack([env._window_rows[i : i + cfg.lookback] for i in range(day.height)])
    got = np.stack([o["window"] for o in seen])
    # the env pads before the frame's first row; the live loop starts its window at the session's first bar too
    np.testing.assert_array_equal(got, expected)


def test_targets_equal_the_envs_and_every_order_is_journaled_once_and_filled_after_its_bar(replay: dict) -> None:
    lake, cfg, day = replay["lake"], replay["cfg"], replay["day"]
    paper = lake.scan("paper_bars").sort("bar_ts").collect()
    decided = paper.filter(pl.col("action").is_not_nan())
    env = MnqTradingEnv(day, cfg)
    want = [0.0 if env._flat_next[i] else env.target_contracts(a) for i, a in enumerate(decided["action"])]
    want[-1] = 0.0  # the end of the stream flattens (the env's data end)
    assert decided["target"].to_list() == [int(w) for w in want]
    assert decided["target"].abs().sum() > 20  # the rule is in the market
    orders = lake.scan("paper_orders").collect()
    fills = lake.scan("paper_fills").collect()
    assert orders["client_order_id"].n_unique() == orders.height > 5
    assert (
        fills.group_by("client_order_id").agg(pl.col("quantity").sum()).sort("client_order_id").rows()
        == orders.select("client_order_id", "quantity").sort("client_order_id").rows()
    )  # every order filled in full, nothing else
    joined = fills.join(orders, on="client_order_id")
    assert (joined["ts"] >= joined["bar_ts"] + dt.timedelta(minutes=1)).all()  # never at its own bar's close
    open_ns = cal.session_open_ns(LIVE_DAY)
    assert (fills["ts"].dt.epoch("ns") >= open_ns).all()  # no fill on the (crossed) pre-open book
    off_tick = fills.filter((pl.col("price") * 4) % 1 != 0)
    assert off_tick.is_empty(), off_tick  # real book prices, on the 0.25 tick


def test_equity_is_the_venue_accounts_and_the_l2_run_is_comparable_with_the_bar_backtest(replay: dict) -> None:
    lake, trader, cfg = replay["lake"], replay["trader"], replay["cfg"]
    paper = lake.scan("paper_bars").sort("bar_ts").collect()
    assert trader.position == 0 and paper["position"][-1] == 0
    assert paper["pnl_usd"][-1] == pytest.approx(replay["balance"] - 10_000.0, abs=0.01)
    fills = lake.scan("paper_fills").collect()
    assert fills["commission_usd"].sum() == pytest.approx(fills["quantity"].abs().sum() * cfg.commission_per_side_usd)
    bar = run_backtest(RecordingRule(), replay["day"], cfg, capital=10_000.0)
    assert bar.trades.height > 10
    # same decisions, different fills: the bar backtest pays 1 tick per side from the bar open, the venue the book
    assert (
        abs(paper["pnl_usd"][-1] - float(bar.equity["equity"][-1] - 10_000.0))
        < 0.5 * abs(float(bar.equity["cost"].sum())) + 100.0
    )
    latency = paper["latency_decision_ms"]
    assert latency.min() >= 0 and latency.quantile(0.99) < 1_000


def always_long(obs: dict[str, np.ndarray]) -> float:
    return 1.0


def _previous_day(landing: Path) -> tuple[dict[dt.date, BookArrays], pl.DataFrame, FeatureCatalog, RegimeModel]:
    """Records of the day before the live day and of the live day; the earlier day's bars are the live
    features' history and the HMM is fitted on them (before the live day)."""
    records = {d: _records(write_day(d, landing, MARKET)) for d in DAYS[1:]}
    bars = ofi_bars_1m(seconds_frame(book_ofi_1s(iter([records[DAYS[1]]]))), symbol="MNQ.v.0")
    catalog = load_catalog()
    return records, bars, catalog, fit_regime_model(bars, catalog.hmm, DAYS[1], DAYS[1])


@pytest.fixture(scope="module")
def faults(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """60 minutes of the live day: a 5-minute hole in the feed at minute 20, a person resumes at minute 30, the
    kill switch at minute 40."""
    tmp = tmp_path_factory.mktemp("faults")
    records, bars, catalog, model = _previous_day(tmp / "landing")
    open_ns = cal.session_open_ns(LIVE_DAY)
    ts = records[LIVE_DAY].ts_recv.astype(np.int64)
    minute = (ts - open_ns) // 60_000_000_000
    keep = np.flatnonzero((minute < 60) & ((minute < 20) | (minute >= 25)))  # pre-open included, a hole at 20-25
    live = BookArrays(*(a[keep] for a in records[LIVE_DAY]))
    cfg = EnvConfig(feature_columns=tuple(catalog.sets["phase2_ofi"].columns), lookback=4, trade_only_warm=False)
    lake = Lake(str(tmp / "lake"))
    venue = PaperVenue(capital_usd=10_000.0, commission_per_side_usd=0.62)  # instruments added as they appear
    trader = PaperTrader(
        policy=always_long,
        env_config=cfg,
        bars=LiveBars(symbol="MNQ.v.0"),
        features=LiveFeatures(bars, catalog, model),
        venue=venue,
        risk=RiskEngine(RiskConfig(max_position=1, max_data_age_s=120.0, max_feed_gap_s=150.0)),
        journal=OrderJournal(lake),
        strategy="faults",
        session_id="test",
        capital_usd=10_000.0,
    )
    resume_at, kill_at = (open_ns + m * 60_000_000_000 for m in (30, 40))
    resume, kill = np.searchsorted(live.ts_recv.astype(np.int64), [resume_at, kill_at])
    trader.on_records(live.slice(0, int(resume)))
    trader.resume("ops")
    trader.on_records(live.slice(int(resume), int(kill)))
    position_at_kill = trader.position
    trader.kill_switch("test")
    trader.on_records(live.slice(int(kill), len(live.ts_recv)))
    trader.close()
    venue.close()
    return {"lake": lake, "position_at_kill": position_at_kill, "kill_at": kill_at, "hole": (open_ns, resume_at)}


def test_a_feed_gap_allows_only_exits_and_the_kill_switch_always_flattens(faults: dict) -> None:
    lake = faults["lake"]
    events = lake.scan("paper_risk_events").sort("ts").collect()
    assert events["state"].to_list() == ["REDUCING", "ACTIVE", "HALTED"]
    assert events["reason"].to_list()[1:] == ["resumed by ops", "kill switch by test"]
    assert events["reason"][0].startswith("feed gap of 3")  # ~300 s
    paper = lake.scan("paper_bars").sort("bar_ts").collect()
    open_ns, _ = faults["hole"]
    minute = (paper["bar_ts"].dt.epoch("ns") - open_ns) // 60_000_000_000
    assert paper.filter(minute.is_between(5, 19))["position"].eq(1).all()  # long before the hole
    reducing = paper.filter(minute.is_between(25, 28))  # after it: the env's after-hole flat, then no re-entry
    # (bar 29 is decided when minute 30 begins: after the resume)
    assert (reducing["position"] == 0).all() and reducing["order_reason"].str.starts_with("REDUCING").sum() >= 2
    assert faults["position_at_kill"] == 1  # re-entered once resumed
    after = paper.filter(pl.col("bar_ts").dt.epoch("ns") >= faults["kill_at"])
    assert after.height > 10 and (after["position"] == 0).all() and (after["risk_state"] == "HALTED").all()
    refused = after.filter(pl.col("target") != 0)
    assert refused.height > 10 and refused["order_reason"].str.starts_with("HALTED: kill switch by test").all()
    orders = lake.scan("paper_orders").collect()
    kill = orders.filter(pl.col("client_order_id").str.ends_with(":kill"))
    assert kill["quantity"].to_list() == [-1] and kill["reason"][0] == "kill switch: flatten"
    fills = lake.scan("paper_fills").collect()
    assert fills.filter(pl.col("client_order_id") == kill["client_order_id"][0])["quantity"].sum() == -1
    assert fills["quantity"].sum() == 0  # flat at the end, nothing left open


def follow_ofi(obs: dict[str, np.ndarray]) -> float:
    return 1.0 if obs["window"][-1, 0] > 0 else -1.0  # flips often: many orders


def run_session(
    root: str,
    landing: str,
    crash_on_send: int | None = None,
    drift_shift: float | None = None,
    minutes: int = 45,
    kill_on_send: int | None = None,
    latency_ms: float | None = None,
) -> PaperTrader:
    """The first `minutes` of the live day for strategy "crash"; with crash_on_send=k the process SIGKILLs
    itself on the k-th order after journaling it and before the venue has it (the worst moment); `latency_ms`:
    the venue runs the fill model with that latency (else a commission only, no latency)."""
    records, bars, catalog, model = _previous_day(Path(landing))
    ts = records[LIVE_DAY].ts_recv.astype(np.int64)
    live = records[LIVE_DAY].slice(
        0, int(np.searchsorted(ts, cal.session_open_ns(LIVE_DAY) + minutes * 60_000_000_000))
    )
    cfg = EnvConfig(feature_columns=tuple(catalog.sets["phase2_ofi"].columns), lookback=4, trade_only_warm=False)
    venue = (
        PaperVenue(capital_usd=10_000.0, commission_per_side_usd=0.62)
        if latency_ms is None
        else PaperVenue(capital_usd=10_000.0, fill=FillConfig.from_env(replace(cfg, fill_latency_ms=latency_ms)))
    )
    drift: dict = {}
    if drift_shift is not None:  # the "training" rows: the batch features of the same minutes, maybe shifted
        both = pl.concat([bars, ofi_bars_1m(seconds_frame(book_ofi_1s(iter([live]))), symbol="MNQ.v.0")])
        reference = compute_features(both, catalog, filter_regimes(model, both, catalog.hmm))
        drift = {
            "drift_reference": reference.with_columns(pl.col(cfg.feature_columns) + drift_shift),
            "drift_every_bars": 15,
        }
    if crash_on_send is not None:
        die_on_send(venue, crash_on_send)
    held: dict[str, PaperTrader] = {}
    if kill_on_send is not None:  # the kill switch's signal lands between an order's send and its fill
        send, count = venue.submit, []

        def submit_then_kill(*args: object) -> None:
            send(*args)
            count.append(args)
            if len(count) == kill_on_send:
                held["trader"].kill_switch("signal")

        venue.submit = submit_then_kill  # type: ignore[method-assign]
    trader = PaperTrader(
        policy=follow_ofi,
        env_config=cfg,
        bars=LiveBars(symbol="MNQ.v.0"),
        features=LiveFeatures(bars, catalog, model),
        venue=venue,
        risk=RiskEngine(RiskConfig(max_position=1, max_data_age_s=120.0, max_feed_gap_s=900.0, latency_budget_ms=6e4)),
        journal=OrderJournal(Lake(root)),
        strategy="crash",
        session_id=f"pid{os.getpid()}",
        capital_usd=10_000.0,
        **drift,
    )
    held["trader"] = trader
    trader.on_records(live)
    trader.close()
    venue.close()
    return trader


def test_a_crash_between_journal_and_send_resumes_without_a_duplicate_order(tmp_path: Path) -> None:
    """kill -9 after the 6th order is journaled and before it is sent; the restarted loop replays the day: the
    journal ends equal to an uninterrupted run's (same orders, same fills), each order and fill once."""
    landing = str(tmp_path / "landing")
    clean = run_session(str(tmp_path / "clean"), landing)
    crashed = str(tmp_path / "crashed")
    script = f"from tests.rl.live.test_trader import run_session; run_session({crashed!r}, {landing!r}, 6)"
    killed = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    crashed_lake = Lake(str(tmp_path / "crashed"))
    assert crashed_lake.scan("paper_orders").collect().height == 6  # the 6th journaled, never sent
    assert OrderJournal(crashed_lake).unfilled_orders().height == 1  # what a live restart reconciles by client id
    restarted = run_session(str(tmp_path / "crashed"), landing)
    assert restarted.resent == 6  # decided before the crash: the simulated venue gets them again, the journal not
    for table, key in (
        ("paper_orders", ["client_order_id", "quantity"]),
        ("paper_fills", ["trade_id", "quantity", "price"]),
    ):
        want = Lake(str(tmp_path / "clean")).scan(table).select(key).sort(key[0]).collect()
        got = crashed_lake.scan(table).select(key).sort(key[0]).collect()
        assert want.height > 10 and got.equals(want), table
    assert clean.position == restarted.position == 0


@pytest.mark.parametrize("latency_ms", [0.0, 1500.0])
def test_a_day_ends_flat_with_every_fill_journaled_whatever_the_fill_latency(tmp_path: Path, latency_ms: float) -> None:
    """The stream ends with no book after the last one; the end of the stream's flattening order (sent at the
    last book) still fills, at the last book's prices, `latency_ms` after it, and is journaled: the position, the
    journal's fills and the venue's all say flat. (1.5 s is longer than the thin feed's gaps between books.)"""
    trader = run_session(str(tmp_path / "lake"), str(tmp_path / "landing"), minutes=30, latency_ms=latency_ms)
    lake = Lake(str(tmp_path / "lake"))
    orders = lake.scan("paper_orders").collect()
    fills = lake.scan("paper_fills").collect()
    assert orders.height > 5 and trader.position == 0 == fills["quantity"].sum()
    filled = fills.group_by("client_order_id").agg(pl.col("quantity").sum())
    assert (
        orders.join(filled, on="client_order_id", how="left")["quantity_right"].to_list()
        == orders["quantity"].to_list()
    )
    last = max(trader.fills, key=lambda f: f.ts_ns)
    assert last.ts_ns == int(trader._last_book.ts_recv[-1]) + int(latency_ms * 1e6)  # the last book, + latency


@pytest.mark.parametrize("shift", [0.0, 5.0])
def test_feature_drift_against_the_training_rows_allows_only_exits(tmp_path: Path, shift: float) -> None:
    """The live features' PSI against reference rows of the same session minutes: the batch rows of the same
    bars stay ACTIVE; shifted by 5 (the live features drifted) -> REDUCING with the worst features named, and
    no new position after."""
    trader = run_session(str(tmp_path / "lake"), str(tmp_path / "landing"), drift_shift=shift, minutes=120)
    assert sum(t.height for t in trader._today) > 60  # warm rows the PSI was computed on
    events = Lake(str(tmp_path / "lake")).scan("paper_risk_events").collect() if shift else None
    if not shift:
        assert trader.risk.state == "ACTIVE" and not trader.risk.events
        return
    assert events["state"].to_list() == ["REDUCING"] and "PSI" in events["reason"][0]
    assert events["reason"][0].startswith("feature drift: ") and "vs training" in events["reason"][0]
    bars = Lake(str(tmp_path / "lake")).scan("paper_bars").sort("bar_ts").collect()
    after = bars.filter(pl.col("risk_state") == "REDUCING")
    assert after.height > 10 and (after["position"].abs().diff().drop_nulls() <= 0).all()  # only towards flat


def test_the_kill_switch_flattens_an_order_still_in_flight(tmp_path: Path) -> None:
    """The kill switch pulled right after an order went out and before it filled: the flattening order counts
    the unfilled one, so the account ends flat (the sent order fills, then the kill order undoes it)."""
    trader = run_session(str(tmp_path / "lake"), str(tmp_path / "landing"), kill_on_send=3)
    lake = Lake(str(tmp_path / "lake"))
    orders = lake.scan("paper_orders").sort("created_ts").collect()
    kill = orders.filter(pl.col("client_order_id").str.ends_with(":kill"))
    assert kill.height == 1 and kill["quantity"][0] != 0
    assert orders.height == 4  # three decisions, the kill; nothing after the halt
    fills = lake.scan("paper_fills").collect()
    assert fills["quantity"].sum() == 0 and trader.position == 0 and trader.risk.state == "HALTED"


def test_the_live_source_batches_by_minute_and_needs_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """`live_records` over the record objects a `databento.Live` client yields (here: the real ESH4 file's,
    the same `MBP10Msg` type; this machine has no route to Databento): batches never span a minute or exceed
    max_records, skip non-book records, and together are the file's records. Without a key: a clear error."""
    from phoenix_assets.cli.paper import live_records
    from phoenix_assets.defs.resources import DatabentoError, DatabentoResource
    from tests.conftest import ESH4_MBP10

    objects = list(databento.DBNStore.from_file(ESH4_MBP10))
    chunks = list(live_records([objects[0], "a system message", *objects[1:]], max_records=100))
    assert all(len(c.ts_recv) <= 100 for c in chunks)
    assert all(len(np.unique(c.ts_recv.astype(np.int64) // 60_000_000_000)) == 1 for c in chunks)
    whole = _records(ESH4_MBP10)
    np.testing.assert_array_equal(np.concatenate([c.ts_recv for c in chunks]), whole.ts_recv)
    np.testing.assert_array_equal(np.concatenate([c.bid_px for c in chunks]), whole.bid_px)
    monkeypatch.delenv("DATABENTO_API_KEY", raising=False)
    with pytest.raises(DatabentoError, match="DATABENTO_API_KEY"):
        DatabentoResource().live_client()


def test_the_risk_engine_counts_the_models_dollars_per_point() -> None:
    """Regression: `./phoenix paper` built its RiskConfig without the env's point value, so the notional limit
    stayed at MNQ's $2 a point whatever the model was trained on. It now takes the stored env config's (MNQ's
    when none), and a trader whose risk engine counts other dollars than its env refuses to start."""
    from phoenix_assets.cli.paper import risk_config

    env = EnvConfig(point_value=20.0, max_contracts=2)
    cfg = risk_config(env, latency_budget_ms=100.0)
    assert (cfg.point_value, cfg.max_position, cfg.latency_budget_ms) == (20.0, 2, 100.0)
    engine = RiskEngine(cfg)
    t0 = 1_710_000_000 * 1_000_000_000
    engine.on_book(t0, 18_000.00, 18_000.25, in_session=True)
    refused = engine.check_order(t0, 0, 1)  # 1 contract at 18,000.125 x $20: over the $150,000 notional limit
    assert not refused.accepted and refused.reason.startswith("notional $360,00")
    assert risk_config(EnvConfig(), 250.0).point_value == EnvConfig().point_value == RiskConfig().point_value
    with pytest.raises(ValueError, match=r"risk engine's point_value 2\.0 differs from the env's 20\.0"):
        PaperTrader(
            policy=None,  # type: ignore[arg-type]
            env_config=env,
            bars=None,  # type: ignore[arg-type]
            features=None,  # type: ignore[arg-type]
            venue=None,  # type: ignore[arg-type]
            risk=RiskEngine(RiskConfig()),
            journal=None,  # type: ignore[arg-type]
            strategy="agent",
            session_id="s",
            capital_usd=10_000.0,
        )


class FailingJournal(OrderJournal):
    """A journal whose order writes fail from the `fail_at`-th on (a full disk, a lost object store)."""

    def __init__(self, lake: Lake, fail_at: int) -> None:
        super().__init__(lake)
        self.orders, self.fail_at = 0, fail_at

    def record_order(self, order: dict) -> bool:
        self.orders += 1
        if self.orders >= self.fail_at:
            raise OSError("No space left on device")
        return super().record_order(order)


def test_a_journal_that_fails_mid_session_halts_and_flattens_before_the_error_propagates(tmp_path: Path) -> None:
    """Regression: a failed journal commit propagated out of the loop with the position still open and no
    risk event. Now the loop halts (journaled), sends the flattening order even though it cannot be journaled
    (the note says so), and ends flat; then the error propagates."""
    records, bars, catalog, model = _previous_day(tmp_path / "landing")
    cfg = EnvConfig(feature_columns=tuple(catalog.sets["phase2_ofi"].columns), lookback=4, trade_only_warm=False)
    lake = Lake(str(tmp_path / "lake"))
    venue = PaperVenue(capital_usd=10_000.0, commission_per_side_usd=0.62)
    trader = PaperTrader(
        policy=follow_ofi,
        env_config=cfg,
        bars=LiveBars(symbol="MNQ.v.0"),
        features=LiveFeatures(bars, catalog, model),
        venue=venue,
        risk=RiskEngine(RISK),
        journal=FailingJournal(lake, fail_at=3),  # two orders are journaled; the third's write fails
        strategy="diskfull",
        session_id="test",
        capital_usd=10_000.0,
    )
    with pytest.raises(OSError, match="No space left on device") as failed:
        for start in range(0, len(records[LIVE_DAY].ts_recv), 500):
            trader.on_records(records[LIVE_DAY].slice(start, start + 500))
    venue.close()
    assert trader.position == 0 and trader.risk.state == "HALTED"
    assert trader.risk.reason == "kill switch by fail-safe (OSError: No space left on device)"
    notes = "\n".join(failed.value.__notes__)
    assert "the flattening order diskfull:" in notes and ":failsafe could not be journaled" in notes
    events = lake.scan("paper_risk_events").collect()
    assert events["state"].to_list() == ["HALTED"]  # journaled: the restart sees the halt
    fills = lake.scan("paper_fills").collect()
    assert fills["quantity"].sum() == 0  # the unjournaled flattening order's fill is journaled
