"""The daily assets, in the team's time zone (the configured one, Asia/Tokyo by default),
for the whole fleet in one run each time (a partition range over every target's day).

They run twice over: every hour for today (in progress, so what the monitor saw this
morning is in the UI before tomorrow) and at 00:30 for yesterday, now complete.
"""

from zoneinfo import ZoneInfo

from dagster import DefaultScheduleStatus, RunRequest, ScheduleEvaluationContext, schedule

from westep_ops.defs.monitoring.jobs import IN_PROGRESS_TAG, daily_monitoring_job
from westep_ops.defs.monitoring.partitions import TIMEZONE, day_key, fleet_range_tags


@schedule(
    name="daily_assets_schedule",
    job=daily_monitoring_job,
    cron_schedule="30 0 * * *",
    execution_timezone=TIMEZONE,
    default_status=DefaultScheduleStatus.RUNNING,
    description="00:30: yesterday's daily assets of every target, final now that the day is over.",
)
def daily_assets_schedule(context: ScheduleEvaluationContext) -> RunRequest:
    day = day_key(context.scheduled_execution_time, days_back=1)
    return RunRequest(run_key=f"daily-{day}", tags=fleet_range_tags(day))


@schedule(
    name="today_refresh_schedule",
    job=daily_monitoring_job,
    cron_schedule="15 * * * *",
    execution_timezone=TIMEZONE,
    default_status=DefaultScheduleStatus.RUNNING,
    description="Every hour at :15: today's daily assets of every target so far (marked in progress).",
)
def today_refresh_schedule(context: ScheduleEvaluationContext) -> RunRequest:
    when = context.scheduled_execution_time
    day = day_key(when)
    return RunRequest(
        run_key=f"today-{day}-{when.astimezone(ZoneInfo(TIMEZONE)):%H}",
        tags={IN_PROGRESS_TAG: "true", **fleet_range_tags(day)},
    )
