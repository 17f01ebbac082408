"""Last month's SLA report of every target on the 1st, in the team's time zone."""

from datetime import timedelta
from zoneinfo import ZoneInfo

from dagster import DefaultScheduleStatus, RunRequest, ScheduleEvaluationContext, schedule

from westep_ops.defs import TARGETS, TIMEZONE
from westep_ops.defs.monitoring.partitions import key
from westep_ops.defs.sla.jobs import monthly_sla_job
from westep_ops.defs.sla.partitions import MONTH


@schedule(
    name="monthly_sla_schedule",
    job=monthly_sla_job,
    cron_schedule="0 2 1 * *",
    execution_timezone=TIMEZONE,
    default_status=DefaultScheduleStatus.RUNNING,
    description="On the 1st, after the last day's daily assets (00:30) are in: last month's"
    " report of each target (one run per target).",
)
def monthly_sla_schedule(context: ScheduleEvaluationContext) -> list[RunRequest]:
    when = context.scheduled_execution_time.astimezone(ZoneInfo(TIMEZONE))
    last = (when.replace(day=1) - timedelta(days=1)).strftime("%Y-%m-01")
    return [
        RunRequest(run_key=f"sla-{last}-{target}", partition_key=key(last, target, MONTH))
        for target in TARGETS
    ]
