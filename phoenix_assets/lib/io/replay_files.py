"""Check the DBN files of a replay (`./phoenix paper --dbn`) whole, before the first order.

A replay trades what it reads, so a file of another instrument, a damaged file or a day outside the asked
range must be refused before trading, not met halfway through it. `validate_replay_files` reads every file's
metadata (dataset, schema, product of its symbols), then decodes every file once in bounded chunks (the
reader's own checks: truncation, corrupt zstd frames, foreign record types, records outside the declared
range) and checks each record's instrument_id against the file's symbology, counting records per CME trade
date. `iter_replay_arrays` then streams the kept trade dates, one trade date per chunk.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from phoenix_assets.lib import calendar as cal
from phoenix_assets.lib.instrument import Instrument
from phoenix_assets.lib.io.dbn_reader import (
    DbnFileError,
    DbnFileInfo,
    inspect_dbn,
    iter_mbp10_arrays,
    mapped_instrument_ids,
)

_CONTINUOUS = re.compile(r"([A-Z0-9]+)\.[cnv]\.\d+")  # MNQ.v.0, ES.c.1
_PARENT = re.compile(r"([A-Z0-9]+)\.FUT")  # MNQ.FUT
_OUTRIGHT = re.compile(r"([A-Z0-9]+?)[FGHJKMNQUVXZ]\d{1,2}")  # MNQH4, MNQM24, M2KU4: root, month code, year


class ReplayPlanError(ValueError):
    """The replay's files, taken together, do not make a replay of what was asked."""


def product_of(symbol: str) -> str | None:
    """The CME product root of a Databento symbol, None when it is not a futures symbol of one product.

    Continuous `MNQ.v.0`, parent `MNQ.FUT`, raw outright `MNQH4` / `MNQM24` (root = what precedes the month
    code and year: `ESH4` -> ES), calendar spread `MNQH4-MNQM4` (both legs of one product).
    """
    for pattern in (_CONTINUOUS, _PARENT, _OUTRIGHT):
        if m := pattern.fullmatch(symbol):
            return m.group(1)
    if "-" in symbol:
        legs = {m.group(1) if (m := _OUTRIGHT.fullmatch(leg)) else None for leg in symbol.split("-")}
        if len(legs) == 1:
            return legs.pop()
    return None


@dataclass(frozen=True)
class ReplayPlan:
    """What a replay will trade: its files in time order and the trade dates they cover."""

    infos: tuple[DbnFileInfo, ...]  # in time order
    trade_dates: tuple[dt.date, ...]  # replayed: in the files and in [start, end]
    skipped_trade_dates: tuple[dt.date, ...]  # in the files, outside [start, end]
    records_per_trade_date: dict[dt.date, int]  # every trade date of the files, kept or skipped
    trade_dates_by_file: dict[Path, tuple[dt.date, ...]]  # the trade dates each file holds records of
    weekend_records: int  # records in no CME trade date's window (after Friday's close): never replayed

    def summary(self) -> str:
        """`replaying 2024-03-14 (20,113 records) of the files; skipped 2024-03-15 (outside --start/--end)`."""
        kept = ", ".join(f"{d} ({self.records_per_trade_date[d]:,} records)" for d in self.trade_dates)
        text = f"replaying {kept} of the files"
        if self.skipped_trade_dates:
            text += f"; skipped {', '.join(map(str, self.skipped_trade_dates))} (outside --start/--end)"
        if self.weekend_records:
            text += f"; skipped {self.weekend_records:,} records in no trade date (weekend)"
        return text


def validate_replay_files(
    paths: Sequence[Path],
    instrument: Instrument,
    start: dt.date | None = None,
    end: dt.date | None = None,
    chunk_records: int = 65_536,
) -> ReplayPlan:
    """Refuse, naming the file and what was expected, any file the model must not trade; else the plan.

    Raises DbnFileError (a ValueError) for one file's fault: another dataset, schema or product, a record of an
    instrument_id the symbology does not give to the instrument, truncation or corruption anywhere in the file,
    records overlapping another file's. Raises ReplayPlanError when no trade date of the files lies in
    [start, end] (either bound may be None: open). Memory is one chunk; the whole of every file is read.
    """
    if not paths:
        raise ReplayPlanError("no DBN files to replay")
    if start is not None and end is not None and end < start:
        raise ReplayPlanError(f"the requested range ends ({end}) before it starts ({start})")
    twice = sorted({str(p) for p in paths if sum(Path(q).resolve() == Path(p).resolve() for q in paths) > 1})
    if twice:
        raise ReplayPlanError(f"{', '.join(twice)}: given more than once")
    infos = sorted((inspect_dbn(Path(p)) for p in paths), key=lambda i: (i.start_ns, str(i.path)))
    allowed = {info.path: _check_metadata(info, instrument) for info in infos}  # every header before any decode
    records: dict[dt.date, int] = {}
    by_file: dict[Path, tuple[dt.date, ...]] = {}
    weekend = 0
    previous: tuple[DbnFileInfo, int] | None = None
    for info in infos:
        counts, first, last, weekend_here = _scan(info, instrument, allowed[info.path], chunk_records)
        by_file[info.path] = tuple(sorted(counts))
        for day, n in counts.items():
            records[day] = records.get(day, 0) + n
        weekend += weekend_here
        if first is None or last is None:
            continue
        if previous is not None and first < previous[1]:
            raise DbnFileError(
                info.path,
                f"its records from {_iso(first)} overlap those of {previous[0].path} (up to {_iso(previous[1])}): "
                "pass each stretch of time once",
            )
        previous = (info, last)
    days = sorted(records)
    if not days:
        raise ReplayPlanError(f"the files ({_names(infos)}) hold no MBP-10 record in any CME trade date")
    kept = [d for d in days if (start is None or d >= start) and (end is None or d <= end)]
    if not kept:
        raise ReplayPlanError(
            f"the files ({_names(infos)}) cover trade dates {', '.join(map(str, days))}, none in the requested range "
            f"{start or 'any'}..{end or 'any'} (--start/--end)"
        )
    return ReplayPlan(
        infos=tuple(infos),
        trade_dates=tuple(kept),
        skipped_trade_dates=tuple(d for d in days if d not in kept),
        records_per_trade_date=dict(sorted(records.items())),
        trade_dates_by_file=by_file,
        weekend_records=weekend,
    )


def iter_replay_arrays(plan: ReplayPlan, chunk_records: int = 65_536) -> Iterator[tuple[dt.date, np.ndarray]]:
    """The plan's kept trade dates as (trade_date, MBP-10 structured array) in feed order, at most
    `chunk_records` rows each and never spanning two trade dates; a file holding none of them is not read."""
    kept = set(plan.trade_dates)
    for info in plan.infos:
        if info.path.stat().st_size != info.nbytes:
            raise DbnFileError(info.path, "changed since it was validated: validate the replay again")
        if not kept.intersection(plan.trade_dates_by_file.get(info.path, ())):
            continue
        for chunk in iter_mbp10_arrays(info, chunk_records):
            days, index = trade_date_index(chunk["ts_recv"])
            cuts = np.flatnonzero(np.diff(index)) + 1
            for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, len(index)], strict=True):
                i = int(index[lo])
                if i >= 0 and days[i] in kept:
                    yield days[i], chunk[lo:hi]


def trade_date_index(ts_recv: np.ndarray) -> tuple[list[dt.date], np.ndarray]:
    """(days, index): `days[index[k]]` is the CME trade date of `ts_recv[k]`, index -1 where none (weekend).

    Vectorised over the few trade-date windows the array spans; the array need not be sorted.
    """
    ts = np.asarray(ts_recv).astype(np.int64)
    if not len(ts):
        return [], np.empty(0, dtype=np.int64)
    days = cal.trade_dates_overlapping(int(ts.min()), int(ts.max()) + 1)
    if not days:
        return [], np.full(len(ts), -1, dtype=np.int64)
    windows = np.array([cal.trade_date_window(d) for d in days], dtype=np.int64)
    index = np.searchsorted(windows[:, 0], ts, side="right") - 1
    inside = (index >= 0) & (ts < windows[np.maximum(index, 0), 1])
    return days, np.where(inside, index, -1)


# --- checks ------------------------------------------------------------------------------------------


def _check_metadata(info: DbnFileInfo, instrument: Instrument) -> np.ndarray | None:
    """Dataset, schema and product of the header; returns the instrument_ids the symbology gives the
    instrument's product (None: the file has no instrument_id symbology, so records cannot be checked)."""
    model = f"the model's instrument {instrument.root} ({instrument.dataset} {instrument.continuous_symbol})"
    if info.dataset != instrument.dataset:
        raise DbnFileError(info.path, f"dataset {info.dataset} (symbols {list(info.symbols)}) is not {model}")
    if info.schema != "mbp-10":
        raise DbnFileError(info.path, f"schema is {info.schema}, expected mbp-10")
    mappings = mapped_instrument_ids(info)
    symbols = list(dict.fromkeys([*info.symbols, *mappings]))
    if not symbols:
        raise DbnFileError(info.path, f"its metadata names no symbol: cannot tell whether it is {model}")
    products = {s: product_of(s) for s in symbols}
    if any(p != instrument.root for p in products.values()):
        found = sorted({p or f"unrecognised ({s!r})" for s, p in products.items()})
        label = "product" if len(found) == 1 else "products"
        raise DbnFileError(info.path, f"symbols {symbols} ({label} {', '.join(found)}) are not {model}")
    if not mappings:
        return None
    return np.array(sorted({i for ids in mappings.values() for i in ids}), dtype=np.int64)


def _scan(
    info: DbnFileInfo,
    instrument: Instrument,
    allowed: np.ndarray | None,
    chunk_records: int,
) -> tuple[dict[dt.date, int], int | None, int | None, int]:
    """Decode the whole file (the reader raises on damage). Returns its records per trade date, its first and
    last ts_recv and its number of weekend records."""
    records: dict[dt.date, int] = {}
    first: int | None = None
    last: int | None = None
    weekend, offset = 0, 0
    for chunk in iter_mbp10_arrays(info, chunk_records):
        ids = chunk["instrument_id"].astype(np.int64)
        if allowed is not None and not (ok := np.isin(ids, allowed)).all():
            foreign = sorted(int(i) for i in np.unique(ids[~ok]))
            first_bad = offset + int(np.argmin(ok))
            raise DbnFileError(
                info.path,
                f"{int((~ok).sum()):,} of records #{offset}..#{offset + len(ids) - 1} (first #{first_bad}) "
                f"are of instrument_id {foreign}, which the file's symbology ({_symbology(info)}) does not give to "
                f"{instrument.root}: not the model's instrument",
            )
        ts = chunk["ts_recv"].astype(np.int64)
        first = int(ts.min()) if first is None else min(first, int(ts.min()))
        last = int(ts.max()) if last is None else max(last, int(ts.max()))
        days, index = trade_date_index(ts)
        weekend += int((index < 0).sum())
        for day, n in zip(days, np.bincount(index[index >= 0], minlength=len(days)), strict=True):
            if n:
                records[day] = records.get(day, 0) + int(n)
        offset += len(chunk)
    return records, first, last, weekend


def _symbology(info: DbnFileInfo) -> str:
    return ", ".join(f"{s} -> {list(ids)}" for s, ids in mapped_instrument_ids(info).items())


def _names(infos: Sequence[DbnFileInfo]) -> str:
    return ", ".join(str(i.path) for i in infos)


def _iso(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9, tz=dt.UTC).isoformat()
