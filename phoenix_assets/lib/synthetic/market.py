"""A synthetic MNQ market written as real Databento DBN files (DBN v3, zstd) of MBP-10 records.

This is Phoenix's embedded default data: every later stage (book/OFI kernels, features, RL) runs on
it, so it reproduces the traps of real GLBX.MDP3 MBP-10 data, and it plants one known edge. What
follows is the contract those stages may rely on.

Files and metadata
    One file per CME trade date, `glbx-mdp3-mnq-<yyyymmdd>.mbp-10.dbn.zst` (downstream recognises files
    by their metadata, not the name): dataset GLBX.MDP3, schema mbp-10, stype_in continuous, stype_out
    instrument_id, symbols [`continuous_symbol`], start/end = the trade-date window (16:00 CT D-1 to
    16:00 CT D), and one mapping interval per UTC date the window touches, so that `to_df()` names every
    record `continuous_symbol`. Written to a hidden temp name and renamed: never a half file.

Book
    10 levels a side, tick 0.25 points (250_000_000 in DBN's 1e-9 fixed point), integer sizes (fresh
    levels uniform in 0.5-1.5 x (3 + 2.5*level), levels below the best mean-revert to that: thicker
    deeper; the best level's size random-walks between price moves), order counts 1 <= ct <= size.
    In continuous trading each side's levels sit on consecutive ticks and the spread on F_LAST records
    is 1 tick, sometimes 2 ticks for a few events (a half-done price move, see below); never locked or
    crossed.

Records and events
    An event is 1+ records sharing ts_event and ts_recv; F_LAST (0x80) is set on the last record of an
    event only, and every record carries the full book after that record is applied (so only F_LAST
    records show a consistent book, as in real data). Continuous events (shares of all events):
    - add `A` / cancel `C` (size = quantity added/removed) and modify `M` (size = |change|), 78 % and
      6 %, one record each at depth 0-9 (level weights 30 % at the best level, falling to 4 % at level
      9). Below the best level, add-vs-cancel mean-reverts the size (P(add) = target/(target+size)).
      At the best level the flow is state-independent: a fair-sign +-q (CKS sign) with
      q = 1 + floor(Exp*1.0); a cancel (or downward modify) that would empty the level instead arrives
      as an add of q on the other side's best level, which has the same OFI sign. Never empties a level.
    - trade, 10 %: `T` (flags 0, side = aggressor `B`/`A`, price = best opposite price, size q =
      1 + floor(Exp*0.8), depth 0, book unchanged) then `C` of q at depth 0 with F_LAST. A trade that
      would take the whole level arrives instead as an add of q on the aggressor's own best level.
    - price move, 6 % up to 200k records a day, 6 % x 200k / records_per_day above (the other events
      keep their mix), so a day has ~10k moves and the range and realized volatility of a real MNQ day
      whatever its record count; days of <= 200k records are byte-identical to before this rule.
      Up = optional `T` of the whole best ask (60 % of moves, else no trade), `C` of
      the whole best ask (the ask ladder shifts in, a new level 9 appears; the spread is now 2 ticks),
      then `A` of one order at best bid + 1 tick (the bid ladder shifts out, level 9 drops) with F_LAST.
      In 20 % of moves the `A` is left out: the `C` carries F_LAST and the book rests with a 2-tick
      spread until a one-record gap fill (any move, or 25 % of other events, while the gap is open)
      opens a level inside it, on the bid (up) or the ask (down). Symmetric down.
    - flags: 0 or F_LAST, plus the one F_SNAPSHOT record. Sequence numbers are shared by the records of
      one event and grow between events by 1 or more (other instruments share the channel).

Planted edge (the thing the models should find)
    `flow` is an exponentially decaying sum (half-life `flow_halflife_s`) of the signed best-level
    order flow of the random add/cancel/modify/trade events, with the Cont-Kukanov-Stoikov signs (bid
    adds, ask cancels, buyer-initiated trades positive; ask adds, bid cancels, seller-initiated trades
    negative). Price moves and gap fills are not counted in `flow`. Because the best-level flow is
    fair-sign whatever the book looks like, `flow` has no drift after a move (a size-dependent rule
    would refill the new best levels in the direction of the move and feed back into the moves). Moves
    and gap fills go up with probability 0.5 + 0.5 * ofi_strength * tanh(flow / scale), where scale is
    the stationary standard deviation of `flow` at the current event rate, sqrt(rate *
    FLOW_VAR_PER_EVENT / (2 ln2 / half-life)), so flow/scale has RMS about 1 at any time of day and any
    records_per_day. Past OFI therefore predicts future mid moves; with ofi_strength = 0 the moves are
    fair coin flips and nothing predicts them. (A move adds OFI mechanically as it happens.)

CME day (America/Chicago)
    16:00-16:45 halt: no records. 16:45:00.000: one snapshot record (flags F_SNAPSHOT|F_LAST = 0xA0,
    action `A`, side `N`, price undefined, size 0, depth 0) restating the pre-open book. 16:45-17:00
    pre-open: indicative book with levels 0-4 only (5-9 undefined: price i64::MAX, size 0, ct 0), often
    locked or crossed (best bid >= best ask, each side drifting within a few ticks of the opening
    price), adds/cancels/modifies and one-record ladder shifts, no trades. 17:00:00.000 exactly: the
    opening uncross, a `T` with side `N` at the opening price, then an `A`/side `N`/undefined price/size
    0 record with F_LAST that restates a normal uncrossed 10-level book (best bid = opening price).
    17:00 CT D-1 to 16:00 CT D continuous trading; event intensity by time of day (`_activity_profile`):
    thin overnight, busier from 02:00 (Europe), a 07:30 data bump, a spike at the 08:30 cash open that
    decays to a busy plateau (with a lunch dip), a little busier again 15:00-16:00. Scaled so the day has
    about `records_per_day` records (times a daily activity factor within +-12 %). Nothing at or after
    16:00 CT D (the last ts_recv is more than 1 ms before it).

Timestamps
    ts_event strictly increases from event to event; ts_recv = ts_event + 75 us + an exponential 20 us
    latency (capped), never decreasing; ts_in_delta 11-17 us.

Prices across days and the roll
    Each trade date's opening price comes from a daily log random walk (1.2 % a day) keyed only by
    (seed, date), anchored at `start_price` on 2024-01-02, so any day is identical alone or inside a range.
    Intraday the price moves one tick per move event (gaps a half tick each way). Trade dates on or after
    `roll_date` trade instrument_ids[1] at `roll_spread_points` higher; earlier ones instrument_ids[0].

Determinism
    Every draw comes from a NumPy PCG64 stream seeded by (seed, trade date); the numba kernel consumes a
    fixed number of draws per event and carries its state between chunks explicitly, so the records do
    not depend on other days or on `chunk_records`.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import databento_dbn as dbn
import numpy as np
import zstandard
from numba import njit
from numba import types as numba_types

from phoenix_assets.lib import calendar as cal
from phoenix_assets.lib.instrument import MNQ
from phoenix_assets.lib.schema import (
    F_LAST,
    F_SNAPSHOT,
    N_LEVELS,
    PRICE_SCALE,
    RECORD_LENGTH_WORDS,
    RTYPE_MBP10,
    UNDEF_PRICE,
    level_columns,
)

__all__ = [
    "DEMO_MARKET",
    "MBP10_DTYPE",
    "SyntheticMarketConfig",
    "day_file_name",
    "iter_day_records",
    "opening_price_points",
    "write_day",
    "write_range",
]

TICK_POINTS = MNQ.tick_size
TICK = round(TICK_POINTS * PRICE_SCALE)  # 250_000_000: one tick in DBN fixed point
RECORD_BYTES = 4 * RECORD_LENGTH_WORDS  # 368


def _mbp10_dtype() -> np.dtype:
    """The structured dtype `databento.DBNStore.to_ndarray()` returns for mbp-10 (checked in tests)."""
    fields: list[tuple[str, str]] = [
        ("length", "u1"),
        ("rtype", "u1"),
        ("publisher_id", "<u2"),
        ("instrument_id", "<u4"),
        ("ts_event", "<u8"),
        ("price", "<i8"),
        ("size", "<u4"),
        ("action", "S1"),
        ("side", "S1"),
        ("flags", "u1"),
        ("depth", "u1"),
        ("ts_recv", "<u8"),
        ("ts_in_delta", "<i4"),
        ("sequence", "<u4"),
    ]
    for i in range(N_LEVELS):
        fields += [(f"bid_px_{i:02d}", "<i8"), (f"ask_px_{i:02d}", "<i8")]
        fields += [(f"{n}_{i:02d}", "<u4") for n in ("bid_sz", "ask_sz", "bid_ct", "ask_ct")]
    dtype = np.dtype(fields)
    assert dtype.itemsize == RECORD_BYTES
    assert [n for n in dtype.names if n.startswith("bid_px")] == level_columns("bid_px")
    return dtype


MBP10_DTYPE = _mbp10_dtype()

# --- model constants (the rates are documented in the module docstring) ------------------------------
P_MOVE = 0.06  # share of continuous events that move the price one tick
P_TRADE = 0.10  # ... that trade part of the best level
P_MODIFY = 0.06  # ... that modify a level; the rest add or cancel
P_MOVE_BY_TRADE = 0.6  # a move takes out the best level by a trade (else by a cancel)
P_SPLIT_MOVE = 0.2  # a move stops at a 2-tick spread; a later event fills the gap
P_GAP_FILL = 0.25  # while the spread is 2 ticks, share of events that fill the gap (plus the moves)
P_PRE_SHIFT = 0.15  # pre-open: share of events that shift one side's indicative ladder by a tick
PRE_LEVELS = 5  # pre-open: levels 0-4 defined
PRE_OFFSET_MIN, PRE_OFFSET_MAX = -1, 2  # pre-open best prices stay this many ticks around the open
LEVEL_WEIGHTS = np.array([0.30, 0.15, 0.11, 0.09, 0.08, 0.07, 0.06, 0.05, 0.05, 0.04])
LEVEL_CUM = np.cumsum(LEVEL_WEIGHTS / LEVEL_WEIGHTS.sum())
TARGET_SIZE = np.array([3.0 + 2.5 * i for i in range(N_LEVELS)])  # sizes mean-revert to these
BEST_SIZE_EXTRA = 1.0  # best-level add/cancel/modify quantity: 1 + floor(Exp * this)
TRADE_SIZE_EXTRA = 0.8  # trade quantity: 1 + floor(Exp * this)


def _size_second_moment(extra: float) -> float:
    """E[q^2] for q = 1 + floor(Exp(1) * extra), i.e. 1 + a geometric count with ratio exp(-1/extra)."""
    r = math.exp(-1.0 / extra)
    return 1.0 + 2.0 * r / (1.0 - r) + r * (1.0 + r) / (1.0 - r) ** 2


# E[(best-level flow contribution)^2] per continuous event: best-level add/cancel/modify and trades
# contribute +-q with a fair sign whatever the book looks like, so flow is shot noise with this variance.
FLOW_VAR_PER_EVENT = (1.0 - P_MOVE - P_TRADE) * float(LEVEL_CUM[0]) * _size_second_moment(
    BEST_SIZE_EXTRA
) + P_TRADE * _size_second_moment(TRADE_SIZE_EXTRA)
# records per continuous event under this mix, measured on generated days (1.152; the analytic
# 1.18 misses that a trade which would empty the level becomes a one-record add)
RECORDS_PER_CONTINUOUS_EVENT = 1.152
# Volatility is set by the number of price moves a day, not by the number of records: above this many
# records a day the move share shrinks as VOL_REFERENCE_RECORDS / records_per_day, so a 10M-record day
# has the ~10k one-tick moves (and the range) of a 200k-record day. At or below it nothing changes.
VOL_REFERENCE_RECORDS = 200_000
# records of one move event (0.6 trades + the cancel + 0.8 adds) and the non-move events' mean, so
# that RECORDS_PER_CONTINUOUS_EVENT = P_MOVE * R_MOVE + (1 - P_MOVE) * R_NON_MOVE
RECORDS_PER_MOVE = 1.0 + P_MOVE_BY_TRADE + (1.0 - P_SPLIT_MOVE)
RECORDS_PER_NON_MOVE = (RECORDS_PER_CONTINUOUS_EVENT - P_MOVE * RECORDS_PER_MOVE) / (1.0 - P_MOVE)
DAILY_VOL = 0.012  # daily log-return sd of the opening-price walk
WALK_ANCHOR = dt.date(2024, 1, 2)  # the walk equals start_price on this date
_WALK_BLOCK = 4096
N_DRAWS = 14  # uniforms consumed per event
MAX_RECORDS_PER_EVENT = 3
END_GUARD_NS = 1_000_000  # last event at least 1 ms before the window end (ts_recv stays inside)
_SALT_DAY, _SALT_WALK = 0x5EED_DA7, 0x0BE4_3A1C

# kernel phases and state slots
PH_SNAPSHOT, PH_PRE, PH_CONT, PH_DONE = 0, 1, 2, 3
S_PHASE, S_T, S_RECV, S_SEQ, S_SPREAD, S_P0, S_RECORDS, S_EVENTS = range(8)
F_FLOW, F_Z2, F_NZ = range(3)
_A, _C, _M, _T, _B, _ASK, _N = (ord(c) for c in "ACMTBAN")


@dataclass(frozen=True)
class SyntheticMarketConfig:
    """Everything that shapes a synthetic market; same config + date -> same bytes."""

    seed: int = field(default=7, metadata={"doc": "Seed of the market: same config + trade date -> same bytes"})
    records_per_day: int = field(
        default=40_000, metadata={"doc": "Approximate records per trade date (records, not events)"}
    )
    ofi_strength: float = field(
        default=0.6, metadata={"doc": "Planted OFI -> future mid link; 0 = no edge (the negative control)"}
    )
    flow_halflife_s: float = field(
        default=30.0, metadata={"doc": "Half-life (seconds) of the order flow that drives the planted link"}
    )
    roll_date: dt.date | None = field(
        default=dt.date(2024, 3, 15),
        metadata={"doc": "Trade dates from this one on trade the next contract (new instrument_id)"},
    )
    instrument_ids: tuple[int, int] = (42005347, 42140878)
    raw_symbols: tuple[str, str] = ("MNQH4", "MNQM4")
    continuous_symbol: str = MNQ.continuous_symbol
    start_price: float = 17500.0  # index points
    roll_spread_points: float = 180.0  # next contract trades this much higher
    publisher_id: int = 1  # GLBX.MDP3
    chunk_records: int = 262_144

    def __post_init__(self) -> None:
        problems = []
        if self.seed < 0:
            problems.append(f"seed must be >= 0 (got {self.seed})")
        if self.records_per_day < 100:
            problems.append(f"records_per_day must be >= 100 (got {self.records_per_day})")
        if not -1.0 <= self.ofi_strength <= 1.0:
            problems.append(f"ofi_strength must lie in [-1, 1] (got {self.ofi_strength})")
        if not self.flow_halflife_s > 0:
            problems.append(f"flow_halflife_s must be > 0 (got {self.flow_halflife_s})")
        if self.chunk_records < 16:
            problems.append(f"chunk_records must be >= 16 (got {self.chunk_records})")
        if not self.start_price > 100 * TICK_POINTS:
            problems.append(f"start_price must be a positive index level (got {self.start_price})")
        if problems:
            raise ValueError("SyntheticMarketConfig: " + "; ".join(problems))

    def instrument_for(self, trade_date: dt.date) -> tuple[int, str]:
        """(instrument_id, raw symbol) traded on this date: the 2nd contract from roll_date on."""
        second = self.roll_date is not None and trade_date >= self.roll_date
        return self.instrument_ids[int(second)], self.raw_symbols[int(second)]


# The embedded default market of `./phoenix demo` and the synthetic landing job's defaults: busier than the
# generator's (no in-session minute is empty) and with a minutes-long planted edge (a 1-minute bar's OFI predicts
# the next minutes' drift by more than a round trip costs), so an agent has something real to learn. The
# generator's own defaults above stay small and fast for tests and benchmarks.
DEMO_MARKET = SyntheticMarketConfig(records_per_day=200_000, ofi_strength=0.5, flow_halflife_s=300.0)


def day_file_name(trade_date: dt.date) -> str:
    """`glbx-mdp3-mnq-20240315.mbp-10.dbn.zst` (Databento's download naming)."""
    return f"glbx-mdp3-mnq-{trade_date:%Y%m%d}.mbp-10.dbn.zst"


def write_day(trade_date: dt.date, out_dir: Path, cfg: SyntheticMarketConfig = SyntheticMarketConfig()) -> Path:
    """Write one trade date's MBP-10 records as a zstd DBN file in `out_dir`; returns its path.

    Streams in chunks of `cfg.chunk_records` (bounded memory at 10M records), writes to a hidden temp
    file and renames it, so readers never see a half-written file.
    """
    _require_trade_date(trade_date)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / day_file_name(trade_date)
    fd, tmp_name = tempfile.mkstemp(dir=out_dir, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, 0o644)  # mkstemp creates 0600; the landing folder is shared with readers
        with os.fdopen(fd, "wb") as raw:
            # single-threaded level 3: zstd worker threads bought nothing on 2 cores (the kernel holds
            # one) and cost memory; compression is still ~2/3 of the write time
            compressor = zstandard.ZstdCompressor(level=3)
            with compressor.stream_writer(raw, closefd=False) as zw:
                zw.write(bytes(_metadata(trade_date, cfg).encode()))
                for chunk in _iter_record_bytes(trade_date, cfg):
                    zw.write(chunk)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_range(
    start: dt.date, end: dt.date, out_dir: Path, cfg: SyntheticMarketConfig = SyntheticMarketConfig()
) -> list[Path]:
    """Write every trade date (Mon-Fri) in [start, end]; each day is identical to `write_day` alone."""
    if end < start:
        raise ValueError(f"write_range: end {end} is before start {start}")
    return [write_day(day, out_dir, cfg) for day in cal.trade_dates_between(start, end)]


def iter_day_records(trade_date: dt.date, cfg: SyntheticMarketConfig = SyntheticMarketConfig()) -> Iterator[np.ndarray]:
    """The day's records as `MBP10_DTYPE` arrays of at most `cfg.chunk_records` rows (no file)."""
    _require_trade_date(trade_date)
    for chunk in _iter_record_bytes(trade_date, cfg):
        yield chunk.copy().view(MBP10_DTYPE).ravel()


# --- the day plan -----------------------------------------------------------------------------------


def move_scale(records_per_day: int) -> float:
    """Factor on P_MOVE: 1 up to VOL_REFERENCE_RECORDS records a day, then VOL_REFERENCE_RECORDS / records.

    Real MNQ trades a similar number of ticks a day whether the feed is thin or busy; scaling the move
    share keeps a big day's range and realized volatility at the 200k-record day's level.
    """
    return min(1.0, VOL_REFERENCE_RECORDS / records_per_day)


def _event_mix(records_per_day: int) -> tuple[float, float, float]:
    """(move share, flow variance per continuous event, records per continuous event) at this size.

    Non-move events keep their relative mix (the kernel rescales the draw), so the flow variance per
    event is FLOW_VAR_PER_EVENT times the non-move share ratio; the module constants are returned
    unchanged at scale 1 (days of <= VOL_REFERENCE_RECORDS records stay byte-identical).
    """
    scale = move_scale(records_per_day)
    if scale >= 1.0:
        return P_MOVE, FLOW_VAR_PER_EVENT, RECORDS_PER_CONTINUOUS_EVENT
    p_move = P_MOVE * scale
    flow_var = FLOW_VAR_PER_EVENT * (1.0 - p_move) / (1.0 - P_MOVE)
    records = p_move * RECORDS_PER_MOVE + (1.0 - p_move) * RECORDS_PER_NON_MOVE
    return p_move, flow_var, records


def _require_trade_date(trade_date: dt.date) -> None:
    if not cal.is_trade_date(trade_date):
        raise ValueError(
            f"{trade_date} ({trade_date:%A}) is not a CME trade date: trade dates are Monday-Friday "
            "(Monday's window opens Sunday 16:00 CT). Pass a weekday."
        )


@dataclass(frozen=True)
class _DayPlan:
    """Everything fixed before the first event of a day, drawn from the day's own RNG stream."""

    instrument_id: int
    open_ticks: int
    window_start: int
    window_end: int
    pre_open: int
    session_open: int
    rates: np.ndarray  # events per second for each minute from 16:45 CT D-1
    pre_book: np.ndarray  # (6, 10) indicative book at 16:45
    open_book: np.ndarray  # (6, 10) book right after the 17:00 uncross
    first_sequence: int
    uncross_size: int


def _day_rng(seed: int, trade_date: dt.date) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, trade_date.toordinal(), _SALT_DAY]))


def _walk_block(seed: int, block: int) -> np.ndarray:
    """4096 standard normal daily shocks; days are numbered from WALK_ANCHOR, blocks by floor division."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, block + (1 << 20), _SALT_WALK]))
    return rng.standard_normal(_WALK_BLOCK)


def _walk_sum(seed: int, k: int) -> float:
    """Sum of the shocks of trade-date days [0, k) (k >= 0) or minus those of [k, 0) (k < 0)."""
    lo, hi, sign = (0, k, 1.0) if k >= 0 else (k, 0, -1.0)
    total = 0.0
    if hi <= lo:
        return total
    for block in range(lo // _WALK_BLOCK, (hi - 1) // _WALK_BLOCK + 1):
        days = np.arange(block * _WALK_BLOCK, (block + 1) * _WALK_BLOCK)
        keep = (days >= lo) & (days < hi)
        weekday = (WALK_ANCHOR.weekday() + days) % 7 < 5
        total += float(_walk_block(seed, block)[keep & weekday].sum())
    return sign * total


def opening_price_points(trade_date: dt.date, cfg: SyntheticMarketConfig = SyntheticMarketConfig()) -> float:
    """The day's opening price (points, on the tick grid), a function of (seed, date) only."""
    k = (trade_date - WALK_ANCHOR).days
    level = cfg.start_price * math.exp(DAILY_VOL * _walk_sum(cfg.seed, k))
    if cfg.roll_date is not None and trade_date >= cfg.roll_date:
        level += cfg.roll_spread_points
    return round(level / TICK_POINTS) * TICK_POINTS


def _activity_profile(ct_minutes: np.ndarray) -> np.ndarray:
    """Relative event intensity by Chicago minute-of-day (16:45-16:00 of the next day)."""
    m = ct_minutes.astype(np.float64)
    rel = np.full(m.shape, 0.35)  # overnight (Asia)
    evening = (m >= 17 * 60) | (m < 2 * 60)  # 17:00-02:00
    since_open = np.where(m >= 17 * 60, m - 17 * 60, np.inf)
    rel = np.where(evening, 0.35 + 0.6 * np.exp(-since_open / 15.0), rel)
    rel = np.where((m >= 2 * 60) & (m < 7 * 60), 0.9, rel)  # Europe
    pre_us = (m >= 7 * 60) & (m < 8 * 60 + 30)
    rel = np.where(pre_us, 1.3 + 1.5 * np.exp(-np.clip(m - (7 * 60 + 30), 0, None) / 5.0) * (m >= 450), rel)
    cash = (m >= 8 * 60 + 30) & (m < 15 * 60)
    spike = 2.4 + 5.0 * np.exp(-(m - (8 * 60 + 30)) / 20.0)
    lunch = np.where((m >= 11 * 60) & (m < 12 * 60 + 30), 0.75, 1.0)
    rel = np.where(cash, spike * lunch, rel)
    close = (m >= 15 * 60) & (m < 16 * 60)
    rel = np.where(close, 2.7 + 0.6 * (m - 15 * 60) / 60.0, rel)
    rel = np.where((m >= 16 * 60 + 45) & (m < 17 * 60), 0.3, rel)  # pre-open
    return rel


def _level_sizes(rng: np.random.Generator, n_levels: int) -> tuple[np.ndarray, np.ndarray]:
    """Fresh sizes and order counts around TARGET_SIZE for levels 0..n_levels-1."""
    target = TARGET_SIZE[:n_levels]
    size = np.maximum(1, np.floor(target * rng.uniform(0.5, 1.5, n_levels) + 0.5).astype(np.int64))
    return size, 1 + (size - 1) // 3


def _ladder(best_bid: int, best_ask: int, n_levels: int, rng: np.random.Generator) -> np.ndarray:
    book = np.zeros((6, N_LEVELS), dtype=np.int64)
    book[0:2, :] = -1
    idx = np.arange(n_levels)
    book[0, :n_levels] = best_bid - idx
    book[1, :n_levels] = best_ask + idx
    for side in (0, 1):
        size, count = _level_sizes(rng, n_levels)
        book[2 + side, :n_levels] = size
        book[4 + side, :n_levels] = count
    return book


def _day_plan(trade_date: dt.date, cfg: SyntheticMarketConfig, rng: np.random.Generator) -> _DayPlan:
    """Fix the day's instrument, prices, intensity and opening books (first draws of the day stream)."""
    instrument_id, _ = cfg.instrument_for(trade_date)
    start, end = cal.trade_date_window(trade_date)
    pre_open, session_open = cal.pre_open_ns(trade_date), cal.session_open_ns(trade_date)
    open_ticks = round(opening_price_points(trade_date, cfg) / TICK_POINTS)
    n_minutes = (end - pre_open) // cal.NS_PER_MINUTE
    ct_minutes = (16 * 60 + 45 + np.arange(n_minutes)) % (24 * 60)
    rel = _activity_profile(ct_minutes)
    n_pre = (session_open - pre_open) // cal.NS_PER_MINUTE
    day_factor = float(np.clip(np.exp(0.07 * rng.standard_normal()), 0.88, 1.12))
    per_event = np.where(np.arange(n_minutes) < n_pre, 1.0, _event_mix(cfg.records_per_day)[2])
    expected_records_per_unit = float(np.sum(rel * 60.0 * per_event))
    rates = rel * (cfg.records_per_day - 3) / expected_records_per_unit * day_factor
    pre_book = _ladder(open_ticks + 1, open_ticks, PRE_LEVELS, rng)  # crossed by a tick at 16:45
    open_book = _ladder(open_ticks, open_ticks + 1, N_LEVELS, rng)
    first_sequence = int(rng.integers(1_000_000, 100_000_000))
    uncross_size = int(5 + rng.integers(0, 40) + rng.integers(0, 40))
    return _DayPlan(
        instrument_id=instrument_id,
        open_ticks=open_ticks,
        window_start=start,
        window_end=end,
        pre_open=pre_open,
        session_open=session_open,
        rates=np.ascontiguousarray(rates, dtype=np.float64),
        pre_book=pre_book,
        open_book=open_book,
        first_sequence=first_sequence,
        uncross_size=uncross_size,
    )


@dataclass(frozen=True)
class _Interval:
    start_date: dt.date
    end_date: dt.date
    symbol: str


@dataclass(frozen=True)
class _Mapping:
    raw_symbol: str
    intervals: list[_Interval]


def _metadata(trade_date: dt.date, cfg: SyntheticMarketConfig) -> dbn.Metadata:
    """DBN v3 metadata: continuous symbol -> this day's instrument on every UTC date of the window."""
    start, end = cal.trade_date_window(trade_date)
    instrument_id, _ = cfg.instrument_for(trade_date)
    first = dt.datetime.fromtimestamp(start / cal.NS_PER_SECOND, tz=dt.UTC).date()
    last = dt.datetime.fromtimestamp((end - 1) / cal.NS_PER_SECOND, tz=dt.UTC).date()
    intervals = [
        _Interval(first + dt.timedelta(days=i), first + dt.timedelta(days=i + 1), str(instrument_id))
        for i in range((last - first).days + 1)
    ]
    return dbn.Metadata(
        dataset=MNQ.dataset,
        start=start,
        end=end,
        stype_in=dbn.SType.CONTINUOUS,
        stype_out=dbn.SType.INSTRUMENT_ID,
        schema=dbn.Schema.MBP_10,
        symbols=[cfg.continuous_symbol],
        partial=[],
        not_found=[],
        mappings=[_Mapping(cfg.continuous_symbol, intervals)],
    )


def _iter_record_bytes(
    trade_date: dt.date, cfg: SyntheticMarketConfig, diagnostics: dict[str, float] | None = None
) -> Iterator[np.ndarray]:
    """Yield (n, 368) uint8 views of one reused chunk buffer, in record order.

    `diagnostics`, if given, receives the day's event and record counts and the RMS of flow/scale at
    the move decisions (about 1 by construction; the constants above were checked with it).
    """
    rng = _day_rng(cfg.seed, trade_date)
    plan = _day_plan(trade_date, cfg, rng)
    cap = cfg.chunk_records
    buf = np.zeros(cap, dtype=MBP10_DTYPE)
    raw = buf.view(np.uint8).reshape(cap, RECORD_BYTES)
    w16, w32, w64 = raw.view(np.uint16), raw.view(np.uint32), raw.view(np.int64)
    draws = np.empty((cap, N_DRAWS), dtype=np.float64)
    rng.random(out=draws)
    state = np.zeros(8, dtype=np.int64)
    state[S_PHASE], state[S_T], state[S_RECV] = PH_SNAPSHOT, plan.pre_open, plan.pre_open
    state[S_SEQ], state[S_SPREAD], state[S_P0] = plan.first_sequence, 1, plan.open_ticks
    fstate = np.zeros(3, dtype=np.float64)
    book = plan.pre_book.copy()
    lam_per_s = math.log(2.0) / cfg.flow_halflife_s
    p_move, flow_var_per_event, _ = _event_mix(cfg.records_per_day)
    while True:
        n, used = _simulate(
            state,
            fstate,
            book,
            draws,
            plan.rates,
            plan.open_book,
            LEVEL_CUM,
            TARGET_SIZE,
            plan.pre_open,
            plan.session_open,
            plan.window_end - END_GUARD_NS,
            plan.instrument_id,
            cfg.publisher_id,
            plan.uncross_size,
            cfg.ofi_strength,
            lam_per_s,
            flow_var_per_event,
            p_move,
            (raw, w16, w32, w64),
        )
        if n:
            yield raw[:n]
        if state[S_PHASE] == PH_DONE:
            break
        left = cap - used
        draws[:left] = draws[used:]  # unused draws keep their place in the stream
        rng.random(out=draws[left:])
    if diagnostics is not None:
        diagnostics.update(
            events=int(state[S_EVENTS]),
            records=int(state[S_RECORDS]),
            price_decisions=int(fstate[F_NZ]),
            flow_z_rms=math.sqrt(fstate[F_Z2] / max(fstate[F_NZ], 1.0)),
        )


def _day_diagnostics(trade_date: dt.date, cfg: SyntheticMarketConfig) -> dict[str, float]:
    """Generate a day without writing it and return the generator's own counts (for calibration)."""
    diagnostics: dict[str, float] = {}
    for _ in _iter_record_bytes(trade_date, cfg, diagnostics):
        pass
    return diagnostics


# --- the numba kernel -------------------------------------------------------------------------------


_I64 = numba_types.int64
_CHUNK_VIEWS = numba_types.Tuple(
    (numba_types.uint8[:, ::1], numba_types.uint16[:, ::1], numba_types.uint32[:, ::1], _I64[:, ::1])
)


# one explicit signature: called with literal and computed ints alike, compiled once
@njit(
    numba_types.void(_CHUNK_VIEWS, _I64, _I64[:, ::1], _I64[::1], _I64, _I64, _I64, _I64, _I64, _I64),
    cache=True,
)
def _emit(
    out: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    i: int,
    book: np.ndarray,
    hdr: np.ndarray,
    action: int,
    side: int,
    price: int,
    size: int,
    flags: int,
    depth: int,
) -> None:
    """Write one 368-byte MBP-10 record into row i of the chunk buffer (uint8/16/32/int64 views).

    hdr = [ts_event, ts_recv, ts_in_delta, sequence, instrument_id, publisher_id]; the book is in
    ticks with -1 for an undefined level (written as i64::MAX).
    """
    raw, w16, w32, w64 = out
    raw[i, 0] = RECORD_LENGTH_WORDS
    raw[i, 1] = RTYPE_MBP10
    w16[i, 1] = hdr[5]
    w32[i, 1] = hdr[4]
    w64[i, 1] = hdr[0]
    w64[i, 2] = price
    w32[i, 6] = size
    raw[i, 28] = action
    raw[i, 29] = side
    raw[i, 30] = flags
    raw[i, 31] = depth
    w64[i, 4] = hdr[1]
    w32[i, 10] = hdr[2]
    w32[i, 11] = hdr[3]
    for lv in range(10):
        bp = book[0, lv]
        ap = book[1, lv]
        w64[i, 6 + 4 * lv] = UNDEF_PRICE if bp < 0 else bp * TICK
        w64[i, 7 + 4 * lv] = UNDEF_PRICE if ap < 0 else ap * TICK
        w32[i, 16 + 8 * lv] = book[2, lv]
        w32[i, 17 + 8 * lv] = book[3, lv]
        w32[i, 18 + 8 * lv] = book[4, lv]
        w32[i, 19 + 8 * lv] = book[5, lv]


@njit(cache=True)
def _next_time(t: int, e: float, rates: np.ndarray, origin: int) -> int:
    """Time of the next event of a Poisson process with per-minute rates (time rescaling)."""
    ns_min = 60_000_000_000
    m = (t - origin) // ns_min
    while m < rates.shape[0]:
        boundary = origin + (m + 1) * ns_min
        avail = (boundary - t) * 1e-9 * rates[m]
        if e < avail:
            return t + np.int64(e / rates[m] * 1e9)
        e -= avail
        t = boundary
        m += 1
    return np.int64(4_000_000_000_000_000_000)


@njit(cache=True)
def _draw_size(u: float, mean_extra: float) -> int:
    """1 + a geometric-like quantity with mean about 1 + mean_extra."""
    return 1 + np.int64(-np.log(1.0 - u) * mean_extra)


@njit(cache=True)
def _fresh_level(book: np.ndarray, side: int, lv: int, u: float, target: float) -> None:
    size = max(1, np.int64(target * (0.5 + u) + 0.5))  # uniform in [target/2, 3 target/2]
    book[2 + side, lv] = size
    book[4 + side, lv] = 1 + (size - 1) // 3


@njit(cache=True)
def _remove_best(book: np.ndarray, side: int, n_levels: int, u: float, target: float) -> None:
    """Best level of `side` is gone: shift the ladder in, a fresh level appears at the back."""
    away = -1 if side == 0 else 1
    last_px = book[side, n_levels - 1]
    for lv in range(n_levels - 1):
        book[side, lv] = book[side, lv + 1]
        book[2 + side, lv] = book[2 + side, lv + 1]
        book[4 + side, lv] = book[4 + side, lv + 1]
    book[side, n_levels - 1] = last_px + away
    _fresh_level(book, side, n_levels - 1, u, target)


@njit(cache=True)
def _insert_best(book: np.ndarray, side: int, n_levels: int, px: int, size: int) -> None:
    """One order opens a new best level at px: shift the ladder out, the back level drops."""
    for lv in range(n_levels - 1, 0, -1):
        book[side, lv] = book[side, lv - 1]
        book[2 + side, lv] = book[2 + side, lv - 1]
        book[4 + side, lv] = book[4 + side, lv - 1]
    book[side, 0] = px
    book[2 + side, 0] = size
    book[4 + side, 0] = 1


@njit(cache=True)
def _pick_level(u: float, level_cum: np.ndarray, n_levels: int) -> int:
    x = u * level_cum[n_levels - 1]
    for lv in range(n_levels):
        if x < level_cum[lv]:
            return lv
    return n_levels - 1


@njit(cache=True)
def _book_event(book: np.ndarray, u: np.ndarray, lv: int, side: int, target: float) -> tuple[int, int, int]:
    """Add or cancel at (side, lv), mean-reverting the size; returns (action, quantity, size change)."""
    size = book[2 + side, lv]
    p_add = target / (target + size)
    if u[4] < p_add or size <= 1:
        q = _draw_size(u[5], 1.0 + 0.15 * lv)
        book[2 + side, lv] = size + q
        book[4 + side, lv] += 1
        return _A, q, q
    q = min(_draw_size(u[5], 1.0 + 0.15 * lv), size - 1)
    book[2 + side, lv] = size - q
    book[4 + side, lv] = max(1, min(book[4 + side, lv] - 1, size - q))
    return _C, q, -q


@njit(cache=True)
def _simulate(
    state: np.ndarray,
    fstate: np.ndarray,
    book: np.ndarray,
    draws: np.ndarray,
    rates: np.ndarray,
    open_book: np.ndarray,
    level_cum: np.ndarray,
    target_size: np.ndarray,
    pre_open: int,
    session_open: int,
    end_guard: int,
    instrument_id: int,
    publisher_id: int,
    uncross_size: int,
    ofi_strength: float,
    lam_per_s: float,
    flow_var_per_event: float,
    p_move: float,
    out: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
) -> tuple[int, int]:
    """Generate events into the record buffer until it is nearly full, the draws run out or the day ends.

    All state lives in `state`/`fstate`/`book` and is carried to the next call. Each event consumes
    exactly one row of `draws`, so the output is independent of the chunking. Returns (records, rows).
    """
    cap = out[0].shape[0]
    hdr = np.empty(6, dtype=np.int64)
    hdr[4] = instrument_id
    hdr[5] = publisher_id
    n = 0
    e = 0
    while e < draws.shape[0] and n + MAX_RECORDS_PER_EVENT <= cap:
        phase = state[S_PHASE]
        if phase == PH_DONE:
            break
        u = draws[e]
        e += 1
        if phase == PH_SNAPSHOT:
            t = pre_open
        else:
            t = _next_time(state[S_T], -np.log(1.0 - u[0]), rates, pre_open)
            if phase == PH_PRE and t >= session_open:
                t = session_open
            elif t >= end_guard:
                state[S_PHASE] = PH_DONE
                break
            elif t <= state[S_T]:
                t = state[S_T] + 1
        delta = 11_000 + np.int64(u[7] * 6_000)
        latency = 75_000 + min(np.int64(-np.log(1.0 - u[8]) * 20_000), 800_000)
        recv = max(t + latency, state[S_RECV])
        seq = state[S_SEQ] + 1 + np.int64(-np.log(1.0 - u[10]) * 1.5)
        dt_ns = t - state[S_T]
        state[S_T] = t
        state[S_RECV] = recv
        state[S_SEQ] = seq
        state[S_EVENTS] += 1
        hdr[0] = t
        hdr[1] = recv
        hdr[2] = delta
        hdr[3] = seq
        n0 = n

        if phase == PH_SNAPSHOT:
            _emit(out, n, book, hdr, _A, _N, UNDEF_PRICE, 0, F_SNAPSHOT | F_LAST, 0)
            n += 1
            state[S_PHASE] = PH_PRE
        elif phase == PH_PRE and t == session_open:
            # opening uncross: a trade at the opening price on the indicative book, then the real book
            _emit(out, n, book, hdr, _T, _N, state[S_P0] * TICK, uncross_size, 0, 0)
            n += 1
            book[:, :] = open_book
            _emit(out, n, book, hdr, _A, _N, UNDEF_PRICE, 0, F_LAST, 0)
            n += 1
            state[S_PHASE] = PH_CONT
            state[S_SPREAD] = 1
        elif phase == PH_PRE:
            side = 0 if u[2] < 0.5 else 1
            side_ch = _B if side == 0 else _ASK
            if u[1] < P_PRE_SHIFT:
                offset = book[side, 0] - state[S_P0]
                up = u[4] < 0.5
                if offset >= PRE_OFFSET_MAX:
                    up = False
                elif offset <= PRE_OFFSET_MIN:
                    up = True
                inward = up if side == 0 else not up
                px = book[side, 0]
                if inward:
                    new_px = px + 1 if side == 0 else px - 1
                    q = _draw_size(u[5], 1.5)
                    _insert_best(book, side, PRE_LEVELS, new_px, q)
                    _emit(out, n, book, hdr, _A, side_ch, new_px * TICK, q, F_LAST, 0)
                else:
                    q = book[2 + side, 0]
                    _remove_best(book, side, PRE_LEVELS, u[6], target_size[PRE_LEVELS - 1])
                    _emit(out, n, book, hdr, _C, side_ch, px * TICK, q, F_LAST, 0)
                n += 1
            else:
                lv = _pick_level(u[3], level_cum, PRE_LEVELS)
                action, q, _chg = _book_event(book, u, lv, side, target_size[lv])
                _emit(out, n, book, hdr, action, side_ch, book[side, lv] * TICK, q, F_LAST, lv)
                n += 1
        else:
            # continuous trading: decay the flow accumulator to now
            flow = fstate[F_FLOW] * np.exp(-lam_per_s * dt_ns * 1e-9)
            m = min((t - pre_open) // 60_000_000_000, rates.shape[0] - 1)
            scale = np.sqrt(rates[m] * flow_var_per_event / (2.0 * lam_per_s))
            c = u[1]
            spread = state[S_SPREAD]
            is_move = c < p_move
            if not is_move and p_move < P_MOVE:
                # fewer moves (a big day): spread the freed share over the other events in their mix
                c = P_MOVE + (c - p_move) * ((1.0 - P_MOVE) / (1.0 - p_move))
            if spread == 2 and (is_move or c >= 1.0 - P_GAP_FILL):
                # gap fill: one order opens a level inside the 2-tick spread, direction from the flow
                z = flow / scale
                fstate[F_Z2] += z * z
                fstate[F_NZ] += 1.0
                up = u[4] < 0.5 + 0.5 * ofi_strength * np.tanh(z)
                own = 0 if up else 1
                new_px = book[0, 0] + 1 if up else book[1, 0] - 1
                q = _draw_size(u[12], 1.5)
                _insert_best(book, own, 10, new_px, q)
                _emit(out, n, book, hdr, _A, _B if up else _ASK, new_px * TICK, q, F_LAST, 0)
                n += 1
                state[S_SPREAD] = 1
            elif is_move:
                z = flow / scale
                fstate[F_Z2] += z * z
                fstate[F_NZ] += 1.0
                up = u[4] < 0.5 + 0.5 * ofi_strength * np.tanh(z)
                opp = 1 if up else 0
                own = 1 - opp
                opp_ch = _ASK if opp == 1 else _B
                px = book[opp, 0]
                q_opp = book[2 + opp, 0]
                if u[9] < P_MOVE_BY_TRADE:
                    _emit(out, n, book, hdr, _T, _B if up else _ASK, px * TICK, q_opp, 0, 0)
                    n += 1
                _remove_best(book, opp, 10, u[6], target_size[9])
                split = u[11] < P_SPLIT_MOVE
                _emit(out, n, book, hdr, _C, opp_ch, px * TICK, q_opp, F_LAST if split else 0, 0)
                n += 1
                if split:
                    state[S_SPREAD] = 2
                else:
                    new_px = book[own, 0] + (1 if up else -1)
                    q = _draw_size(u[12], 1.5)
                    _insert_best(book, own, 10, new_px, q)
                    _emit(out, n, book, hdr, _A, _B if own == 0 else _ASK, new_px * TICK, q, F_LAST, 0)
                    n += 1
            elif c < P_MOVE + P_TRADE:
                buy = u[2] < 0.5
                opp = 1 if buy else 0
                q = _draw_size(u[5], TRADE_SIZE_EXTRA)
                size = book[2 + opp, 0]
                px = book[opp, 0]
                if q < size:
                    _emit(out, n, book, hdr, _T, _B if buy else _ASK, px * TICK, q, 0, 0)
                    n += 1
                    book[2 + opp, 0] = size - q
                    book[4 + opp, 0] = max(1, min(book[4 + opp, 0] - 1, size - q))
                    _emit(out, n, book, hdr, _C, _ASK if opp == 1 else _B, px * TICK, q, F_LAST, 0)
                else:
                    # the trade would empty the level (that is a move): the same flow rests on the other side
                    own = 1 - opp
                    book[2 + own, 0] += q
                    book[4 + own, 0] += 1
                    _emit(out, n, book, hdr, _A, _B if own == 0 else _ASK, book[own, 0] * TICK, q, F_LAST, 0)
                n += 1
                flow += q if buy else -q
            else:
                side = 0 if u[2] < 0.5 else 1
                lv = _pick_level(u[3], level_cum, 10)
                modify = c < P_MOVE + P_TRADE + P_MODIFY
                if lv == 0:
                    # best level: state-independent flow of +-q (fair sign), see the module docstring
                    q = _draw_size(u[5], BEST_SIZE_EXTRA)
                    grow = u[4] < 0.5
                    flow += q if (side == 0) == grow else -q
                    action = _M if modify else (_A if grow else _C)
                    if not grow and q >= book[2 + side, 0]:
                        side = 1 - side  # would empty the level: the same flow as an add on the other side
                        grow = True
                        action = _A
                    size = book[2 + side, 0]
                    book[2 + side, 0] = size + q if grow else size - q
                    if action == _A:
                        book[4 + side, 0] += 1
                    elif action == _C:
                        book[4 + side, 0] = max(1, min(book[4 + side, 0] - 1, size - q))
                    else:
                        book[4 + side, 0] = max(1, min(book[4 + side, 0], book[2 + side, 0]))
                elif modify:
                    size = book[2 + side, lv]
                    step = _draw_size(u[5], 1.0)
                    chg = step if (u[12] < 0.5 or size <= 1) else -min(step, size - 1)
                    book[2 + side, lv] = size + chg
                    book[4 + side, lv] = max(1, min(book[4 + side, lv], size + chg))
                    action = _M
                    q = abs(chg)
                else:
                    action, q, _chg = _book_event(book, u, lv, side, target_size[lv])
                _emit(out, n, book, hdr, action, _B if side == 0 else _ASK, book[side, lv] * TICK, q, F_LAST, lv)
                n += 1
            fstate[F_FLOW] = flow
        state[S_RECORDS] += n - n0
    return n, e
