"""The order journal with the Delta commit off the decision path, still crash-safe.

`OrderJournal.record_order` is one Delta commit (a scan of the stored keys, a Parquet file, a log entry:
20-80 ms on this machine), paid between the decision and the order. `WalJournal` writes the row as one JSON line
to a local write-ahead log and `fsync`s it (well under a millisecond on a local disk) before it returns, then a
background thread commits it to Delta. The journal's promise is the same: a row `record_order` returned True for
survives a `kill -9` (it is on disk in the log), and the next `WalJournal` on the lake commits every logged row
to Delta (insert-if-absent: idempotent) before anything reads the journal or trades. A line cut short by a
crash mid-write was never acknowledged: its order was never sent, and recovery drops it.

Duplicates are refused as before (False for a client order id or trade id already journaled) from an in-memory
set of the keys, loaded from Delta and the log at start. Reads (`day_record`, `risk_state`, ...) first wait for
the background commits, so they see every row written. The log (one per strategy) lives in the lake's `_wal`
folder (for a lake on S3 under ~/.cache/phoenix/wal/): it guards this host's sessions only, like the strategy
lock.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import os
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa

from phoenix_assets.lib.io.lake import Lake
from phoenix_assets.lib.schema import PAPER_BARS_TABLE, PAPER_FILLS_TABLE, PAPER_ORDERS_TABLE, PAPER_RISK_EVENTS_TABLE
from phoenix_rl.live.journal import JOURNAL_SCHEMAS, OrderJournal, scan_journal

__all__ = ["WalJournal"]

KEYS = {
    PAPER_ORDERS_TABLE: ("client_order_id",),
    PAPER_FILLS_TABLE: ("trade_id",),
    PAPER_BARS_TABLE: ("strategy", "bar_ts"),
    PAPER_RISK_EVENTS_TABLE: ("strategy", "ts", "state"),
}
_COMPACT = "compact"


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
        session of the strategy appends to it while this one recovers and empties it. The background thread
        gathers what was logged for up to `commit_every_s` into one commit per table (a read or `close` commits
        at once): a Delta commit is mostly Python, and each one takes the GIL from the decisions."""
        super().__init__(lake)
        self.commit_every_s = commit_every_s
        self._now = threading.Event()  # a reader waits: commit what is queued without waiting out the period
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
        self._queue: queue.Queue[tuple[str, dict] | None] = queue.Queue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._commit_loop, name="phoenix-journal", daemon=True)
        self._thread.start()

    # --- writes: the log now, Delta later -----------------------------------------------------------

    def record_order(self, order: dict) -> bool:
        return self._log(PAPER_ORDERS_TABLE, order)

    def record_fill(self, fill: dict) -> bool:
        return self._log(PAPER_FILLS_TABLE, fill)

    def record_bars(self, rows: list[dict]) -> int:
        for row in rows:
            self._log(PAPER_BARS_TABLE, row)
        return len(rows)

    def record_risk_events(self, rows: list[dict]) -> int:
        now = dt.datetime.now(dt.UTC)
        for row in rows:
            self._log(PAPER_RISK_EVENTS_TABLE, {"recorded_at": now, **row})
        return len(rows)

    def compact(self) -> dict[str, int]:
        """Compaction runs in the background thread, after the commits queued before it."""
        self._raise()
        self._queue.put((_COMPACT, {}))
        return {}

    def _log(self, table: str, row: dict) -> bool:
        self._raise()
        key = row[KEYS[table][0]]
        known = self._known.get(table)
        with self._lock:
            if known is not None and key in known:
                return False
            line = json.dumps({"table": table, "row": {k: _encode(v) for k, v in row.items()}}) + "\n"
            os.write(self._fd, line.encode())
            os.fsync(self._fd)  # on disk before the caller sends the order
            if known is not None:
                known.add(key)
        self._queue.put((table, row))
        return True

    # --- the background commits -------------------------------------------------------------------------

    def _commit_loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                self._queue.task_done()
                return
            batch = [item]
            if item is not None:
                self._now.wait(self.commit_every_s)
            while True:  # everything queued so far: one commit per table
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                batch.append(more)
            try:
                self._commit(batch)
            except BaseException as exc:  # surfaced on the next write or read
                self._error = exc
            finally:
                for _ in batch:
                    self._queue.task_done()
            if any(i is None for i in batch):
                return

    def _commit(self, batch: list[tuple[str, dict] | None]) -> None:
        by_table: dict[str, list[dict]] = {}
        compact = False
        for item in batch:
            if item is None:
                continue
            table, row = item
            if table == _COMPACT:
                compact = True
            else:
                by_table.setdefault(table, []).append(row)
        for table, rows in by_table.items():
            self._merge_new(table, JOURNAL_SCHEMAS[table], rows, KEYS[table])
        if compact:
            OrderJournal.compact(self)

    def drain(self) -> None:
        """Wait until every row logged so far is committed to Delta; raise a commit's failure."""
        self._now.set()
        try:
            self._queue.join()
        finally:
            self._now.clear()
        self._raise()

    def close(self) -> None:
        """Commit everything, stop the thread, empty the log (all of it is in Delta now)."""
        self.drain()
        self._queue.put(None)
        self._thread.join(timeout=60)
        with self._lock:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise RuntimeError(f"journal: a background Delta commit to {self.lake.root} failed: {error}") from error

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
