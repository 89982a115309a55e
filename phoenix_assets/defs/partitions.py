"""Partition definitions, declared once and imported by every stage, and the automation conditions by which a
partition follows its parents (attached in the asset decorators; `phoenix_automation` evaluates them)."""

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


# ---------------------------------------------------------------------------------------------------
# Declarative automation conditions (attached in the asset decorators)
# ---------------------------------------------------------------------------------------------------

# eager() without its latest-time-window restriction: a file landing for a past trade date must
# flow down too. Still waits for the parent partition to exist, nothing upstream in progress, and
# the parent's blocking checks to have passed (or to run in the same run).
FOLLOW_PARENT_PARTITION = (
    dg.AutomationCondition.eager().without(dg.AutomationCondition.in_latest_time_window())
    & dg.AutomationCondition.all_deps_blocking_checks_passed()
).with_label("follow_parent_partition")

_MODEL = dg.AssetSelection.assets("hmm_regime_model")

# A month recomputes when a trade date of that month of ofi_bars_1m is updated. A refit of
# hmm_regime_model does not trigger it (recomputing history after a refit is an explicit backfill);
# the model must exist. Trade dates of the month that are missing (exchange holidays, days not
# landed yet) do not block the month: it is recomputed as its days arrive. Checks are partitioned, so
# `all_deps_blocking_checks_passed` would demand passed checks on every day of the month, missing days
# included; the gate is upstream instead: a day whose blocking checks failed is never followed by its
# own downstream (FOLLOW_PARENT_PARTITION), so it cannot update ofi_bars_1m and trigger the month.
FOLLOW_MONTH_OF_DAYS = (
    dg.AutomationCondition.any_deps_updated().ignore(_MODEL).since_last_handled()
    & ~dg.AutomationCondition.any_deps_missing().allow(_MODEL)
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("follow_month_of_days")
