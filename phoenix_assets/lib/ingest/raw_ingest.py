"""Land one CME trade date of MBP-10 records from DBN files into the `raw_mbp10` Delta table.

The day is streamed file by file, chunk by chunk (bounded memory at 10M records/day), filtered to
the trade-date window, and committed as one Delta transaction that replaces the partition. While
streaming, `IngestStats` keeps the order-dependent quality figures (per-instrument `ts_recv` order,
gaps inside the session, crossed books), which the asset checks report, and `on_batch` sees every
batch (the checks that need every record accumulate there). Decoding and converting run in one thread,
`on_batch` in a second and the Parquet writer in the caller's: all three spend most of their time with
the GIL released, so two cores share them whatever each one's share of the work (`prefetched`). At most
`PREFETCH_BATCHES` wait between stages.
"""

from __future__ import annotations

import datetime as dt
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads

from phoenix_assets.lib import calendar as cal
from phoenix_assets.lib.io.dbn_reader import DbnFileInfo, SymbolResolver, iter_mbp10_arrays, mbp10_batch
from phoenix_assets.lib.io.lake import Lake
from phoenix_assets.lib.schema import F_LAST, RAW_MBP10_SCHEMA, RAW_TABLE, UNDEF_PRICE

PREFETCH_BATCHES = 2  # decoded batches waiting for the Parquet writer (~40 MB each at 65,536 records)


class LandingError(ValueError):
    """The landing folder cannot produce this partition (wrong files, overlaps, nothing there)."""


@dataclass
class IngestStats:
    """Figures gathered in one streaming pass; order-dependent checks read them."""

    trade_date: dt.date
    rows: int = 0
    bytes_read: int = 0
    first_ts_recv: int | None = None
    last_ts_recv: int | None = None
    instruments: set[int] = field(default_factory=set)
    symbols: set[str] = field(default_factory=set)
    rows_per_file: dict[str, int] = field(default_factory=dict)
    out_of_order: int = 0  # records whose ts_recv is earlier than the previous one of their instrument
    max_session_gap_ns: int = 0  # longest silence between records inside continuous trading
    max_session_gap_at: int | None = None
    book_states_in_session: int = 0  # F_LAST records in continuous trading
    crossed_in_session: int = 0  # ... of which crossed or locked
    crossed_pre_open: int = 0
    seconds: float = 0.0
    thread_cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds of the decode, checks and write stages
    _last_ts_by_instrument: dict[int, int] = field(default_factory=dict)
    _last_session_ts: int | None = None

    def file_of(self, record_index: int) -> str:
        """The landing file a record came from (`record_index` counts records across files in order)."""
        end = 0
        for path, rows in self.rows_per_file.items():
            end += rows
            if record_index < end:
                return path
        return "unknown file"

    @property
    def crossed_share_in_session(self) -> float:
        return self.crossed_in_session / self.book_states_in_session if self.book_states_in_session else 0.0

    def update(self, chunk: np.ndarray, session_open_ns: int) -> None:
        ts = chunk["ts_recv"].astype(np.int64)
        n = len(ts)
        if n == 0:
            return
        self.rows += n
        self.first_ts_recv = int(ts[0]) if self.first_ts_recv is None else min(self.first_ts_recv, int(ts[0]))
        self.last_ts_recv = int(ts.max()) if self.last_ts_recv is None else max(self.last_ts_recv, int(ts.max()))
        inst = chunk["instrument_id"].astype(np.int64)
        single = (inst == inst[0]).all()  # the usual chunk: one instrument (no sort, no mask)
        for iid in inst[:1] if single else np.unique(inst):
            own = ts if single else ts[inst == iid]
            prev = self._last_ts_by_instrument.get(int(iid))
            seq = own if prev is None else np.concatenate([[prev], own])
            self.out_of_order += int(np.count_nonzero(np.diff(seq) < 0))
            self._last_ts_by_instrument[int(iid)] = int(own[-1])
            self.instruments.add(int(iid))
        in_session = ts >= session_open_ns
        session_ts = ts[in_session]
        if session_ts.size:
            seq = session_ts if self._last_session_ts is None else np.concatenate([[self._last_session_ts], session_ts])
            if seq.size > 1:
                gaps = np.diff(seq)
                i = int(np.argmax(gaps))
                if gaps[i] > self.max_session_gap_ns:
                    self.max_session_gap_ns, self.max_session_gap_at = int(gaps[i]), int(seq[i])
            self._last_session_ts = int(session_ts[-1])
        last = (chunk["flags"] & F_LAST) != 0
        bid, ask = chunk["bid_px_00"].astype(np.int64), chunk["ask_px_00"].astype(np.int64)
        both = (bid != UNDEF_PRICE) & (ask != UNDEF_PRICE)
        crossed = last & both & (bid >= ask)
        self.book_states_in_session += int(np.count_nonzero(last & in_session))
        self.crossed_in_session += int(np.count_nonzero(crossed & in_session))
        self.crossed_pre_open += int(np.count_nonzero(crossed & ~in_session))


def select_files(
    infos: list[DbnFileInfo], trade_date: dt.date, dataset: str, strict: bool
) -> tuple[list[DbnFileInfo], list[str]]:
    """The MBP-10 files of `dataset` that overlap the trade date, and notes on the files passed over.

    With `strict`, a file of another schema or dataset overlapping the day is an error (the landing
    folder is meant to hold only what `raw_mbp10` ingests); otherwise it is passed over with a note.
    Two MBP-10 files that overlap in time and share a symbol would duplicate records: always an error.
    """
    start, end = cal.trade_date_window(trade_date)
    chosen: list[DbnFileInfo] = []
    notes: list[str] = []
    for info in infos:
        if not info.overlaps(start, end):
            continue
        if info.schema != "mbp-10" or info.dataset != dataset:
            msg = f"{info.path}: schema {info.schema}, dataset {info.dataset} (expected mbp-10, {dataset})"
            if strict:
                raise LandingError(
                    f"partition {trade_date}: the landing folder holds a file raw_mbp10 cannot ingest: {msg}. "
                    "Move it out of the landing folder, or set strict_landing=false to skip such files."
                )
            notes.append(f"skipped {msg}")
            continue
        chosen.append(info)
    chosen.sort(key=lambda i: (i.start_ns, str(i.path)))
    for i, a in enumerate(chosen):
        for b in chosen[i + 1 :]:
            a_end = a.end_ns if a.end_ns is not None else end
            if b.start_ns < a_end and set(a.symbols) & set(b.symbols):
                raise LandingError(
                    f"partition {trade_date}: {a.path} and {b.path} both hold MBP-10 records of "
                    f"{sorted(set(a.symbols) & set(b.symbols))} for overlapping times; keep one of them."
                )
    return chosen, notes


def reject_unreadable(unreadable: list[tuple[Path, str]], trade_date: dt.date) -> None:
    """A file named like DBN that does not decode is an error, not something to skip silently."""
    bad = [reason for path, reason in unreadable if path.name.endswith((".dbn", ".dbn.zst"))]
    if bad:
        raise LandingError(
            f"partition {trade_date}: the landing folder holds unreadable DBN file(s): {'; '.join(bad)}. "
            "Re-download or remove them (or set strict_landing=false to skip them)."
        )


def raw_batches(
    files: list[DbnFileInfo], trade_date: dt.date, chunk_records: int, stats: IngestStats
) -> Iterator[pa.RecordBatch]:
    """Arrow batches of the day's records, in file order; raises if the day ends up empty."""
    start, end = cal.trade_date_window(trade_date)
    session_open = cal.session_open_ns(trade_date)
    t0 = time.perf_counter()
    for info in files:
        resolver = SymbolResolver(info)
        kept_before = stats.rows
        for chunk in iter_mbp10_arrays(info, chunk_records):
            day = _inside(chunk, start, end)
            if len(day) == 0:
                continue
            first_index = stats.rows
            stats.update(day, session_open)
            symbols = resolver.resolve(day["instrument_id"], day["ts_recv"])
            stats.symbols.update(s for s in symbols.unique().to_pylist() if s is not None)
            yield mbp10_batch(day, symbols, trade_date, first_index)
        stats.bytes_read += info.nbytes
        stats.rows_per_file[str(info.path)] = stats.rows - kept_before
    stats.seconds = time.perf_counter() - t0
    if stats.rows == 0:
        names = ", ".join(str(i.path) for i in files) or "none"
        raise LandingError(
            f"partition {trade_date}: no MBP-10 records received in its window "
            f"[{_iso(start)}, {_iso(end)}) (files examined: {names}). "
            "An exchange holiday, or the data for this day has not landed yet."
        )


def _inside(chunk: np.ndarray, start: int, end: int) -> np.ndarray:
    """The chunk's records received in [start, end): a view when they are one run (files are in ts_recv
    order), a copy only otherwise (boolean indexing copies 368-byte records field by field, ~1 s/1M)."""
    ts = chunk["ts_recv"].astype(np.int64)
    inside = (ts >= start) & (ts < end)
    kept = np.flatnonzero(inside)
    if kept.size == len(chunk):
        return chunk
    if kept.size == 0:
        return chunk[:0]
    if kept[-1] - kept[0] + 1 == kept.size:
        return chunk[kept[0] : kept[-1] + 1]
    return chunk[inside]


_DONE = object()


def _put(handoff: queue.Queue[Any], item: Any, stop: threading.Event) -> bool:
    """Put `item`, waiting while the queue is full; False (not put) once `stop` is set."""
    while not stop.is_set():
        try:
            handoff.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _drain(handoff: queue.Queue[Any], worker: threading.Thread) -> None:
    """Empty `handoff` until `worker` (blocked on a full queue, or finishing) has exited."""
    while worker.is_alive():
        try:
            handoff.get(timeout=0.1)
        except queue.Empty:
            continue
    worker.join()


def prefetched(
    batches: Iterator[pa.RecordBatch],
    depth: int = PREFETCH_BATCHES,
    observe: Callable[[pa.RecordBatch], None] | None = None,
    thread_cpu: dict[str, float] | None = None,
) -> Iterator[pa.RecordBatch]:
    """`batches`, produced in a background thread at most `depth` ahead of the consumer; with `observe`, a
    third thread calls it on every batch, in order, also at most `depth` behind the producer.

    Why three stages: decoding (~0.5 CPU-s per 1M records), the record-level checks (~0.2) and the Parquet
    writer (~0.6) each spend most of their time in code that releases the GIL (zstd, numba, numpy, Arrow), so
    on two cores the scheduler balances the three whatever their shares on a given day; two fixed threads
    leave one core idle whenever one side is the heavier. Memory stays bounded: a batch is referenced by at
    most the two queues and the stage working on it.

    An exception in the producer is re-raised here as is (its message names the file), one in `observe`
    likewise; the generator returns only once `observe` has seen every batch. If the consumer stops early
    (its writer failed), the workers are told to stop and are joined before this returns. `thread_cpu`
    receives each worker's CPU seconds (`decode`, `checks`).
    """
    handoff: queue.Queue[Any] = queue.Queue(maxsize=depth)
    observed: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()
    failed: list[BaseException] = []  # the observer's exception
    cpu = thread_cpu if thread_cpu is not None else {}

    def produce() -> None:
        start = time.thread_time()
        try:
            for batch in batches:
                if observe is not None and not _put(observed, batch, stop):
                    return
                if not _put(handoff, batch, stop):
                    return
            if observe is not None:
                _put(observed, _DONE, stop)
            _put(handoff, _DONE, stop)
        except BaseException as exc:  # handed to the consumer, which raises it
            if observe is not None:
                _put(observed, _DONE, stop)
            _put(handoff, exc, stop)
        finally:
            cpu["decode"] = time.thread_time() - start

    def check() -> None:
        assert observe is not None
        start = time.thread_time()
        try:
            while not stop.is_set():
                try:
                    item = observed.get(timeout=0.1)
                except queue.Empty:
                    continue
                if item is _DONE:
                    return
                observe(item)
        except BaseException as exc:  # the consumer raises it
            failed.append(exc)
            stop.set()
        finally:
            cpu["checks"] = time.thread_time() - start

    workers = [threading.Thread(target=produce, name="raw_mbp10-decode", daemon=True)]
    if observe is not None:
        workers.append(threading.Thread(target=check, name="raw_mbp10-checks", daemon=True))
    for worker in workers:
        worker.start()
    try:
        while True:
            try:
                item = handoff.get(timeout=0.1)
            except queue.Empty:
                if failed:
                    raise failed[0] from None
                continue
            if item is _DONE:
                break
            if isinstance(item, BaseException):
                raise item
            yield item
        if len(workers) > 1:
            workers[1].join()
        if failed:
            raise failed[0]
    finally:
        stop.set()
        _drain(handoff, workers[0])
        if len(workers) > 1:
            _drain(observed, workers[1])


def ingest_partition(
    lake: Lake,
    files: list[DbnFileInfo],
    trade_date: dt.date,
    chunk_records: int,
    before_commit: Callable[[pads.Dataset, IngestStats], None] | None = None,
    on_batch: Callable[[pa.RecordBatch], None] | None = None,
) -> tuple[IngestStats, int]:
    """Replace the `raw_mbp10` partition of `trade_date` atomically; returns stats and table version.

    `on_batch` sees every batch, in order, in a thread of its own (it may run behind the writer, never
    behind `before_commit`); `before_commit` sees the staged files and the stream's stats once everything
    is written and observed; if it raises (a blocking check failed) nothing is committed and the previous
    version stays current. `stats.thread_cpu` gets each stage's CPU seconds.
    """
    if not files:
        start, end = cal.trade_date_window(trade_date)
        raise LandingError(
            f"partition {trade_date}: no MBP-10 DBN file in the landing folder covers "
            f"[{_iso(start)}, {_iso(end)}); land the day's file(s) first (or use source=databento)."
        )
    stats = IngestStats(trade_date=trade_date)

    def timed() -> Iterator[pa.RecordBatch]:  # the whole stream, writes included, as before the threads
        t0, cpu0 = time.perf_counter(), time.thread_time()
        yield from prefetched(
            raw_batches(files, trade_date, chunk_records, stats), observe=on_batch, thread_cpu=stats.thread_cpu
        )
        stats.seconds = time.perf_counter() - t0
        stats.thread_cpu["write"] = time.thread_time() - cpu0

    version = lake.replace_partition(
        RAW_TABLE,
        RAW_MBP10_SCHEMA,
        timed(),
        partition_column="trade_date",
        partition_value=trade_date,
        description="Databento MBP-10 records, one partition per CME trade date",
        before_commit=None if before_commit is None else lambda staged: before_commit(staged, stats),
    )
    return stats, version


def _iso(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9, tz=dt.UTC).isoformat()
