"""Delta Lake tables under one lake root (local folder or s3://bucket/prefix).

Every write of a partition is one Delta transaction with a partition predicate: it replaces exactly
that partition, atomically. If the producer fails half-way, nothing is committed and readers keep
seeing the previous version.

Concurrent writers (several runs, processes or machines on one lake). A commit is the creation of
`_delta_log/<version>.json`; delta-rs (>= 1.0) creates it with a put-if-absent (`If-None-Match: *` on
S3, which AWS S3 has honoured since 2024-08, as do MinIO, R2 and moto), so of two writers racing for a
version exactly one wins. Phoenix commits never let delta-rs rebase a lost race on its own (its conflict
check sees two replacements of an empty partition as two blind appends and keeps both): the loser
rebuilds its transaction on the new latest version and commits again (`COMMIT_ATTEMPTS`), so a
partition replaced by two writers at once ends as one of them, whole. On S3, `s3_storage_options`
makes conditional writes explicit and refuses the settings that would be unsafe or are no longer
honoured. Artifacts (models beside the tables) are written with pyarrow's S3 filesystem from the same
storage options.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import random
import re
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import deltalake
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from deltalake.exceptions import CommitFailedError, DeltaError
from deltalake.fs import DeltaStorageHandler
from deltalake.transaction import AddAction, CommitProperties, create_table_with_add_actions

S3_SCHEMES = ("s3://", "s3a://")
COMMIT_ATTEMPTS = 25
T = TypeVar("T")
_CONDITIONAL_PUT_KEYS = ("conditional_put", "aws_conditional_put")


def _truthy(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


def s3_storage_options(options: Mapping[str, str], env: Mapping[str, str]) -> dict[str, str]:
    """Storage options for a lake on S3: conditional writes on, nothing that could lose a commit.

    `conditional_put=etag` (object_store: If-None-Match / If-Match on PutObject) is added unless the
    options or `$AWS_CONDITIONAL_PUT` choose a mode themselves. Refused, naming the setting:
    `AWS_S3_ALLOW_UNSAFE_RENAME` (Phoenix never commits by plain rename), `AWS_S3_LOCKING_PROVIDER`
    (delta-rs >= 1.0 has no DynamoDB locking provider and would ignore it) and `conditional_put=disabled`
    (delta-rs could not commit at all).
    """
    merged = dict(options)
    given = {k.lower(): v for k, v in merged.items()}

    def setting(name: str) -> tuple[str, str] | None:
        if name.lower() in given:
            return f"storage option {name}", given[name.lower()]
        if name.upper() in env:
            return f"${name.upper()}", env[name.upper()]
        return None

    unsafe = setting("AWS_S3_ALLOW_UNSAFE_RENAME")
    if unsafe and _truthy(unsafe[1]):
        raise ValueError(
            f"lake on S3: {unsafe[0]}={unsafe[1]} is refused: an unsafe rename lets two writers overwrite each "
            "other's Delta commit. S3 commits use conditional writes (If-None-Match); remove the setting."
        )
    locking = setting("AWS_S3_LOCKING_PROVIDER")
    if locking:
        raise ValueError(
            f"lake on S3: {locking[0]}={locking[1]}: delta-rs >= 1.0 has no DynamoDB locking provider (it would be "
            "ignored); commits are made safe by S3 conditional writes (If-None-Match). Remove the setting."
        )
    chosen = next((s for s in (setting(k) for k in _CONDITIONAL_PUT_KEYS) if s), None)
    if chosen is None:
        merged["conditional_put"] = "etag"
    elif chosen[1].strip().lower() == "disabled":
        raise ValueError(
            f"lake on S3: {chosen[0]}=disabled: Delta commits need conditional writes (put-if-absent); "
            "use 'etag' (AWS S3, MinIO, R2) or remove the setting."
        )
    return merged


# deltalake/object_store storage option (lower case) -> pyarrow.fs.S3FileSystem argument, for artifacts
_S3_ARTIFACT_ARGS = {
    **dict.fromkeys(("aws_endpoint_url", "aws_endpoint", "endpoint_url", "endpoint"), "endpoint_override"),
    **dict.fromkeys(("aws_region", "aws_default_region", "region"), "region"),
    **dict.fromkeys(("aws_access_key_id", "access_key_id"), "access_key"),
    **dict.fromkeys(("aws_secret_access_key", "secret_access_key"), "secret_key"),
    **dict.fromkeys(("aws_session_token", "aws_token", "session_token", "token"), "session_token"),
}


OBJECT_STORE_SCHEMES = ("s3://", "s3a://", "gs://", "az://", "abfss://")
_URI_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def normalize_lake_root(root: str, source: str) -> str:
    """A lake root as deltalake needs it: `scheme://bucket[/prefix]` or an absolute local path.

    Refuses what would otherwise silently become a local folder (`s3:/bucket`, `s3:bucket`) or a root
    with no bucket (`s3://`); `source` names where the value came from (e.g. PHOENIX_LAKE_URI).
    """
    value = root.strip()
    if value.startswith("file://"):
        value = value.removeprefix("file://")
    elif "://" in value:
        scheme, _, rest = value.partition("://")
        if f"{scheme}://" not in OBJECT_STORE_SCHEMES:
            raise ValueError(
                f"{source}={root!r}: unsupported scheme {scheme!r}; use a local path, file://, "
                f"or one of {', '.join(OBJECT_STORE_SCHEMES)}"
            )
        if not rest.strip("/").split("/")[0]:
            raise ValueError(f"{source}={root!r} names no bucket; use e.g. {scheme}://my-bucket/phoenix")
        return value.rstrip("/")
    elif _URI_SCHEME.match(value):
        raise ValueError(
            f"{source}={root!r} looks like a URI with a malformed scheme (expected 'scheme://', "
            f"e.g. s3://bucket/prefix); refusing to write to a local folder named {value.split('/')[0]!r}"
        )
    if not value:
        raise ValueError(f"{source} is empty; give a local folder or s3://bucket/prefix")
    return str(Path(value).expanduser().resolve())


def _lost_race(exc: DeltaError) -> bool:
    """The commit failed because another writer committed first (the version or the table now exists)."""
    return isinstance(exc, CommitFailedError) or "already exists" in str(exc)


def retry_lost_races(action: Callable[[], T], attempts: int = COMMIT_ATTEMPTS) -> T:
    """`action()`, again after a jittered back-off while it loses a commit race to another writer (a
    conflicting concurrent commit, or a table created by someone else first); any other error at once.
    For idempotent writes only, e.g. a merge that inserts the keys not stored yet."""
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except DeltaError as exc:
            if not _lost_race(exc) or attempt == attempts:
                raise
            time.sleep(random.uniform(0.0, min(2.0, 0.02 * 2**attempt)))
    raise AssertionError("unreachable")


class MissingUpstreamError(RuntimeError):
    """An asset's input partition does not exist (the message names the asset and partition to materialize)."""


@dataclass(frozen=True)
class Lake:
    """A lake root plus the storage options deltalake needs to reach it."""

    root: str
    storage_options: dict[str, str] = field(default_factory=dict)

    def table_uri(self, table: str) -> str:
        return f"{self.root.rstrip('/')}/{table}"

    def options(self) -> dict[str, str] | None:
        """Storage options for deltalake/polars/object_store (on S3: see `s3_storage_options`)."""
        if self.root.startswith(S3_SCHEMES):
            return s3_storage_options(self.storage_options, os.environ)
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

        Written through pyarrow's filesystem for the root's scheme; on S3 with the lake's storage options
        (endpoint, region, credentials; the usual AWS_* environment for what they leave out).
        """
        fs, path = self._artifact_fs(relative_path)
        if isinstance(fs, pafs.LocalFileSystem):
            fs.create_dir(path.rsplit("/", 1)[0], recursive=True)  # object stores need no folders
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
        if not self.root.startswith(S3_SCHEMES):
            fs, base = pafs.FileSystem.from_uri(self.root)
            return fs, f"{base.rstrip('/')}/{relative_path}"
        args = {
            _S3_ARTIFACT_ARGS[k.lower()]: v for k, v in (self.options() or {}).items() if k.lower() in _S3_ARTIFACT_ARGS
        }
        endpoint = args.pop("endpoint_override", None) or os.environ.get("AWS_ENDPOINT_URL_S3")
        endpoint = endpoint or os.environ.get("AWS_ENDPOINT_URL")  # as object_store reads it for the tables
        if endpoint:
            args["scheme"], args["endpoint_override"] = (
                endpoint.split("://", 1) if "://" in endpoint else ("https", endpoint)
            )
        base = self.root.split("://", 1)[1].rstrip("/")
        return pafs.S3FileSystem(**args), f"{base}/{relative_path}"

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

    def require_partition(self, table: str, trade_date: dt.date, needed_by: str) -> None:
        """Fail before computing when an upstream partition is missing, instead of writing 0 rows that pass checks."""
        missing = not self.exists(table) or (
            self.scan(table).filter(pl.col("trade_date") == trade_date).select(pl.len()).collect().item() == 0
        )
        if missing:
            raise MissingUpstreamError(
                f"{needed_by} {trade_date}: upstream {table} has no partition {trade_date} in {self.table_uri(table)}; "
                f"materialize {table} for {trade_date} first"
            )

    def replace_partition(
        self,
        table: str,
        schema: pa.Schema,
        batches: Iterable[pa.RecordBatch],
        partition_column: str,
        partition_value: dt.date | str,
        description: str | None = None,
        before_commit: Callable[[pads.Dataset], None] | None = None,
    ) -> int:
        """Stream `batches` into `table`, replacing one partition in a single Delta commit.

        Parquet files are written batch by batch (memory stays flat however long the day: delta-rs's own
        writer buffers ~140 bytes/row, 1.4 GB at 10M MBP-10 rows), then one transaction removes the
        partition's old files and adds the new ones. `before_commit` sees the staged files as a pyarrow
        dataset (no partition column) and may raise to refuse them (blocking quality checks). If the
        producer or the gate raises, the new files are deleted and the exception propagates as is, so the
        message naming the bad file reaches the user; the table is unchanged. Files left by a writer that
        was killed are removed first (`remove_orphans`). Returns the version this commit created.
        """
        uri = self.table_uri(table)
        if "://" not in uri:
            Path(uri).mkdir(parents=True, exist_ok=True)  # object stores need no folders
        fs = pafs.PyFileSystem(DeltaStorageHandler(uri, self.options()))
        self.remove_orphans(table, fs)
        staging = self._artifact_fs(f"{table}/{_STAGING_DIR}")
        files = _PartitionFiles(fs, schema, partition_column, str(partition_value), staging)
        try:
            for batch in batches:
                files.write(batch)
            written = files.close()
            if before_commit is not None:
                before_commit(pads.dataset([a.path for a in written], schema=files.schema, filesystem=fs))
        except BaseException:
            files.discard()
            raise
        # a failed commit may still have landed (lost reply): its files stay listed for `remove_orphans`
        version = self._commit(table, schema, written, partition_column, str(partition_value), description)
        files.committed()
        return version

    def committed_paths(self, table: str) -> set[str]:
        """Paths (relative to the table) of the files the current version references."""
        if not self.exists(table):
            return set()
        return set(pa.table(self.table(table).get_add_actions()).column("path").to_pylist())

    def remove_orphans(self, table: str, fs: pafs.FileSystem | None = None) -> list[str]:
        """Delete the uncommitted files of writers that died (killed step, lost machine); their paths.

        Each writer lists its files in `_phoenix_staging/<id>.json` before creating them and deletes the
        list once committed or discarded, so a list that outlives its writer names exactly the files no
        Delta version will ever reference (Delta readers and vacuum ignore `_` folders; a lite vacuum
        never sees never-committed files). A writer counts as dead when its process is gone (same host and
        pid namespace) or its list is older than `STAGING_MAX_AGE_S`. Files the current version references
        (a writer killed between its commit and deleting its list) are kept.
        """
        fs = fs or pafs.PyFileSystem(DeltaStorageHandler(self.table_uri(table), self.options()))
        staging, base = self._artifact_fs(f"{table}/{_STAGING_DIR}")
        try:
            manifests = staging.get_file_info(pafs.FileSelector(base, allow_not_found=True))
        except OSError:
            return []
        removed: list[str] = []
        current: set[str] | None = None
        for info in manifests:
            if not info.path.endswith(".json"):
                continue
            try:
                with staging.open_input_stream(info.path) as src:
                    manifest = json.loads(src.read())
            except (OSError, ValueError):
                continue  # being written right now, or gone already
            if not _writer_is_dead(manifest):
                continue
            if current is None:
                current = self.committed_paths(table)
            for path in manifest.get("files", []):
                if path not in current:
                    with contextlib.suppress(OSError):
                        fs.delete_file(path)
                        removed.append(path)
            with contextlib.suppress(OSError):
                staging.delete_file(info.path)
        return removed

    def _commit(
        self, table: str, schema: pa.Schema, written: list[AddAction], column: str, value: str, description: str | None
    ) -> int:
        """One commit on the latest version: the partition's current files out, `written` in; its version.

        `max_commit_retries=0`: when another writer took the next version first (a table created by two
        writers at once included), the commit fails instead of being rebased by delta-rs, and is rebuilt
        here on the new latest version, whose files in the partition are then the ones removed, after a
        jittered back-off. Never rebased, a commit made on version v is version v + 1.
        """
        no_rebase = CommitProperties(max_commit_retries=0)
        for attempt in range(1, COMMIT_ATTEMPTS + 1):
            try:
                if self.exists(table):
                    handle = self.table(table)
                    read_version = handle.version()
                    handle.create_write_transaction(
                        written,
                        mode="overwrite",
                        schema=schema,
                        partition_by=[column],
                        partition_filters=[(column, "=", value)],
                        commit_properties=no_rebase,
                    )
                    return read_version + 1
                create_table_with_add_actions(
                    self.table_uri(table),
                    deltalake.Schema.from_arrow(schema),
                    written,
                    mode="error",
                    partition_by=[column],
                    description=description,
                    storage_options=self.options(),
                    commit_properties=no_rebase,
                )
                return 0
            except DeltaError as exc:
                if not _lost_race(exc) or attempt == COMMIT_ATTEMPTS:
                    raise
                time.sleep(random.uniform(0.0, min(2.0, 0.02 * 2**attempt)))
        raise AssertionError("unreachable")


_STAGING_DIR = "_phoenix_staging"
STAGING_MAX_AGE_S = 6 * 3600  # a writer whose liveness cannot be seen (another host) is dead after this


def _writer_identity() -> str:
    """Host and pid namespace: a pid means the same process only when both match."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = "?"
    return f"{os.uname().nodename}/{namespace}"


def _writer_is_dead(manifest: Mapping[str, Any]) -> bool:
    if time.time() - float(manifest.get("started", 0)) > STAGING_MAX_AGE_S:
        return True
    if manifest.get("writer") != _writer_identity():
        return False  # another host: only the age tells
    try:
        os.kill(int(manifest["pid"]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, KeyError, ValueError):
        return False
    return False


PARQUET_TRIAL_ROWS = 16_384  # rows of the first batch encoded each candidate way (~0.06 CPU-s on raw_mbp10)
PARQUET_TRIAL_MIN_ROWS = 4_096  # below this the choice saves nothing: pyarrow's defaults (dictionary everywhere)
_TRIAL_ENCODINGS = ("BYTE_STREAM_SPLIT", "DELTA_BINARY_PACKED", "PLAIN", "DICTIONARY")  # ties go to the first


def _encodings_for(kind: pa.DataType) -> tuple[str, ...]:
    """The encodings worth a trial for a column of `kind`; none for nested and other types (pyarrow's defaults)."""
    if pa.types.is_integer(kind) or (pa.types.is_temporal(kind) and not pa.types.is_interval(kind)):
        return _TRIAL_ENCODINGS  # physical INT32/INT64
    if pa.types.is_float32(kind) or pa.types.is_float64(kind):
        return ("BYTE_STREAM_SPLIT", "PLAIN", "DICTIONARY")
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_binary(kind):
        return ("PLAIN", "DICTIONARY")
    return ()


def _leaves(kind: pa.DataType) -> int:
    """How many Parquet leaf columns an Arrow field of `kind` becomes."""
    if pa.types.is_struct(kind):
        return sum(_leaves(kind.field(i).type) for i in range(kind.num_fields))
    if pa.types.is_map(kind):
        return _leaves(kind.key_type) + _leaves(kind.item_type)
    lists = (pa.types.is_list, pa.types.is_large_list, pa.types.is_fixed_size_list, pa.types.is_list_view)
    if any(is_list(kind) for is_list in (*lists, pa.types.is_large_list_view)):
        return _leaves(kind.value_type)
    return 1


def _non_decreasing(values: pa.Array) -> bool:
    """True when the values never decrease (nulls skipped): a sort key or a constant, whose row groups' min/max
    statistics can prune; False for types without an order."""
    if len(values) < 2:
        return True
    try:
        return bool(pc.all(pc.greater_equal(values[1:], values[:-1])).as_py() is not False)
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid, pa.ArrowTypeError):
        return False


def _trial_sizes(sample: pa.RecordBatch, encoding: str) -> dict[str, int]:
    """Compressed bytes of each leaf column (by path) of `sample` written with `encoding` (zstd)."""
    trial = pa.BufferOutputStream()
    pq.write_table(
        pa.Table.from_batches([sample]),
        trial,
        compression="zstd",
        use_dictionary=encoding == "DICTIONARY",
        column_encoding=None if encoding == "DICTIONARY" else dict.fromkeys(sample.schema.names, encoding),
        write_statistics=False,
        store_schema=False,
    )
    group = pq.read_metadata(pa.BufferReader(trial.getvalue())).row_group(0)
    return {group.column(i).path_in_schema: group.column(i).total_compressed_size for i in range(group.num_columns)}


def parquet_options(sample: pa.RecordBatch) -> dict[str, Any]:
    """`pq.ParquetWriter` options for batches like `sample`: zstd, and per column the encoding that stores
    `sample` (its first `PARQUET_TRIAL_ROWS` rows) in the fewest bytes, statistics only where they can prune.

    Why: pyarrow's default (a dictionary on every column) hashes every value of every column, and wastes the
    work where most values are distinct (timestamps, sequence numbers). Encoding the sample each candidate
    way once (byte-stream split, delta, plain, dictionary) and keeping the smallest is also the cheapest to
    write in practice, since zstd's time follows the bytes it is given: on `raw_mbp10` the level prices keep
    their dictionary, sizes and order counts go byte-stream split, timestamps, `sequence` and `record_index`
    delta (the writer's CPU -30%, files -48%). Row-group min/max statistics are kept on the columns that are
    non-decreasing in the sample (sort keys such as `ts_recv`, `record_index`, `ts`; constants such as
    `instrument_id`, `symbol`), on every temporal column (readers filter on those) and on nested columns; on
    the others every row group spans about the same range, so they would prune nothing.
    """
    options: dict[str, Any] = {"compression": "zstd"}
    if sample.num_rows < PARQUET_TRIAL_MIN_ROWS:
        return options
    sample = sample.slice(0, PARQUET_TRIAL_ROWS)
    fields = list(sample.schema)
    paths = list(_trial_sizes(sample, "DICTIONARY"))  # every leaf, in schema order
    leaves: dict[str, list[str]] = {}
    for f in fields:
        leaves[f.name], paths = paths[: _leaves(f.type)], paths[_leaves(f.type) :]
    sizes: dict[str, dict[str, int]] = {}
    for encoding in _TRIAL_ENCODINGS:
        names = [f.name for f in fields if encoding in _encodings_for(f.type)]
        if names:
            for name, size in _trial_sizes(sample.select(names), encoding).items():
                sizes.setdefault(name, {})[encoding] = size
    chosen = {n: min(by, key=lambda e: (by[e], _TRIAL_ENCODINGS.index(e))) for n, by in sizes.items()}
    encodings = {name: e for name, e in chosen.items() if e != "DICTIONARY"}
    options["use_dictionary"] = [p for f in fields if f.name not in encodings for p in leaves[f.name]]
    options["column_encoding"] = encodings or None
    options["write_statistics"] = [
        p
        for f in fields
        if f.name not in chosen or pa.types.is_temporal(f.type) or _non_decreasing(sample.column(f.name))
        for p in leaves[f.name]
    ]
    return options


class _PartitionFiles:
    """Parquet files of one partition, written batch by batch, rolled every `ROWS_PER_FILE` rows.

    Every file is listed in a staging manifest before it is created (see `Lake.remove_orphans`). The
    columns' encodings are chosen once, from the first batch (`parquet_options`).
    """

    ROWS_PER_FILE = 4_000_000

    def __init__(
        self,
        fs: pafs.FileSystem,
        schema: pa.Schema,
        partition_column: str,
        value: str,
        staging: tuple[pafs.FileSystem, str],
    ) -> None:
        self._fs, self._column, self._value = fs, partition_column, value
        self._staging_fs, staging_dir = staging
        self.schema = pa.schema([f for f in schema if f.name != partition_column])  # value lives in the path
        self._done: list[AddAction] = []
        self._open: tuple[str, Any, pq.ParquetWriter] | None = None
        self._options: dict[str, Any] | None = None
        self._rows = 0
        self._manifest = f"{staging_dir}/{uuid.uuid4()}.json"
        self._started = time.time()

    def _list(self, paths: list[str]) -> None:
        record = {"files": paths, "pid": os.getpid(), "writer": _writer_identity(), "started": self._started}
        if isinstance(self._staging_fs, pafs.LocalFileSystem):
            self._staging_fs.create_dir(self._manifest.rsplit("/", 1)[0], recursive=True)
        with self._staging_fs.open_output_stream(self._manifest) as out:
            out.write(json.dumps(record).encode())

    def write(self, batch: pa.RecordBatch) -> None:
        own = batch.drop_columns([self._column])
        if self._options is None:
            self._options = parquet_options(own)
        if self._open is None:
            path = f"{self._column}={self._value}/part-{uuid.uuid4()}.zstd.parquet"
            self._list([a.path for a in self._done] + [path])
            sink = self._fs.open_output_stream(path)
            self._open = (path, sink, pq.ParquetWriter(sink, self.schema, **self._options))
            self._rows = 0
        self._open[2].write_batch(own)
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

    def committed(self) -> None:
        """The files are the table's now: the staging list has done its job."""
        with contextlib.suppress(Exception):
            self._staging_fs.delete_file(self._manifest)

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
        with contextlib.suppress(Exception):
            self._staging_fs.delete_file(self._manifest)
