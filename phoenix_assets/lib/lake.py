"""Delta Lake tables under one lake root (local folder or s3://bucket/prefix).

Every write of a partition is one Delta transaction with a partition predicate: it replaces exactly
that partition, atomically. If the producer fails half-way, nothing is committed and readers keep
seeing the previous version.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import deltalake
import polars as pl
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from deltalake.fs import DeltaStorageHandler
from deltalake.transaction import AddAction, create_table_with_add_actions


@dataclass(frozen=True)
class Lake:
    """A lake root plus the storage options deltalake needs to reach it."""

    root: str
    storage_options: dict[str, str] = field(default_factory=dict)

    def table_uri(self, table: str) -> str:
        return f"{self.root.rstrip('/')}/{table}"

    def options(self) -> dict[str, str] | None:
        return dict(self.storage_options) or None

    def exists(self, table: str) -> bool:
        return deltalake.DeltaTable.is_deltatable(self.table_uri(table), storage_options=self.options())

    def table(self, table: str) -> deltalake.DeltaTable:
        return deltalake.DeltaTable(self.table_uri(table), storage_options=self.options())

    def scan(self, table: str) -> pl.LazyFrame:
        """Lazy polars scan of a table (filters on partition columns prune files)."""
        return pl.scan_delta(self.table_uri(table), storage_options=self.options())

    def write_artifact(self, relative_path: str, data: bytes) -> str:
        """Store a file beside the tables (e.g. `artifacts/hmm/<version>.json`); returns its URI.

        Written through pyarrow's filesystem for the root's scheme (local or S3: AWS_* env vars apply).
        """
        fs, path = self._artifact_fs(relative_path)
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        with fs.open_output_stream(path) as out:
            out.write(data)
        return f"{self.root.rstrip('/')}/{relative_path}"

    def read_artifact(self, relative_path: str) -> bytes:
        fs, path = self._artifact_fs(relative_path)
        with fs.open_input_stream(path) as src:
            return bytes(src.read())

    def publish_latest(self, directory: str, path: str, version: str) -> None:
        """Point `<directory>/latest.json` at a stored artifact version (written after the artifact)."""
        self.write_artifact(f"{directory}/latest.json", json.dumps({"path": path, "version": version}).encode())

    def latest(self, directory: str, producer: str) -> tuple[str, str]:
        """(version, path) of the latest artifact under `directory`; names the asset that makes it."""
        try:
            pointer = json.loads(self.read_artifact(f"{directory}/latest.json"))
        except Exception as exc:
            raise FileNotFoundError(f"nothing under {self.root}/{directory}: materialize {producer} first") from exc
        return pointer["version"], pointer["path"]

    def _artifact_fs(self, relative_path: str) -> tuple[pafs.FileSystem, str]:
        fs, base = pafs.FileSystem.from_uri(self.root)
        return fs, f"{base.rstrip('/')}/{relative_path}"

    def read_partition(
        self, table: str, trade_date: dt.date, columns: list[str] | None = None, order_by: str | None = None
    ) -> pl.DataFrame:
        """One trade date of a table. Delta keeps no row order: pass `order_by` when order matters."""
        frame = self.scan(table).filter(pl.col("trade_date") == trade_date)
        if order_by is not None:
            frame = frame.sort(order_by)
        if columns is not None:
            frame = frame.select(columns)
        return frame.collect()

    def replace_partition(
        self,
        table: str,
        schema: pa.Schema,
        batches: Iterable[pa.RecordBatch],
        partition_column: str,
        partition_value: dt.date | str,
        description: str | None = None,
    ) -> int:
        """Stream `batches` into `table`, replacing one partition in a single Delta commit.

        Parquet files are written batch by batch (memory stays flat however long the day: delta-rs's own
        writer buffers ~140 bytes/row, 1.4 GB at 10M MBP-10 rows), then one transaction removes the
        partition's old files and adds the new ones. If the producer raises, the new files are deleted
        and the exception propagates as is, so the message naming the bad file reaches the user; the
        table is unchanged. Returns the new table version.
        """
        uri = self.table_uri(table)
        if "://" not in uri:
            Path(uri).mkdir(parents=True, exist_ok=True)  # object stores need no folders
        files = _PartitionFiles(
            pafs.PyFileSystem(DeltaStorageHandler(uri, self.options())), schema, partition_column, str(partition_value)
        )
        try:
            for batch in batches:
                files.write(batch)
            written = files.close()
        except BaseException:
            files.discard()
            raise
        if self.exists(table):
            self.table(table).create_write_transaction(
                written,
                mode="overwrite",
                schema=schema,
                partition_by=[partition_column],
                partition_filters=[(partition_column, "=", str(partition_value))],
            )
        else:
            create_table_with_add_actions(
                uri,
                deltalake.Schema.from_arrow(schema),
                written,
                mode="error",
                partition_by=[partition_column],
                description=description,
                storage_options=self.options(),
            )
        return self.table(table).version()


class _PartitionFiles:
    """Parquet files of one partition, written batch by batch, rolled every `ROWS_PER_FILE` rows."""

    ROWS_PER_FILE = 4_000_000

    def __init__(self, fs: pafs.FileSystem, schema: pa.Schema, partition_column: str, value: str) -> None:
        self._fs, self._column, self._value = fs, partition_column, value
        self._schema = pa.schema([f for f in schema if f.name != partition_column])  # value lives in the path
        self._done: list[AddAction] = []
        self._open: tuple[str, Any, pq.ParquetWriter] | None = None
        self._rows = 0

    def write(self, batch: pa.RecordBatch) -> None:
        if self._open is None:
            path = f"{self._column}={self._value}/part-{uuid.uuid4()}.zstd.parquet"
            sink = self._fs.open_output_stream(path)
            self._open = (path, sink, pq.ParquetWriter(sink, self._schema, compression="zstd"))
            self._rows = 0
        self._open[2].write_batch(batch.drop_columns([self._column]))
        self._rows += batch.num_rows
        if self._rows >= self.ROWS_PER_FILE:
            self._finish()

    def _finish(self) -> None:
        assert self._open is not None
        path, sink, writer = self._open
        writer.close()
        sink.close()
        self._open = None
        self._done.append(
            AddAction(
                path=path,
                size=int(self._fs.get_file_info(path).size),
                partition_values={self._column: self._value},
                modification_time=int(time.time() * 1000),
                data_change=True,
                stats=json.dumps({"numRecords": self._rows}),
            )
        )

    def close(self) -> list[AddAction]:
        if self._open is not None:
            self._finish()
        return self._done

    def discard(self) -> None:
        """Delete whatever was written: uncommitted files are invisible, but they take space."""
        paths = [a.path for a in self._done] + ([self._open[0]] if self._open else [])
        if self._open is not None:
            with contextlib.suppress(Exception):
                self._open[2].close()
                self._open[1].close()
        for path in paths:
            with contextlib.suppress(Exception):
                self._fs.delete_file(path)
