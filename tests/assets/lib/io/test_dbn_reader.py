"""DBN decoding: the real Databento files decode to exactly what `DBNStore.to_df()` gives."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import databento as db
import numpy as np
import pyarrow as pa
import pytest
import zstandard

from phoenix_assets.lib.io.dbn_reader import (
    DbnFileError,
    SymbolResolver,
    inspect_dbn,
    iter_mbp10_arrays,
    mbp10_batch,
    scan_dbn_files,
)
from phoenix_assets.lib.schema import LEVEL_FIELDS, RAW_MBP10_SCHEMA, UNDEF_PRICE, level_columns
from tests.conftest import ESH1_TRADES, ESH4_MBP10, MBP10_FIXTURES, SHARED_DATA


def decode_all(path: Path, chunk: int) -> pa.Table:
    info = inspect_dbn(path)
    resolver = SymbolResolver(info)
    batches, offset = [], 0
    for c in iter_mbp10_arrays(info, chunk):
        batches.append(mbp10_batch(c, resolver.resolve(c["instrument_id"], c["ts_recv"]), dt.date(2000, 1, 3), offset))
        offset += len(c)
    return pa.Table.from_batches(batches, schema=RAW_MBP10_SCHEMA)


@pytest.mark.parametrize("path", MBP10_FIXTURES, ids=lambda p: p.name)
def test_real_files_equal_databento_to_df(path: Path) -> None:
    table = decode_all(path, chunk=1000)
    ref = db.DBNStore.from_file(path).to_df(price_type="fixed", pretty_ts=False)
    assert table.num_rows == len(ref) > 0
    np.testing.assert_array_equal(table["ts_recv"].to_numpy(), ref.index.to_numpy().astype(np.int64))
    for col in (
        "ts_event",
        "rtype",
        "publisher_id",
        "instrument_id",
        "depth",
        "size",
        "flags",
        "ts_in_delta",
        "sequence",
    ):
        np.testing.assert_array_equal(table[col].to_numpy(), ref[col].to_numpy().astype(np.int64), err_msg=col)
    for col in ("action", "side", "symbol"):
        assert table[col].to_pylist() == ref[col].tolist(), col
    price_cols = ["price", *level_columns("bid_px"), *level_columns("ask_px")]
    for col in price_cols:
        ours = table[col].fill_null(UNDEF_PRICE).to_numpy()
        np.testing.assert_array_equal(ours, ref[col].to_numpy(), err_msg=col)
        assert table[col].null_count == int((ref[col] == UNDEF_PRICE).sum())
    for field in LEVEL_FIELDS:
        if field.endswith("_px"):
            continue
        for col in level_columns(field):
            np.testing.assert_array_equal(table[col].to_numpy(), ref[col].to_numpy().astype(np.int64), err_msg=col)


def test_undefined_price_becomes_null_never_a_huge_number() -> None:
    snapshot_file = SHARED_DATA / "glbx-mdp3-esu4-20240701T2358-20240702T0002.mbp-1.dbn.zst"
    assert inspect_dbn(snapshot_file).schema == "mbp-1"  # not ours: the reader refuses it below
    with pytest.raises(DbnFileError, match="schema is mbp-1, expected mbp-10"):
        next(iter_mbp10_arrays(inspect_dbn(snapshot_file), 10))
    table = decode_all(ESH4_MBP10, chunk=50_000)
    for col in ("price", "bid_px_09", "ask_px_09"):
        values = table[col].drop_null().to_numpy()
        assert values.max() < 10**15  # < 1,000,000 index points


def test_chunk_size_does_not_change_the_decode() -> None:
    whole = decode_all(ESH4_MBP10, chunk=1_000_000)
    assert decode_all(ESH4_MBP10, chunk=7).equals(whole)


def test_all_dbn_versions_and_plain_dbn_decode_the_same() -> None:
    variants = sorted(SHARED_DATA.glob("glbx-mdp3-esh1-20201228T1300.mbp-10.fixture.*"))
    assert {inspect_dbn(p).version for p in variants} == {1, 2, 3}
    assert any(p.suffix == ".dbn" for p in variants)
    tables = [decode_all(p, 10) for p in variants]
    for t in tables[1:]:
        assert t.equals(tables[0])


def test_files_are_recognised_by_metadata_not_name(tmp_path: Path) -> None:
    shutil.copy(ESH4_MBP10, tmp_path / "whatever.bin")
    shutil.copy(ESH1_TRADES, tmp_path / "looks-like.mbp-10.dbn.zst")
    (tmp_path / "notes.txt").write_text("not market data")
    infos, skipped = scan_dbn_files(tmp_path)
    by_name = {i.path.name: i for i in infos}
    assert by_name["whatever.bin"].schema == "mbp-10"
    assert by_name["whatever.bin"].dataset == "GLBX.MDP3"
    assert by_name["looks-like.mbp-10.dbn.zst"].schema == "trades"
    assert [p.name for p, _ in skipped] == ["notes.txt"]


def _raw_dbn_bytes(path: Path) -> bytes:
    return zstandard.ZstdDecompressor().stream_reader(path.open("rb")).read()


def test_truncated_file_is_an_error_naming_the_file(tmp_path: Path) -> None:
    raw = _raw_dbn_bytes(ESH4_MBP10)
    bad = tmp_path / "cut.dbn"
    bad.write_bytes(raw[: len(raw) // 2 + 100])  # ends mid-record
    with pytest.raises(DbnFileError, match=r"cut\.dbn: truncated after \d+ records"):
        for _ in iter_mbp10_arrays(inspect_dbn(bad), 1000):
            pass


def test_corrupt_zstd_stream_is_an_error_naming_the_file(tmp_path: Path) -> None:
    data = bytearray(ESH4_MBP10.read_bytes())
    mid = len(data) // 3  # zeroes a compressed block zstd detects; silent corruption is left to the checks
    data[mid : mid + 64] = bytes(64)
    bad = tmp_path / "corrupt.dbn.zst"
    bad.write_bytes(bytes(data))
    with pytest.raises(DbnFileError, match=r"corrupt\.dbn\.zst: corrupt data after \d+ records"):
        for _ in iter_mbp10_arrays(inspect_dbn(bad), 1000):
            pass


def test_corrupt_record_header_is_an_error(tmp_path: Path) -> None:
    raw = bytearray(_raw_dbn_bytes(ESH4_MBP10))
    meta_len = 8 + int.from_bytes(raw[4:8], "little")
    raw[meta_len + 368 * 5 + 1] = 1  # rtype of record #5 -> 1 (not MBP-10)
    bad = tmp_path / "bad-record.dbn"
    bad.write_bytes(bytes(raw))
    with pytest.raises(DbnFileError, match=r"bad-record\.dbn: corrupt record #5: rtype=1"):
        for _ in iter_mbp10_arrays(inspect_dbn(bad), 1000):
            pass


def test_not_a_dbn_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "junk.dbn.zst"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(DbnFileError, match=r"junk\.dbn\.zst: not a readable DBN file"):
        inspect_dbn(bad)
