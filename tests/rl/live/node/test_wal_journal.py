"""The write-ahead journal: a row acknowledged is on disk before the order goes out, survives kill -9 before its
Delta commit, is committed by the next session before anything reads, and is never stored twice."""

from __future__ import annotations

import datetime as dt
import signal
import subprocess
import sys
from pathlib import Path

import polars as pl

from phoenix_assets.lib.io.lake import Lake
from phoenix_rl.live.journal import OrderJournal
from phoenix_rl.live.node.wal import WalJournal, wal_folder
from tests.conftest import REPO

T0 = dt.datetime(2024, 3, 12, 22, 5, tzinfo=dt.UTC)


def order(coid: str, quantity: int = 1) -> dict:
    return {
        "client_order_id": coid,
        "strategy": "wal",
        "bar_ts": T0,
        "instrument_id": 42,
        "quantity": quantity,
        "reason": "policy",
        "created_ts": T0,
    }


def event(state: str) -> dict:
    return {"session_id": "s", "strategy": "wal", "ts": T0, "trade_date": T0.date(), "state": state, "reason": "r"}


def test_rows_reach_delta_once_and_reads_wait_for_them(tmp_path: Path) -> None:
    journal = WalJournal(Lake(str(tmp_path)), "wal")
    assert journal.record_order(order("wal:1:decision")) is True
    assert journal.record_order(order("wal:1:decision")) is False  # the same client order id: do not send
    journal.record_risk_events([event("HALTED")])
    assert journal.risk_state("wal") == ("HALTED", "r")  # the read waited for the background commit
    assert journal.unfilled_orders()["client_order_id"].to_list() == ["wal:1:decision"]
    journal.close()
    assert journal.path.parent == wal_folder(Lake(str(tmp_path))) and journal.path.stat().st_size == 0
    again = WalJournal(Lake(str(tmp_path)), "wal")  # a new session knows the stored ids
    assert again.record_order(order("wal:1:decision")) is False and again.recovered == 0
    again.close()
    assert Lake(str(tmp_path)).scan("paper_orders").collect().height == 1


def test_commits_gather_rows_for_a_period_and_a_read_does_not_wait_it_out(tmp_path: Path) -> None:
    """Rows logged within `commit_every_s` go to Delta in one commit per table, after the period; a read commits
    at once."""
    import time

    lake = Lake(str(tmp_path))
    slow = WalJournal(lake, "wal", commit_every_s=0.5)
    for k in range(5):
        slow.record_order(order(f"wal:{k}:decision"))
    assert not lake.exists("paper_orders")  # nothing committed yet: the period runs
    time.sleep(1.5)
    orders = lake.scan("paper_orders").collect()
    assert orders.height == 5  # committed by the thread alone, no read needed
    assert lake.table("paper_orders").version() == 0  # in one commit (the one that created the table)
    slow.close()
    lazy = WalJournal(lake, "wal", commit_every_s=60.0)
    lazy.record_risk_events([event("REDUCING")])
    began = time.perf_counter()
    assert lazy.risk_state("wal") == ("REDUCING", "r")  # the read made the commit happen now
    assert time.perf_counter() - began < 10.0
    lazy.close()


def test_a_row_logged_but_not_committed_survives_kill_9(tmp_path: Path) -> None:
    """The child's Delta commits never run (its thread blocks); it logs two orders and a halt, starts a third
    line and dies by SIGKILL. The next journal commits the two orders and the halt, drops the cut line."""
    script = f"""
import os, signal, threading
from phoenix_assets.lib.io.lake import Lake
from phoenix_rl.live.node import wal
from tests.rl.live.node.test_wal_journal import order, event
wal.WalJournal._to_committer = lambda self, line: None  # Delta never sees them
journal = wal.WalJournal(Lake({str(tmp_path)!r}), "wal")
assert journal.record_order(order("wal:1:decision", 1)) and journal.record_order(order("wal:2:decision", -2))
journal.record_risk_events([event("HALTED")])
os.write(journal._fd, b'{{"table": "paper_orders", "row": {{"client_or')  # a write cut by the crash
os.kill(os.getpid(), signal.SIGKILL)
"""
    child = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    lake = Lake(str(tmp_path))
    assert not lake.exists("paper_orders")  # nothing reached Delta before the kill
    journal = WalJournal(lake, "wal")
    assert journal.recovered == 3
    orders = lake.scan("paper_orders").sort("client_order_id").collect()
    assert orders.select("client_order_id", "quantity").rows() == [("wal:1:decision", 1), ("wal:2:decision", -2)]
    assert orders["bar_ts"].to_list() == [T0, T0]
    assert journal.record_order(order("wal:2:decision")) is False  # recovered ids are known: no duplicate send
    assert OrderJournal(lake).risk_state("wal") == ("HALTED", "r")
    journal.close()
    assert lake.scan("paper_orders").collect().height == 2
    assert pl.from_arrow(lake.table("paper_risk_events").to_pyarrow_table()).height == 1


def test_a_dead_committer_is_a_clear_error_and_its_rows_are_recovered(tmp_path: Path) -> None:
    """The committer process dies: the next write or read says so, and the rows logged are committed by the next
    journal on the lake (they are in the log)."""
    import pytest

    lake = Lake(str(tmp_path))
    journal = WalJournal(lake, "wal", commit_every_s=60.0)
    assert journal.record_order(order("wal:1:decision"))
    journal._committer.kill()
    journal._committer.wait(timeout=30)
    with pytest.raises(RuntimeError, match=r"committer process .* exited"):
        journal.record_order(order("wal:2:decision"))  # logged, then the hand-off fails
    with pytest.raises(RuntimeError, match=r"committer process .* exited"):
        journal.risk_state("wal")
    again = WalJournal(lake, "wal")
    assert again.recovered == 2  # both rows were on disk before the error
    assert sorted(lake.scan("paper_orders").collect()["client_order_id"].to_list()) == [
        "wal:1:decision",
        "wal:2:decision",
    ]
    again.close()
