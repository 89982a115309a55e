"""Issue 13 item 5: files of a writer killed mid-partition are removed, a live writer's are not."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa

from phoenix_assets.lib.io.lake import Lake
from tests.conftest import REPO

SCHEMA = pa.schema([("x", pa.int64()), ("trade_date", pa.string())])
DAY = "2024-01-02"

WRITER = textwrap.dedent(
    """
    import sys, time
    import pyarrow as pa
    from phoenix_assets.lib.io import lake as lk
    lk._PartitionFiles.ROWS_PER_FILE = 10  # roll a file per batch: finished files land on disk
    schema = pa.schema([("x", pa.int64()), ("trade_date", pa.string())])
    def batches():
        for i in range(3):
            yield pa.record_batch([pa.array(range(10)), pa.array(["2024-01-02"] * 10)], schema=schema)
        print("written", flush=True)
        time.sleep(600)  # the producer hangs: the test kills or keeps this process
    lk.Lake(sys.argv[1]).replace_partition("t", schema, batches(), "trade_date", "2024-01-02")
    """
)


def _batch(n: int) -> pa.RecordBatch:
    return pa.record_batch([pa.array(range(n)), pa.array([DAY] * n)], schema=SCHEMA)


def _parquet(lake: Lake) -> set[str]:
    return {p.relative_to(lake.table_uri("t")).as_posix() for p in Path(lake.table_uri("t")).rglob("*.parquet")}


def _start_writer(lake: Lake) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", WRITER, lake.root], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "written"
    return proc


def test_killed_writer_leaves_files_that_the_next_write_removes(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path / "lake"))
    lake.replace_partition("t", SCHEMA, [_batch(5)], "trade_date", DAY)
    committed = _parquet(lake)
    writer = _start_writer(lake)
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    orphans = _parquet(lake) - committed
    assert len(orphans) >= 2  # the killed writer's finished files are on disk, in the partition folder
    assert lake.table("t").vacuum(dry_run=True) == []  # a plain vacuum never sees never-committed files
    version = lake.replace_partition("t", SCHEMA, [_batch(7)], "trade_date", DAY)
    assert version == 1 and lake.table("t").to_pyarrow_table().num_rows == 7
    assert not (_parquet(lake) - committed - lake.committed_paths("t"))  # orphans gone
    assert not list(Path(lake.table_uri("t"), "_phoenix_staging").glob("*.json"))


def test_a_live_writers_files_are_left_alone(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path / "lake"))
    lake.replace_partition("t", SCHEMA, [_batch(5)], "trade_date", DAY)
    writer = _start_writer(lake)
    try:
        in_flight = _parquet(lake) - lake.committed_paths("t")
        assert in_flight and lake.remove_orphans("t") == []
        assert in_flight <= _parquet(lake)
    finally:
        writer.kill()
        writer.wait()
    assert set(lake.remove_orphans("t")) >= in_flight  # dead now: its files go
    assert _parquet(lake) == lake.committed_paths("t")
