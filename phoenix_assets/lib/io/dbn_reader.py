"""Read Databento DBN files (.dbn or .dbn.zst, DBN v1-v3) in bounded-memory chunks.

Files are recognised by their DBN metadata (dataset, schema, time range), never by their names.
Decoding goes straight to NumPy (`DBNStore.to_ndarray(count=...)`), then to Arrow batches in the
`raw_mbp10` schema; `to_df()` is ~15x slower and is used only as the reference in tests.
"""

from __future__ import annotations

import datetime as dt
import functools
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import databento as db
import numpy as np
import pyarrow as pa
from databento.common.error import BentoWarning
from databento.common.symbology import InstrumentMap
from numba import njit

from phoenix_assets.lib.schema import (
    PRICE_COLUMNS,
    RAW_MBP10_SCHEMA,
    RECORD_COLUMNS,
    RECORD_LENGTH_WORDS,
    RTYPE_MBP10,
    UNDEF_PRICE,
)

UNDEF_TIMESTAMP = 2**64 - 1
VALID_ACTIONS = np.array([b"A", b"C", b"M", b"R", b"T", b"F", b"N"], dtype="S1")
VALID_SIDES = np.array([b"A", b"B", b"N"], dtype="S1")


def _byte_table(allowed: np.ndarray) -> np.ndarray:
    """A 256-entry lookup: True at the byte codes of `allowed` ('S1' values)."""
    table = np.zeros(256, np.bool_)
    table[allowed.view(np.uint8)] = True
    return table


_VALID_ACTION_BYTES, _VALID_SIDE_BYTES = _byte_table(VALID_ACTIONS), _byte_table(VALID_SIDES)


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
    for name, allowed in (("action", _VALID_ACTION_BYTES), ("side", _VALID_SIDE_BYTES)):
        bad = np.flatnonzero(~allowed[chunk[name].view(np.uint8)])  # a table lookup: np.isin on 'S1' sorts
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
        if len(keys) and (keys == keys[0]).all():  # the usual chunk: one instrument, one day (no sort)
            unique, inverse = keys[:1], np.zeros(len(keys), dtype=np.int64)
        else:
            unique, inverse = np.unique(keys, return_inverse=True)
        resolved = self._map.resolve_many(
            (unique // 1_000_000).astype(np.uint32), (unique % 1_000_000).astype("datetime64[D]")
        )
        return pa.array(np.asarray(resolved, dtype=object), type=pa.string()).take(pa.array(inverse.ravel()))


def _chars(values: np.ndarray) -> pa.Array:
    """A one-byte DBN char column ('S1' or its uint8 codes) as an Arrow string array, no Python object per row."""
    n = len(values)
    offsets = np.arange(n + 1, dtype=np.int32)
    data = np.ascontiguousarray(values).view(np.uint8)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data))


def _int64(values: np.ndarray, data: pa.Buffer, null: int | None = None) -> pa.Array:
    """An int64 column over `data` (the buffer `values` views) without copying; `null` values become nulls."""
    n = len(values)
    validity = None
    null_count = 0
    if null is not None:
        undefined = values == null
        null_count = int(np.count_nonzero(undefined))
        if null_count:
            validity = pa.py_buffer(np.packbits(~undefined, bitorder="little"))
    return pa.Array.from_buffers(pa.int64(), n, [validity, data], null_count=null_count)


# Narrower Arrow types of the record's own fields (every other one is int64 or a char)
_NARROW = {
    f.name: f.type for f in RAW_MBP10_SCHEMA if f.name in RECORD_COLUMNS and f.type not in (pa.int64(), pa.string())
}
_KIND = {np.dtype(np.uint8): 0, np.dtype("S1"): 0, np.dtype(np.uint16): 1, np.dtype(np.uint32): 2}
_KIND |= {np.dtype(np.int32): 3, np.dtype(np.uint64): 4, np.dtype(np.int64): 4}
_WIDTH = (1, 2, 4, 4, 8)
_BLOCK_ROWS = 256  # 94 kB of records: stays in L2 while each of the 73 fields is copied out of it


@njit(cache=True, nogil=True)
def _transpose(raw: np.ndarray, kind: np.ndarray, word: np.ndarray, out: np.ndarray) -> None:
    """Fields of fixed-size records (rows of `raw` bytes) -> one contiguous int64 row per field.

    `kind` 0..4 = uint8, uint16, uint32, int32, 64-bit (uint64 reinterpreted, as `astype(np.int64)` does);
    `word` is the field's index in the record viewed as words of that width. Rows go in blocks that stay
    in cache, so the records are read from memory once (per-field numpy copies read them 73 times).
    """
    n = raw.shape[0]
    u16 = raw.view(np.uint16)
    u32 = raw.view(np.uint32)
    i32 = raw.view(np.int32)
    i64 = raw.view(np.int64)
    for start in range(0, n, _BLOCK_ROWS):
        stop = min(n, start + _BLOCK_ROWS)
        for j in range(kind.size):
            k, w = kind[j], word[j]
            row = out[j]
            if k == 0:
                for i in range(start, stop):
                    row[i] = raw[i, w]
            elif k == 1:
                for i in range(start, stop):
                    row[i] = u16[i, w]
            elif k == 2:
                for i in range(start, stop):
                    row[i] = u32[i, w]
            elif k == 3:
                for i in range(start, stop):
                    row[i] = i32[i, w]
            else:
                for i in range(start, stop):
                    row[i] = i64[i, w]


@functools.lru_cache(maxsize=8)
def _layout(dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """(kind, word index) of each of `RECORD_COLUMNS` in records of `dtype` (see `_transpose`)."""
    fields = dtype.fields
    assert fields is not None
    kind = np.array([_KIND[fields[c][0]] for c in RECORD_COLUMNS], dtype=np.int64)
    offset = np.array([fields[c][1] for c in RECORD_COLUMNS], dtype=np.int64)
    width = np.array([_WIDTH[k] for k in kind], dtype=np.int64)
    if (offset % width).any() or dtype.itemsize % 8:
        raise ValueError(f"MBP-10 dtype with unaligned fields: {dtype}")  # never seen in DBN v1-v3
    return kind, offset // width


def record_columns(chunk: np.ndarray) -> tuple[np.ndarray, pa.Buffer]:
    """The chunk's `RECORD_COLUMNS` as one (73, n) int64 matrix, one contiguous row per field, and the
    Arrow buffer it lives in.

    Unsigned fields are widened (uint64 `ts_*` reinterpreted as int64, as Arrow stores them); chars are
    their byte codes; undefined prices stay UNDEF_PRICE. Field offsets come from the chunk's dtype. The
    matrix comes from Arrow's memory pool (mimalloc), which reuses freed pages: a fresh 38 MB numpy array
    per chunk is mmapped and page-faulted anew each time (~1 s per 1M records on this VM).
    """
    kind, word = _layout(chunk.dtype)
    raw = np.ascontiguousarray(chunk).view(np.uint8).reshape(len(chunk), chunk.dtype.itemsize)
    data = pa.allocate_buffer(8 * len(RECORD_COLUMNS) * len(chunk))
    out = np.frombuffer(data, dtype=np.int64).reshape(len(RECORD_COLUMNS), len(chunk))
    _transpose(raw, kind, word, out)
    return out, data


def mbp10_batch(chunk: np.ndarray, symbols: pa.Array, trade_date: dt.date, first_index: int = 0) -> pa.RecordBatch:
    """One structured MBP-10 chunk -> an Arrow batch in the `raw_mbp10` schema (lossless).

    `first_index` is the `record_index` of the chunk's first record within its trade date. The record's
    fields are copied out once (`record_columns`) and the int64 ones handed to Arrow without a copy.
    """
    n = len(chunk)
    matrix, data = record_columns(chunk)
    columns: dict[str, pa.Array] = {}
    for j, (name, values) in enumerate(zip(RECORD_COLUMNS, matrix, strict=True)):
        if name in ("action", "side"):
            columns[name] = _chars(values.astype(np.uint8))
        elif name in _NARROW:
            columns[name] = pa.array(values.astype(_NARROW[name].to_pandas_dtype()))
        else:
            row = data.slice(8 * n * j, 8 * n)
            columns[name] = _int64(values, row, UNDEF_PRICE if name in PRICE_COLUMNS else None)
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
