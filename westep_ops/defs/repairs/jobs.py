"""Repairs and recovery as Dagster jobs.

Both carry the ``westep-ops/repair-target`` tag, which ``dagster.yaml`` limits to one run
per tag value: two repairs never work on the same database at once, whoever launched them
(a sensor, a schedule, a person in the UI). The work itself is the plain repair code.
A successful repair of an incident is verified by re-probing its category at once; that
probe is reported as an evaluation of the category's ``health_check`` check, so the UI
shows the check passing as soon as the repair is verified.
"""

from dagster import Config, Failure, MetadataValue, OpExecutionContext, job, op
from pydantic import Field

from westep_ops.defs.health.assets import check_evaluation
from westep_ops.repairs.base import parse_action, run_repair
from westep_ops.repairs.recovery import recover
from westep_ops.resources import MonitoredStackResource

REPAIR_TAG = "westep-ops/repair-target"
DEFAULT_TARGET = "monitored-database"


class RepairConfig(Config):
    action: str = Field(
        description="restore_db_connection, restore_connection_pool, fix_table_permissions, "
        "repair_auth, fix_data_integrity, optimize_performance, restore_realtime_publication"
    )
    dry_run: bool = False
    force: bool = Field(False, description="run past autoRecovery.maxAttemptsPerHour (recorded)")
    all_declared: bool = Field(
        False,
        description="fix_table_permissions: grant every declared privilege that is missing,"
        " not just what the health check needs (a person's explicit request)",
    )
    trigger: str = "dagster"
    incident_id: int | None = Field(
        None, description="the incident this repair answers (set by the sensor)"
    )
    category: str | None = Field(
        None, description="the incident's category, re-probed after a success"
    )


class RecoveryConfig(Config):
    dry_run: bool = False


@op(description="Run one repair with rate limit, timeouts, verification and audit.")
def run_repair_op(
    context: OpExecutionContext, config: RepairConfig, stack: MonitoredStackResource
) -> None:
    action = parse_action(config.action)
    env, cfg = stack.environment(), stack.config()
    result = run_repair(
        action,
        env,
        cfg,
        dry_run=config.dry_run,
        force=config.force,
        all_declared=config.all_declared,
        trigger=config.trigger,
        incident_id=config.incident_id,
    )
    if result.ok and config.incident_id and config.category and not config.dry_run:
        # Re-probe now: the passing sample starts the streak that closes the incident.
        from westep_ops.monitoring.driver import build

        monitor = build(env, cfg, recovery=False)
        try:
            fresh = monitor.verify(config.category)
        finally:
            monitor.close()
        if fresh is not None and fresh.result is not None:
            # The check in the UI follows the repair at once, not at the next sweep.
            context.log_event(check_evaluation(fresh.result, "verification", fresh.suspected_cause))
    metadata = {
        "outcome": result.outcome,
        "summary": result.summary,
        "changes": MetadataValue.json(result.changes),
        "duration_ms": result.duration_ms,
    }
    context.log.info(
        f"{result.action}: {result.outcome}: {result.summary}; changes: {result.changes}"
    )
    if not result.ok:
        raise Failure(
            description=f"{result.action} {result.outcome}: {result.summary}", metadata=metadata
        )


@op(description="Check health, run the repairs it calls for, re-check, escalate the rest.")
def run_recovery_op(
    context: OpExecutionContext, config: RecoveryConfig, stack: MonitoredStackResource
) -> None:
    report = recover(stack.environment(), stack.config(), dry_run=config.dry_run)
    # Its checks decide what to repair and what to escalate: report them as evaluations
    # (the re-check after the repairs last, so the UI shows where recovery left things).
    for r in report.before:
        context.log_event(check_evaluation(r, "recovery"))
    for r in report.after:
        context.log_event(check_evaluation(r, "verification"))
    context.log.info(f"recovery: {report.verdict} (report {report.path})")
    if report.escalations:
        raise Failure(
            description=report.verdict,
            metadata={
                "escalations": MetadataValue.json([e.__dict__ for e in report.escalations]),
                "report": MetadataValue.path(str(report.path)),
            },
        )


@job(
    tags={REPAIR_TAG: DEFAULT_TARGET},
    description="Run one repair action (config: action, dry_run).",
)
def repair_job() -> None:
    run_repair_op()


@job(tags={REPAIR_TAG: DEFAULT_TARGET}, description="Automatic recovery from a fresh health check.")
def recovery_job() -> None:
    run_recovery_op()
