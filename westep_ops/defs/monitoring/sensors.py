"""The monitoring sensor: reads what the workers stored and requests repair runs.

It never probes. Workers (``westep-ops monitor``, one started by ``westep-ops ui``, more
anywhere, sharing the fleet through leases) probe their targets, store the samples and
incidents, and -- started with ``--repairs dagster`` -- queue the repairs an open
incident calls for (:mod:`westep_ops.monitoring.repair_queue`). Every 30 s the sensor
reads what arrived since its cursor (:mod:`westep_ops.monitoring.feed`, one short
connection with connect and statement timeouts) and turns it into Dagster events:

- each stored H1-H7 sample of a target -> an evaluation of that category's
  ``health_check`` check, in the target's partition, with the same numeric metadata as a
  probe in a run (``status_level``, ``duration_ms``, ``value.*``), so the UI plots each
  target's checks apart;
- each target that stored samples -> one ``probe_samples`` observation of its partition
  (how many samples, which categories failing);
- a target whose incident opened or closed -> one refresh run of today's daily assets of
  that target, so its incidents table shows it within a minute;
- each queued repair request -> one ``repair_job`` run for its target: the run config
  names the target, the ``westep-ops/repair-target`` tag's value is the target's name (so
  ``dagster.yaml``'s per-value limit keeps one repair per target at a time). The run key
  is the request's (incident + action + attempts on record): Dagster launches a key once,
  and the request is marked launched once its run exists.

"Preview tick result" in the UI runs this function for real, which now only reads: it
shows what the next tick would report and request (its cursor is not kept, and a request
is marked launched only once its run exists). The tick list says what happened: "idle: no
new samples since 12:00:05" or "read 14 samples of 2 targets (1 failing: staging
tables), requested 1 repair run(s)".
"""

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import psycopg
from dagster import (
    AssetCheckEvaluation,
    AssetObservation,
    DagsterInstance,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from westep_ops.defs import TARGETS, TIMEZONE
from westep_ops.defs.health.assets import check_evaluation
from westep_ops.defs.monitoring.assets import probe_samples
from westep_ops.defs.monitoring.jobs import IN_PROGRESS_TAG, daily_monitoring_job
from westep_ops.defs.monitoring.partitions import day_key, key
from westep_ops.defs.repairs.jobs import repair_job, repair_run_tags
from westep_ops.monitoring import repair_queue
from westep_ops.monitoring.feed import (
    FIRST_LOOK_BACK_S,
    Feed,
    FeedCursor,
    TargetFeed,
    read_since,
    sample_result,
)
from westep_ops.monitoring.repair_queue import QueuedRepair
from westep_ops.redact import redact
from westep_ops.resources import PostgresResource

RUN_KEY_TAG = "dagster/run_key"
SENSOR_NAME = "monitoring_sensor"


def is_preview(context: SensorEvaluationContext) -> bool:
    """True for the UI's "Preview tick result": a daemon tick's log key ends in its id."""
    log_key = context.log_key
    if not log_key:
        return False
    return not str(log_key[-1]).isdigit()


def incident_refreshes(feed: Feed, now: datetime) -> list[RunRequest]:
    """One refresh of today's daily assets per target whose incidents opened or closed
    since the last read (the rollups also take a lock, so it never races the hourly one)."""
    day = day_key(now)
    out = []
    for t in feed.targets.values():
        if t.target not in TARGETS or not (t.opened or t.closed):
            continue
        ids = ",".join(str(i) for i in sorted({*t.opened, *t.closed}))
        out.append(
            RunRequest(
                run_key=f"today-{day}-{t.target}-incidents-{ids}-{now:%H%M%S}",
                job_name=daily_monitoring_job.name,
                partition_key=key(day, t.target),
                tags={IN_PROGRESS_TAG: "true", "westep-ops/incidents": ids},
            )
        )
    return out


def target_events(t: TargetFeed) -> list[AssetCheckEvaluation | AssetObservation]:
    """A target's new samples as check evaluations of its partition (in the order they
    were stored, so the latest evaluation is the one that decided), then one observation
    of its ``probe_samples`` partition."""
    out: list[AssetCheckEvaluation | AssetObservation] = []
    for s in t.samples:
        r = sample_result(s)
        if r is not None:
            out.append(check_evaluation(r, s["kind"], s.get("suspected_cause"), target=t.target))
    last = max((s["ts"] for s in t.samples), default=None)
    metadata: dict = {
        "target": t.target,
        "samples": len(t.samples),
        "performance_samples": t.performance,
        "failing": len(t.failing),
        "failing_categories": ", ".join(t.failing) or "none",
        "kinds": ", ".join(sorted({s["kind"] for s in t.samples})) or "-",
    }
    if last is not None:
        metadata["last_sample_at"] = last.isoformat(timespec="seconds")
    out.append(AssetObservation(asset_key=probe_samples.key, partition=t.target, metadata=metadata))
    return out


def repair_request(q: QueuedRepair) -> RunRequest:
    """A queued request as its repair run: the target in the run config and as the
    per-target concurrency tag's value."""
    return RunRequest(
        run_key=q.run_key,
        job_name=repair_job.name,
        run_config={
            "ops": {
                "run_repair_op": {
                    "config": {
                        "target": q.target,
                        "action": q.action,
                        "trigger": f"incident #{q.incident_id}",
                        "incident_id": q.incident_id,
                        "category": q.category,
                    }
                }
            }
        },
        tags=repair_run_tags(q.target, q.action, q.incident_id),
    )


def existing_run_id(instance: DagsterInstance, run_key: str) -> str | None:
    """The id of this sensor's run for ``run_key``, once the daemon has created it."""
    records = instance.get_run_records(
        RunsFilter(tags={RUN_KEY_TAG: run_key, "dagster/sensor_name": SENSOR_NAME}), limit=1
    )
    return records[0].dagster_run.run_id if records else None


def repair_runs(
    context: SensorEvaluationContext, url: str, timeout_ms: int
) -> tuple[list[RunRequest], int]:
    """Run requests for the queued repairs that have no run yet; how many were marked
    launched (their run exists)."""
    runs, launched = [], 0
    for q in repair_queue.pending(url, timeout_ms=timeout_ms):
        run_id = existing_run_id(context.instance, q.run_key)
        if run_id is not None:
            launched += repair_queue.mark_launched(url, q.run_key, run_id, timeout_ms=timeout_ms)
        elif q.target not in TARGETS:
            context.log.warning(
                f"repair request {q.run_key} names target {q.target}, which these"
                " definitions do not know (reload the code location after adding a target)"
            )
        else:
            runs.append(repair_request(q))
    return runs, launched


@sensor(
    name=SENSOR_NAME,
    jobs=[repair_job, daily_monitoring_job],
    minimum_interval_seconds=30,
    default_status=DefaultSensorStatus.RUNNING,
    description="Reads what the workers stored (samples -> each target's health_check"
    " evaluations, incidents -> a refresh of that target's today) and launches the repair"
    " runs they queued, tagged by target. It never probes.",
)
def monitoring_sensor(
    context: SensorEvaluationContext, ops_storage: PostgresResource
) -> SensorResult | SkipReason:
    url = ops_storage.value()
    if not url:
        return SkipReason(f"{ops_storage.env_var} is not set: nothing to read")
    timeout_ms = 3000
    cursor = FeedCursor.loads(context.cursor)
    try:
        feed = read_since(url, cursor, timeout_ms=timeout_ms)
        runs, launched = repair_runs(context, url, timeout_ms)
    except psycopg.Error as e:
        return SkipReason(f"ops store unavailable: {redact(e)}")
    events: list[AssetCheckEvaluation | AssetObservation] = []
    unknown = [t for t in feed.targets if t not in TARGETS]
    for name, t in feed.targets.items():
        if name in TARGETS:
            events += target_events(t)
    runs += incident_refreshes(feed, datetime.now(UTC))
    summary = feed_summary(feed, runs, launched, unknown)
    if is_preview(context):
        context.log.info("preview: reads only; the cursor is not kept")
    context.log.info(summary)
    return SensorResult(
        run_requests=runs,
        asset_events=events,
        cursor=feed.cursor.dumps(),
        skip_reason=None if runs else summary,
    )


def _since(iso: str | None) -> str:
    if not iso:  # the first read looks back a little
        return f"in the last {FIRST_LOOK_BACK_S} s"
    return "since " + datetime.fromisoformat(iso).astimezone(ZoneInfo(TIMEZONE)).strftime(
        "%H:%M:%S"
    )


def feed_summary(
    feed: Feed, runs: list[RunRequest], launched: int = 0, unknown: list[str] | None = None
) -> str:
    """What the tick list shows: "idle: no new samples since 12:00:05" or "read 14 samples
    of 2 targets (1 failing: staging tables), requested 1 repair run(s)"."""
    repairs = sum(1 for r in runs if r.job_name == repair_job.name)
    refreshes = len(runs) - repairs
    if not feed.samples:
        text = f"idle: no new samples {_since(feed.previous.at)}"
    else:
        text = f"read {feed.samples} samples of {len(feed.targets)} target(s)"
        failing = [f"{t.target} {', '.join(t.failing)}" for t in feed.targets.values() if t.failing]
        if failing:
            text += f" ({len(failing)} failing: {'; '.join(failing)})"
        if feed.more:
            text += ", more waiting"
    opened = sum(len(t.opened) for t in feed.targets.values())
    closed = sum(len(t.closed) for t in feed.targets.values())
    if opened or closed:
        text += f", {opened} incident(s) opened, {closed} closed"
    text += f", requested {repairs} repair run(s)"
    if refreshes:
        text += f" and {refreshes} refresh(es) of today"
    if launched:
        text += f", {launched} repair run(s) requested earlier found started"
    if unknown:
        text += f"; samples of targets these definitions do not know: {', '.join(unknown)}"
    return text
