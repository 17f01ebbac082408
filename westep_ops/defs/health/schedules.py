"""The morning health check, in the team's time zone (the configured one)."""

from dagster import DefaultScheduleStatus, ScheduleDefinition

from westep_ops.defs import TIMEZONE
from westep_ops.defs.health.jobs import health_check_job

morning_health_check_schedule = ScheduleDefinition(
    name="morning_health_check_schedule",
    job=health_check_job,
    cron_schedule="0 9 * * *",
    execution_timezone=TIMEZONE,
    default_status=DefaultScheduleStatus.RUNNING,
    description="09:00: the morning health sweep, H1-H7 as asset checks of health_check.",
)
