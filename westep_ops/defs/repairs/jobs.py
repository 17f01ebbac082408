"""Repairs and recovery as Dagster jobs.

Both work on one target of the fleet (config ``target``: a name of the config's
``targets``, ``default`` without a list), resolved through :mod:`westep_ops.targets`, and
carry the ``westep-ops/repair-target`` tag with that target's NAME as its value, which
``dagster.yaml`` limits to one run per tag value: two repairs never work on the same
target at once, whoever launched them (the sensor, a schedule, a person in the UI), and
repairs of different targets run side by side. The work itself is the plain repair code.

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

from westep_ops.defs import TARGETS
from westep_ops.defs.health.assets import check_evaluation
from westep_ops.repairs.base import parse_action, run_repair
from westep_ops.repairs.recovery import recover
from westep_ops.resources import MonitoredStackResource

REPAIR_TAG = "westep-ops/repair-target"
# The config's only target, if it has one: the default of a run's ``target`` config and
# the job's own tag value (for a run whose launcher set none: a person's launch from the
# UI). With several targets a person names one, and such untagged runs share the tag
# value "fleet" (they wait for each other). The sensor's runs carry their target's name
# (:func:`repair_run_tags`).
ONLY_TARGET = TARGETS[0] if len(TARGETS) == 1 else ""
JOB_TAG_VALUE = ONLY_TARGET or "fleet"
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


def named_target(target: str) -> str:
    """The run's target; a run of a fleet that names none fails with one clear line."""
    if not target:
        raise Failure(description=f"config 'target' is required: one of {', '.join(TARGETS)}")
    return target


def repair_run_tags(target: str, action: str, incident_id: int | None = None) -> dict[str, str]:
    """A repair run's tags: the per-target concurrency key (its value is the target's
    name), the action, and the incident it answers."""
    tags = {REPAIR_TAG: target, ACTION_TAG: action}
    if incident_id is not None:
        tags["westep-ops/incident"] = str(incident_id)
    return tags


class RepairConfig(Config):
    target: str = Field(
        ONLY_TARGET,
        description="the target to repair: a name of the config's targets (default without"
        " a list; required when there are several)",
    )
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
    target: str = Field(
        ONLY_TARGET,
        description="the target to recover: a name of the config's targets (default without"
        " a list; required when there are several)",
    )
    dry_run: bool = False


@op(
    description="Run one repair with rate limit, timeouts, verification and audit.",
    out=Out(str, description="The repair's outcome; its metadata lists the changes."),
)
def run_repair_op(
    context: OpExecutionContext, config: RepairConfig, stack: MonitoredStackResource
) -> str:
    action = parse_action(config.action)
    target = named_target(config.target)
    env, cfg = stack.environment(target), stack.config(target)
    tags = dict(context.run.tags)
    if tags.get(ACTION_TAG) != action.value:
        context.instance.add_run_tags(context.run_id, {ACTION_TAG: action.value})
    if tags.get(REPAIR_TAG) != target:
        # queued under another concurrency key: say so (the limit could not apply)
        context.log.warning(
            f"run tagged {REPAIR_TAG}={tags.get(REPAIR_TAG)} repairs target {target}:"
            f" tag it {REPAIR_TAG}={target} so the per-target limit applies"
        )
    result = run_repair(
        action,
        env,
        cfg,
        dry_run=config.dry_run,
        force=config.force,
        all_declared=config.all_declared,
        trigger=repair_trigger(config.trigger, tags, context.run_id),
        incident_id=config.incident_id,
        target=target,
    )
    context.instance.add_run_tags(context.run_id, {OUTCOME_TAG: result.outcome})
    if result.ok and config.incident_id and config.category and not config.dry_run:
        # Re-probe now: the passing sample starts the streak that closes the incident.
        from westep_ops.monitoring.driver import build

        monitor = build(env, cfg, recovery=False, target=target)
        try:
            fresh = monitor.verify(config.category)
        finally:
            monitor.close()
        if fresh is not None and fresh.result is not None:
            # The check in the UI follows the repair at once, not at the next sweep.
            _log_check(
                context,
                check_evaluation(
                    fresh.result, "verification", fresh.suspected_cause, target=target
                ),
            )
    metadata: dict[str, Any] = {
        "target": target,
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
        f"{target}: {result.action}: {result.outcome}: {result.summary}; changes: {result.changes}"
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
    target = named_target(config.target)
    report = recover(stack.environment(target), stack.config(target), dry_run=config.dry_run)
    # Its checks decide what to repair and what to escalate: report them as evaluations
    # (the re-check after the repairs last, so the UI shows where recovery left things).
    for r in report.before:
        _log_check(context, check_evaluation(r, "recovery", target=target))
    for r in report.after:
        _log_check(context, check_evaluation(r, "verification", target=target))
    context.log.info(f"{target}: recovery: {report.verdict} (report {report.path})")
    if report.escalations:
        raise Failure(
            description=report.verdict,
            metadata={
                "escalations": MetadataValue.json([e.__dict__ for e in report.escalations]),
                "report": MetadataValue.path(str(report.path)),
            },
        )


@job(
    tags={REPAIR_TAG: JOB_TAG_VALUE},
    description="Run one repair action on one target (config: target, action, dry_run);"
    " the monitoring sensor launches it per queued request, tagged with the target.",
)
def repair_job() -> None:
    run_repair_op()


@job(
    tags={REPAIR_TAG: JOB_TAG_VALUE},
    description="Automatic recovery of one target (config: target): a fresh health check,"
    " the repairs it calls for, escalation.",
)
def recovery_job() -> None:
    run_recovery_op()
