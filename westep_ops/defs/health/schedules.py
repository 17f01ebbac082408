"""The morning health check of every target, in the team's time zone (the configured one)."""

from zoneinfo import ZoneInfo

from dagster import DefaultScheduleStatus, RunRequest, ScheduleEvaluationContext, schedule

from westep_ops.defs import TARGETS, TIMEZONE
from westep_ops.defs.health.jobs import health_check_job


@schedule(
    name="morning_health_check_schedule",
    job=health_check_job,
    cron_schedule="0 9 * * *",
    execution_timezone=TIMEZONE,
    default_status=DefaultScheduleStatus.RUNNING,
    description="09:00: the morning health sweep of each target (one run per target's"
    " partition), H1-H7 as asset checks of health_check.",
)
def morning_health_check_schedule(context: ScheduleEvaluationContext) -> list[RunRequest]:
    day = context.scheduled_execution_time.astimezone(ZoneInfo(TIMEZONE)).strftime("%Y-%m-%d")
    return [RunRequest(run_key=f"morning-{day}-{t}", partition_key=t) for t in TARGETS]
