"""Routines in the team's time zone (the configured one, Asia/Tokyo by default).

The daily assets run twice over: every hour for today (in progress, so what the monitor
saw this morning is in the UI before tomorrow) and at 00:30 for yesterday, now complete.
"""

from datetime import timedelta
from zoneinfo import ZoneInfo

from dagster import (
    AssetSelection,
    DefaultScheduleStatus,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    define_asset_job,
    schedule,
)

from westep_ops.defs.maintenance.jobs import (
    daily_summary_job,
    performance_diagnosis_job,
    weekly_maintenance_job,
)
from westep_ops.defs.monitoring.partitions import TIMEZONE, day_key

health_check_job = define_asset_job(
    "health_check_job",
    selection=AssetSelection.assets("health_check"),
    description="09:00: the morning health check (H1-H7 as asset checks).",
)
daily_monitoring_job = define_asset_job(
    "daily_monitoring_job",
    selection=AssetSelection.assets(
        "health_samples", "performance_metrics", "incidents", "diagnosis_report"
    ),
    description="The daily assets of one day (yesterday at 00:30, today hourly),"
    " recomputed from the monitoring history.",
)
IN_PROGRESS_TAG = "westep-ops/in-progress"


monthly_sla_job = define_asset_job(
    "monthly_sla_job",
    selection=AssetSelection.assets("monthly_sla_report"),
    description="One month's SLA report (last month's on the 1st).",
)

RUNNING = DefaultScheduleStatus.RUNNING


@schedule(
    name="monthly_sla_schedule",
    job=monthly_sla_job,
    cron_schedule="0 2 1 * *",
    execution_timezone=TIMEZONE,
    default_status=RUNNING,
    description="On the 1st, after the last day's daily assets (00:30) are in: last month's report.",
)
def monthly_sla_schedule(context: ScheduleEvaluationContext) -> RunRequest:
    when = context.scheduled_execution_time.astimezone(ZoneInfo(TIMEZONE))
    last = (when.replace(day=1) - timedelta(days=1)).strftime("%Y-%m-01")
    return RunRequest(run_key=f"sla-{last}", partition_key=last)


@schedule(
    name="daily_assets_schedule",
    job=daily_monitoring_job,
    cron_schedule="30 0 * * *",
    execution_timezone=TIMEZONE,
    default_status=RUNNING,
    description="00:30: yesterday's daily assets, final now that the day is over.",
)
def daily_assets_schedule(context: ScheduleEvaluationContext) -> RunRequest:
    day = day_key(context.scheduled_execution_time, days_back=1)
    return RunRequest(run_key=f"daily-{day}", partition_key=day)


@schedule(
    name="today_refresh_schedule",
    job=daily_monitoring_job,
    cron_schedule="15 * * * *",
    execution_timezone=TIMEZONE,
    default_status=RUNNING,
    description="Every hour at :15: today's daily assets so far (marked in progress).",
)
def today_refresh_schedule(context: ScheduleEvaluationContext) -> RunRequest:
    when = context.scheduled_execution_time
    day = day_key(when)
    return RunRequest(
        run_key=f"today-{day}-{when.astimezone(ZoneInfo(TIMEZONE)):%H}",
        partition_key=day,
        tags={IN_PROGRESS_TAG: "true"},
    )


schedules = [
    ScheduleDefinition(
        name="morning_health_check_schedule",
        job=health_check_job,
        cron_schedule="0 9 * * *",
        execution_timezone=TIMEZONE,
        default_status=RUNNING,
        description="09:00: the morning health sweep, H1-H7 as asset checks of health_check.",
    ),
    ScheduleDefinition(
        name="noon_performance_schedule",
        job=performance_diagnosis_job,
        cron_schedule="0 12 * * *",
        execution_timezone=TIMEZONE,
        default_status=RUNNING,
        description="12:00: performance sample and full diagnosis report (logs/).",
    ),
    ScheduleDefinition(
        name="evening_summary_schedule",
        job=daily_summary_job,
        cron_schedule="0 18 * * *",
        execution_timezone=TIMEZONE,
        default_status=RUNNING,
        description="18:00: the day's critical alerts and unlabelled alerts to the log and Slack.",
    ),
    ScheduleDefinition(
        name="weekly_maintenance_schedule",
        job=weekly_maintenance_job,
        cron_schedule="0 3 * * 0",
        execution_timezone=TIMEZONE,
        default_status=RUNNING,
        description="Sunday 03:00: VACUUM/ANALYZE where needed, statistics, log rotation.",
    ),
    daily_assets_schedule,
    today_refresh_schedule,
    monthly_sla_schedule,
]
