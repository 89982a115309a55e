"""The write-ahead journal's Delta committer: a process of its own, fed the log's lines through a pipe.

Why a process: a Delta commit (keys scanned, a Parquet file, a log entry) is mostly Python. In a thread of the
trading process it held the GIL beside the decisions: a 200k-record replay's record -> order p99 was 12.4 ms with
the commits in a thread and 5.9 ms with none during the replay. Here it runs beside them on its own interpreter.

Protocol (one JSON object a line): `{"table": ..., "row": ...}` (the log's own line) is a row to commit; rows are
gathered for up to `commit_every_s` into one insert-if-absent commit per table. `{"op": "sync", "id": n}`
commits what came before it and answers `{"ack": n, "error": "..."}` (the first commit failure since the last
sync, "" if none). `{"op": "compact"}` commits, then compacts the journal's tables. End of input (the journal
closed, or its process died): commit what came and exit. The process dies with its parent (`PARENT_PID_ENV`):
whatever it had not committed is in the log, which the next journal on the lake commits first.

    python -m phoenix_rl.live.node.wal_committer LAKE_ROOT COMMIT_EVERY_S
"""

from __future__ import annotations

import json
import queue
import sys
import threading
import time
from typing import IO

from phoenix_assets.lib.io.lake import Lake
from phoenix_assets.lib.process_lifetime import die_with_parent_from_env
from phoenix_rl.live.journal import JOURNAL_SCHEMAS, OrderJournal

__all__ = ["serve"]


def serve(lake_root: str, commit_every_s: float, source: IO[str], answers: IO[str]) -> None:
    """Commit the rows read from `source` (module doc) until it ends; answer syncs on `answers`."""
    from phoenix_rl.live.node.wal import KEYS, _decode  # the log's own keys and decoding

    journal = OrderJournal(Lake(lake_root))
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:  # keeps the pipe drained while a commit runs: the journal's writes never block
        for line in source:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, name="wal-committer-reader", daemon=True).start()
    pending: dict[str, list[dict]] = {}
    since: float | None = None
    error = ""

    def commit() -> None:
        nonlocal since, error
        try:
            for table, rows in pending.items():
                journal._merge_new(table, JOURNAL_SCHEMAS[table], rows, KEYS[table])
        except Exception as exc:  # reported at the next sync; the rows stay in the log for recovery
            error = error or f"{type(exc).__name__}: {exc}"
        pending.clear()
        since = None

    while True:
        wait = None if since is None else max(0.0, since + commit_every_s - time.monotonic())
        try:
            line = lines.get(timeout=wait)
        except queue.Empty:  # the period ran out
            commit()
            continue
        if line is None:
            commit()
            return
        message = json.loads(line)
        op = message.get("op")
        if op is None:
            pending.setdefault(message["table"], []).append(_decode(message["table"], message["row"]))
            since = since if since is not None else time.monotonic()
            continue
        commit()
        if op == "compact":
            try:
                journal.compact()
            except Exception as exc:
                error = error or f"{type(exc).__name__}: {exc}"
        elif op == "sync":
            answers.write(json.dumps({"ack": message["id"], "error": error}) + "\n")
            answers.flush()
            error = ""


if __name__ == "__main__":
    die_with_parent_from_env()
    serve(sys.argv[1], float(sys.argv[2]), sys.stdin, sys.stdout)
