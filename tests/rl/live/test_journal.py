"""The trading journal on a real Delta lake: an order is journaled before it is sent, so a process killed at
any point and restarted never sends a decision twice; replayed fills are stored once."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import polars as pl

from phoenix_assets.lib.io.lake import Lake
from phoenix_rl.live.journal import OrderJournal, client_order_id
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
        "capital_usd": 10_000.0, "equity_usd": equity, "drawdown_usd": 0.0, "risk_state": "ACTIVE",
        "risk_reason": "", "order_reason": "", "latency_decision_ms": 1.5, "latency_order_ms": 2.0,
    }  # fmt: skip


def test_bars_and_risk_events_merge_once_per_key(tmp_path: Path) -> None:
    """A restarted loop that re-reports bars and state changes stores each (strategy, bar) / event once."""
    journal = OrderJournal(Lake(str(tmp_path)))
    assert journal.record_bars([_bar_row(0, 0.0), _bar_row(1, 5.0)]) == 2
    assert journal.record_bars([_bar_row(1, 5.0), _bar_row(2, 7.0), _bar_row(1, 5.0, "tuned_rule")]) == 2
    bars = journal.lake.scan("paper_bars").sort("strategy", "bar_ts").collect()
    assert bars["equity_usd"].to_list() == [0.0, 5.0, 7.0, 5.0]
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
