"""Last month's SLA report on the 1st, in the team's time zone."""

from datetime import timedelta
from zoneinfo import ZoneInfo

from dagster import DefaultScheduleStatus, RunRequest, ScheduleEvaluationContext, schedule

from westep_ops.defs import TIMEZONE
from westep_ops.defs.sla.jobs import monthly_sla_job


@schedule(
    name="monthly_sla_schedule",
    job=monthly_sla_job,
    cron_schedule="0 2 1 * *",
    execution_timezone=TIMEZONE,
    default_status=DefaultScheduleStatus.RUNNING,
    description="On the 1st, after the last day's daily assets (00:30) are in: last month's report.",
)
def monthly_sla_schedule(context: ScheduleEvaluationContext) -> RunRequest:
    when = context.scheduled_execution_time.astimezone(ZoneInfo(TIMEZONE))
    last = (when.replace(day=1) - timedelta(days=1)).strftime("%Y-%m-01")
    return RunRequest(run_key=f"sla-{last}", partition_key=last)
