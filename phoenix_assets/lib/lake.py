"""Delta Lake tables under one lake root (local folder or s3://bucket/prefix).

Every write of a partition is one Delta transaction with a partition predicate: it replaces exactly
that partition, atomically. If the producer fails half-way, nothing is committed and readers keep
seeing the previous version.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import deltalake
import polars as pl
import pyarrow as pa


class PartitionWriteError(RuntimeError):
    """A partition could not be written; the table is unchanged."""


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

        Returns the new table version. Any exception raised by the producer is re-raised as is (with
        the table untouched), so the message that names the bad file reaches the user unwrapped.
        """
        failure: list[BaseException] = []

        def guarded() -> Iterator[pa.RecordBatch]:
            try:
                yield from batches
            except BaseException as exc:  # re-raised below, after delta-rs aborts the write
                failure.append(exc)
                raise

        reader = pa.RecordBatchReader.from_batches(schema, guarded())
        try:
            deltalake.write_deltalake(
                self.table_uri(table),
                reader,
                mode="overwrite",
                partition_by=[partition_column],
                predicate=f"{partition_column} = '{partition_value}'",
                storage_options=self.options(),
                description=description,
            )
        except Exception as exc:
            if failure:
                raise failure[0] from None
            raise PartitionWriteError(
                f"writing {table} partition {partition_column}={partition_value} failed; "
                f"the table is unchanged: {exc}"
            ) from exc
        return self.table(table).version()
