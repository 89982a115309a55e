"""Streaming MBP-10 book / order-flow kernel: raw records -> one row per second (`book_snapshots_1s`).

One numba kernel serves batch and live: `BookOfiState.process_chunk` takes any slice of the record
stream and carries everything (book, open second, running sums) in small NumPy arrays, so a day cut
into chunks of any size (1, 7, 4096, the whole day) gives bit-identical rows; `flush()` emits the last
open second at the end of the stream.

Speed (benchmarks/bench_microstructure.py): `arrays_from_dbn` hands the kernel strided views into the
decoded DBN records (no copy); the kernel skips the levels an event did not change (their e_n is 0),
integrates time only when the best level or the status changes, and writes rows through a small
row-major block into column-major output, so result columns are contiguous views.

Definitions (what the numbers mean)
    Book state n
        The 10-level book as of a record carrying F_LAST (0x80): Databento sets F_LAST on the last
        record of an event, the only place the book is consistent. Records without F_LAST are
        intermediate and their book fields are never read. Any action may carry F_LAST (real CME data
        has `T` records with F_LAST; their levels are the book after the whole event).
    Re-statements
        A state whose event contains an F_SNAPSHOT (0x20) record or a clear (`R`) re-states the book:
        it becomes the reference for the next state but contributes no flow.
    Trades
        `T` records never add their size to OFI (the fill shows up in the following book change); they
        feed volume, trade OHLC and notional, aggressor side from `side` ('B' buy, 'A' sell, 'N' none:
        volume only).
    Empty levels
        A level with an undefined price (i64::MAX) is empty: size 0, no price. For OFI an empty bid is
        a bid at -inf and an empty ask an ask at +inf, both of size 0. The indicator rules below then
        give: a level that appears contributes its new size (bid +q, ask -q), a level that disappears
        minus its old size (bid -q, ask +q), empty -> empty contributes 0.
    Order-flow imbalance (OFI)
        Cont, Kukanov & Stoikov (2014), "The price impact of order book events", J. Financial
        Econometrics 12(1), eq. (2) and Sec. 2.1: between consecutive states n-1, n
            e_n = 1{Pb_n >= Pb_n-1} qb_n - 1{Pb_n <= Pb_n-1} qb_n-1
                - 1{Pa_n <= Pa_n-1} qa_n + 1{Pa_n >= Pa_n-1} qa_n-1.
        Multi-level OFI applies the same formula to the m-th best level of each side, m = 1..10
        (Xu, Gould & Howison 2019, "Multi-level order-flow imbalance in a limit order book", Sec. 3).
        `ofi_lm` of a second is the sum of e_n^m over the states received in it (contracts, exact int64).
    Book status (of a state, from its best level)
        valid: both best prices defined and bid < ask; crossed: both defined and bid >= ask (locked
        included); one-sided: otherwise (one or both sides empty). OFI is computed between two states
        that are valid or one-sided; any transition into, out of or within a crossed state contributes
        nothing. Spread, mid and microprice exist only for valid states.
    Microprice
        Imbalance-weighted mid (Stoikov 2018, eq. (1), the "weighted mid"):
        (Pb qa + Pa qb) / (qb + qa) = mid + spread (qb - qa) / (2 (qb + qa)).
    Seconds and time weighting
        Records are bucketed by `ts_recv`: second [t, t+1s) holds the records received in it; book
        columns are the state in force at the end of the second. Each state is alive from its own
        `ts_recv` to the next state's (or to the end of the second in which its run ends). Time-weighted
        columns integrate over the part of that life inside the second, in seconds: `valid_s`,
        `crossed_s` and `book_s` (time with any state); `tw_spread`, `tw_microprice_dev` (points x s),
        `tw_bid_sz_l1`, `tw_ask_sz_l1` (contracts x s) accumulate over valid time only, so
        `tw_x / valid_s` is the time-weighted mean. Times are summed as integer nanoseconds.
    Runs, resets and the dense grid
        A run is a stretch of records of one instrument inside one session segment. Segments are the
        halt + pre-open [16:00, 17:00 CT) and continuous trading [17:00 CT, 16:00 CT next day): a new
        trade date starts at 16:00 CT, trading resumes at 17:00 CT (`phoenix_assets.lib.calendar`). At a new run
        (instrument change = roll, or first record in a new segment) everything resets: book, reference
        state, open second. Inside a run every second from the run's first record to its last gets a
        row, quiet seconds included (book carried, counts 0), so minute bars can time-weight exactly.
        A run assumes one instrument at a time (a continuous symbol); interleaved instruments must be
        split by `instrument_id` first, each with its own state (`diagnostics()['instrument_resets']`
        shows when that was missed). A `ts_recv` earlier than the previous record of the same run is
        treated as received at the previous `ts_recv` (counted in `diagnostics()`).
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterable
from typing import NamedTuple

import databento_dbn
import numpy as np
import polars as pl
from numba import njit

from phoenix_assets.lib import calendar as cal
from phoenix_assets.lib.schema import F_LAST, F_SNAPSHOT, N_LEVELS, PRICE_SCALE, UNDEF_PRICE, level_columns

__all__ = [
    "SECOND_COLUMNS",
    "BookArrays",
    "BookOfiState",
    "arrays_from_dbn",
    "arrays_from_raw",
    "book_ofi_1s",
    "session_bounds",
]

NS_PER_SECOND = 1_000_000_000
EMPTY_BID = np.iinfo(np.int64).min  # an undefined bid compares below every price
ACTION_TRADE = ord("T")
ACTION_CLEAR = ord("R")
SIDE_BUY = ord("B")
SIDE_SELL = ord("A")
ST_NONE, ST_VALID, ST_CROSSED, ST_ONE_SIDED = 0, 1, 2, 3
_ACTION_CODES = {c: ord(c) for c in "ACMRTFN"}
_SIDE_CODES = {c: ord(c) for c in "ABN"}

# --- state slots ---------------------------------------------------------------------------------------
# int64 scalars that live across seconds
(
    I_HAS_RUN,
    I_IID,
    I_SEG_START,
    I_SEG_KIND,
    I_LAST_TS,
    I_STATUS,
    I_PENDING_SNAPSHOT,
    I_BUCKET_OPEN,
    I_BUCKET_SEC,
    I_TW_T,  # the time integrals are done up to here
    I_RESETS_INSTRUMENT,
    I_RESETS_SESSION,
    I_TS_CLAMPED,
) = range(13)
# int64 sums of the open second (zeroed when it opens), in output order; time integrals in ns
I_SUMS = 13
(
    I_N_RECORDS,
    I_N_EVENTS,
    I_N_SNAPSHOTS,
    I_N_CROSSED_EVENTS,
    I_TRADE_COUNT,
    I_VOLUME,
    I_BUY_VOLUME,
    I_SELL_VOLUME,
) = range(I_SUMS, I_SUMS + 8)
I_OFI = I_SUMS + 8  # 10 slots
(I_BOOK_NS, I_VALID_NS, I_CROSSED_NS, I_TW_BID1, I_TW_ASK1) = range(I_OFI + N_LEVELS, I_OFI + N_LEVELS + 5)
N_ISTATE = I_TW_ASK1 + 1
N_SUMS = N_ISTATE - I_SUMS
# float64 of the open second
(
    F_TW_SPREAD,  # points x ns
    F_TW_MICRODEV,
    F_TRADE_OPEN,
    F_TRADE_HIGH,
    F_TRADE_LOW,
    F_TRADE_CLOSE,
    F_NOTIONAL,
    F_MID_OPEN,
    F_MID_HIGH,
    F_MID_LOW,
) = range(10)
N_FSTATE = 10

# --- output rows (column-major: one row of these arrays per column) ------------------------------------
_OFI_COLS = [f"ofi_l{m + 1}" for m in range(N_LEVELS)]
COUNT_COLUMNS = [  # per-second integer counts, summed as they are into 1-minute bars
    "n_records",
    "n_events",
    "n_snapshots",
    "n_crossed_events",
    "trade_count",
    "volume",
    "buy_volume",
    "sell_volume",
]
_TW_COLS = ["book_s", "valid_s", "crossed_s", "tw_bid_sz_l1", "tw_ask_sz_l1"]  # ns in the kernel
_SUM_COLS = [*COUNT_COLUMNS, *_OFI_COLS, *_TW_COLS]  # in I_SUMS order
O_TS, O_IID, O_SEG_START, O_SEG_KIND, O_STATUS, O_SUMS = 0, 1, 2, 3, 4, 5  # O_SUMS: N_SUMS slots
O_BID_SZ = O_SUMS + N_SUMS
O_ASK_SZ = O_BID_SZ + N_LEVELS
N_INT_OUT = O_ASK_SZ + N_LEVELS
# float rows: bid_px, ask_px, then the F_* slots of the second, then the end-of-second mid / microprice
O_BID_PX = 0
O_ASK_PX = N_LEVELS
O_FLOATS = 2 * N_LEVELS
O_MID_CLOSE = O_FLOATS + N_FSTATE
O_MICRO_CLOSE = O_MID_CLOSE + 1
N_FLOAT_OUT = O_MICRO_CLOSE + 1
_FLOAT_COLS = [
    "tw_spread",
    "tw_microprice_dev",
    "trade_open",
    "trade_high",
    "trade_low",
    "trade_close",
    "notional",
    "mid_open",
    "mid_high",
    "mid_low",
]  # in F_* order

SECOND_COLUMNS: dict[str, np.dtype] = {
    "ts": np.dtype(np.int64),  # second start, UTC ns
    "instrument_id": np.dtype(np.int64),
    "trade_date": np.dtype("datetime64[D]"),
    "in_session": np.dtype(bool),  # continuous trading (not halt / pre-open)
    **{c: np.dtype(np.int64) for c in COUNT_COLUMNS},
    **{c: np.dtype(np.int64) for c in _OFI_COLS},
    **{c: np.dtype(np.float64) for c in level_columns("bid_px") + level_columns("ask_px")},  # points
    **{c: np.dtype(np.int64) for c in level_columns("bid_sz") + level_columns("ask_sz")},
    "book_valid": np.dtype(bool),  # a state exists at the end of the second and it is valid
    "crossed": np.dtype(bool),  # the end-of-second state is crossed or locked
    **{c: np.dtype(np.float64) for c in ("trade_open", "trade_high", "trade_low", "trade_close", "notional")},
    **{c: np.dtype(np.float64) for c in ("mid_open", "mid_high", "mid_low", "mid_close", "microprice_close")},
    **{c: np.dtype(np.float64) for c in ("book_s", "valid_s", "crossed_s", "tw_spread", "tw_microprice_dev")},
    **{c: np.dtype(np.float64) for c in _TW_COLS[3:]},
    "crossed_share": np.dtype(np.float64),  # crossed_s / book_s (0 when no book)
}
"""Columns of a `process_chunk` / `flush` result, in order, with their NumPy dtypes."""


class BookArrays(NamedTuple):
    """One slice of the record stream as columns; prices int64 fixed point (1e-9), UNDEF_PRICE = empty.

    Integer columns may be signed or unsigned (DBN's own types) and strided views into a DBN
    structured array; level arrays are (n, 10).
    """

    ts_recv: np.ndarray  # int64 / uint64 ns
    instrument_id: np.ndarray  # int64 / uint32
    action: np.ndarray  # uint8 ASCII code
    side: np.ndarray  # uint8 ASCII code
    flags: np.ndarray  # uint8
    price: np.ndarray  # int64
    size: np.ndarray  # int64 / uint32
    bid_px: np.ndarray
    ask_px: np.ndarray
    bid_sz: np.ndarray
    ask_sz: np.ndarray

    def slice(self, start: int, stop: int) -> BookArrays:
        """Rows [start, stop) (views)."""
        return BookArrays(*(a[start:stop] for a in self))


@functools.lru_cache(maxsize=16)
def _level_stride(dtype: np.dtype, field: str) -> int | None:
    """Byte step between `field_00..09` in a structured dtype, or None if they are not evenly spaced."""
    offsets = [dtype.fields[n][1] for n in level_columns(field)]
    step = offsets[1] - offsets[0]
    return step if all(o == offsets[0] + i * step for i, o in enumerate(offsets)) else None


def _level_view(chunk: np.ndarray, field: str) -> np.ndarray:
    """(n, 10) view of `field_00..09` when the levels sit at a constant stride, else a copy."""
    step = _level_stride(chunk.dtype, field)
    first = chunk[f"{field}_00"]
    if step is not None and first.ndim == 1:
        return np.lib.stride_tricks.as_strided(
            first, shape=(len(chunk), N_LEVELS), strides=(chunk.strides[0], step), writeable=False
        )
    return np.stack([chunk[n] for n in level_columns(field)], axis=1)


def arrays_from_dbn(chunk: np.ndarray) -> BookArrays:
    """A DBN MBP-10 structured array (`DBNStore.to_ndarray`, `iter_mbp10_arrays`) -> kernel columns.

    Zero-copy: every column is a strided view into the records (DBN's unsigned types; the kernel
    widens on read), so the kernel streams the records once.
    """
    return BookArrays(
        ts_recv=chunk["ts_recv"],
        instrument_id=chunk["instrument_id"],
        action=chunk["action"].view(np.uint8),
        side=chunk["side"].view(np.uint8),
        flags=chunk["flags"],
        price=chunk["price"],
        size=chunk["size"],
        bid_px=_level_view(chunk, "bid_px"),
        ask_px=_level_view(chunk, "ask_px"),
        bid_sz=_level_view(chunk, "bid_sz"),
        ask_sz=_level_view(chunk, "ask_sz"),
    )


def arrays_from_records(records: list) -> BookArrays:
    """`databento_dbn.MBP10Msg` objects (what `databento.Live` and iterating a `DBNStore` yield) -> kernel
    columns, through their DBN bytes and `arrays_from_dbn`: the live feed takes the file path's decoder.
    Other record types (symbol mappings, system and error messages) are skipped."""
    mbp10 = [r for r in records if isinstance(r, databento_dbn.MBP10Msg)]
    dtype = np.dtype(databento_dbn.MBP10Msg._dtypes)
    return arrays_from_dbn(np.frombuffer(b"".join(bytes(r) for r in mbp10), dtype=dtype))


def arrays_from_raw(frame: pl.DataFrame) -> BookArrays:
    """Rows of the `raw_mbp10` table -> kernel columns, in feed order (sorted by `record_index` when
    the frame has it and is not sorted yet: Delta does not keep row order).

    Null prices (the table's undefined prices) become UNDEF_PRICE again.
    """
    if "record_index" in frame.columns and not frame["record_index"].is_sorted():
        frame = frame.sort("record_index")

    def levels(field: str, fill: int | None) -> np.ndarray:
        cols = frame.select(level_columns(field))
        if fill is not None:
            cols = cols.fill_null(fill)
        return np.ascontiguousarray(cols.to_numpy(), dtype=np.int64)

    codes = frame.select(
        pl.col("action").replace_strict(_ACTION_CODES, return_dtype=pl.UInt8),
        pl.col("side").replace_strict(_SIDE_CODES, return_dtype=pl.UInt8),
    )
    return BookArrays(
        ts_recv=frame["ts_recv"].cast(pl.Int64).to_numpy(),
        instrument_id=frame["instrument_id"].cast(pl.Int64).to_numpy(),
        action=codes["action"].to_numpy(),
        side=codes["side"].to_numpy(),
        flags=frame["flags"].cast(pl.UInt8).to_numpy(),
        price=frame["price"].fill_null(UNDEF_PRICE).cast(pl.Int64).to_numpy(),
        size=frame["size"].cast(pl.Int64).to_numpy(),
        bid_px=levels("bid_px", UNDEF_PRICE),
        ask_px=levels("ask_px", UNDEF_PRICE),
        bid_sz=levels("bid_sz", None),
        ask_sz=levels("ask_sz", None),
    )


def session_bounds(lo_ns: int, hi_ns: int) -> tuple[np.ndarray, np.ndarray]:
    """Segment starts covering [lo_ns, hi_ns]: 16:00 CT (kind 0, new trade date: halt + pre-open) and
    17:00 CT (kind 1, continuous trading) of every calendar day, sorted. Weekends included on purpose:
    a segment never spans more than 23 hours, whatever the data holds.
    """
    first = dt.datetime.fromtimestamp(lo_ns // NS_PER_SECOND, tz=cal.CHICAGO).date() - dt.timedelta(days=2)
    last = dt.datetime.fromtimestamp(hi_ns // NS_PER_SECOND, tz=cal.CHICAGO).date() + dt.timedelta(days=1)
    starts: list[int] = []
    kinds: list[int] = []
    day = first
    while day <= last:
        nxt = day + dt.timedelta(days=1)  # the trade date whose window opens on `day`
        starts += [cal.trade_date_window(nxt)[0], cal.session_open_ns(nxt)]
        kinds += [0, 1]
        day = nxt
    return np.array(starts, dtype=np.int64), np.array(kinds, dtype=np.int64)


# --- the kernel -----------------------------------------------------------------------------------------


@njit(cache=True, inline="always")
def _integrate(ist: np.ndarray, fst: np.ndarray, book: np.ndarray, t: np.int64) -> None:
    """Bring the time integrals of the state in force up to t. They depend on the best level and the
    status only, so the kernel calls this when either changes (and at the end of each second): the
    integrand is constant in between, the result is the same as integrating at every state."""
    t0 = ist[I_TW_T]
    if t <= t0:
        return
    ist[I_TW_T] = t
    status = ist[I_STATUS]
    if status == ST_NONE:
        return
    d = t - t0
    ist[I_BOOK_NS] += d
    if status == ST_CROSSED:
        ist[I_CROSSED_NS] += d
    elif status == ST_VALID:
        ist[I_VALID_NS] += d
        qb = book[2, 0]
        qa = book[3, 0]
        spread = (book[1, 0] - book[0, 0]) / PRICE_SCALE
        fst[F_TW_SPREAD] += d * spread
        if qb + qa > 0:
            fst[F_TW_MICRODEV] += d * (spread * (qb - qa) / (2.0 * (qb + qa)))
        ist[I_TW_BID1] += d * qb
        ist[I_TW_ASK1] += d * qa


@njit(cache=True, inline="always")
def _mid(book: np.ndarray) -> float:
    return (book[0, 0] + book[1, 0]) / (2.0 * PRICE_SCALE)


@njit(cache=True)
def _open_bucket(ist: np.ndarray, fst: np.ndarray, book: np.ndarray, sec: np.int64) -> None:
    ist[I_BUCKET_OPEN] = 1
    ist[I_BUCKET_SEC] = sec
    ist[I_TW_T] = sec
    ist[I_SUMS:] = 0
    fst[:] = 0.0
    fst[F_TRADE_OPEN] = np.nan
    fst[F_TRADE_HIGH] = np.nan
    fst[F_TRADE_LOW] = np.nan
    fst[F_TRADE_CLOSE] = np.nan
    mid = _mid(book) if ist[I_STATUS] == ST_VALID else np.nan
    fst[F_MID_OPEN] = mid
    fst[F_MID_HIGH] = mid
    fst[F_MID_LOW] = mid


@njit(cache=True)
def _close_bucket(ist: np.ndarray, fst: np.ndarray, book: np.ndarray, oi: np.ndarray, of: np.ndarray, row: int) -> None:
    """Finish the open second (state alive to its end) and write it as row `row` of the row-major
    staging block (oi, of)."""
    sec = ist[I_BUCKET_SEC]
    _integrate(ist, fst, book, sec + NS_PER_SECOND)
    status = ist[I_STATUS]
    oi[row, O_TS] = sec
    oi[row, O_IID] = ist[I_IID]
    oi[row, O_SEG_START] = ist[I_SEG_START]
    oi[row, O_SEG_KIND] = ist[I_SEG_KIND]
    oi[row, O_STATUS] = status
    for k in range(N_SUMS):
        oi[row, O_SUMS + k] = ist[I_SUMS + k]
    for m in range(N_LEVELS):
        oi[row, O_BID_SZ + m] = book[2, m]
        oi[row, O_ASK_SZ + m] = book[3, m]
        bp = book[0, m]
        ap = book[1, m]
        of[row, O_BID_PX + m] = np.nan if bp == EMPTY_BID else bp / PRICE_SCALE
        of[row, O_ASK_PX + m] = np.nan if ap == UNDEF_PRICE else ap / PRICE_SCALE
    for k in range(N_FSTATE):
        of[row, O_FLOATS + k] = fst[k]
    mid = np.nan
    micro = np.nan
    if status == ST_VALID:
        mid = _mid(book)
        qb = book[2, 0]
        qa = book[3, 0]
        spread = (book[1, 0] - book[0, 0]) / PRICE_SCALE
        micro = mid + (spread * (qb - qa) / (2.0 * (qb + qa)) if qb + qa > 0 else 0.0)
    of[row, O_MID_CLOSE] = mid
    of[row, O_MICRO_CLOSE] = micro
    ist[I_BUCKET_OPEN] = 0


@njit(cache=True)
def _emit_block(si: np.ndarray, sf: np.ndarray, oi: np.ndarray, of: np.ndarray, first: int, count: int) -> None:
    """Copy `count` staged rows into the column-major output from row `first` (a blocked transpose:
    writing 100+ columns row by row straight into column-major arrays is 30 % of the kernel's time)."""
    for c in range(N_INT_OUT):
        for r in range(count):
            oi[c, first + r] = si[r, c]
    for c in range(N_FLOAT_OUT):
        for r in range(count):
            of[c, first + r] = sf[r, c]


@njit(cache=True)
def _reset_run(ist: np.ndarray, book: np.ndarray, iid: np.int64, seg_start: np.int64, seg_kind: np.int64) -> None:
    ist[I_HAS_RUN] = 1
    ist[I_IID] = iid
    ist[I_SEG_START] = seg_start
    ist[I_SEG_KIND] = seg_kind
    ist[I_STATUS] = ST_NONE
    ist[I_PENDING_SNAPSHOT] = 0
    ist[I_BUCKET_OPEN] = 0
    book[0, :] = EMPTY_BID
    book[1, :] = UNDEF_PRICE
    book[2, :] = 0
    book[3, :] = 0


@njit(cache=True, inline="always")
def _apply_trade(ist: np.ndarray, fst: np.ndarray, side: np.uint8, px: np.int64, q: np.int64) -> None:
    ist[I_TRADE_COUNT] += 1
    ist[I_VOLUME] += q
    if side == SIDE_BUY:
        ist[I_BUY_VOLUME] += q
    elif side == SIDE_SELL:
        ist[I_SELL_VOLUME] += q
    if px != UNDEF_PRICE:
        p = px / PRICE_SCALE
        if np.isnan(fst[F_TRADE_OPEN]):
            fst[F_TRADE_OPEN] = p
            fst[F_TRADE_HIGH] = p
            fst[F_TRADE_LOW] = p
        else:
            fst[F_TRADE_HIGH] = max(fst[F_TRADE_HIGH], p)
            fst[F_TRADE_LOW] = min(fst[F_TRADE_LOW], p)
        fst[F_TRADE_CLOSE] = p
        fst[F_NOTIONAL] += p * q


@njit(cache=True)
def _process(
    ts_recv: np.ndarray,
    instrument_id: np.ndarray,
    action: np.ndarray,
    side: np.ndarray,
    flags: np.ndarray,
    price: np.ndarray,
    size: np.ndarray,
    bid_px: np.ndarray,
    ask_px: np.ndarray,
    bid_sz: np.ndarray,
    ask_sz: np.ndarray,
    bounds: np.ndarray,
    bound_kind: np.ndarray,
    start: int,
    ist: np.ndarray,
    fst: np.ndarray,
    book: np.ndarray,
    oi: np.ndarray,
    of: np.ndarray,
    si: np.ndarray,
    sf: np.ndarray,
) -> tuple[int, int, bool]:
    """Apply records [start, n) to the state, writing completed seconds into oi/of (column-major,
    staged through the row-major blocks si/sf).

    Returns (rows written, next record, session table too short). Stops early, before touching
    record i, when the output is full or record i lies outside `bounds`; calling again from the
    returned index resumes exactly (state is only in ist/fst/book).
    """
    n = ts_recv.shape[0]
    cap = oi.shape[1]
    block = si.shape[0]
    nb = bounds.shape[0]
    row = 0
    j = 0
    i = start
    need_bounds = False
    while i < n:
        inst = np.int64(instrument_id[i])
        t = np.int64(ts_recv[i])
        same_inst = ist[I_HAS_RUN] == 1 and inst == ist[I_IID]
        clamped = same_inst and t < ist[I_LAST_TS]
        if clamped:
            t = ist[I_LAST_TS]
        if ist[I_BUCKET_OPEN] == 0 or t >= ist[I_BUCKET_SEC] + NS_PER_SECOND or not same_inst:
            # leaving the open second (rare): close it, fill quiet seconds or restart the run. Segments
            # start on whole seconds, so a record inside the open second is in the open segment.
            if t < bounds[0] or t >= bounds[nb - 1]:
                need_bounds = True  # outside the session table: the caller extends it and resumes
                break
            while j + 1 < nb and bounds[j + 1] <= t:
                j += 1
            while j > 0 and bounds[j] > t:
                j -= 1
            seg_start = bounds[j]
            sec = t - t % NS_PER_SECOND
            if not same_inst or seg_start != ist[I_SEG_START]:
                if ist[I_BUCKET_OPEN] == 1:
                    if row >= cap:
                        break
                    _close_bucket(ist, fst, book, si, sf, row % block)
                    row += 1
                    if row % block == 0:
                        _emit_block(si, sf, oi, of, row - block, block)
                if ist[I_HAS_RUN] == 1:
                    if same_inst:
                        ist[I_RESETS_SESSION] += 1
                    else:
                        ist[I_RESETS_INSTRUMENT] += 1
                _reset_run(ist, book, inst, seg_start, bound_kind[j])
            else:
                full = False
                while ist[I_BUCKET_OPEN] == 1 and ist[I_BUCKET_SEC] < sec:
                    if row >= cap:
                        full = True
                        break
                    nxt = ist[I_BUCKET_SEC] + NS_PER_SECOND
                    _close_bucket(ist, fst, book, si, sf, row % block)
                    row += 1
                    if row % block == 0:
                        _emit_block(si, sf, oi, of, row - block, block)
                    if nxt < sec:
                        _open_bucket(ist, fst, book, nxt)  # a quiet second: book carried, no records
                if full:
                    break
            if ist[I_BUCKET_OPEN] == 0:
                _open_bucket(ist, fst, book, sec)
        if clamped:
            ist[I_TS_CLAMPED] += 1
        ist[I_LAST_TS] = t
        ist[I_N_RECORDS] += 1

        f = flags[i]
        a = action[i]
        if (f & F_SNAPSHOT) != 0 or a == ACTION_CLEAR:
            ist[I_PENDING_SNAPSHOT] = 1
        if a == ACTION_TRADE:
            _apply_trade(ist, fst, side[i], price[i], np.int64(size[i]))
        if (f & F_LAST) == 0:
            i += 1
            continue

        # a new book state n
        prev = ist[I_STATUS]
        b0 = bid_px[i, 0]
        a0 = ask_px[i, 0]
        status = ST_ONE_SIDED
        if b0 != UNDEF_PRICE and a0 != UNDEF_PRICE:
            status = ST_VALID if b0 < a0 else ST_CROSSED
        # flow only between two uncrossed states, never out of a re-statement
        flow = ist[I_PENDING_SNAPSHOT] == 0 and prev != ST_NONE and prev != ST_CROSSED and status != ST_CROSSED
        # which levels changed (a typical event touches one): unchanged ones contribute
        # e = qb - qb - qa + qa = 0 and need no work
        changed = 0
        for m in range(N_LEVELS):
            nbp = bid_px[i, m]
            nap = ask_px[i, m]
            nbq = np.int64(bid_sz[i, m]) if nbp != UNDEF_PRICE else 0
            naq = np.int64(ask_sz[i, m]) if nap != UNDEF_PRICE else 0
            nbp = EMPTY_BID if nbp == UNDEF_PRICE else nbp
            diff = (nbp != book[0, m]) | (nap != book[1, m]) | (nbq != book[2, m]) | (naq != book[3, m])
            changed |= np.int64(diff) << m
        if (changed & 1) != 0 or status != prev:
            _integrate(ist, fst, book, t)  # the previous best level lived until now
        m = 0
        while changed != 0:
            if (changed & 1) != 0:
                nbp = bid_px[i, m]
                nap = ask_px[i, m]
                nbq = np.int64(bid_sz[i, m]) if nbp != UNDEF_PRICE else 0
                naq = np.int64(ask_sz[i, m]) if nap != UNDEF_PRICE else 0
                nbp = EMPTY_BID if nbp == UNDEF_PRICE else nbp
                pbp = book[0, m]
                pap = book[1, m]
                if flow:
                    e = np.int64(0)
                    if nbp >= pbp:
                        e += nbq
                    if nbp <= pbp:
                        e -= book[2, m]
                    if nap <= pap:
                        e -= naq
                    if nap >= pap:
                        e += book[3, m]
                    ist[I_OFI + m] += e
                book[0, m] = nbp
                book[1, m] = nap
                book[2, m] = nbq
                book[3, m] = naq
            changed >>= 1
            m += 1
        ist[I_STATUS] = status
        ist[I_N_EVENTS] += 1
        if ist[I_PENDING_SNAPSHOT] == 1:
            ist[I_N_SNAPSHOTS] += 1
            ist[I_PENDING_SNAPSHOT] = 0
        if status == ST_CROSSED:
            ist[I_N_CROSSED_EVENTS] += 1
        elif status == ST_VALID:
            mid = (b0 + a0) / (2.0 * PRICE_SCALE)
            if np.isnan(fst[F_MID_OPEN]):
                fst[F_MID_OPEN] = mid
                fst[F_MID_HIGH] = mid
                fst[F_MID_LOW] = mid
            else:
                fst[F_MID_HIGH] = max(fst[F_MID_HIGH], mid)
                fst[F_MID_LOW] = min(fst[F_MID_LOW], mid)
        i += 1
    if row % block:
        _emit_block(si, sf, oi, of, row - row % block, row % block)
    return row, i, need_bounds


@njit(cache=True)
def _flush(ist: np.ndarray, fst: np.ndarray, book: np.ndarray, si: np.ndarray, sf: np.ndarray) -> int:
    """Close the open second into row 0 of the row-major block (si, sf); returns the rows written."""
    if ist[I_BUCKET_OPEN] == 0:
        return 0
    _close_bucket(ist, fst, book, si, sf, 0)
    return 1


# --- the Python face --------------------------------------------------------------------------------


class BookOfiState:
    """Explicit, picklable state of the 1-second book/OFI kernel for one record stream.

    Feed the stream in order with `process_chunk` (any chunk size, down to single records for the
    live path); each call returns the seconds it completed. `flush()` ends the stream: it emits the
    open second and resets the state, so the object can start another stream.
    """

    _row_limit = 1 << 20  # output rows per kernel call; more are produced by resuming the call

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._ist = np.zeros(N_ISTATE, dtype=np.int64)
        self._fst = np.zeros(N_FSTATE, dtype=np.float64)
        self._book = np.zeros((4, N_LEVELS), dtype=np.int64)
        self._bounds = np.zeros(0, dtype=np.int64)
        self._bound_kind = np.zeros(0, dtype=np.int64)

    def _ensure_bounds(self, lo: int, hi: int) -> None:
        b = self._bounds
        if b.size and b[0] <= lo and b[-1] > hi:
            return
        self._bounds, self._bound_kind = session_bounds(lo, hi)

    def process_chunk(self, arrays: BookArrays) -> dict[str, np.ndarray]:
        """Apply the next records; returns the completed seconds as `SECOND_COLUMNS` arrays."""
        n = len(arrays.ts_recv)
        if n == 0:
            return dict(_EMPTY)
        ts = arrays.ts_recv
        lo, hi = int(ts[0]), max(int(ts[-1]), int(self._ist[I_LAST_TS]))  # the kernel checks the rest
        self._ensure_bounds(lo, hi)
        # one row per second spanned plus a few run changes; the loop below resumes if not enough
        first = min(lo, int(self._ist[I_BUCKET_SEC])) if self._ist[I_BUCKET_OPEN] else lo
        cap = min(max(16, (hi - first) // NS_PER_SECOND + 8), self._row_limit)
        parts_i: list[np.ndarray] = []
        parts_f: list[np.ndarray] = []
        block = min(cap, 128)
        si = np.empty((block, N_INT_OUT), dtype=np.int64)
        sf = np.empty((block, N_FLOAT_OUT), dtype=np.float64)
        i = 0
        while i < n:
            oi = np.empty((N_INT_OUT, cap), dtype=np.int64)
            of = np.empty((N_FLOAT_OUT, cap), dtype=np.float64)
            rows, i, need_bounds = _process(
                *arrays,
                self._bounds,
                self._bound_kind,
                i,
                self._ist,
                self._fst,
                self._book,
                oi,
                of,
                si,
                sf,
            )
            parts_i.append(oi[:, :rows])
            parts_f.append(of[:, :rows])
            if need_bounds:  # records out of time order reach outside the table: cover them all
                rest = ts[i:]
                self._ensure_bounds(min(int(rest.min()), lo), max(int(rest.max()), hi))
        if len(parts_i) == 1:
            return _columns(parts_i[0], parts_f[0]) if rows else dict(_EMPTY)  # live path: mostly empty
        return _columns(np.concatenate(parts_i, axis=1), np.concatenate(parts_f, axis=1))

    def flush(self) -> dict[str, np.ndarray]:
        """End of the stream: emit the open second (its state lives to the second's end), then reset."""
        si = np.empty((1, N_INT_OUT), dtype=np.int64)
        sf = np.empty((1, N_FLOAT_OUT), dtype=np.float64)
        rows = _flush(self._ist, self._fst, self._book, si, sf)
        oi, of = si.T, sf.T  # one row: the row-major block is its own column-major output
        diagnostics = self._ist[[I_RESETS_INSTRUMENT, I_RESETS_SESSION, I_TS_CLAMPED]].copy()
        self._reset()
        self._ist[[I_RESETS_INSTRUMENT, I_RESETS_SESSION, I_TS_CLAMPED]] = diagnostics
        return _columns(oi[:, :rows], of[:, :rows]) if rows else dict(_EMPTY)

    def diagnostics(self) -> dict[str, int]:
        """Counts since creation: runs restarted by an instrument change / a session break, and records
        whose ts_recv went backwards within a run (treated as received at the previous ts_recv)."""
        return {
            "instrument_resets": int(self._ist[I_RESETS_INSTRUMENT]),
            "session_resets": int(self._ist[I_RESETS_SESSION]),
            "ts_recv_clamped": int(self._ist[I_TS_CLAMPED]),
        }

    def copy(self) -> BookOfiState:
        """An independent copy (e.g. to branch a live state); pickling works as well."""
        other = BookOfiState()
        other.__dict__.update({k: v.copy() for k, v in self.__dict__.items()})
        return other


def _trade_date(segment_start: np.ndarray) -> np.ndarray:
    """Trade date of a segment starting at 16:00 or 17:00 CT on day d: d + 1.

    16:00/17:00 CT is 21:00-23:00 UTC on d under either UTC offset, so d = UTC date of start - 6 h.
    """
    days = (segment_start - 6 * 3600 * NS_PER_SECOND) // cal.NS_PER_DAY + 1
    return days.astype("datetime64[D]")


def _columns(oi: np.ndarray, of: np.ndarray) -> dict[str, np.ndarray]:
    """Column-major kernel output -> named columns (views where no conversion is needed)."""
    out: dict[str, np.ndarray] = {
        "ts": oi[O_TS],
        "instrument_id": oi[O_IID],
        "trade_date": _trade_date(oi[O_SEG_START]),
        "in_session": oi[O_SEG_KIND] == 1,
        "book_valid": oi[O_STATUS] == ST_VALID,
        "crossed": oi[O_STATUS] == ST_CROSSED,
        "mid_close": of[O_MID_CLOSE],
        "microprice_close": of[O_MICRO_CLOSE],
    }
    for k, name in enumerate(_SUM_COLS):
        out[name] = oi[O_SUMS + k] / 1e9 if name in _TW_COLS else oi[O_SUMS + k]
    for m in range(N_LEVELS):
        out[f"bid_sz_{m:02d}"] = oi[O_BID_SZ + m]
        out[f"ask_sz_{m:02d}"] = oi[O_ASK_SZ + m]
        out[f"bid_px_{m:02d}"] = of[O_BID_PX + m]
        out[f"ask_px_{m:02d}"] = of[O_ASK_PX + m]
    for k, name in enumerate(_FLOAT_COLS):
        out[name] = of[O_FLOATS + k] / 1e9 if name.startswith("tw_") else of[O_FLOATS + k]
    book_s = out["book_s"]
    out["crossed_share"] = np.divide(out["crossed_s"], book_s, out=np.zeros_like(book_s), where=book_s > 0)
    return {name: out[name] for name in SECOND_COLUMNS}


_EMPTY = _columns(np.zeros((N_INT_OUT, 0), np.int64), np.zeros((N_FLOAT_OUT, 0)))


def book_ofi_1s(chunks: Iterable[BookArrays], state: BookOfiState | None = None) -> dict[str, np.ndarray]:
    """Run a whole stream (an iterable of chunks) through one state and flush: all its seconds."""
    state = state or BookOfiState()
    parts = [state.process_chunk(c) for c in chunks]
    parts.append(state.flush())
    return {k: np.concatenate([p[k] for p in parts]) for k in SECOND_COLUMNS}
