"""The ingest's three stages (decode, checks, write; issue 26): every batch reaches the writer and the checks
in order, errors keep their messages, and no thread outlives the stream."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pytest

from phoenix_assets.lib.ingest import raw_ingest
from phoenix_assets.lib.ingest.raw_ingest import prefetched


def _batches(n: int, fail_at: int | None = None) -> Iterator[pa.RecordBatch]:
    for i in range(n):
        if i == fail_at:
            raise ValueError(f"landing/bad.dbn: corrupt record #{i}")
        yield pa.record_batch({"i": pa.array(np.full(3, i))})


def _stage_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("raw_mbp10-")]


def test_writer_and_checks_see_every_batch_in_order_before_the_stream_ends() -> None:
    seen: list[int] = []

    def slow_check(batch: pa.RecordBatch) -> None:  # slower than the writer: the stream must wait for it
        time.sleep(0.01)
        seen.append(batch.column(0)[0].as_py())

    cpu: dict[str, float] = {}
    written = [b.column(0)[0].as_py() for b in prefetched(_batches(30), depth=2, observe=slow_check, thread_cpu=cpu)]
    assert written == seen == list(range(30))
    assert set(cpu) == {"decode", "checks"} and not _stage_threads()


def test_without_checks_it_is_a_plain_prefetch() -> None:
    assert [b.column(0)[0].as_py() for b in prefetched(_batches(5))] == list(range(5))
    assert not _stage_threads()


def test_a_decode_error_reaches_the_writer_with_its_message() -> None:
    seen: list[int] = []
    with pytest.raises(ValueError, match=r"landing/bad\.dbn: corrupt record #7"):
        for _ in prefetched(_batches(20, fail_at=7), observe=lambda b: seen.append(b.num_rows)):
            pass
    assert len(seen) <= 7 and not _stage_threads()


def test_a_check_error_stops_the_stream_and_is_raised() -> None:
    def check(batch: pa.RecordBatch) -> None:
        if batch.column(0)[0].as_py() == 4:
            raise RuntimeError("check failed on batch 4")

    written = []
    with pytest.raises(RuntimeError, match="check failed on batch 4"):
        for batch in prefetched(_batches(1_000), depth=2, observe=check):
            written.append(batch)
    assert len(written) < 1_000 and not _stage_threads()


def test_a_writer_that_stops_early_stops_both_workers() -> None:
    stream = prefetched(_batches(1_000), depth=2, observe=lambda b: None)
    next(stream)
    stream.close()
    assert not _stage_threads()


def test_memory_stays_bounded_by_the_queues(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stalled checker holds the producer back: at most the queues' batches are ever decoded ahead."""
    produced: list[int] = []

    def counted() -> Iterator[pa.RecordBatch]:
        for batch in _batches(100):
            produced.append(1)
            yield batch

    release = threading.Event()
    stream = prefetched(counted(), depth=2, observe=lambda b: release.wait(5))
    next(stream)
    time.sleep(0.3)
    assert len(produced) <= 2 + 2 + 2  # both queues, plus the batch each worker holds
    release.set()
    assert sum(1 for _ in stream) == 99
    assert raw_ingest.PREFETCH_BATCHES == 2
