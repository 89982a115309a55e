"""A replay's DBN files are checked whole before the first order: instrument, damage and the asked range."""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Callable
from pathlib import Path

import databento_dbn as dbn
import numpy as np
import pytest
import zstandard

from phoenix_assets.lib import calendar as cal
from phoenix_assets.lib.instrument import MNQ
from phoenix_assets.lib.io.dbn_reader import DbnFileError, inspect_dbn, iter_mbp10_arrays
from phoenix_assets.lib.io.replay_files import (
    ReplayPlanError,
    iter_replay_arrays,
    product_of,
    trade_date_index,
    validate_replay_files,
)
from phoenix_assets.lib.synthetic.market import SyntheticMarketConfig, _Interval, _Mapping, write_day
from tests.conftest import ESH1_MBP10, ESH4_MBP10, SHARED_DATA

THU, FRI = dt.date(2024, 3, 14), dt.date(2024, 3, 15)
SMALL = SyntheticMarketConfig(records_per_day=20_000)
MODEL = r"the model's instrument MNQ \(GLBX\.MDP3 MNQ\.v\.0\)"


@pytest.fixture(scope="module")
def days(tmp_path_factory: pytest.TempPathFactory) -> dict[dt.date, Path]:
    folder = tmp_path_factory.mktemp("replay")
    return {day: write_day(day, folder, SMALL) for day in (THU, FRI)}


def records_of(path: Path) -> np.ndarray:
    return np.concatenate(list(iter_mbp10_arrays(inspect_dbn(path), 1_000_000)))


def write_dbn(
    path: Path, records: np.ndarray, symbol: str, instrument_id: int, dataset: str = MNQ.dataset, extra_ns: int = 0
) -> Path:
    """An uncompressed DBN file of these records under metadata of our making (range: their trade date's window
    plus `extra_ns`; `symbol` mapped to `instrument_id` on every UTC date of it)."""
    day = cal.trade_date_of(int(records["ts_recv"][0]))
    assert day is not None
    start, end = cal.trade_date_window(day)
    end += extra_ns
    first = dt.datetime.fromtimestamp(start / 1e9, tz=dt.UTC).date()
    last = dt.datetime.fromtimestamp((end - 1) / 1e9, tz=dt.UTC).date()
    intervals = [
        _Interval(first + dt.timedelta(days=i), first + dt.timedelta(days=i + 1), str(instrument_id))
        for i in range((last - first).days + 1)
    ]
    meta = dbn.Metadata(
        dataset=dataset,
        start=start,
        end=end,
        stype_in=dbn.SType.CONTINUOUS,
        stype_out=dbn.SType.INSTRUMENT_ID,
        schema=dbn.Schema.MBP_10,
        symbols=[symbol],
        partial=[],
        not_found=[],
        mappings=[_Mapping(symbol, intervals)],
    )
    path.write_bytes(bytes(meta.encode()) + records.tobytes())
    return path


# --- the instrument ---------------------------------------------------------------------------------


def test_an_mnq_day_passes_and_is_replayed_whole(days: dict[dt.date, Path]) -> None:
    plan = validate_replay_files([days[THU]], MNQ, None, None)
    n = len(records_of(days[THU]))
    assert plan.trade_dates == (THU,)
    assert plan.skipped_trade_dates == ()
    assert plan.records_per_trade_date == {THU: n}
    assert plan.weekend_records == 0
    assert [i.path for i in plan.infos] == [days[THU]]
    assert plan.summary() == f"replaying {THU} ({n:,} records) of the files"
    replayed = list(iter_replay_arrays(plan, chunk_records=4_096))
    assert {day for day, _ in replayed} == {THU}
    assert max(len(c) for _, c in replayed) == 4_096
    np.testing.assert_array_equal(np.concatenate([c for _, c in replayed]), records_of(days[THU]))


@pytest.mark.parametrize(
    ("symbol", "product"),
    [
        ("MNQ.v.0", "MNQ"),
        ("MNQ.c.1", "MNQ"),
        ("MNQ.FUT", "MNQ"),
        ("MNQH4", "MNQ"),
        ("MNQM24", "MNQ"),
        ("ESH4", "ES"),
        ("ES.v.0", "ES"),
        ("M2KU4", "M2K"),
        ("MNQH4-MNQM4", "MNQ"),
        ("ESH4-MNQM4", None),
        ("MNQ.OPT", None),
        ("NVDA", None),
        ("5002", None),
    ],
)
def test_product_of_a_symbol(symbol: str, product: str | None) -> None:
    assert product_of(symbol) == product


def test_a_day_of_another_product_is_refused_naming_both(tmp_path: Path) -> None:
    es = SyntheticMarketConfig(
        records_per_day=2_000, continuous_symbol="ES.v.0", instrument_ids=(5002, 5003), raw_symbols=("ESH4", "ESM4")
    )
    path = write_day(THU, tmp_path, es)
    with pytest.raises(DbnFileError, match=rf"{path}: symbols \['ES\.v\.0'\] \(product ES\) are not {MODEL}"):
        validate_replay_files([path], MNQ, None, None)


@pytest.mark.parametrize("path", [ESH4_MBP10, ESH1_MBP10], ids=lambda p: p.name)
def test_real_es_files_are_refused_naming_both(path: Path) -> None:
    symbol = inspect_dbn(path).symbols[0]
    with pytest.raises(DbnFileError, match=rf"{path.name}: symbols \['{symbol}'\] \(product ES\) are not {MODEL}"):
        validate_replay_files([path], MNQ, None, None)


def test_another_dataset_or_schema_is_refused(tmp_path: Path, days: dict[dt.date, Path]) -> None:
    nvda = SHARED_DATA / "xnas-itch-nvda-20201228.mbp-10.fixture.dbn.zst"
    with pytest.raises(DbnFileError, match=rf"{nvda.name}: dataset XNAS\.ITCH \(symbols \['NVDA'\]\) is not {MODEL}"):
        validate_replay_files([nvda], MNQ, None, None)
    # MNQ's own symbol, on another dataset
    fake = write_dbn(tmp_path / "mnq-on-xnas.dbn", records_of(days[THU])[:100], "MNQ.v.0", 42005347, "XNAS.ITCH")
    with pytest.raises(DbnFileError, match=r"mnq-on-xnas\.dbn: dataset XNAS\.ITCH \(symbols \['MNQ\.v\.0'\]\)"):
        validate_replay_files([days[THU], fake], MNQ, None, None)
    mbp1 = SHARED_DATA / "glbx-mdp3-esu4-20240701T2358-20240702T0002.mbp-1.dbn.zst"
    with pytest.raises(DbnFileError, match=r"mbp-1\.dbn\.zst: schema is mbp-1, expected mbp-10"):
        validate_replay_files([mbp1], MNQ, None, None)


def test_records_of_an_instrument_the_symbology_does_not_map_are_refused(
    tmp_path: Path, days: dict[dt.date, Path]
) -> None:
    records = records_of(days[THU])
    instrument_id = int(records["instrument_id"][0])
    clean = write_dbn(tmp_path / "clean.dbn", records, "MNQ.v.0", instrument_id)
    assert validate_replay_files([clean], MNQ, None, None).trade_dates == (THU,)
    records["instrument_id"][1_000:1_050] = 5002  # ES rows slipped into an MNQ file
    mixed = write_dbn(tmp_path / "mixed.dbn", records, "MNQ.v.0", instrument_id)
    with pytest.raises(
        DbnFileError,
        match=rf"mixed\.dbn: 50 of records #0\.\.#\d+ \(first #1000\) are of instrument_id \[5002\], which the file's "
        rf"symbology \(MNQ\.v\.0 -> \[{instrument_id}\]\) does not give to MNQ",
    ):
        validate_replay_files([mixed], MNQ, None, None)


# --- damage: refused before a single chunk is handed out ----------------------------------------------


def _zero_middle(data: bytes) -> bytes:
    out = bytearray(data)
    mid = len(out) // 2
    out[mid : mid + 5_000] = bytes(5_000)
    return bytes(out)


@pytest.mark.parametrize(
    ("name", "damage", "message"),
    [
        ("zeroed.dbn.zst", _zero_middle, r"corrupt data after \d+ records \(ZstdError"),
        ("cut.dbn.zst", lambda b: b[: 2 * len(b) // 3], r"truncated after \d+ records"),
        ("zeroed.dbn", _zero_middle, r"corrupt record #\d+: rtype=0 length=0"),
        ("cut.dbn", lambda b: b[: 2 * len(b) // 3 + 100], r"truncated after \d+ records"),
    ],
)
def test_a_damaged_file_is_refused_whole_with_the_readers_message(
    tmp_path: Path, days: dict[dt.date, Path], name: str, damage: Callable[[bytes], bytes], message: str
) -> None:
    data = days[THU].read_bytes()
    if not name.endswith(".zst"):
        data = zstandard.ZstdDecompressor().stream_reader(days[THU].open("rb")).read()
    bad = tmp_path / name
    bad.write_bytes(damage(data))
    read_before_damage = 0
    with pytest.raises(DbnFileError) as lazy:
        for chunk in iter_mbp10_arrays(inspect_dbn(bad), 4_096):
            read_before_damage += len(chunk)
    assert read_before_damage >= 8_192  # the lazy reader hands out good chunks first: a replay traded them
    with pytest.raises(DbnFileError, match=message) as whole:
        validate_replay_files([days[THU], bad], MNQ, None, None, chunk_records=4_096)
    assert str(whole.value) == str(lazy.value)
    assert str(whole.value).startswith(f"{bad}: ")


def test_the_same_day_twice_is_refused(tmp_path: Path, days: dict[dt.date, Path]) -> None:
    copy = shutil.copy(days[THU], tmp_path / "copy.dbn.zst")
    with pytest.raises(DbnFileError, match=rf"copy\.dbn\.zst: its records from .* overlap those of {days[THU]} "):
        validate_replay_files([days[THU], copy], MNQ, None, None)
    with pytest.raises(ReplayPlanError, match=r"mnq-20240314\.mbp-10\.dbn\.zst: given more than once"):
        validate_replay_files([days[THU], days[FRI], days[THU]], MNQ, None, None)


# --- the asked range ----------------------------------------------------------------------------------


def test_a_range_without_the_files_days_is_refused_naming_both(days: dict[dt.date, Path]) -> None:
    with pytest.raises(
        ReplayPlanError,
        match=r"cover trade dates 2024-03-14, none in the requested range 2024-03-18\.\.2024-03-20 \(--start/--end\)",
    ) as err:
        validate_replay_files([days[THU]], MNQ, dt.date(2024, 3, 18), dt.date(2024, 3, 20))
    assert str(days[THU]) in str(err.value)
    with pytest.raises(ReplayPlanError, match=r"none in the requested range 2024-03-15\.\.any"):
        validate_replay_files([days[THU]], MNQ, FRI, None)
    with pytest.raises(ReplayPlanError, match=r"ends \(2024-03-13\) before it starts \(2024-03-14\)"):
        validate_replay_files([days[THU]], MNQ, THU, dt.date(2024, 3, 13))


def test_a_range_holding_the_day_keeps_it(days: dict[dt.date, Path]) -> None:
    for start, end in [(THU, THU), (dt.date(2024, 3, 1), dt.date(2024, 3, 31)), (None, THU), (THU, None)]:
        plan = validate_replay_files([days[THU]], MNQ, start, end)
        assert plan.trade_dates == (THU,)
        assert plan.skipped_trade_dates == ()


def test_two_days_and_a_one_day_range_replay_that_day_only(days: dict[dt.date, Path]) -> None:
    plan = validate_replay_files([days[FRI], days[THU]], MNQ, FRI, FRI)  # given out of order
    assert [i.path for i in plan.infos] == [days[THU], days[FRI]]
    assert plan.trade_dates == (FRI,)
    assert plan.skipped_trade_dates == (THU,)
    assert plan.trade_dates_by_file == {days[THU]: (THU,), days[FRI]: (FRI,)}
    n = plan.records_per_trade_date[FRI]
    assert plan.summary() == f"replaying {FRI} ({n:,} records) of the files; skipped {THU} (outside --start/--end)"
    replayed = list(iter_replay_arrays(plan, chunk_records=8_192))
    assert {day for day, _ in replayed} == {FRI}
    np.testing.assert_array_equal(np.concatenate([c for _, c in replayed]), records_of(days[FRI]))


def test_records_after_fridays_close_are_counted_and_never_replayed(tmp_path: Path, days: dict[dt.date, Path]) -> None:
    records = records_of(days[FRI])
    _, close = cal.trade_date_window(FRI)
    late = records[-100:].copy()
    late["ts_recv"] = close + 3_600 * cal.NS_PER_SECOND + np.arange(100)  # Friday 17:00 CT: no trade date
    both = np.concatenate([records, late])
    path = write_dbn(
        tmp_path / "friday.dbn", both, "MNQ.v.0", int(records["instrument_id"][0]), extra_ns=2 * 3600 * 10**9
    )
    plan = validate_replay_files([path], MNQ, None, None)
    assert plan.trade_dates == (FRI,)
    assert plan.weekend_records == 100
    assert plan.records_per_trade_date == {FRI: len(records)}
    assert plan.summary().endswith("; skipped 100 records in no trade date (weekend)")
    replayed = np.concatenate([c for _, c in iter_replay_arrays(plan, chunk_records=4_096)])
    np.testing.assert_array_equal(replayed, records)


def test_trade_date_index_agrees_with_the_calendar() -> None:
    rng = np.random.default_rng(3)
    lo, _ = cal.trade_date_window(dt.date(2024, 3, 8))  # Friday, the weekend, a DST switch (Mar 10), Monday
    _, hi = cal.trade_date_window(dt.date(2024, 3, 12))
    ts = np.sort(rng.integers(lo - 3_600 * cal.NS_PER_SECOND, hi + 3_600 * cal.NS_PER_SECOND, 2_000))
    ts[::97] = rng.permutation(ts[::97])  # need not be sorted
    days, index = trade_date_index(ts.astype(np.uint64))
    got = [days[i] if i >= 0 else None for i in index]
    assert got == [cal.trade_date_of(int(t)) for t in ts]
    assert None in got and dt.date(2024, 3, 11) in got
