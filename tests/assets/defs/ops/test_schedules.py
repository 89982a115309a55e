"""databento_daily: the trade date that just closed, with the Databento source, once per date."""

import datetime as dt

import dagster as dg

from phoenix_assets.definitions import defs
from phoenix_assets.defs.ops.schedules import DATABENTO_TAGS, databento_daily, paper_daily
from phoenix_assets.lib.calendar import CHICAGO


def _evaluate(when: dt.datetime) -> dg.RunRequest | dg.SkipReason:
    with dg.build_schedule_context(scheduled_execution_time=when) as context:
        return databento_daily(context)


def test_schedule_is_registered_stopped_and_targets_daily_job() -> None:
    schedule = defs.resolve_schedule_def("databento_daily")
    assert schedule.job_name == "daily_job"
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED  # needs an API key
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("30 17 * * 1-5", "America/Chicago")


def test_requests_the_trade_date_that_just_closed_with_the_databento_source() -> None:
    # 17:30 CT on Thursday 2024-03-14 (CDT, UTC-5): trade date 2024-03-14 closed at 16:00 CT
    request = _evaluate(dt.datetime(2024, 3, 14, 22, 30, tzinfo=dt.UTC))
    assert isinstance(request, dg.RunRequest)
    assert request.partition_key == "2024-03-14" and request.run_key == "databento:2024-03-14"
    assert request.tags == DATABENTO_TAGS
    config = request.run_config
    assert config["ops"]["raw_mbp10"]["config"]["source"] == "databento"
    assert dg.validate_run_config(defs.resolve_job_def("daily_job"), config)
    # winter (CST, UTC-6): 17:30 CT is 23:30 UTC, still the same trade date
    winter = _evaluate(dt.datetime(2024, 1, 8, 17, 30, tzinfo=CHICAGO))
    assert isinstance(winter, dg.RunRequest) and winter.partition_key == "2024-01-08"


def test_weekend_ticks_request_nothing() -> None:
    skipped = _evaluate(dt.datetime(2024, 3, 16, 17, 30, tzinfo=CHICAGO))  # Saturday
    assert isinstance(skipped, dg.SkipReason) and "2024-03-16" in (skipped.skip_message or "")


def test_paper_daily_requests_the_closed_trade_dates_report() -> None:
    schedule = defs.resolve_schedule_def("paper_daily")
    assert schedule.job_name == "paper_report_job" and schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    job = defs.resolve_job_def("paper_report_job")
    assert [k.to_user_string() for k in job.asset_layer.executable_asset_keys] == ["paper_daily_report"]
    with dg.build_schedule_context(scheduled_execution_time=dt.datetime(2024, 3, 14, 16, 15, tzinfo=CHICAGO)) as c:
        request = paper_daily(c)
    assert isinstance(request, dg.RunRequest) and request.partition_key == "2024-03-14"
    with dg.build_schedule_context(scheduled_execution_time=dt.datetime(2024, 3, 17, 16, 15, tzinfo=CHICAGO)) as c:
        assert isinstance(paper_daily(c), dg.SkipReason)  # Sunday
