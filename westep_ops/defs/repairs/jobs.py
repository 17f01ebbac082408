"""Repairs and recovery as Dagster jobs.

Both carry the ``westep-ops/repair-target`` tag, which ``dagster.yaml`` limits to one run
per tag value: two repairs never work on the same database at once, whoever launched them
(a sensor, a schedule, a person in the UI). The work itself is the plain repair code.

A repair run also carries ``westep-ops/action`` and, once done, ``westep-ops/outcome``
tags (so the runs list says what each run did), and its changes and outcome are the
op output's metadata (shown on the run's output event). A run the sensor did
not launch itself -- a person's launch or re-execution -- is recorded as manual.

A successful repair of an incident is verified by re-probing its category at once; that
probe is reported as an evaluation of the category's ``health_check`` check, so the UI
shows the check passing as soon as the repair is verified.
"""

from typing import Any

from dagster import (
    AssetCheckEvaluation,
    Config,
    Failure,
    MetadataValue,
    OpExecutionContext,
    Out,
    job,
    op,
)
from pydantic import Field

from westep_ops.defs.health.assets import check_evaluation
from westep_ops.repairs.base import parse_action, run_repair
from westep_ops.repairs.recovery import recover
from westep_ops.resources import MonitoredStackResource

REPAIR_TAG = "westep-ops/repair-target"
DEFAULT_TARGET = "monitored-database"
ACTION_TAG = "westep-ops/action"
OUTCOME_TAG = "westep-ops/outcome"


def _log_check(context: OpExecutionContext, evaluation: AssetCheckEvaluation) -> None:
    """Report a check evaluation from inside an op."""
    # Dagster 1.13 types log_event's argument without AssetCheckEvaluation, which its
    # body handles (op_execution_context.py: the isinstance branch for it).
    context.log_event(evaluation)  # type: ignore[arg-type]


def launched_by_sensor(tags: dict[str, str]) -> bool:
    """True for a run the monitoring sensor launched itself (not a person's re-execution)."""
    return "dagster/sensor_name" in tags and "dagster/parent_run_id" not in tags


def repair_trigger(configured: str, tags: dict[str, str], run_id: str) -> str:
    """The trigger recorded for the attempt: the sensor's, or "manual" for a person's run."""
    if launched_by_sensor(tags):
        return configured
    return f"manual (Dagster run {run_id[:8]}, {configured})"


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


@op(
    description="Run one repair with rate limit, timeouts, verification and audit.",
    out=Out(str, description="The repair's outcome; its metadata lists the changes."),
)
def run_repair_op(
    context: OpExecutionContext, config: RepairConfig, stack: MonitoredStackResource
) -> str:
    action = parse_action(config.action)
    env, cfg = stack.environment(), stack.config()
    tags = dict(context.run.tags)
    if tags.get(ACTION_TAG) != action.value:
        context.instance.add_run_tags(context.run_id, {ACTION_TAG: action.value})
    result = run_repair(
        action,
        env,
        cfg,
        dry_run=config.dry_run,
        force=config.force,
        all_declared=config.all_declared,
        trigger=repair_trigger(config.trigger, tags, context.run_id),
        incident_id=config.incident_id,
    )
    context.instance.add_run_tags(context.run_id, {OUTCOME_TAG: result.outcome})
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
            _log_check(
                context, check_evaluation(fresh.result, "verification", fresh.suspected_cause)
            )
    metadata: dict[str, Any] = {
        "action": result.action,
        "outcome": result.outcome,
        "summary": result.summary,
        "changes": MetadataValue.json(result.changes),
        "changed": len(result.changes),
        "trigger": result.trigger,
        "dry_run": result.dry_run,
        "duration_ms": result.duration_ms,
    }
    context.log.info(
        f"{result.action}: {result.outcome}: {result.summary}; changes: {result.changes}"
    )
    if not result.ok:
        raise Failure(
            description=f"{result.action} {result.outcome}: {result.summary}", metadata=metadata
        )
    context.add_output_metadata(metadata)
    return result.outcome


@op(description="Check health, run the repairs it calls for, re-check, escalate the rest.")
def run_recovery_op(
    context: OpExecutionContext, config: RecoveryConfig, stack: MonitoredStackResource
) -> None:
    report = recover(stack.environment(), stack.config(), dry_run=config.dry_run)
    # Its checks decide what to repair and what to escalate: report them as evaluations
    # (the re-check after the repairs last, so the UI shows where recovery left things).
    for r in report.before:
        _log_check(context, check_evaluation(r, "recovery"))
    for r in report.after:
        _log_check(context, check_evaluation(r, "verification"))
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
    description="Run one repair action (config: action, dry_run); the sensor launches it per incident.",
)
def repair_job() -> None:
    run_repair_op()


@job(
    tags={REPAIR_TAG: DEFAULT_TARGET},
    description="Automatic recovery: a fresh health check, the repairs it calls for, escalation.",
)
def recovery_job() -> None:
    run_recovery_op()
