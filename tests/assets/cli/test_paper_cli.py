"""`./phoenix paper` as an operator and as faults drive it (issue 29): the kill switch is the strategy's and
holds across days and restarts until a person lifts it; a crash after it resumes halted and consistent; a day
with only an order journaled counts as traded; one session per strategy; a feed that breaks mid-day leaves the
strategy halted and flat; replay files are validated whole before the first order.

One small lake for the module: four synthetic trade dates (20k records each) through the real assets, the HMM
fitted on the first two, a seconds-long SAC training; each test trades a copy of it. The feed is the first
`MINUTES` of continuous trading of each day (plus the pre-open), in small chunks, so signals land mid-day."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest

from phoenix_assets.cli import paper
from phoenix_assets.cli.demo import QUIET, run_features, run_model
from phoenix_assets.definitions import defs
from phoenix_assets.lib import calendar as cal
from phoenix_assets.lib.io.lake import Lake
from phoenix_assets.lib.market.book_kernel import BookArrays
from phoenix_rl.live.journal import OrderJournal, client_order_id, strategy_lock
from phoenix_rl.live.risk import RiskConfig
from phoenix_rl.windows import EvaluationWindows
from tests.conftest import ESH4_MBP10, REPO, TINY_MODEL_CONFIG

DAYS = [dt.date(2024, 3, d) for d in (11, 12, 13, 14, 15)]
MINUTES = 60
CHUNK = 20  # about a minute and a half of the thin feed
NS_PER_MINUTE = 60_000_000_000
FAST = ["--latency-budget-ms", "60000"]  # the loop's wall clock on 2 busy cores is not what these tests are about


@pytest.fixture(scope="module")
def base_lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("paper_cli")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PHOENIX_LAKE_URI", str(tmp / "lake"))
        mp.setenv("PHOENIX_LANDING_DIR", str(tmp / "landing"))
        mp.setenv("DAGSTER_HOME", str(tmp))
        with dg.instance_for_test(temp_dir=str(tmp)) as instance:
            market = {"ops": {"write_synthetic_day": {"config": {"records_per_day": 20_000}}}}
            for day in DAYS:
                for job, config in (("synthetic_landing_job", QUIET | market), ("daily_job", QUIET)):
                    run = defs.resolve_job_def(job).execute_in_process(
                        partition_key=day.isoformat(), instance=instance, run_config=config
                    )
                    assert run.success
            assert run_features(DAYS[0], DAYS[-1], instance, (DAYS[0], DAYS[1]))
            windows = EvaluationWindows((DAYS[0], DAYS[1]), (DAYS[2], DAYS[2]), (DAYS[3], DAYS[4]))
            training = {k: v for k, v in TINY_MODEL_CONFIG.items() if not k.startswith(("train_", "val_", "test_"))}
            assert run_model(windows, instance, training)
    return tmp


class FollowOfi:
    """The stored model with its decisions replaced by a rule that trades often (the seconds-long training's
    agent stays flat): long when the first feature of the newest bar is positive, else short."""

    def __init__(self, model: object) -> None:
        self.model = model
        self.observation_space = model.observation_space  # type: ignore[attr-defined]

    def predict(self, obs: dict[str, np.ndarray], deterministic: bool = True) -> tuple[np.ndarray, None]:
        return np.array([1.0 if obs["window"][-1, 0] > 0 else -1.0], dtype=np.float32), None


def trading_rule_on_a_thin_feed(mp: pytest.MonkeyPatch) -> None:
    """The rule above for the model, and the risk limits of a 20k-record day (seconds between books)."""
    load = paper.load_latest_model

    def load_rule(lake: Lake) -> tuple[str, object, dict]:
        version, model, saved = load(lake)
        return version, FollowOfi(model), saved

    def limits(env_cfg: object, latency_budget_ms: float) -> RiskConfig:
        return RiskConfig(max_position=1, max_data_age_s=120.0, max_feed_gap_s=900.0, latency_budget_ms=6e4)

    mp.setattr(paper, "load_latest_model", load_rule)
    mp.setattr(paper, "risk_config", limits)


@pytest.fixture
def lake_root(base_lake: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A copy of the module's lake, traded by the rule; the signal handlers `paper.main` installs are put back."""
    root = tmp_path / "lake"
    shutil.copytree(base_lake / "lake", root)
    trading_rule_on_a_thin_feed(monkeypatch)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGUSR1)}
    yield str(root)
    for s, h in handlers.items():
        signal.signal(s, h)


def short_feed(at_minute: dict[int, Callable[[], None]] | None = None) -> Callable[..., Iterator[BookArrays]]:
    """`paper.raw_records` cut to the first MINUTES of continuous trading, in CHUNK-record pieces; `at_minute`
    {m: action} runs each action once, before the first chunk at or after minute m of the first day's session."""
    original = paper.raw_records

    def feed(lake: Lake, days: list[dt.date]) -> Iterator[BookArrays]:
        pending = dict(at_minute or {})
        for day in days:
            end = cal.session_open_ns(day) + MINUTES * NS_PER_MINUTE
            for arrays in original(lake, [day]):
                ts = arrays.ts_recv.astype(np.int64)
                for start in range(0, int(np.searchsorted(ts, end)), CHUNK):
                    minute = (int(ts[start]) - cal.session_open_ns(day)) // NS_PER_MINUTE
                    for m in [m for m in pending if minute >= m]:
                        pending.pop(m)()
                    yield arrays.slice(start, min(start + CHUNK, int(np.searchsorted(ts, end))))

    return feed


def usr1() -> None:
    os.kill(os.getpid(), signal.SIGUSR1)


def trade(root: str, start: dt.date, end: dt.date, strategy: str, *extra: str) -> int:
    return paper.main(["--lake", root, "--start", str(start), "--end", str(end), "--strategy", strategy, *FAST, *extra])


def _scan(root: str, table: str, strategy: str) -> pl.DataFrame:
    lake = Lake(root)
    if not lake.exists(table):
        return pl.DataFrame()
    frame = lake.scan(table)
    if "strategy" in frame.collect_schema().names():
        frame = frame.filter(pl.col("strategy") == strategy)
    return frame.collect()


def _orders_on(root: str, strategy: str, day: dt.date) -> pl.DataFrame:
    lo, hi = (dt.datetime.fromtimestamp(t / 1e9, dt.UTC) for t in cal.trade_date_window(day))
    return _scan(root, "paper_orders", strategy).filter(pl.col("bar_ts").is_between(lo, hi, closed="left"))


@pytest.mark.slow
def test_the_kill_switch_holds_across_days_and_restarts_until_a_person_lifts_it(
    lake_root: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Regression: `main()` built a new RiskEngine per day, so a SIGUSR1 on 03-13 was forgotten on 03-14 (89
    fills, all bars ACTIVE), and every restart began ACTIVE."""
    monkeypatch.setattr(paper, "raw_records", short_feed())
    assert trade(lake_root, DAYS[2], DAYS[3], "control") == 0  # the same model without the kill switch trades
    assert _orders_on(lake_root, "control", DAYS[3]).height > 3
    monkeypatch.setattr(paper, "raw_records", short_feed({20: usr1}))
    assert trade(lake_root, DAYS[2], DAYS[3], "k") == 0
    bars = _scan(lake_root, "paper_bars", "k").sort("bar_ts")
    next_day = bars.filter(pl.col("trade_date") == DAYS[3])
    assert (
        next_day.height > MINUTES and (next_day["risk_state"] == "HALTED").all() and (next_day["position"] == 0).all()
    )
    assert next_day["risk_reason"].str.starts_with("kill switch by SIGUSR1").all()
    assert _orders_on(lake_root, "k", DAYS[3]).is_empty()
    events = _scan(lake_root, "paper_risk_events", "k")
    assert events["state"].to_list() == ["HALTED"]  # nothing lifted it, and nothing says it was lifted
    capsys.readouterr()

    monkeypatch.setattr(paper, "raw_records", short_feed())
    assert trade(lake_root, DAYS[4], DAYS[4], "k") == 0  # a restart on the next day
    assert "'k' is HALTED (kill switch by SIGUSR1) as journaled" in capsys.readouterr().out
    restarted = _scan(lake_root, "paper_bars", "k").filter(pl.col("trade_date") == DAYS[4])
    assert restarted.height > MINUTES and (restarted["risk_state"] == "HALTED").all()
    assert _orders_on(lake_root, "k", DAYS[4]).is_empty()

    assert paper.main(["--lake", lake_root, "--strategy", "k", "--lift-halt", "ops"]) == 0
    assert "was HALTED (kill switch by SIGUSR1): lifted by ops" in capsys.readouterr().out
    assert OrderJournal(Lake(lake_root)).risk_state("k") == ("ACTIVE", "resumed by ops")
    assert _scan(lake_root, "paper_risk_events", "k").sort("recorded_at")["reason"][-1] == "resumed by ops"
    assert paper.main(["--lake", lake_root, "--strategy", "k", "--lift-halt", "ops"]) == 0
    assert "is not halted: nothing to lift" in capsys.readouterr().out


def crash_after_kill(root: str) -> None:
    """(In a subprocess) trade 03-13: SIGUSR1 at minute 15, kill -9 of itself at minute 55 (after the first
    60 bars, pre-open included, were flushed to paper_bars)."""
    kill9 = lambda: os.kill(os.getpid(), signal.SIGKILL)  # noqa: E731
    with pytest.MonkeyPatch.context() as mp:
        trading_rule_on_a_thin_feed(mp)
        mp.setattr(paper, "raw_records", short_feed({15: usr1, 55: kill9}))
        trade(root, DAYS[2], DAYS[2], "u2")


@pytest.mark.slow
def test_a_crash_after_the_kill_switch_resumes_halted_with_bars_equal_to_the_orders(
    lake_root: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Regression: SIGUSR1, then kill -9, then `--resume`: the resumed run was ACTIVE and sent orders after the
    kill; the stored bars disagreed with the orders; the summary counted only the resumed bars."""
    script = f"from tests.assets.cli.test_paper_cli import crash_after_kill; crash_after_kill({lake_root!r})"
    killed = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    orders = _scan(lake_root, "paper_orders", "u2")
    kill = orders.filter(pl.col("client_order_id").str.ends_with(":kill"))
    assert kill.height <= 1  # flat at the kill: no order needed
    events = _scan(lake_root, "paper_risk_events", "u2")
    assert events["reason"].to_list() == ["kill switch by SIGUSR1"]  # journaled at once, not at the next flush
    kill_ts = events["ts"][0]
    with pytest.raises(SystemExit, match=r"already paper-traded 2024-03-13 \(the journal holds"):
        trade(lake_root, DAYS[2], DAYS[2], "u2")

    monkeypatch.setattr(paper, "raw_records", short_feed())
    assert trade(lake_root, DAYS[2], DAYS[2], "u2", "--resume") == 0
    out = capsys.readouterr().out
    orders = _scan(lake_root, "paper_orders", "u2").sort("bar_ts")
    decided_after = orders.filter(
        pl.col("client_order_id").str.ends_with(":decision") & (pl.col("bar_ts") + pl.duration(minutes=1) > kill_ts)
    )
    assert decided_after.is_empty(), decided_after  # halted from the kill on, in the replay and after it
    assert orders["client_order_id"].n_unique() == orders.height
    fills = _scan(lake_root, "paper_fills", "u2")
    assert fills["quantity"].sum() == 0 and set(fills["client_order_id"]) == set(orders["client_order_id"])
    # every bar's position is the orders decided by its close (a decision at its bar's close, the kill at its moment)
    decided_at = pl.when(pl.col("client_order_id").str.ends_with(":decision")).then(
        pl.col("bar_ts") + pl.duration(minutes=1)
    )
    moments = orders.with_columns(decided_at.otherwise(pl.col("bar_ts")).alias("at"))
    bars = _scan(lake_root, "paper_bars", "u2").sort("bar_ts")
    closes = bars["bar_ts"] + dt.timedelta(minutes=1)
    held = [int(moments.filter(pl.col("at") <= c)["quantity"].sum()) for c in closes]
    assert bars["position"].to_list() == held
    after = bars.filter(pl.col("bar_ts") >= kill_ts)
    assert after.height > 20 and (after["risk_state"] == "HALTED").all()
    # the summary is the whole day's (every continuous-session bar is compared), not the resumed session's
    assert _scan(lake_root, "paper_bars", "u2")["session_id"].n_unique() == 2  # each session stored some bars
    compared = int(out.split("positions agree on ")[1].split(" of ")[1].split()[0])
    session = bars.filter(pl.col("bar_ts").dt.epoch("ns") >= cal.session_open_ns(DAYS[2]))
    assert compared >= session.height - 2, out


@pytest.mark.slow
def test_a_day_with_only_an_order_journaled_counts_as_traded(lake_root: str) -> None:
    """Regression: the refusal looked at paper_bars only (written every 60 bars): a run killed after 3 orders
    and 0 bars could be rerun without --resume."""
    bar = dt.datetime(2024, 3, 13, 14, 31, tzinfo=dt.UTC)
    order = {"client_order_id": client_order_id("o9", bar), "strategy": "o9", "bar_ts": bar, "instrument_id": 1,
             "quantity": 1, "reason": "policy", "created_ts": bar}  # fmt: skip
    OrderJournal(Lake(lake_root)).record_order(order)
    with pytest.raises(SystemExit, match=r"already paper-traded 2024-03-13 \(the journal holds 1 orders\)"):
        trade(lake_root, DAYS[2], DAYS[2], "o9")


@pytest.mark.slow
def test_a_second_session_of_a_strategy_is_refused_up_front(lake_root: str) -> None:
    held = r"strategy 'twin' is already trading on lake .* \(pid \d+ on "
    with strategy_lock(Lake(lake_root), "twin"), pytest.raises(SystemExit, match=held):
        trade(lake_root, DAYS[2], DAYS[2], "twin")
    assert not Lake(lake_root).exists("paper_orders")


@pytest.mark.slow
def test_a_feed_that_breaks_mid_day_halts_flat_and_says_so(lake_root: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: an error in the feed (a damaged file, a broken live connection) propagated with the position
    still open and no risk event."""

    def broken() -> None:
        raise ConnectionResetError("feed lost")

    monkeypatch.setattr(paper, "raw_records", short_feed({30: broken}))
    with pytest.raises(ConnectionResetError, match="feed lost"):
        trade(lake_root, DAYS[2], DAYS[2], "f1")
    events = _scan(lake_root, "paper_risk_events", "f1")
    assert events["state"].to_list() == ["HALTED"]
    assert events["reason"][0] == "kill switch by fail-safe (ConnectionResetError: feed lost)"
    orders = _scan(lake_root, "paper_orders", "f1")
    fills = _scan(lake_root, "paper_fills", "f1")
    assert orders.height > 2 and fills["quantity"].sum() == 0  # it had traded, and it ends flat
    assert OrderJournal(Lake(lake_root)).open_positions("f1") == {}


@pytest.mark.slow
def test_replay_files_are_checked_whole_before_the_first_order(base_lake: Path, lake_root: str, tmp_path: Path) -> None:
    """Regression: an ES day was traded by the MNQ model; --start/--end were ignored with --dbn; a truncated
    file was traded up to the damage, and the run ended holding a position."""
    day_file = base_lake / "landing" / "glbx-mdp3-mnq-20240313.mbp-10.dbn.zst"
    cut = tmp_path / "cut.mbp-10.dbn.zst"
    cut.write_bytes(day_file.read_bytes()[: day_file.stat().st_size // 2])
    cases = [
        ([str(ESH4_MBP10)], r"\(product ES\) are not the model's instrument MNQ \(GLBX\.MDP3 MNQ\.v\.0\)"),
        ([str(day_file), "--start", "2024-03-11", "--end", "2024-03-11"], r"none in the requested range"),
        ([str(cut)], r"cut\.mbp-10\.dbn\.zst: (truncated|corrupt)"),
    ]
    for files, message in cases:
        with pytest.raises(SystemExit, match=message):
            paper.main(["--lake", lake_root, "--strategy", "replay", *FAST, "--dbn", *files])
    assert not Lake(lake_root).exists("paper_orders") and not Lake(lake_root).exists("paper_bars")


@pytest.mark.slow
def test_ctrl_c_stops_the_stream_flat_and_journaled(lake_root: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C (SIGINT) mid-day ends the session at once: the day is closed, flat, its fills journaled."""
    monkeypatch.setattr(paper, "raw_records", short_feed({25: lambda: os.kill(os.getpid(), signal.SIGINT)}))
    assert trade(lake_root, DAYS[2], DAYS[2], "c1") == 0
    bars = _scan(lake_root, "paper_bars", "c1").sort("bar_ts")
    last = bars["bar_ts"][-1].timestamp() * 1e9 - cal.session_open_ns(DAYS[2])
    assert 20 <= last / NS_PER_MINUTE <= 30 and bars["position"][-1] == 0  # stopped near minute 25 (a chunk later)
    fills = _scan(lake_root, "paper_fills", "c1")
    assert fills.height > 2 and fills["quantity"].sum() == 0
    assert OrderJournal(Lake(lake_root)).open_positions("c1") == {}


def test_day_fingerprint_by_hand_and_against_a_slow_reference() -> None:
    """The digest is the wrapping sum of mixed (ts_recv, price, size): order-free, chunk-free, one field moved
    changes it."""
    rng = np.random.default_rng(0)
    ts = np.sort(rng.integers(1, 2**62, 500)).astype(np.uint64)
    price, size = rng.integers(-(2**62), 2**62, 500), rng.integers(0, 100, 500).astype(np.uint32)
    whole, chunked = paper.DayFingerprint(), paper.DayFingerprint()
    whole.add(ts, price, size)
    for k in range(0, 500, 77):
        chunked.add(ts[k : k + 77], price[k : k + 77], size[k : k + 77])
    mask = 2**64 - 1
    slow = (
        sum(
            ((int(t) * int(paper._MIX[0])) & mask)
            ^ ((int(p) % 2**64 * int(paper._MIX[1])) & mask)
            ^ ((int(s) * int(paper._MIX[2])) & mask)
            for t, p, s in zip(ts, price, size, strict=True)
        )
        & mask
    )
    assert whole == chunked and whole.digest == slow and whole.records == 500
    assert (whole.first_ns, whole.last_ns) == (int(ts[0]), int(ts[-1]))
    moved = paper.DayFingerprint()
    moved.add(ts, price + np.eye(1, 500, 250, dtype=np.int64)[0], size)
    assert moved.digest != whole.digest


@pytest.mark.slow
def test_a_replayed_file_that_is_not_the_stored_day_is_not_compared(
    base_lake: Path, lake_root: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 28: a replayed DBN file of another market for a stored trade date was compared with the stored
    day's bar backtest. The stored day's own file is compared; another file of that date is refused, saying why."""
    from phoenix_assets.lib.synthetic.market import SyntheticMarketConfig, write_day

    day = DAYS[3]
    stored_file = base_lake / "landing" / f"glbx-mdp3-mnq-{day:%Y%m%d}.mbp-10.dbn.zst"
    args = ["--lake", lake_root, "--start", str(day), "--end", str(day), *FAST]
    assert paper.main([*args, "--strategy", "same", "--dbn", str(stored_file)]) == 0
    out = capsys.readouterr().out
    assert "positions agree on" in out and "not compared" not in out
    other = write_day(day, tmp_path / "other", SyntheticMarketConfig(records_per_day=21_000, seed=99))
    assert paper.main([*args, "--strategy", "other", "--dbn", str(other)]) == 0
    out = capsys.readouterr().out
    assert "not compared with the bar backtest: the replayed file is not the stored raw_mbp10 partition" in out
    assert f"{day}: replayed 21," in out and "positions agree" not in out
