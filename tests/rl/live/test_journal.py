"""The trading journal on a real Delta lake: an order is journaled before it is sent, so a process killed at
any point and restarted never sends a decision twice; replayed fills are stored once."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from phoenix_assets.lib.io.lake import Lake
from phoenix_rl.live.journal import OrderJournal, StrategyLocked, client_order_id, strategy_lock
from tests.conftest import REPO

BAR = dt.datetime(2024, 3, 13, 14, 31, tzinfo=dt.UTC)

# A trading loop over 20 bars: journal the bar's order, then "send" it (append its id to sent.log). With a
# crash bar it SIGKILLs itself between the journal commit and the send, the worst moment.
LOOP = """
import datetime as dt, os, signal, sys
from phoenix_assets.lib.io.lake import Lake
from phoenix_rl.live.journal import OrderJournal, client_order_id
lake_dir, sent_log, crash_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
journal = OrderJournal(Lake(lake_dir))
start = dt.datetime(2024, 3, 13, 14, 30, tzinfo=dt.UTC)
for k in range(20):
    bar = start + dt.timedelta(minutes=k)
    oid = client_order_id("agent", bar)
    order = {"client_order_id": oid, "strategy": "agent", "bar_ts": bar, "instrument_id": 42005347,
             "quantity": 1 if k % 2 == 0 else -1, "reason": "policy", "created_ts": dt.datetime.now(dt.UTC)}
    if not journal.record_order(order):
        continue  # decided before the restart: reconcile, never resend
    if k == crash_at:
        os.kill(os.getpid(), signal.SIGKILL)
    with open(sent_log, "a") as f:
        f.write(oid + "\\n")
"""


def _order(oid: str, quantity: int = 1) -> dict:
    return {
        "client_order_id": oid,
        "strategy": "agent",
        "bar_ts": BAR,
        "instrument_id": 42005347,
        "quantity": quantity,
        "reason": "policy",
        "created_ts": BAR,
    }


def test_an_order_is_journaled_once_per_decision(tmp_path: Path) -> None:
    journal = OrderJournal(Lake(str(tmp_path / "lake")))
    oid = client_order_id("agent", BAR)
    assert oid == "agent:20240313T143100:decision"
    assert journal.record_order(_order(oid))
    assert not journal.record_order(_order(oid, quantity=2))  # the same decision again: refused
    assert journal.record_order(_order(client_order_id("agent", BAR, "kill_switch"), quantity=-1))
    orders = journal.lake.scan("paper_orders").collect()
    assert orders.height == 2 and orders.filter(pl.col("client_order_id") == oid)["quantity"].to_list() == [1]


def test_a_killed_and_restarted_loop_never_sends_a_decision_twice(tmp_path: Path) -> None:
    lake, sent = tmp_path / "lake", tmp_path / "sent.log"
    crashed = subprocess.run([sys.executable, "-c", LOOP, str(lake), str(sent), "7"], cwd=REPO, check=False)
    assert crashed.returncode == -9
    assert len(sent.read_text().split()) == 7  # bars 0..6 sent; bar 7 journaled, then killed before sending
    subprocess.run([sys.executable, "-c", LOOP, str(lake), str(sent), "-1"], cwd=REPO, check=True)
    ids = sent.read_text().split()
    assert len(ids) == len(set(ids)) == 19  # no duplicates; bar 7 not resent as a new order
    journal = OrderJournal(Lake(str(lake)))
    assert journal.lake.scan("paper_orders").collect().height == 20
    crashed_bar = client_order_id("agent", dt.datetime(2024, 3, 13, 14, 37, tzinfo=dt.UTC))
    assert crashed_bar not in ids and crashed_bar in set(journal.unfilled_orders()["client_order_id"])  # reconcile


def test_replayed_fills_are_stored_once_and_make_the_position(tmp_path: Path) -> None:
    journal = OrderJournal(Lake(str(tmp_path / "lake")))
    buy, sell = client_order_id("agent", BAR), client_order_id("agent", BAR + dt.timedelta(minutes=1))
    journal.record_order(_order(buy, 2))
    journal.record_order(_order(sell, -1))
    fill = {"instrument_id": 42005347, "commission_usd": 0.62, "ts": BAR}
    assert journal.record_fill(fill | {"trade_id": "T1", "client_order_id": buy, "quantity": 2, "price": 18000.25})
    assert not journal.record_fill(fill | {"trade_id": "T1", "client_order_id": buy, "quantity": 2, "price": 18000.25})
    assert journal.record_fill(fill | {"trade_id": "T2", "client_order_id": sell, "quantity": -1, "price": 18001.0})
    assert journal.unfilled_orders().is_empty()
    pos = journal.positions().row(0, named=True)
    assert pos["position"] == 1 and pos["commission_usd"] == 2 * 0.62
    assert pos["cash_points"] == -2 * 18000.25 + 18001.0  # hand-computed


def _bar_row(minute: int, equity: float, strategy: str = "agent") -> dict:
    bar = BAR + dt.timedelta(minutes=minute)
    return {
        "session_id": "s1", "strategy": strategy, "bar_ts": bar, "trade_date": dt.date(2024, 3, 13),
        "instrument_id": 42005347, "close": 18000.0 + minute, "action": 0.5, "target": 1, "position": 1,
        "capital_usd": 10_000.0, "pnl_usd": equity, "drawdown_usd": 0.0, "risk_state": "ACTIVE",
        "risk_reason": "", "order_reason": "", "latency_decision_ms": 1.5, "latency_order_ms": 2.0,
    }  # fmt: skip


def test_bars_and_risk_events_merge_once_per_key(tmp_path: Path) -> None:
    """A restarted loop that re-reports bars and state changes stores each (strategy, bar) / event once."""
    journal = OrderJournal(Lake(str(tmp_path)))
    assert journal.record_bars([_bar_row(0, 0.0), _bar_row(1, 5.0)]) == 2
    assert journal.record_bars([_bar_row(1, 5.0), _bar_row(2, 7.0), _bar_row(1, 5.0, "tuned_rule")]) == 2
    bars = journal.lake.scan("paper_bars").sort("strategy", "bar_ts").collect()
    assert bars["pnl_usd"].to_list() == [0.0, 5.0, 7.0, 5.0]
    event = {"session_id": "s1", "strategy": "agent", "ts": BAR, "trade_date": dt.date(2024, 3, 13),
             "state": "HALTED", "reason": "kill switch by test"}  # fmt: skip
    assert journal.record_risk_events([event]) == 1
    assert journal.record_risk_events([event, {**event, "state": "ACTIVE", "reason": "resumed by test"}]) == 1
    assert journal.lake.scan("paper_risk_events").collect().height == 2
    assert journal.record_bars([]) == 0


def test_compaction_keeps_every_row_and_the_dedup(tmp_path: Path) -> None:
    """One file per commit, then one file: the same rows, and a decision already taken is still refused."""
    journal = OrderJournal(Lake(str(tmp_path)))
    for k in range(12):
        bar = BAR + dt.timedelta(minutes=k)
        order = {"client_order_id": client_order_id("agent", bar), "strategy": "agent", "bar_ts": bar,
                 "instrument_id": 1, "quantity": 1, "reason": "policy", "created_ts": bar}  # fmt: skip
        assert journal.record_order(order)
    before = journal.lake.scan("paper_orders").sort("client_order_id").collect()
    assert len(journal.lake.table("paper_orders").file_uris()) == 12
    assert journal.compact() == {"paper_orders": 12}
    assert len(journal.lake.table("paper_orders").file_uris()) == 1
    assert journal.lake.scan("paper_orders").sort("client_order_id").collect().equals(before)
    assert not journal.record_order(order)


# Two paper sessions of different strategies on one lake: orders, fills and bars at full speed, and the journal
# compacted every few orders, as `PaperTrader.flush` does.
WRITER = """
import datetime as dt, sys
from phoenix_assets.lib.io.lake import Lake
from phoenix_rl.live.journal import OrderJournal, client_order_id
lake_dir, strategy = sys.argv[1], sys.argv[2]
journal = OrderJournal(Lake(lake_dir))
start = dt.datetime(2024, 3, 13, 14, 30, tzinfo=dt.UTC)
for k in range(30):
    bar = start + dt.timedelta(minutes=k)
    oid = client_order_id(strategy, bar)
    journal.record_order({"client_order_id": oid, "strategy": strategy, "bar_ts": bar, "instrument_id": 1,
                          "quantity": 1 if k % 2 == 0 else -1, "reason": "policy", "created_ts": bar})
    journal.record_fill({"trade_id": oid + ":1", "client_order_id": oid, "instrument_id": 1,
                         "quantity": 1 if k % 2 == 0 else -1, "price": 18000.0, "commission_usd": 0.62, "ts": bar})
    if k % 5 == 4:
        journal.compact()
"""


def test_two_sessions_of_different_strategies_share_the_journal(tmp_path: Path) -> None:
    """Regression: a second session died with `CommitFailedError: a concurrent transaction added new data` in
    the order merge, holding a position. Both writers now complete, every row stored once."""
    lake = tmp_path / "lake"
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(lake), name], cwd=REPO, stderr=subprocess.PIPE, text=True)
        for name in ("d1", "d2")
    ]
    errors = [w.communicate(timeout=600)[1] for w in writers]
    assert [w.returncode for w in writers] == [0, 0], errors
    journal = OrderJournal(Lake(str(lake)))
    orders = journal.lake.scan("paper_orders").collect()
    assert orders.group_by("strategy").len().sort("strategy")["len"].to_list() == [30, 30]
    assert journal.lake.scan("paper_fills").collect()["trade_id"].n_unique() == 60
    assert journal.position("d1") == journal.position("d2") == 0


def test_the_strategy_lock_refuses_a_second_holder_and_is_freed_by_its_death(tmp_path: Path) -> None:
    """One session per strategy and lake; `kill -9` of the holder frees the lock (the kernel drops flocks)."""
    lake = Lake(str(tmp_path / "lake"))
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, lake.root], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    try:
        held = rf"'agent' is already trading on lake {lake.root} \(pid {holder.pid}"
        with pytest.raises(StrategyLocked, match=held), strategy_lock(lake, "agent"):
            pass
        with strategy_lock(lake, "other"):  # another strategy is free
            pass
    finally:
        holder.kill()
        holder.wait()
    with strategy_lock(lake, "agent"):
        pass


HOLD_LOCK = """
import sys, time
from phoenix_assets.lib.io.lake import Lake
from phoenix_rl.live.journal import strategy_lock
with strategy_lock(Lake(sys.argv[1]), "agent"):
    print("locked", flush=True)
    time.sleep(600)
"""


def test_the_risk_state_is_the_latest_journaled_and_a_person_lifts_it(tmp_path: Path) -> None:
    """The strategy's state across processes: the newest event by journal time (a lift recorded after a kill
    switch whose data time is later still wins), and `lift_halt` writes one ACTIVE event only when halted."""
    journal = OrderJournal(Lake(str(tmp_path / "lake")))
    assert journal.risk_state("agent") is None and journal.lift_halt("agent", "ops", "s0") is None
    event = {"session_id": "s1", "strategy": "agent", "trade_date": dt.date(2024, 3, 13)}
    journal.record_risk_events([event | {"ts": BAR, "state": "REDUCING", "reason": "feed gap of 40.0 s"}])
    journal.record_risk_events([event | {"ts": BAR + dt.timedelta(minutes=5), "state": "HALTED",
                                         "reason": "kill switch by SIGUSR1"}])  # fmt: skip
    assert journal.risk_state("agent") == ("HALTED", "kill switch by SIGUSR1")
    assert journal.risk_state("other") is None
    assert journal.lift_halt("agent", "ops", "s2") == ("HALTED", "kill switch by SIGUSR1")
    assert journal.risk_state("agent") == ("ACTIVE", "resumed by ops")
    assert journal.lift_halt("agent", "ops", "s3") is None
    assert journal.lake.scan("paper_risk_events").collect().height == 3


def test_an_old_journals_equity_usd_reads_as_pnl_usd_and_merges_with_new_rows(tmp_path: Path) -> None:
    """Issue 28: paper_bars' `equity_usd` always held PnL; it is `pnl_usd` now. A lake written before the rename
    still loads (renamed), and a later session's rows append under the new name (the two merged on read)."""
    import deltalake
    import pyarrow as pa

    from phoenix_rl.live.journal import BAR_SCHEMA, scan_journal
    from phoenix_rl.live.monitor_state import monitor_state
    from phoenix_rl.live.report import read_paper_day

    lake = Lake(str(tmp_path))
    old_schema = pa.schema([("equity_usd" if f.name == "pnl_usd" else f.name, f.type) for f in BAR_SCHEMA])
    old_rows = [
        {("equity_usd" if k == "pnl_usd" else k): v for k, v in _bar_row(m, e).items()} for m, e in ((0, 1.0), (1, 4.0))
    ]
    deltalake.write_deltalake(lake.table_uri("paper_bars"), pa.Table.from_pylist(old_rows, schema=old_schema))
    assert scan_journal(lake, "paper_bars").collect()["pnl_usd"].to_list() == [1.0, 4.0]
    journal = OrderJournal(lake)
    assert journal.record_bars([_bar_row(2, 9.0)]) == 1  # a new session appends the new column
    bars = scan_journal(lake, "paper_bars").sort("bar_ts").collect()
    assert bars["pnl_usd"].to_list() == [1.0, 4.0, 9.0] and "equity_usd" not in bars.columns
    assert read_paper_day(lake, dt.date(2024, 3, 13)).bars["pnl_usd"].to_list() == [1.0, 4.0, 9.0]
    assert monitor_state(lake)["pnl_usd"] == 9.0
