"""The order journal with the Delta commit off the decision path, still crash-safe.

`OrderJournal.record_order` is one Delta commit (a scan of the stored keys, a Parquet file, a log entry:
20-80 ms on this machine), paid between the decision and the order. `WalJournal` writes the row as one JSON line
to a local write-ahead log and `fsync`s it (well under a millisecond on a local disk) before it returns, then a
committer process (`wal_committer`) commits it to Delta. The journal's promise is the same: a row `record_order`
returned True for survives a `kill -9` (it is on disk in the log), and the next `WalJournal` on the lake commits
every logged row to Delta (insert-if-absent: idempotent) before anything reads the journal or trades. A line cut
short by a crash mid-write was never acknowledged: its order was never sent, and recovery drops it.

Duplicates are refused as before (False for a client order id or trade id already journaled) from an in-memory
set of the keys, loaded from Delta and the log at start. Reads (`day_record`, `risk_state`, ...) first wait for
the committer's commits, so they see every row written. The log (one per strategy) lives in the lake's `_wal`
folder (for a lake on S3 under ~/.cache/phoenix/wal/): it guards this host's sessions only, like the strategy
lock.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa

from phoenix_assets.lib.io.lake import Lake
from phoenix_assets.lib.process_lifetime import PARENT_PID_ENV
from phoenix_assets.lib.schema import PAPER_BARS_TABLE, PAPER_FILLS_TABLE, PAPER_ORDERS_TABLE, PAPER_RISK_EVENTS_TABLE
from phoenix_rl.live.journal import JOURNAL_SCHEMAS, OrderJournal, scan_journal

__all__ = ["WalJournal"]

KEYS = {
    PAPER_ORDERS_TABLE: ("client_order_id",),
    PAPER_FILLS_TABLE: ("trade_id",),
    PAPER_BARS_TABLE: ("strategy", "bar_ts"),
    PAPER_RISK_EVENTS_TABLE: ("strategy", "ts", "state"),
}


def wal_folder(lake: Lake) -> Path:
    """Where the lake's write-ahead log lives (module doc)."""
    if "://" in lake.root and not lake.root.startswith("file://"):
        return Path.home() / ".cache" / "phoenix" / "wal" / hashlib.sha256(lake.root.encode()).hexdigest()[:16]
    return Path(lake.root.removeprefix("file://")) / "_wal"


def _encode(value: Any) -> Any:
    return value.isoformat() if isinstance(value, dt.datetime | dt.date) else value


def _decode(table: str, row: dict) -> dict:
    schema = JOURNAL_SCHEMAS[table]
    out = dict(row)
    for f in schema:
        v = out.get(f.name)
        if v is None:
            continue
        if pa.types.is_timestamp(f.type):
            out[f.name] = dt.datetime.fromisoformat(v)
        elif pa.types.is_date(f.type):
            out[f.name] = dt.date.fromisoformat(v)
    return out


class WalJournal(OrderJournal):
    """`OrderJournal` with an fsync'd write-ahead log on the decision path and Delta commits behind it."""

    def __init__(
        self, lake: Lake, strategy: str = "journal", folder: Path | None = None, *, commit_every_s: float = 1.0
    ) -> None:
        """One log per strategy and lake: open it under the strategy's lock (`strategy_lock`), so no other
        session of the strategy appends to it while this one recovers and empties it. The Delta commits run in a
        process of their own (`wal_committer`: a commit is mostly Python and would hold this process's GIL beside
        the decisions), which gathers what was logged for up to `commit_every_s` into one commit per table; a
        read or `close` commits at once."""
        super().__init__(lake)
        folder = folder or wal_folder(lake)
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"{hashlib.sha256(strategy.encode()).hexdigest()[:16]}.wal"
        self.recovered = self._recover()
        self._known = {
            table: set(scan_journal(lake, table).select(KEYS[table][0]).collect().to_series().to_list())
            for table in (PAPER_ORDERS_TABLE, PAPER_FILLS_TABLE)
        }
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._lock = threading.Lock()
        self._syncs = 0
        self._committer = subprocess.Popen(
            [sys.executable, "-m", "phoenix_rl.live.node.wal_committer", lake.root, str(commit_every_s)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, PARENT_PID_ENV: str(os.getpid())},
        )

    # --- writes: the log now, Delta later -----------------------------------------------------------

    def record_order(self, order: dict) -> bool:
        return self._log(PAPER_ORDERS_TABLE, order)

    def record_fill(self, fill: dict) -> bool:
        return self._log(PAPER_FILLS_TABLE, fill)

    def record_bars(self, rows: list[dict]) -> int:
        self._log_rows(PAPER_BARS_TABLE, rows)
        return len(rows)

    def record_risk_events(self, rows: list[dict]) -> int:
        now = dt.datetime.now(dt.UTC)
        self._log_rows(PAPER_RISK_EVENTS_TABLE, [{"recorded_at": now, **row} for row in rows])
        return len(rows)

    def compact(self) -> dict[str, int]:
        """Compaction runs in the committer process, after the commits of the rows logged before it."""
        with self._lock:
            self._to_committer(json.dumps({"op": "compact"}) + "\n")
        return {}

    def _log(self, table: str, row: dict) -> bool:
        return self._log_rows(table, [row]) == 1

    def _log_rows(self, table: str, rows: list[dict]) -> int:
        """Append the rows whose key is new to the log in one write and one sync (on disk before the caller
        sends the order: `fdatasync` flushes the data and the size a read needs), then hand them to the
        committer; how many were new."""
        if not rows:
            return 0
        known = self._known.get(table)
        with self._lock:
            lines = []
            for row in rows:
                key = row[KEYS[table][0]]
                if known is not None and (key in known):
                    continue
                lines.append(json.dumps({"table": table, "row": {k: _encode(v) for k, v in row.items()}}) + "\n")
                if known is not None:
                    known.add(key)
            if lines:
                text = "".join(lines)
                data = memoryview(text.encode())
                while data:  # a regular file takes it whole, but write(2) may say otherwise
                    data = data[os.write(self._fd, data) :]
                os.fdatasync(self._fd)
                self._to_committer(text)
        return len(lines)

    def _to_committer(self, line: str) -> None:
        """Hand a logged line (or a command) to the committer process (a pipe write: microseconds)."""
        stdin = self._committer.stdin
        assert stdin is not None
        try:
            stdin.write(line)
            stdin.flush()
        except (BrokenPipeError, ValueError) as exc:
            raise RuntimeError(self._gone()) from exc

    def _gone(self) -> str:
        return (
            f"journal: the Delta committer process for {self.lake.root} exited (status {self._committer.poll()}); "
            f"the rows logged since are in {self.path}, and the next journal on the lake commits them"
        )

    # --- the commits ----------------------------------------------------------------------------------

    def drain(self) -> None:
        """Wait until every row logged so far is committed to Delta; raise a commit's failure."""
        with self._lock:
            self._syncs += 1
            self._to_committer(json.dumps({"op": "sync", "id": self._syncs}) + "\n")
            stdout = self._committer.stdout
            assert stdout is not None
            while True:
                answer = stdout.readline()
                if not answer:
                    raise RuntimeError(self._gone())
                message = json.loads(answer)
                if message.get("ack") == self._syncs:
                    break
        if message["error"]:
            raise RuntimeError(f"journal: a Delta commit to {self.lake.root} failed: {message['error']}")

    def close(self) -> None:
        """Commit everything, stop the committer, empty the log (all of it is in Delta now)."""
        self.drain()
        assert self._committer.stdin is not None
        self._committer.stdin.close()
        self._committer.wait(timeout=60)
        with self._lock:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)

    def _recover(self) -> int:
        """Commit the log of a session that died (module doc) to Delta; the rows committed (new or not)."""
        if not self.path.exists():
            return 0
        by_table: dict[str, list[dict]] = {}
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                if not line.endswith("\n"):
                    break  # cut short by the crash: never acknowledged
                entry = json.loads(line)
                by_table.setdefault(entry["table"], []).append(_decode(entry["table"], entry["row"]))
        for table, rows in by_table.items():
            self._merge_new(table, JOURNAL_SCHEMAS[table], rows, KEYS[table])
        os.truncate(self.path, 0)
        return sum(len(r) for r in by_table.values())


def _drained(method: Callable) -> Callable:
    @functools.wraps(method)
    def read(self: WalJournal, *args: Any, **kwargs: Any) -> Any:
        self.drain()
        return method(self, *args, **kwargs)

    return read


for _name in (
    "risk_state",
    "lift_halt",
    "day_record",
    "state_entering",
    "open_positions",
    "traded",
    "position",
    "unfilled_orders",
    "positions",
):
    setattr(WalJournal, _name, _drained(getattr(OrderJournal, _name)))
