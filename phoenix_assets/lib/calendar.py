"""CME Globex trade dates for equity-index futures (MNQ, NQ, ES).

Trade date D runs from 16:00 America/Chicago on D-1 (daily halt and pre-open included) to 16:00 CT
on D. The market halts 16:00-17:00 CT; continuous trading starts at 17:00 CT. Trade dates are
Monday-Friday; Monday's window opens Sunday 16:00 CT. US daylight-saving switches happen at 02:00
on Sundays, while the market is closed, so the UTC offset is constant inside every window: that is
what makes the vectorised session arithmetic below exact.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import numpy as np

CHICAGO = ZoneInfo("America/Chicago")
NS_PER_SECOND = 1_000_000_000
NS_PER_MINUTE = 60 * NS_PER_SECOND
NS_PER_DAY = 86_400 * NS_PER_SECOND
SESSION_CLOSE = dt.time(16, 0)  # end of trade date D, start of the daily halt
SESSION_OPEN = dt.time(17, 0)  # continuous trading resumes
PRE_OPEN = dt.time(16, 45)  # indicative (possibly crossed) book before the open


def _ct_ns(day: dt.date, at: dt.time) -> int:
    """Nanoseconds since the epoch of a Chicago wall-clock time."""
    local = dt.datetime.combine(day, at, tzinfo=CHICAGO)
    return int(local.timestamp()) * NS_PER_SECOND


def is_trade_date(day: dt.date) -> bool:
    """CME equity-index futures trade Monday-Friday (exchange holidays are not modelled)."""
    return day.weekday() < 5


def trade_date_window(trade_date: dt.date) -> tuple[int, int]:
    """[start, end) in UTC nanoseconds of one trade date: 16:00 CT on D-1 to 16:00 CT on D."""
    return _ct_ns(trade_date - dt.timedelta(days=1), SESSION_CLOSE), _ct_ns(trade_date, SESSION_CLOSE)


def session_open_ns(trade_date: dt.date) -> int:
    """17:00 CT on D-1: start of continuous trading for trade date D."""
    return _ct_ns(trade_date - dt.timedelta(days=1), SESSION_OPEN)


def pre_open_ns(trade_date: dt.date) -> int:
    """16:45 CT on D-1: start of the pre-open for trade date D."""
    return _ct_ns(trade_date - dt.timedelta(days=1), PRE_OPEN)


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
