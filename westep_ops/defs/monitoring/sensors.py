"""The monitoring sensor: probes on its own schedule without launching a run per tick.

Every 30 s it asks the engine what is due (cheap probes every
``monitoring.intervals.performance``, the full sweep every ``monitoring.intervals.health``),
stores the samples, reports every probe that decides something -- the sweep's H1-H7
results and the re-probes that confirm a first failure -- as asset check evaluations of
``health_check`` with numeric metadata (visible and plotted in the UI without a run),
observes ``probe_samples`` once per sweep, and requests a run only for work that needs one: a repair the state of an open incident calls for. Requests are level-triggered
(see the engine): the run key is incident + action + attempts already on record, so the
same request is never launched twice, and a request after a refused attempt whose limit
has freed up is a new key. When an incident opens or closes it also requests a refresh
of today's daily assets, so the incidents table of today shows it within a minute.

"Preview tick result" in the UI (GraphQL ``sensorDryRun``) runs this function for real.
Dagster 1.13 has no flag for it, but a daemon tick's log key ends in its tick id while a
preview gets none (the context then makes one ending in a timestamp): a preview probes
and shows what the tick would report and request, with nothing stored and nothing sent
(:class:`PreviewHistory`, :class:`PreviewNotifier`); when nothing is due it forces a
cheap sweep, so the preview always shows the current state. Repairs are requested from
the state anyway, so neither a preview nor a lost tick can lose one.

Slack is sent by one process-wide background sender, so an evaluation never waits for
a slow webhook; what it has not delivered is resent by a later evaluation. An evaluation
is bounded by the probes' timeouts and one confirmation delay. The tick list tells them
apart: an idle tick is skipped with "idle: next cheap sweep due in N s", a sweep that
requests no run with "swept cheap: 6 checks, 0 failing" (and what it opened or closed).
"""

from datetime import UTC, datetime

from dagster import (
    AssetCheckEvaluation,
    AssetObservation,
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from westep_ops.defs.health.assets import check_evaluation
from westep_ops.defs.monitoring.assets import probe_samples
from westep_ops.defs.monitoring.jobs import IN_PROGRESS_TAG, daily_monitoring_job
from westep_ops.defs.monitoring.partitions import day_key
from westep_ops.defs.repairs.jobs import ACTION_TAG, DEFAULT_TARGET, REPAIR_TAG, repair_job
from westep_ops.environment import Environment
from westep_ops.monitoring.engine import Monitor, TickResult
from westep_ops.monitoring.history import HistoryUnavailable, PreviewHistory, ResilientHistory
from westep_ops.monitoring.notify import Notifier, PreviewNotifier
from westep_ops.redact import redact
from westep_ops.resources import MonitoredStackResource, PostgresResource
from westep_ops.store import refuse_monitored_store

_notifiers: dict[tuple[str | None, str], Notifier] = {}


def _notifier(env: Environment, tz: str) -> Notifier:
    """One background sender per webhook for the code server's lifetime."""
    key = (env.webhook_url, tz)
    if key not in _notifiers:
        _notifiers[key] = Notifier(env, tz, background=True)
    return _notifiers[key]


def is_preview(context: SensorEvaluationContext) -> bool:
    """True for the UI's "Preview tick result": a daemon tick's log key ends in its id."""
    key = context.log_key
    if not key:
        return False
    return not str(key[-1]).isdigit()


def incident_refreshes(opened: list[int], closed: list[int], now: datetime) -> list[RunRequest]:
    """At most one refresh of today's daily assets per tick, when incidents opened or closed
    in it (the rollups also take a lock, so it never races the hourly refresh)."""
    if not opened and not closed:
        return []
    day = day_key(now)
    ids = ",".join(str(i) for i in sorted({*opened, *closed}))
    return [
        RunRequest(
            run_key=f"today-{day}-incidents-{ids}-{now:%H%M%S}",
            job_name=daily_monitoring_job.name,
            partition_key=day,
            tags={IN_PROGRESS_TAG: "true", "westep-ops/incidents": ids},
        )
    ]


@sensor(
    name="monitoring_sensor",
    jobs=[repair_job, daily_monitoring_job],
    minimum_interval_seconds=30,
    default_status=DefaultSensorStatus.RUNNING,
    description="Continuous monitoring (M1-M4): probes, incidents, alerts, repair runs,"
    " and a refresh of today's daily assets when an incident opens or closes.",
)
def monitoring_sensor(
    context: SensorEvaluationContext, stack: MonitoredStackResource, ops_storage: PostgresResource
) -> SensorResult | SkipReason:
    env = stack.environment()
    config = stack.config()
    # Raises (the tick fails with one clear message) when the store is the target itself.
    refuse_monitored_store(
        ops_storage.value(),
        {"DIRECT_URL": env.direct_url, "WESTEP_OPS_REPAIR_URL": env.repair_url},
        timeout_ms=config.monitoring.timeouts.connect,
    )
    preview = is_preview(context)
    if preview:
        monitor = Monitor(
            env,
            config,
            PreviewHistory(ops_storage.value()),
            PreviewNotifier(env, config.timezone),
        )
    else:
        monitor = Monitor(
            env, config, ResilientHistory(ops_storage.value()), _notifier(env, config.timezone)
        )
    try:
        result = monitor.tick()
        if result.ran is None and preview:
            result = monitor.tick(force="cheap")
        next_due = monitor.next_due_in(monitor.clock()) if result.ran is None else 0.0
    except HistoryUnavailable as e:
        return SkipReason(f"ops store unavailable: {redact(e)}")
    finally:
        monitor.close(wait_s=0)
    if result.ran is None:
        return SkipReason(f"idle: next cheap sweep due in {next_due:.0f} s")
    evaluations: list[AssetCheckEvaluation | AssetObservation] = [
        *sweep_evaluations(result),
        AssetObservation(
            asset_key=probe_samples.key,
            metadata={
                "sweep": result.ran,
                "samples": len(result.observations) + len(result.confirmations),
                "failing": sum(o.failing for o in result.observations),
                "sweep_ms": result.duration_ms,
            },
        ),
    ]
    runs = [
        RunRequest(
            run_key=r.key,
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
            tags={
                REPAIR_TAG: DEFAULT_TARGET,
                ACTION_TAG: r.action.value,
                "westep-ops/incident": str(r.incident_id),
            },
        )
        for r in result.repairs
    ]
    runs += incident_refreshes(result.opened, result.closed, datetime.now(UTC))
    summary = sweep_summary(result, len(runs))
    if preview:
        context.log.info("preview: nothing was stored and no alert was sent")
    context.log.info(
        ("preview of a " if preview else "")
        + f"{summary} in {result.duration_ms:.0f} ms; opened {result.opened}, closed {result.closed}, "
        f"{len(runs)} run(s) requested"
        + (
            f"; history unavailable, {result.spooled} writes spooled"
            if result.history_error
            else ""
        )
    )
    # A sweep that requests no run is a skipped tick for Dagster: its reason says what ran.
    return SensorResult(
        run_requests=runs, asset_events=evaluations, skip_reason=None if runs else summary
    )


def sweep_evaluations(result: TickResult) -> list[AssetCheckEvaluation]:
    """Every probe of the tick that decides something, as an evaluation of its check: the
    sweep's results, then the confirmation re-probes (so the latest evaluation is the one
    that decided)."""
    out = [
        check_evaluation(o.result, result.ran or "sweep", o.suspected_cause)
        for o in result.observations
        if o.result is not None
    ]
    out += [
        check_evaluation(o.result, "confirmation", o.suspected_cause)
        for o in result.confirmations
        if o.result is not None
    ]
    return out


def sweep_summary(result: TickResult, runs: int = 0) -> str:
    """ "swept cheap: 6 checks, 1 failing (tables), confirmed 1" -- what the tick list shows."""
    checks = [o for o in result.observations if o.result is not None]
    failing = [o.category for o in checks if o.status in ("warning", "critical")]
    text = f"swept {result.ran}: {len(checks)} checks, {len(failing)} failing"
    if failing:
        text += f" ({', '.join(failing)})"
    if result.confirmations:
        text += f", {len(result.confirmations)} re-probed to confirm"
    if result.opened:
        text += f", opened {len(result.opened)} incident(s)"
    if result.closed:
        text += f", closed {len(result.closed)}"
    return text
