"""`databento_daily`: after each CME close, download the trade date that just ended from Databento.

Trade date D ends at 16:00 CT on D; at 17:30 CT the schedule requests partition D of `daily_job`
(`raw_mbp10` with `source: databento`, then the microstructure assets). Stopped by default: it needs
`DATABENTO_API_KEY`, and the embedded demo runs on synthetic data. The run key is the trade date, so a
re-evaluated tick never downloads twice; the run tag `phoenix/source=databento` is held to one run at
a time by dagster.yaml (one download stream against the API). Backfills of older dates use the same
job with `source: databento` (docs/operations.md). Exchange holidays are not modelled (Monday-Friday).
"""

import dagster as dg

from phoenix_assets.lib import calendar as cal

DATABENTO_TAGS = {"phoenix/source": "databento", "phoenix/trigger": "databento_daily"}


@dg.schedule(
    name="databento_daily",
    job_name="daily_job",
    cron_schedule="30 17 * * 1-5",
    execution_timezone="America/Chicago",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description=(
        "17:30 CT Mon-Fri: download the trade date that closed at 16:00 CT from Databento (raw_mbp10 "
        "source=databento) and build its microstructure tables (daily_job). Needs DATABENTO_API_KEY."
    ),
)
def databento_daily(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
    day = context.scheduled_execution_time.astimezone(cal.CHICAGO).date()
    if not cal.is_trade_date(day):
        return dg.SkipReason(f"{day} is not a CME trade date")
    key = day.isoformat()
    return dg.RunRequest(
        run_key=f"databento:{key}",
        partition_key=key,
        run_config=dg.RunConfig(ops={"raw_mbp10": {"config": {"source": "databento"}}}),
        tags=DATABENTO_TAGS,
    )


@dg.schedule(
    name="paper_daily",
    job_name="paper_report_job",
    cron_schedule="15 16 * * 1-5",
    execution_timezone="America/Chicago",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description=(
        "16:15 CT Mon-Fri: the paper_daily_report of the trade date that closed at 16:00 CT. Start it while "
        "`./phoenix paper --live` trades; materialize paper_track_record for the go_live_gate."
    ),
)
def paper_daily(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
    day = context.scheduled_execution_time.astimezone(cal.CHICAGO).date()
    if not cal.is_trade_date(day):
        return dg.SkipReason(f"{day} is not a CME trade date")
    return dg.RunRequest(run_key=f"paper:{day.isoformat()}", partition_key=day.isoformat())
