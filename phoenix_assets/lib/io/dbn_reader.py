"""Read Databento DBN files (.dbn or .dbn.zst, DBN v1-v3) in bounded-memory chunks.

Files are recognised by their DBN metadata (dataset, schema, time range), never by their names.
Decoding goes straight to NumPy (`DBNStore.to_ndarray(count=...)`), then to Arrow batches in the
`raw_mbp10` schema; `to_df()` is ~15x slower and is used only as the reference in tests.
"""

from __future__ import annotations

import datetime as dt
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import databento as db
import numpy as np
import pyarrow as pa
from databento.common.error import BentoWarning
from databento.common.symbology import InstrumentMap

from phoenix_assets.lib.schema import (
    LEVEL_FIELDS,
    RAW_MBP10_SCHEMA,
    RECORD_LENGTH_WORDS,
    RTYPE_MBP10,
    UNDEF_PRICE,
    level_columns,
)

UNDEF_TIMESTAMP = 2**64 - 1
VALID_ACTIONS = np.array([b"A", b"C", b"M", b"R", b"T", b"F", b"N"], dtype="S1")
VALID_SIDES = np.array([b"A", b"B", b"N"], dtype="S1")


class DbnFileError(ValueError):
    """A DBN file is unreadable, truncated, corrupt or not what it claims to be."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path


@dataclass(frozen=True)
class DbnFileInfo:
    """What a DBN file's metadata says it holds."""

    path: Path
    dataset: str
    schema: str
    start_ns: int
    end_ns: int | None  # None: the metadata leaves the end open
    symbols: tuple[str, ...]
    stype_in: str
    version: int
    nbytes: int

    def overlaps(self, start_ns: int, end_ns: int) -> bool:
        file_end = self.end_ns if self.end_ns is not None else UNDEF_TIMESTAMP
        return self.start_ns < end_ns and start_ns < file_end


def _open(path: Path) -> db.DBNStore:
    try:
        return db.DBNStore.from_file(path)
    except Exception as exc:  # databento raises ValueError/BentoError/zstd errors
        raise DbnFileError(path, f"not a readable DBN file ({type(exc).__name__}: {exc})") from exc


def inspect_dbn(path: Path) -> DbnFileInfo:
    """Read only the metadata header of a DBN file."""
    store = _open(path)
    meta = store.metadata
    end = meta.end if meta.end not in (None, UNDEF_TIMESTAMP) else None
    return DbnFileInfo(
        path=path,
        dataset=str(meta.dataset),
        schema=str(store.schema) if store.schema is not None else "mixed",
        start_ns=int(meta.start),
        end_ns=int(end) if end is not None else None,
        symbols=tuple(meta.symbols),
        stype_in=str(meta.stype_in) if meta.stype_in is not None else "mixed",
        version=int(meta.version),
        nbytes=path.stat().st_size,
    )


def scan_dbn_files(folder: Path) -> tuple[list[DbnFileInfo], list[tuple[Path, str]]]:
    """All DBN files under `folder` (recursively), and the files skipped with the reason why."""
    infos: list[DbnFileInfo] = []
    skipped: list[tuple[Path, str]] = []
    if not folder.exists():
        return infos, skipped
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if path.name.startswith(".") or path.name.endswith((".tmp", ".part")):
            continue
        try:
            infos.append(inspect_dbn(path))
        except DbnFileError as exc:
            skipped.append((path, str(exc)))
    return infos, skipped


def iter_mbp10_arrays(info: DbnFileInfo, chunk_records: int) -> Iterator[np.ndarray]:
    """Yield the file's MBP-10 records as structured arrays of at most `chunk_records` rows.

    Raises DbnFileError naming the file on a truncated stream, a corrupt zstd frame, a record of
    another type, or a record received outside the time range the file's metadata declares.
    """
    if info.schema != "mbp-10":
        raise DbnFileError(info.path, f"schema is {info.schema}, expected mbp-10")
    store = _open(info.path)
    offset = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error", BentoWarning)
        try:
            for chunk in store.to_ndarray(count=chunk_records):
                _validate_chunk(info, chunk, offset)
                offset += len(chunk)
                yield chunk
        except DbnFileError:
            raise
        except BentoWarning as exc:
            raise DbnFileError(info.path, f"truncated after {offset} records ({exc})") from exc
        except Exception as exc:
            raise DbnFileError(info.path, f"corrupt data after {offset} records ({type(exc).__name__}: {exc})") from exc


def _validate_chunk(info: DbnFileInfo, chunk: np.ndarray, offset: int) -> None:
    bad = np.flatnonzero((chunk["rtype"] != RTYPE_MBP10) | (chunk["length"] != RECORD_LENGTH_WORDS))
    if bad.size:
        i = int(bad[0])
        raise DbnFileError(
            info.path,
            f"corrupt record #{offset + i}: rtype={chunk['rtype'][i]} length={chunk['length'][i]} "
            f"(expected MBP-10 rtype {RTYPE_MBP10}, length {RECORD_LENGTH_WORDS})",
        )
    for name, allowed in (("action", VALID_ACTIONS), ("side", VALID_SIDES)):
        bad = np.flatnonzero(~np.isin(chunk[name], allowed))
        if bad.size:
            i = int(bad[0])
            raise DbnFileError(info.path, f"corrupt record #{offset + i}: {name}={chunk[name][i]!r}")
    ts = chunk["ts_recv"].astype(np.int64)
    end = info.end_ns if info.end_ns is not None else np.iinfo(np.int64).max
    outside = np.flatnonzero((ts < info.start_ns) | (ts >= end))
    if outside.size:
        i = int(outside[0])
        raise DbnFileError(
            info.path,
            f"record #{offset + i} received at {_iso(int(ts[i]))} lies outside the file's declared range "
            f"[{_iso(info.start_ns)}, {_iso(end)}): the file's records do not match its metadata",
        )


def _iso(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9, tz=dt.UTC).isoformat()


class SymbolResolver:
    """instrument_id -> the symbol the file was requested with, as `DBNStore.to_df()` maps it."""

    def __init__(self, info: DbnFileInfo) -> None:
        self._map = InstrumentMap()
        self._map.insert_metadata(_open(info.path).metadata)

    def resolve(self, instrument_id: np.ndarray, ts_recv: np.ndarray) -> pa.Array:
        days = (ts_recv.astype(np.int64) // 86_400_000_000_000).astype(np.int64)
        keys = instrument_id.astype(np.int64) * 1_000_000 + days  # a handful of distinct values a day
        unique, inverse = np.unique(keys, return_inverse=True)
        resolved = self._map.resolve_many(
            (unique // 1_000_000).astype(np.uint32), (unique % 1_000_000).astype("datetime64[D]")
        )
        return pa.array(np.asarray(resolved, dtype=object), type=pa.string()).take(pa.array(inverse.ravel()))


def _chars(values: np.ndarray) -> pa.Array:
    """A one-byte DBN char column ('S1') as an Arrow string array, without a Python object per row."""
    n = len(values)
    offsets = np.arange(n + 1, dtype=np.int32)
    data = np.ascontiguousarray(values).view(np.uint8)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data))


def _prices(values: np.ndarray) -> pa.Array:
    raw = values.astype(np.int64)
    return pa.array(raw, mask=raw == UNDEF_PRICE, type=pa.int64())


def mbp10_batch(chunk: np.ndarray, symbols: pa.Array, trade_date: dt.date, first_index: int = 0) -> pa.RecordBatch:
    """One structured MBP-10 chunk -> an Arrow batch in the `raw_mbp10` schema (lossless).

    `first_index` is the `record_index` of the chunk's first record within its trade date.
    """
    n = len(chunk)
    columns: dict[str, pa.Array] = {
        "ts_recv": pa.array(chunk["ts_recv"].astype(np.int64)),
        "ts_event": pa.array(chunk["ts_event"].astype(np.int64)),
        "rtype": pa.array(chunk["rtype"].astype(np.int16)),
        "publisher_id": pa.array(chunk["publisher_id"].astype(np.int32)),
        "instrument_id": pa.array(chunk["instrument_id"].astype(np.int64)),
        "action": _chars(chunk["action"]),
        "side": _chars(chunk["side"]),
        "depth": pa.array(chunk["depth"].astype(np.int16)),
        "price": _prices(chunk["price"]),
        "size": pa.array(chunk["size"].astype(np.int64)),
        "flags": pa.array(chunk["flags"].astype(np.int16)),
        "ts_in_delta": pa.array(chunk["ts_in_delta"].astype(np.int32)),
        "sequence": pa.array(chunk["sequence"].astype(np.int64)),
    }
    for field in LEVEL_FIELDS:
        for name in level_columns(field):
            values = chunk[name]
            columns[name] = _prices(values) if field.endswith("_px") else pa.array(values.astype(np.int64))
    columns["record_index"] = pa.array(np.arange(first_index, first_index + n, dtype=np.int64))
    columns["symbol"] = symbols
    columns["trade_date"] = pa.array(np.full(n, np.datetime64(trade_date, "D")), type=pa.date32())
    return pa.record_batch([columns[f.name] for f in RAW_MBP10_SCHEMA], schema=RAW_MBP10_SCHEMA)


def mapped_instrument_ids(info: DbnFileInfo) -> dict[str, tuple[int, ...]]:
    """The metadata's symbology: each requested symbol -> the instrument_ids it maps to over the file's range.

    Empty when the file carries no mappings, or maps to something other than instrument ids (stype_out).
    """
    meta = _open(info.path).metadata
    if str(meta.stype_out) != "instrument_id":
        return {}
    return {
        str(symbol): tuple(sorted({int(i["symbol"]) for i in intervals if str(i["symbol"]).isdigit()}))
        for symbol, intervals in meta.mappings.items()
    }
