"""The health check as a Dagster asset with one asset check per category (H1-H7).

The sweep itself is the plain probe code; here its results become check evaluations
(failed checks carry WARN or ERROR severity and the measured values as metadata), so the
UI shows which category failed and why. The asset is partitioned by target (a run sweeps
one target); its checks are not: Dagster 1.13 keeps at most one run-less evaluation per
check and partition (its unique index on asset_key, check_name, run_id and partition,
with run_id '' for every run-less one), so a partitioned check could hold only the first
of the sensor's evaluations and refuse every later one. Each evaluation names its target
in its description ("staging cheap: ...") and in its ``target`` metadata instead.
"""

from typing import Any

from dagster import (
    AssetCheckEvaluation,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    MaterializeResult,
    MetadataValue,
    asset,
)

from westep_ops.config import Category
from westep_ops.defs import owners
from westep_ops.defs import target_partitions as targets
from westep_ops.probes.base import H_NUMBER, CheckResult, Status, exit_code, worst
from westep_ops.redact import redact, redact_tree
from westep_ops.resources import MonitoredStackResource

CHECK_DESCRIPTIONS = {
    Category.connection: "H1 database connection, direct and through pgbouncer",
    Category.pool: "H2 connection pool: waiting clients, saturation, pause, backends",
    Category.tables: "H3 critical tables readable by the roles that must read them",
    Category.integrity: "H4 data integrity rules: orphans, NULLs, duplicates",
    Category.realtime: "H5 realtime: publication, slots, LISTEN/NOTIFY",
    Category.auth: "H6 auth schema, roles and the auth service's health endpoint",
    Category.api: "H7 configured HTTP endpoints: status and latency",
}


def check_name(category: Category) -> str:
    return f"{H_NUMBER[category].lower()}_{category.value}"


# The status as a number the Plots tab can draw (0 fine ... 2 critical; 3 could not look).
STATUS_LEVEL = {
    Status.ok: 0,
    Status.not_configured: 0,
    Status.warning: 1,
    Status.critical: 2,
    Status.error: 3,
}


def evaluation_metadata(
    r: CheckResult, probe: str, suspected_cause: str | None = None
) -> dict[str, Any]:
    """One probe's evaluation metadata, the same wherever it ran (sensor sweep, confirmation,
    a repair's verification, a health_check run): text for people, numbers for the Plots tab
    (``status_level``, ``duration_ms`` and every top-level numeric value as ``value.<name>``).

    ``probe`` says which probe decided: cheap/full (a scheduled sweep), confirmation,
    verification (after a repair), recovery (recovery_job's first check) or run (a
    health_check materialization).
    """
    metadata: dict[str, Any] = {
        "probe": probe,
        "status": r.status.value,
        "status_level": STATUS_LEVEL[r.status],
        "summary": redact(r.summary),
        "duration_ms": float(r.duration_ms),
        "source": r.source or "-",
        "findings": ", ".join(r.findings) or "-",
        "values": MetadataValue.json(redact_tree(r.values)),
        "thresholds": MetadataValue.json(redact_tree(r.thresholds)),
    }
    for key, value in r.values.items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            metadata[f"value.{key}"] = value if isinstance(value, int) else float(value)
    cause = suspected_cause or (r.suspected_cause.value if r.suspected_cause else None)
    if cause:
        metadata["suspected_cause"] = cause
    return metadata


def _passed(r: CheckResult) -> bool:
    return r.status in (Status.ok, Status.not_configured)  # not configured: nothing to fail


def _severity(r: CheckResult) -> AssetCheckSeverity:
    return AssetCheckSeverity.WARN if r.status is Status.warning else AssetCheckSeverity.ERROR


def check_result(r: CheckResult) -> AssetCheckResult:
    """A probe result of a health_check run as a Dagster check result (status -> pass/severity)."""
    return AssetCheckResult(
        check_name=check_name(r.category),
        passed=_passed(r),
        severity=_severity(r),
        metadata=evaluation_metadata(r, "run"),
    )


def check_evaluation(
    r: CheckResult, probe: str, suspected_cause: str | None = None, *, target: str
) -> AssetCheckEvaluation:
    """A probe result outside a health_check run (a worker's stored sample read by the
    sensor, a repair run's verification) as an evaluation of the same check of
    ``target`` (named in its description and metadata), with the same metadata."""
    return AssetCheckEvaluation(
        asset_key=AssetKey("health_check"),
        check_name=check_name(r.category),
        passed=_passed(r),
        severity=_severity(r),
        metadata={"target": target, **evaluation_metadata(r, probe, suspected_cause)},
        # The check history's Description column: which probe decided, and what it saw.
        description=redact(f"{target} {probe}: {r.summary}")[:300],
    )


HEALTH_CHECKS = [
    AssetCheckSpec(check_name(c), asset="health_check", description=d)
    for c, d in CHECK_DESCRIPTIONS.items()
]


@asset(
    check_specs=HEALTH_CHECKS,
    partitions_def=targets,
    kinds={"postgres", "python"},
    group_name="health",
    owners=owners(),
    description="One health sweep (H1-H7) of a target (one partition per target); each"
    " category is an asset check, whose evaluations name their target.",
)
def health_check(
    context: AssetExecutionContext, stack: MonitoredStackResource
) -> MaterializeResult:
    # live: the probe sweep of the partition's target; offline: canned results
    results = stack.health_check(context.partition_key)
    table = "| check | status | summary |\n|---|---|---|\n" + "\n".join(
        f"| {r.name} | {r.status.value} | {redact(r.summary)} |" for r in results
    )
    context.log.info(f"health sweep: {worst(r.status for r in results).value}")
    return MaterializeResult(
        metadata={
            "worst_status": worst(r.status for r in results).value,
            "exit_code": exit_code(r.status for r in results),
            "sweep_ms": round(sum(r.duration_ms for r in results), 1),
            "checks": MetadataValue.md(table),
        },
        check_results=[check_result(r) for r in results],
    )
