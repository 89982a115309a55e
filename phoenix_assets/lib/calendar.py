"""CME Globex trade dates for equity-index futures (MNQ, NQ, ES).

Trade date D runs from 16:00 America/Chicago on D-1 (daily halt and pre-open included) to 16:00 CT
on D. The market halts 16:00-17:00 CT; continuous trading starts at 17:00 CT. Trade dates are
Monday-Friday; Monday's window opens Sunday 16:00 CT. US daylight-saving switches happen at 02:00
on Sundays, while the market is closed, so the UTC offset is constant inside every window: that is
what makes the vectorised session arithmetic below exact.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable
from zoneinfo import ZoneInfo

import numpy as np
import polars as pl

CHICAGO = ZoneInfo("America/Chicago")
NS_PER_SECOND = 1_000_000_000
NS_PER_MINUTE = 60 * NS_PER_SECOND
NS_PER_DAY = 86_400 * NS_PER_SECOND
SESSION_CLOSE = dt.time(16, 0)  # end of trade date D, start of the daily halt
SESSION_OPEN = dt.time(17, 0)  # continuous trading resumes
PRE_OPEN = dt.time(16, 45)  # indicative (possibly crossed) book before the open
EPOCH = dt.date(1970, 1, 1)


def _ct_ns(day: dt.date, at: dt.time) -> int:
    """Nanoseconds since the epoch of a Chicago wall-clock time."""
    local = dt.datetime.combine(day, at, tzinfo=CHICAGO)
    return int(local.timestamp()) * NS_PER_SECOND


def is_trade_date(day: dt.date) -> bool:
    """CME equity-index futures trade Monday-Friday (exchange holidays are not modelled)."""
    return day.weekday() < 5


@functools.lru_cache(maxsize=4096)
def trade_date_window(trade_date: dt.date) -> tuple[int, int]:
    """[start, end) in UTC nanoseconds of one trade date: 16:00 CT on D-1 to 16:00 CT on D."""
    return _ct_ns(trade_date - dt.timedelta(days=1), SESSION_CLOSE), _ct_ns(trade_date, SESSION_CLOSE)


@functools.lru_cache(maxsize=4096)
def session_open_ns(trade_date: dt.date) -> int:
    """17:00 CT on D-1: start of continuous trading for trade date D."""
    return _ct_ns(trade_date - dt.timedelta(days=1), SESSION_OPEN)


def pre_open_ns(trade_date: dt.date) -> int:
    """16:45 CT on D-1: start of the pre-open for trade date D."""
    return _ct_ns(trade_date - dt.timedelta(days=1), PRE_OPEN)


def session_opens_ns(trade_dates: np.ndarray) -> np.ndarray:
    """`session_open_ns` of each trade date (17:00 CT on D-1); `trade_dates` as `day_numbers`."""
    return _per_trade_date(trade_dates, session_open_ns)


def session_closes_ns(trade_dates: np.ndarray) -> np.ndarray:
    """UTC ns of each trade date's scheduled close, 16:00 CT on D (DST-aware); `trade_dates` as `day_numbers`."""
    return _per_trade_date(trade_dates, lambda day: trade_date_window(day)[1])


def _per_trade_date(trade_dates: np.ndarray, ns_of: Callable[[dt.date], int]) -> np.ndarray:
    """`ns_of` of each trade date (days since 1970), computed once per distinct date."""
    days, index = np.unique(trade_dates, return_inverse=True)
    values = np.array([ns_of(EPOCH + dt.timedelta(days=int(d))) for d in days], dtype=np.int64)
    return values[index.reshape(-1)]


def ts_ns(ts: pl.Series) -> np.ndarray:
    """int64 UTC nanoseconds of a Datetime column (any unit, any time zone): a numpy view, not a polars
    expression (`.dt.epoch` runs the query engine, ~60 us a call: the live path's per-bar cost)."""
    values = ts.to_numpy()
    if values.dtype.kind != "M":
        raise TypeError(f"column {ts.name!r}: expected a Datetime column, got {ts.dtype}")
    return values.astype("datetime64[ns]", copy=False).view(np.int64)


def day_numbers(dates: pl.Series) -> np.ndarray:
    """int64 days since 1970-01-01 of a Date column (as `.cast(pl.Int32)`), without the query engine."""
    values = dates.to_numpy()
    if values.dtype != np.dtype("datetime64[D]"):
        raise TypeError(f"column {dates.name!r}: expected a Date column, got {dates.dtype}")
    return values.view(np.int64)


def utc_offset_ns(trade_date: dt.date) -> int:
    """Chicago's UTC offset (ns, negative) in force for the whole window of this trade date."""
    start, _ = trade_date_window(trade_date)
    local = dt.datetime.fromtimestamp(start / NS_PER_SECOND, tz=CHICAGO)
    offset = local.utcoffset()
    assert offset is not None
    return int(offset.total_seconds()) * NS_PER_SECOND


def trade_dates_between(start: dt.date, end: dt.date) -> list[dt.date]:
    """Trade dates in [start, end] (inclusive)."""
    days = (end - start).days + 1
    return [d for d in (start + dt.timedelta(days=i) for i in range(max(days, 0))) if is_trade_date(d)]


def trade_dates_overlapping(start_ns: int, end_ns: int) -> list[dt.date]:
    """Trade dates whose window intersects [start_ns, end_ns)."""
    if end_ns <= start_ns:
        return []
    first = dt.datetime.fromtimestamp(start_ns / NS_PER_SECOND, tz=CHICAGO).date()
    last = dt.datetime.fromtimestamp(end_ns / NS_PER_SECOND, tz=CHICAGO).date() + dt.timedelta(days=1)
    out = []
    for day in trade_dates_between(first, last):
        w0, w1 = trade_date_window(day)
        if w0 < end_ns and start_ns < w1:
            out.append(day)
    return out


def epoch_ns(t: dt.datetime) -> int:
    """Nanoseconds since the epoch of an aware datetime (microsecond precision, as Delta and polars store it)."""
    return int(t.timestamp() * 1_000_000) * 1_000


def trade_date_of(ts_ns: int) -> dt.date | None:
    """The trade date whose window (16:00 CT the day before to 16:00 CT) holds the timestamp; None on a
    weekend, when no trade date's window does."""
    days = trade_dates_overlapping(ts_ns, ts_ns + 1)
    return days[0] if days else None


def in_continuous_session(ts_ns: np.ndarray, trade_date: dt.date) -> np.ndarray:
    """True where a UTC timestamp of this trade date's window falls in continuous trading (>= 17:00 CT)."""
    return np.asarray(ts_ns, dtype=np.int64) >= session_open_ns(trade_date)


# --- the roll calendar (issue 24 item 9): one schedule for the env, the backtest and paper -----------------

QUARTERLY_MONTHS = (3, 6, 9, 12)  # CME equity-index futures: H, M, U, Z


def quarterly_expiration(year: int, month: int) -> dt.date:
    """The third Friday of the month: the last trading day of a CME equity-index future (MNQ, NQ, ES) of that
    contract month (CME rulebook, e.g. chapter 359A for E-mini Nasdaq-100: trading terminates at 08:30 CT)."""
    first = dt.date(year, month, 1)
    return first + dt.timedelta(days=(4 - first.weekday()) % 7 + 14)


def roll_date(year: int, month: int, days_before_expiration: int = 0) -> dt.date:
    """The trade date from which the next quarterly contract is traded instead of the one expiring in (year,
    month): its expiration date (the expiring contract stops at 08:30 CT that morning, so its last full trade
    date is the day before), or `days_before_expiration` calendar days earlier (CME's published equity roll date
    is 8 days before expiration), moved to a trade date. Published in advance: the calendar, not the data,
    says when a contract ends."""
    day = quarterly_expiration(year, month) - dt.timedelta(days=days_before_expiration)
    while not is_trade_date(day):
        day += dt.timedelta(days=1)
    return day


def roll_dates(start: dt.date, end: dt.date, days_before_expiration: int = 0) -> list[dt.date]:
    """The roll trade dates in [start, end] (inclusive), in order."""
    out = []
    for year in range(start.year, end.year + 1):
        for month in QUARTERLY_MONTHS:
            day = roll_date(year, month, days_before_expiration)
            if start <= day <= end:
                out.append(day)
    return out


def roll_eve(trade_dates: np.ndarray, days_before_expiration: int = 0) -> np.ndarray:
    """Per trade date (numpy datetime64[D] or date objects): is it the last trade date of its contract, i.e. is
    the next trade date a roll date. A position must be flat by that date's close (it is: the daily halt's
    forced flat happens at the same moment; `phoenix_rl.env.trading_env.forced_flat`)."""
    days = np.asarray(trade_dates, dtype="datetime64[D]")
    if days.size == 0:
        return np.zeros(0, dtype=bool)
    return np.isin(days, _roll_eves(days.min().astype(dt.date), days.max().astype(dt.date), days_before_expiration))


@functools.lru_cache(maxsize=256)
def _roll_eves(lo: dt.date, hi: dt.date, days_before_expiration: int) -> np.ndarray:
    """The roll eves of the roll dates in [lo, hi + 7 days] (cached: the live path asks every bar)."""
    rolls = roll_dates(lo, hi + dt.timedelta(days=7), days_before_expiration)
    eves = np.array([_previous_trade_date(r) for r in rolls], dtype="datetime64[D]")
    eves.setflags(write=False)
    return eves


def front_contract(trade_date: dt.date, days_before_expiration: int = 0) -> tuple[int, int]:
    """(year, month) of the quarterly contract the calendar trades on a trade date."""
    year, month = trade_date.year, next(m for m in QUARTERLY_MONTHS if m >= trade_date.month)
    if trade_date >= roll_date(year, month, days_before_expiration):
        year, month = (year + 1, 3) if month == 12 else (year, month + 3)
    return year, month


def _previous_trade_date(day: dt.date) -> dt.date:
    day -= dt.timedelta(days=1)
    while not is_trade_date(day):
        day -= dt.timedelta(days=1)
    return day
