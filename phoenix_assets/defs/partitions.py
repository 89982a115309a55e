"""Partition definitions, declared once and imported by every stage."""

from __future__ import annotations

import dagster as dg

FIRST_TRADE_DATE = "2020-12-28"  # earliest real fixture; backfills may start anywhere after

# One partition per CME trade date (Monday-Friday). Trade date D = 16:00 CT D-1 .. 16:00 CT D.
trade_date_partitions = dg.TimeWindowPartitionsDefinition(
    cron_schedule="0 0 * * 1-5",
    fmt="%Y-%m-%d",
    start=FIRST_TRADE_DATE,
    timezone="America/Chicago",
    end_offset=1,
)

# One partition per calendar month: the unit users backfill features in.
month_partitions = dg.MonthlyPartitionsDefinition(start_date="2020-12-01", timezone="America/Chicago", end_offset=1)
