"""Routines in the team's time zone (the configured one, Asia/Tokyo by default)."""

from dagster import DefaultScheduleStatus, ScheduleDefinition

from westep_ops.defs import TIMEZONE
from westep_ops.defs.maintenance.jobs import (
    daily_summary_job,
    performance_diagnosis_job,
    weekly_maintenance_job,
)

noon_performance_schedule = ScheduleDefinition(
    name="noon_performance_schedule",
    job=performance_diagnosis_job,
    cron_schedule="0 12 * * *",
    execution_timezone=TIMEZONE,
    default_status=DefaultScheduleStatus.RUNNING,
    description="12:00: performance sample and full diagnosis report (logs/).",
)
evening_summary_schedule = ScheduleDefinition(
    name="evening_summary_schedule",
    job=daily_summary_job,
    cron_schedule="0 18 * * *",
    execution_timezone=TIMEZONE,
    default_status=DefaultScheduleStatus.RUNNING,
    description="18:00: the day's critical alerts and unlabelled alerts to the log and Slack.",
)
weekly_maintenance_schedule = ScheduleDefinition(
    name="weekly_maintenance_schedule",
    job=weekly_maintenance_job,
    cron_schedule="0 3 * * 0",
    execution_timezone=TIMEZONE,
    default_status=DefaultScheduleStatus.RUNNING,
    description="Sunday 03:00: VACUUM/ANALYZE where needed, statistics, log rotation.",
)
