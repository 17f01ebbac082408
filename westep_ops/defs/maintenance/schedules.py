"""Routines in the team's time zone (the configured one, Asia/Tokyo by default)."""

from datetime import timedelta
from zoneinfo import ZoneInfo

from dagster import (
    AssetSelection,
    DefaultScheduleStatus,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    build_schedule_from_partitioned_job,
    define_asset_job,
    schedule,
)

from westep_ops.defs.maintenance.jobs import (
    daily_summary_job,
    performance_diagnosis_job,
    weekly_maintenance_job,
)
from westep_ops.defs.monitoring.partitions import TIMEZONE

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
    description="Yesterday's daily assets, recomputed from the monitoring history.",
)

monthly_sla_job = define_asset_job(
    "monthly_sla_job",
    selection=AssetSelection.assets("monthly_sla_report"),
    description="Last month's SLA report.",
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


schedules = [
    ScheduleDefinition(
        name="morning_health_check_schedule",
        job=health_check_job,
        cron_schedule="0 9 * * *",
        execution_timezone=TIMEZONE,
        default_status=RUNNING,
    ),
    ScheduleDefinition(
        name="noon_performance_schedule",
        job=performance_diagnosis_job,
        cron_schedule="0 12 * * *",
        execution_timezone=TIMEZONE,
        default_status=RUNNING,
    ),
    ScheduleDefinition(
        name="evening_summary_schedule",
        job=daily_summary_job,
        cron_schedule="0 18 * * *",
        execution_timezone=TIMEZONE,
        default_status=RUNNING,
    ),
    ScheduleDefinition(
        name="weekly_maintenance_schedule",
        job=weekly_maintenance_job,
        cron_schedule="0 3 * * 0",
        execution_timezone=TIMEZONE,
        default_status=RUNNING,
    ),
    # The time zone comes from the partitions (Dagster refuses a second one here).
    build_schedule_from_partitioned_job(
        daily_monitoring_job,
        name="daily_assets_schedule",
        hour_of_day=0,
        minute_of_hour=30,
        default_status=RUNNING,
    ),
    monthly_sla_schedule,
]
