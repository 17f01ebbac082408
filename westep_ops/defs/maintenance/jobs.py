"""The seed's routines as Dagster jobs: the noon diagnosis, the evening summary, Sunday
upkeep. The work is plain code (``maintenance/routines.py``, ``repairs/``, ``probes/``)."""

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from dagster import AssetObservation, MetadataValue, OpExecutionContext, job, op

from westep_ops.config import RepairAction
from westep_ops.defs.repairs.jobs import JOB_TAG_VALUE, REPAIR_TAG
from westep_ops.maintenance.routines import analyze_tables, send_daily_summary
from westep_ops.monitoring.rotation import rotate_logs
from westep_ops.probes.diagnosis import diagnose
from westep_ops.repairs.base import run_repair
from westep_ops.resources import MonitoredStackResource, PostgresResource
from westep_ops.store import log_dir


@op(
    description="12:00 routine: performance sample and a full diagnosis (logs/diagnosis-report-*.md)."
)
def performance_and_diagnosis(context: OpExecutionContext, stack: MonitoredStackResource) -> None:
    for target in stack.target_names():
        d = diagnose(stack.environment(target), stack.config(target))
        context.log.info(f"{target}: {d.verdict}; {d.performance}; report {d.report}")


@op(
    description="18:00 routine: the day's critical alerts and incidents, and its opened alerts"
    " still to label (with the label command), to the log and Slack."
)
def daily_summary(
    context: OpExecutionContext, stack: MonitoredStackResource, ops_storage: PostgresResource
) -> None:
    for target in stack.target_names():
        text = send_daily_summary(
            stack.environment(target),
            stack.config(target),
            ops_storage.value(),
            datetime.now(UTC),
            target=target,
        )
        context.log.info(f"{target}: {text}")


@op(
    description="Sunday: optimize_performance (VACUUM/ANALYZE where needed), with the usual safety rules."
)
def weekly_optimize(context: OpExecutionContext, stack: MonitoredStackResource) -> str:
    outcomes = []
    for target in stack.target_names():  # one target after the other, never side by side
        r = run_repair(
            RepairAction.optimize_performance,
            stack.environment(target),
            stack.config(target),
            trigger="weekly maintenance",
            target=target,
        )
        context.log.info(f"{target}: optimize_performance {r.outcome}: {r.summary}")
        outcomes.append(f"{target} {r.outcome}")
    return ", ".join(outcomes)


@op(
    description="Sunday, after weekly_optimize: statistics update (ANALYZE every configured table;"
    " the seed's optimize-database-schema), bounded by the maintenance timeout and lock_timeout."
)
def update_statistics(
    context: OpExecutionContext, stack: MonitoredStackResource, optimized: str
) -> str:
    # ``optimized``: VACUUM and ANALYZE take conflicting locks (SHARE UPDATE EXCLUSIVE), so
    # this op waits for weekly_optimize instead of running beside it.
    skipped = []
    for target in stack.target_names():
        r = analyze_tables(
            stack.environment(target), stack.config(target), trigger="weekly maintenance"
        )
        if r.skipped:
            context.log.warning(f"{target}: ANALYZE skipped (lock_timeout): {', '.join(r.skipped)}")
            skipped += [f"{target}:{t}" for t in r.skipped]
        context.log.info(f"{target}: analyzed {len(r.analyzed)} tables")
    context.log.info(f"weekly_optimize: {optimized}")
    return "skipped " + ", ".join(skipped) if skipped else "analyzed"


@op(
    description="Sunday: archive older logs into logs-YYYY-MM-DD.tar.gz, verified before removal;"
    " each archived daily report's partition is told where its file went."
)
def rotate(context: OpExecutionContext, stack: MonitoredStackResource) -> None:
    today = datetime.now(ZoneInfo(stack.config().timezone)).strftime("%Y-%m-%d")
    r = rotate_logs(log_dir(), today)
    context.log.info(
        f"archived {len(r.files)} files into {r.archive}" if r.archive else "nothing to rotate"
    )
    # The report's materialization still names logs/daily-report-<day>.md: an
    # observation on the same partition says it now lives in the archive.
    for day, name in r.daily_reports().items():
        context.log_event(
            AssetObservation(
                asset_key="diagnosis_report",
                partition=day,
                metadata={
                    "path": f"{name} archived in {r.archive}",
                    "archive": MetadataValue.path(str(r.archive)),
                },
            )
        )


@job(description="12:00: performance check and diagnosis.")
def performance_diagnosis_job() -> None:
    performance_and_diagnosis()


@job(
    description="18:00: the day's critical alerts and the opened alerts still to label,"
    " summarised to the log and Slack."
)
def daily_summary_job() -> None:
    daily_summary()


@job(
    tags={REPAIR_TAG: JOB_TAG_VALUE},
    description="Sunday maintenance: optimize, statistics, log rotation.",
)
def weekly_maintenance_job() -> None:
    # In order, never side by side: VACUUM and ANALYZE of one table block each other.
    update_statistics(weekly_optimize())
    rotate()
