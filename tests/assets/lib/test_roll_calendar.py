"""The one roll calendar (issue 24 item 9): quarterly expirations, roll dates, roll eves, the front contract."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from phoenix_assets.lib import calendar as cal


def _third_friday_slow(year: int, month: int) -> dt.date:
    fridays = [
        dt.date(year, month, d)
        for d in range(1, 32)
        if _valid(year, month, d) and dt.date(year, month, d).weekday() == 4
    ]
    return fridays[2]


def _valid(year: int, month: int, day: int) -> bool:
    try:
        dt.date(year, month, day)
    except ValueError:
        return False
    return True


def test_quarterly_expirations_by_hand_and_against_the_slow_reference() -> None:
    assert [cal.quarterly_expiration(2024, m) for m in (3, 6, 9, 12)] == [
        dt.date(2024, 3, 15), dt.date(2024, 6, 21), dt.date(2024, 9, 20), dt.date(2024, 12, 20),
    ]  # fmt: skip
    for year in range(2019, 2031):
        for month in range(1, 13):
            assert cal.quarterly_expiration(year, month) == _third_friday_slow(year, month)


def test_roll_dates_eves_and_front_contract() -> None:
    assert cal.roll_dates(dt.date(2024, 1, 1), dt.date(2025, 3, 31)) == [
        dt.date(2024, 3, 15), dt.date(2024, 6, 21), dt.date(2024, 9, 20), dt.date(2024, 12, 20), dt.date(2025, 3, 21),
    ]  # fmt: skip
    # CME's published equity roll: 8 calendar days before expiration, the Thursday before
    assert cal.roll_date(2024, 3, days_before_expiration=8) == dt.date(2024, 3, 7)
    days = np.array(["2024-03-13", "2024-03-14", "2024-03-15", "2024-06-20", "2024-12-19"], dtype="datetime64[D]")
    assert cal.roll_eve(days).tolist() == [False, True, False, True, True]
    assert cal.front_contract(dt.date(2024, 3, 14)) == (2024, 3)
    assert cal.front_contract(dt.date(2024, 3, 15)) == (2024, 6)
    assert cal.front_contract(dt.date(2024, 12, 20)) == (2025, 3)
    assert cal.front_contract(dt.date(2024, 1, 2)) == (2024, 3)


@pytest.mark.parametrize("year", [2023, 2024, 2025])
def test_every_trade_date_has_one_contract_and_it_changes_only_on_roll_dates(year: int) -> None:
    days = cal.trade_dates_between(dt.date(year, 1, 1), dt.date(year, 12, 31))
    contracts = [cal.front_contract(d) for d in days]
    changes = [d for prev, d, c0, c1 in zip(days, days[1:], contracts, contracts[1:], strict=False) if c0 != c1]
    assert changes == cal.roll_dates(days[1], days[-1])
    eves = cal.roll_eve(np.array(days, dtype="datetime64[D]"))
    assert [d for d, e in zip(days, eves, strict=True) if e] == [
        days[days.index(r) - 1] for r in cal.roll_dates(days[1], days[-1])
    ]
