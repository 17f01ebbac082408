"""Daily views of the monitoring history per target, recomputed from the ops store.

The daily assets are partitioned by date x target (``2026-12-06|staging``): each
reads the stored samples/incidents of its target's days and writes that target's
rollup rows (so re-running a past day gives the same answer). A backfill runs its range
in one run -- one target's week, or the whole fleet's day -- reading each target's days
at once, and each partition still gets its own figures: the metadata is added per
partition (``context.add_asset_metadata(..., partition_key=key)``, which Dagster merges
into that partition's materialization event; whatever a ``MaterializeResult`` carries
would be stamped on every partition of the range, so it carries none).
``health_samples``' availability checks are partitioned the same way: one evaluation
per target and day, so the UI says which target missed the goal on which day.

Where the numbers come from: the samples are what the workers (``westep-ops monitor``)
store (the observable source asset ``probe_samples``, one partition per target); the
daily assets read them. The SQL, the frames and the Markdown are plain code
(``monitoring/rollups.py``, ``monitoring/daily_report.py``); this module turns them into
per-partition metadata and checks.
"""

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pandas as pd
from dagster import (
    AssetCheckEvaluation,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetSpec,
    BackfillPolicy,
    MaterializeResult,
    MetadataValue,
    Output,
    PreviewWarning,
    asset,
)

from westep_ops.config import Category
from westep_ops.defs import owners
from westep_ops.defs.monitoring.partitions import (
    TIMEZONE,
    daily,
    daily_by_target,
    partition_progress,
    split,
    targets,
)
from westep_ops.lib import sla
from westep_ops.monitoring import daily_report, rollups
from westep_ops.monitoring.history import HistoryStore
from westep_ops.monitoring.sla import stale_s
from westep_ops.resources import MonitoredStackResource, PostgresResource
from westep_ops.store import log_dir


@dataclass(frozen=True)
class Day:
    """One partition of a run: its key, day, target, and local window."""

    key: str
    day: str
    target: str
    start: datetime
    end: datetime


def days_by_target(context: AssetExecutionContext) -> dict[str, list[Day]]:
    """The run's partitions grouped by target, days in order: one day of one target, a
    target's week (a backfill), or a day of the whole fleet."""
    out: dict[str, list[Day]] = {}
    for key in context.partition_keys:
        day, target = split(key)
        w = daily.time_window_for_partition_key(day)
        out.setdefault(target, []).append(Day(str(key), day, target, w.start, w.end))
    return {t: sorted(ds, key=lambda d: d.day) for t, ds in out.items()}


def _span(ds: list[Day]) -> tuple[datetime, datetime]:
    """From the first day's start to the last day's end (a target's days are read at once)."""
    return ds[0].start, ds[-1].end


def _add_day_metadata(context: AssetExecutionContext, metadata: dict, d: Day) -> None:
    """One target's day's metadata on that partition's own materialization, marked in
    progress while the day is not over in the team's zone (today is refreshed during it)."""
    context.add_asset_metadata(
        {"target": d.target, **metadata, **partition_progress(d.day, datetime.now(UTC))},
        partition_key=d.key,
    )


# The workers' samples (H1-H7 probes of ``health_check`` and the performance sample) as
# stored in the ops store, one partition per target: no run materializes them, the
# monitoring sensor observes each target's new samples (an ``AssetObservation`` per
# evaluation that read some), and everything downstream is computed from them.
probe_samples = AssetSpec(
    "probe_samples",
    deps=[AssetKey("health_check")],
    partitions_def=targets,
    group_name="monitoring",
    kinds={"postgres"},
    owners=owners(),
    description="The probes' samples as the workers (westep-ops monitor) store them every"
    " sweep (westep_ops.samples, performance_samples, incidents, alerts), per target:"
    " the source of every figure.",
)

HEALTH_KEY = AssetKey("health_samples")
with warnings.catch_warnings():
    # Partitioned checks are a preview in Dagster 1.13: what lets the UI show a check per
    # day and target.
    warnings.simplefilter("ignore", PreviewWarning)
    AVAILABILITY_CHECKS = [
        AssetCheckSpec(
            f"{c.value}_available",
            asset=HEALTH_KEY,
            partitions_def=daily_by_target,
            description=f"{c.value}: the target's day's availability (ok+warning samples /"
            " measured) against sla.targets.availability",
        )
        for c in Category
    ]


def availability_evaluations(
    partition: str, frame: pd.DataFrame, goal: float
) -> list[AssetCheckEvaluation]:
    """One evaluation per category for ``partition`` (a day, or a day x target key; frame:
    that target's day's ``daily_health_frame``) against the availability ``goal``.

    A category with no measured sample fails with a note and no availability figure (not
    monitored, or the monitor could not look): no made-up 100%; one that is not
    configured (every sample said so, e.g. H7 without endpoints) passes with a note.
    """
    day, target = split(partition)
    out = []
    for c in Category:
        figures = rollups.category_availability(frame, c.value)
        metadata: dict = {"day": day, "samples": figures.pop("samples"), "goal": goal}
        if target:
            metadata["target"] = target
        if "availability" in figures:
            metadata |= figures
            passed = figures["availability"] >= goal
        elif figures.get("not_configured"):
            metadata["note"] = "not configured: every sample said the check does not apply"
            passed = True
        else:
            metadata["note"] = (
                "no measured samples: not monitored, or the monitor could not look (error)"
                " or the check is not configured"
            )
            passed = False
        out.append(
            AssetCheckEvaluation(
                asset_key=HEALTH_KEY,
                check_name=f"{c.value}_available",
                passed=passed,
                severity=AssetCheckSeverity.WARN,
                metadata=metadata,
                partition=partition,
            )
        )
    return out


def check_outputs(context: AssetExecutionContext) -> Iterator[Output]:
    """The (empty) outputs of the selected checks, which Dagster requires of the step.

    The evaluations themselves are yielded as ``AssetCheckEvaluation``s with a partition
    each: an ``AssetCheckResult`` has no partition, and a range run has no single one.
    """
    for key in context.selected_asset_check_keys:
        yield Output(None, output_name=context.assets_def.get_output_name_for_asset_check_key(key))


@asset(
    partitions_def=daily_by_target,
    backfill_policy=BackfillPolicy.single_run(),
    check_specs=AVAILABILITY_CHECKS,
    deps=[probe_samples],
    group_name="monitoring",
    owners=owners(),
    kinds={"postgres", "pandas"},
    description="A target's day of health samples (H1-H7 and performance) per category:"
    " counts by status and availability.",
)
def health_samples(
    context: AssetExecutionContext, stack: MonitoredStackResource, ops_storage: PostgresResource
) -> Iterator[MaterializeResult | AssetCheckEvaluation | Output]:
    selected = {k.name for k in context.selected_asset_check_keys}
    evaluations: list[AssetCheckEvaluation] = []
    now = datetime.now(UTC)
    for target, ds in days_by_target(context).items():
        cfg = stack.config(target)
        goal = cfg.sla.targets.availability
        stale = stale_s(cfg)
        start, end = _span(ds)
        store = HistoryStore(ops_storage.value(), target=target)
        try:
            rolled = rollups.roll_up_health(store, start, end, TIMEZONE, stale, target=target)
        finally:
            store.close()
        frame, samples = rolled.frame, rolled.samples
        intervals = sla.state_intervals(rolled.earlier, stale)
        for d in ds:
            day = frame[frame["day"] == d.start.date()] if len(frame) else frame
            n = int((samples["day"] == d.start.date()).sum()) if len(samples) else 0
            checks = availability_evaluations(d.key, day, goal)
            _add_day_metadata(
                context,
                {
                    "samples": n,
                    "worst_status": rollups.worst_status(day),
                    # today so far: the hours still to come are not unknown time
                    **rollups.service_figures(intervals, d.start, min(d.end, max(d.start, now))),
                    "categories_below_target": ", ".join(
                        e.check_name.removesuffix("_available")
                        for e in checks
                        if not e.passed and "availability" in e.metadata
                    )
                    or "none",
                    "by_category": MetadataValue.md(daily_report.health_table(day)),
                },
                d,
            )
            evaluations += [e for e in checks if e.check_name in selected]
    # The materializations first (one per partition, with its metadata), then the
    # evaluations that judge them.
    yield MaterializeResult()
    yield from evaluations
    yield from check_outputs(context)


@asset(
    partitions_def=daily_by_target,
    backfill_policy=BackfillPolicy.single_run(),
    deps=[probe_samples],
    group_name="monitoring",
    owners=owners(),
    kinds={"postgres", "pandas"},
    description="A target's P1-P4 per hour: API response time (mean, p95), error rate,"
    " throughput, memory.",
)
def performance_metrics(
    context: AssetExecutionContext, ops_storage: PostgresResource
) -> MaterializeResult:
    for target, ds in days_by_target(context).items():
        start, end = _span(ds)
        store = HistoryStore(ops_storage.value(), target=target)
        try:
            hourly = rollups.roll_up_performance(store, start, end, TIMEZONE, target=target)
        finally:
            store.close()
        local_day = rollups.local_dates(hourly, "hour", TIMEZONE)
        for d in ds:
            day = hourly[local_day == d.start.date()] if len(hourly) else hourly
            metadata: dict = {"hours": int(len(day)), "samples": int(day["samples"].sum())}
            if len(day):
                metadata["chart"] = MetadataValue.md(
                    daily_report.api_chart(
                        day,
                        f"{target} {d.day}: mean API response per hour ({TIMEZONE})",
                        TIMEZONE,
                    )
                )
                metadata["mean_api_ms"] = float(day["mean_api_ms"].mean())
                if day["error_rate"].notna().any():
                    metadata["error_rate"] = float(day["error_rate"].mean())
            _add_day_metadata(context, metadata, d)
    return MaterializeResult()


@asset(
    partitions_def=daily_by_target,
    backfill_policy=BackfillPolicy.single_run(),
    deps=[probe_samples],
    group_name="monitoring",
    owners=owners(),
    kinds={"postgres", "pandas"},
    description="A target's day of incidents with their detection and recovery times.",
)
def incidents(context: AssetExecutionContext, ops_storage: PostgresResource) -> MaterializeResult:
    for target, ds in days_by_target(context).items():
        start, end = _span(ds)
        store = HistoryStore(ops_storage.value(), target=target)
        try:
            frame = rollups.load_incidents(store, start, end, target=target)
        finally:
            store.close()
        for d in ds:
            day = rollups.incidents_between(frame, d.start, d.end)
            _add_day_metadata(context, incident_metadata(day), d)
    return MaterializeResult()


def incident_metadata(frame: pd.DataFrame) -> dict:
    """One day's incident figures and table; mean times only when there is something to average."""
    figures = rollups.incident_figures(frame)
    return {
        "incidents": figures.pop("incidents"),
        "open": figures.pop("open"),
        "table": MetadataValue.md(daily_report.incident_table(frame, TIMEZONE)),
        **figures,
    }


@asset(
    partitions_def=daily_by_target,
    backfill_policy=BackfillPolicy.single_run(),
    deps=[health_samples, performance_metrics, incidents],
    group_name="monitoring",
    owners=owners(),
    kinds={"postgres", "markdown"},
    description="A target's daily report in Markdown (health per category, incidents,"
    " performance), also in logs/.",
)
def diagnosis_report(
    context: AssetExecutionContext, stack: MonitoredStackResource, ops_storage: PostgresResource
) -> MaterializeResult:
    for target, ds in days_by_target(context).items():
        start, end = _span(ds)
        cfg = stack.config(target)
        store = HistoryStore(ops_storage.value(), target=target)
        try:
            paths = daily_report.write_daily_reports(
                store,
                start,
                end,
                target=target,
                availability_target=cfg.sla.targets.availability,
                tz=TIMEZONE,
                directory=log_dir(),
                stale_s=stale_s(cfg),
                min_measured_share=cfg.sla.min_measured_share,
            )
        finally:
            store.close()
        for d, path in zip(ds, paths, strict=True):
            text = path.read_text()
            _add_day_metadata(
                context,
                {
                    "verdict": daily_report.report_verdict(text),
                    "path": MetadataValue.path(str(path)),
                    "report": MetadataValue.md(text),
                },
                d,
            )
    return MaterializeResult()
