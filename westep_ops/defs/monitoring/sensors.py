"""The monitoring sensor: probes on its own schedule without launching a run per tick.

Every 30 s it asks the engine what is due (cheap probes every
``monitoring.intervals.performance``, the full sweep every ``monitoring.intervals.health``),
stores the samples, reports the H1-H7 results as asset check evaluations of
``health_check`` (visible in the UI without a run), and requests a run only for work that
needs one: a repair for a new incident, once (the run key is the incident and action).
"""

from dagster import (
    AssetCheckEvaluation,
    AssetCheckSeverity,
    AssetKey,
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from westep_ops.defs.health.assets import check_name
from westep_ops.defs.repairs.jobs import DEFAULT_TARGET, REPAIR_TAG, repair_job
from westep_ops.monitoring.engine import Monitor
from westep_ops.monitoring.history import HistoryStore, HistoryUnavailable
from westep_ops.monitoring.notify import Notifier
from westep_ops.probes.base import Status
from westep_ops.redact import redact
from westep_ops.resources import MonitoredStackResource, PostgresResource


@sensor(
    name="monitoring_sensor",
    jobs=[repair_job],
    minimum_interval_seconds=30,
    default_status=DefaultSensorStatus.RUNNING,
    description="Continuous monitoring (M1-M4): probes, incidents, alerts, repair runs.",
)
def monitoring_sensor(
    context: SensorEvaluationContext, stack: MonitoredStackResource, ops_storage: PostgresResource
) -> SensorResult | SkipReason:
    env = stack.environment()
    config = stack.config()
    monitor = Monitor(
        env, config, HistoryStore(ops_storage.value()), Notifier(env, config.timezone)
    )
    try:
        result = monitor.tick()
    except HistoryUnavailable as e:
        return SkipReason(f"ops store unavailable: {redact(e)}")
    finally:
        monitor.close()
    if result.ran is None:
        return SkipReason("nothing due yet")
    evaluations = [
        AssetCheckEvaluation(
            asset_key=AssetKey("health_check"),
            check_name=check_name(o.result.category),
            passed=o.result.status in (Status.ok, Status.not_configured),
            severity=AssetCheckSeverity.WARN
            if o.result.status is Status.warning
            else AssetCheckSeverity.ERROR,
            metadata={
                "status": o.status,
                "summary": redact(o.summary),
                "sample": result.ran,
                "suspected_cause": o.suspected_cause or "-",
            },
        )
        for o in result.observations
        if o.result is not None
    ]
    runs = [
        RunRequest(
            run_key=f"incident-{r.incident_id}-{r.action.value}",
            job_name=repair_job.name,
            run_config={
                "ops": {
                    "run_repair_op": {
                        "config": {
                            "action": r.action.value,
                            "trigger": f"incident #{r.incident_id}",
                            "incident_id": r.incident_id,
                            "category": r.category,
                        }
                    }
                }
            },
            tags={REPAIR_TAG: DEFAULT_TARGET, "westep-ops/incident": str(r.incident_id)},
        )
        for r in result.repairs
    ]
    context.log.info(
        f"{result.ran} sweep in {result.duration_ms:.0f} ms; opened {result.opened}, closed {result.closed}, "
        f"{len(runs)} repair run(s) requested"
    )
    return SensorResult(run_requests=runs, asset_events=evaluations)
