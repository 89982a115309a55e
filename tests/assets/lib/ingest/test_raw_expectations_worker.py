"""great-expectations runs in a worker process that the first `ExpectationSummary` starts (issue 26: its ~2.5 s
import overlaps the day's streaming). A worker that fails, dies or hangs is a clear error, never a hang or a
pass; the next summary gets a new worker; the gate then commits nothing. Real worker processes, no mocks of
great-expectations."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from phoenix_assets.defs.ingest.checks import raw_gate
from phoenix_assets.defs.resources import QualityThresholds
from phoenix_assets.lib.ingest import raw_quality as q
from phoenix_assets.lib.ingest.raw_ingest import ingest_partition, select_files
from phoenix_assets.lib.io.dbn_reader import scan_dbn_files
from phoenix_assets.lib.io.lake import Lake
from phoenix_assets.lib.schema import RAW_COLUMNS, RAW_TABLE
from tests.assets.lib.ingest.test_raw_ingest import ESH4_DAY
from tests.conftest import ESH4_MBP10

BROKEN_SUITE = (*q.SUITE, ("expect_no_such_expectation", {}))


def _batch(depth: list[int]) -> pa.RecordBatch:
    rtype = pa.array([10] * len(depth), type=pa.uint8())
    return pa.record_batch({"depth": pa.array(depth, type=pa.uint8()), "rtype": rtype})


@pytest.fixture(autouse=True)
def own_worker() -> Iterator[None]:
    """Each test starts without a worker and leaves none behind (the others then start a good one)."""
    q.stop_worker()
    yield
    q.stop_worker()


def test_one_worker_serves_every_summary() -> None:
    summary = q.ExpectationSummary()
    worker = q._shared
    assert worker is not None and worker.alive()  # loading while the day would stream
    summary.update(_batch([0, 3, 12, 12, 9]))
    outcome = summary.validate(["depth", "rtype"])
    assert outcome.metadata["unexpected_counts"]["expect_column_values_to_be_between(depth)"] == 2
    assert "expect_column_values_to_be_between(depth)" in outcome.metadata["failed"]
    assert "expect_table_columns_to_match_ordered_list(table)" in outcome.metadata["failed"]  # 2 of the columns
    assert outcome.metadata["expectations"] == len(q.SUITE) == len(q._expectation_suite())
    other = q.ExpectationSummary()
    other.update(_batch([0, 3, 12, 12, 9]))
    assert other.validate(["depth", "rtype"]).metadata == outcome.metadata
    assert q._shared is worker and worker.alive()


def test_a_worker_that_fails_to_build_the_suite_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(q, "SUITE", BROKEN_SUITE)
    summary = q.ExpectationSummary()
    summary.update(_batch([1]))
    with pytest.raises(RuntimeError, match=r"great-expectations worker failed: AttributeError: .*ExpectNoSuch"):
        summary.validate(["depth", "rtype"])
    assert q._shared is None  # dropped: the next summary starts a new one


def test_a_worker_that_dies_mid_request_is_a_clear_error_and_is_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    dies = [sys.executable, "-c", "import sys; sys.stdin.buffer.read(8); sys.exit(3)"]
    monkeypatch.setattr(q._Worker, "command", lambda self: dies)
    summary = q.ExpectationSummary()
    summary.update(_batch([1]))
    with pytest.raises(RuntimeError, match=r"great-expectations worker failed: no reply, exit code 3"):
        summary.validate(["depth", "rtype"])
    monkeypatch.undo()
    assert q.ExpectationSummary().validate(RAW_COLUMNS).metadata["expectations"] == len(q.SUITE)


def test_a_dead_worker_is_replaced_before_the_request() -> None:
    q.ExpectationSummary()
    assert q._shared is not None
    q._shared.proc.kill()
    q._shared.proc.wait()
    summary = q.ExpectationSummary()
    summary.update(_batch([1]))
    failed = summary.validate(["depth", "rtype"]).metadata["failed"]  # the columns the batch lacks fail
    assert (
        "expect_column_values_to_be_between(flags)" in failed
        and "expect_column_values_to_be_between(depth)" not in failed
    )


def test_a_hung_worker_times_out_and_is_killed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(q, "GE_TIMEOUT_S", 1.0)
    monkeypatch.setattr(q._Worker, "command", lambda self: [sys.executable, "-c", "import time; time.sleep(120)"])
    summary = q.ExpectationSummary()
    worker = q._shared
    assert worker is not None
    with pytest.raises(TimeoutError, match=r"did not answer within 1 s"):
        summary.validate(RAW_COLUMNS)
    assert worker.proc.returncode is not None and q._shared is None  # killed, reaped, dropped


def test_the_gate_commits_nothing_when_the_worker_fails(
    lake: Lake, landing: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (landing / ESH4_MBP10.name).write_bytes(ESH4_MBP10.read_bytes())
    infos, _ = scan_dbn_files(landing)
    files, _ = select_files(infos, ESH4_DAY, "GLBX.MDP3", strict=True)
    monkeypatch.setattr(q, "SUITE", BROKEN_SUITE)
    gate = raw_gate(ESH4_DAY, QualityThresholds(), {})
    try:
        with pytest.raises(RuntimeError, match="great-expectations worker failed"):
            ingest_partition(lake, files, ESH4_DAY, 65_536, before_commit=gate, on_batch=gate.observe)
    finally:
        gate.close()
    assert not lake.exists(RAW_TABLE)
