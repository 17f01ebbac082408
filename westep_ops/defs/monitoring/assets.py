"""Daily-partitioned views of the monitoring history, recomputed from the ops store.

Each asset reads the stored samples/incidents of its days and writes its own rollup rows
(so re-running a past day gives the same answer). Backfills run the whole range in one
run, and each day still gets its own figures: the metadata is added per partition
(``context.add_asset_metadata(..., partition_key=day)``, which Dagster merges into that
day's materialization event; whatever a ``MaterializeResult`` carries would be stamped
on every day of the range, so it carries none). ``health_samples``' availability checks
are partitioned too: one evaluation per day, so the UI says which day missed the target.

Where the numbers come from: the samples are what the monitoring sensor's sweeps store
(the observable source asset ``probe_samples``); the daily assets read them. The SQL,
the frames and the Markdown are plain code (``monitoring/rollups.py``,
``monitoring/daily_report.py``); this module turns them into per-day metadata and checks.
"""

import warnings
from collections.abc import Iterator
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

from westep_ops.config import Category, load_config
from westep_ops.defs import owners
from westep_ops.defs.monitoring.partitions import TIMEZONE, daily, partition_progress
from westep_ops.lib import sla
from westep_ops.monitoring import daily_report, rollups
from westep_ops.monitoring.history import HistoryStore
from westep_ops.monitoring.sla import stale_s
from westep_ops.resources import PostgresResource
from westep_ops.store import log_dir
from westep_ops.targets import DEFAULT_TARGET


def _window(context: AssetExecutionContext) -> tuple[datetime, datetime]:
    w = context.partition_time_window
    return w.start, w.end


def days(context: AssetExecutionContext) -> list[tuple[str, datetime, datetime]]:
    """The run's days as (partition key, local start, local end): one, or a backfill's range."""
    out = []
    for key in context.partition_keys:
        w = daily.time_window_for_partition_key(key)
        out.append((key, w.start, w.end))
    return out


def _add_day_metadata(context: AssetExecutionContext, metadata: dict, partition_key: str) -> None:
    """One day's metadata on that day's own materialization, marked in progress while the
    day is not over in the team's zone (today's partition is refreshed during the day)."""
    context.add_asset_metadata(
        {**metadata, **partition_progress(partition_key, datetime.now(UTC))},
        partition_key=partition_key,
    )


# The monitoring sensor's sweeps (H1-H7 probes of ``health_check`` and the performance
# sample) as stored in the ops store: no run materializes them, the sensor observes them
# (an ``AssetObservation`` per sweep), and everything downstream is computed from them.
probe_samples = AssetSpec(
    "probe_samples",
    deps=[AssetKey("health_check")],
    group_name="monitoring",
    kinds={"postgres"},
    owners=owners(),
    description="The probes' samples as the monitoring sensor stores them every sweep"
    " (westep_ops.samples, performance_samples, incidents, alerts): the source of every figure.",
)

HEALTH_KEY = AssetKey("health_samples")
with warnings.catch_warnings():
    # Partitioned checks are a preview in Dagster 1.13: what lets the UI show a check per day.
    warnings.simplefilter("ignore", PreviewWarning)
    AVAILABILITY_CHECKS = [
        AssetCheckSpec(
            f"{c.value}_available",
            asset=HEALTH_KEY,
            partitions_def=daily,
            description=f"{c.value}: the day's availability (ok+warning samples / measured)"
            " against sla.targets.availability",
        )
        for c in Category
    ]


def availability_evaluations(
    day: str, frame: pd.DataFrame, target: float
) -> list[AssetCheckEvaluation]:
    """One evaluation per category for ``day`` (frame: that day's ``daily_health_frame``).

    A category with no measured sample fails with a note and no availability figure (not
    monitored, or the monitor could not look): no made-up 100%; one that is not
    configured (every sample said so, e.g. H7 without endpoints) passes with a note.
    """
    out = []
    for c in Category:
        figures = rollups.category_availability(frame, c.value)
        metadata: dict = {"day": day, "samples": figures.pop("samples"), "target": target}
        if "availability" in figures:
            metadata |= figures
            passed = figures["availability"] >= target
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
                partition=day,
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
    partitions_def=daily,
    backfill_policy=BackfillPolicy.single_run(),
    check_specs=AVAILABILITY_CHECKS,
    deps=[probe_samples],
    group_name="monitoring",
    owners=owners(),
    kinds={"postgres", "pandas"},
    description="The day's health samples (H1-H7 and performance) per category: counts by status and availability.",
)
def health_samples(
    context: AssetExecutionContext, ops_storage: PostgresResource
) -> Iterator[MaterializeResult | AssetCheckEvaluation | Output]:
    start, end = _window(context)
    cfg = load_config()
    target = cfg.sla.targets.availability
    stale = stale_s(cfg)
    store = HistoryStore(ops_storage.value())
    try:
        rolled = rollups.roll_up_health(store, start, end, TIMEZONE, stale, target=DEFAULT_TARGET)
    finally:
        store.close()
    frame, samples = rolled.frame, rolled.samples
    intervals = sla.state_intervals(rolled.earlier, stale)
    selected = {k.name for k in context.selected_asset_check_keys}
    evaluations: list[AssetCheckEvaluation] = []
    now = datetime.now(UTC)
    for key, d_start, d_end in days(context):
        day = frame[frame["day"] == d_start.date()] if len(frame) else frame
        n = int((samples["day"] == d_start.date()).sum()) if len(samples) else 0
        checks = availability_evaluations(key, day, target)
        _add_day_metadata(
            context,
            {
                "samples": n,
                "worst_status": rollups.worst_status(day),
                # today so far: the hours still to come are not unknown time
                **rollups.service_figures(intervals, d_start, min(d_end, max(d_start, now))),
                "categories_below_target": ", ".join(
                    e.check_name.removesuffix("_available")
                    for e in checks
                    if not e.passed and "availability" in e.metadata
                )
                or "none",
                "by_category": MetadataValue.md(daily_report.health_table(day)),
            },
            partition_key=key,
        )
        evaluations += [e for e in checks if e.check_name in selected]
    # The materializations first (one per day, with that day's metadata), then the
    # evaluations that judge them.
    yield MaterializeResult()
    yield from evaluations
    yield from check_outputs(context)


@asset(
    partitions_def=daily,
    backfill_policy=BackfillPolicy.single_run(),
    deps=[probe_samples],
    group_name="monitoring",
    owners=owners(),
    kinds={"postgres", "pandas"},
    description="P1-P4 per hour: API response time (mean, p95), error rate, throughput, memory.",
)
def performance_metrics(
    context: AssetExecutionContext, ops_storage: PostgresResource
) -> MaterializeResult:
    start, end = _window(context)
    store = HistoryStore(ops_storage.value())
    try:
        hourly = rollups.roll_up_performance(store, start, end, TIMEZONE, target=DEFAULT_TARGET)
    finally:
        store.close()
    local_day = rollups.local_dates(hourly, "hour", TIMEZONE)
    for key, d_start, _d_end in days(context):
        day = hourly[local_day == d_start.date()] if len(hourly) else hourly
        metadata: dict = {"hours": int(len(day)), "samples": int(day["samples"].sum())}
        if len(day):
            metadata["chart"] = MetadataValue.md(
                daily_report.api_chart(
                    day, f"{key}: mean API response per hour ({TIMEZONE})", TIMEZONE
                )
            )
            metadata["mean_api_ms"] = float(day["mean_api_ms"].mean())
            if day["error_rate"].notna().any():
                metadata["error_rate"] = float(day["error_rate"].mean())
        _add_day_metadata(context, metadata, partition_key=key)
    return MaterializeResult()


@asset(
    partitions_def=daily,
    backfill_policy=BackfillPolicy.single_run(),
    deps=[probe_samples],
    group_name="monitoring",
    owners=owners(),
    kinds={"postgres", "pandas"},
    description="The day's incidents with their detection and recovery times.",
)
def incidents(context: AssetExecutionContext, ops_storage: PostgresResource) -> MaterializeResult:
    start, end = _window(context)
    store = HistoryStore(ops_storage.value())
    try:
        frame = rollups.load_incidents(store, start, end, target=DEFAULT_TARGET)
    finally:
        store.close()
    for key, d_start, d_end in days(context):
        day = rollups.incidents_between(frame, d_start, d_end)
        _add_day_metadata(context, incident_metadata(day), partition_key=key)
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
    partitions_def=daily,
    backfill_policy=BackfillPolicy.single_run(),
    deps=[health_samples, performance_metrics, incidents],
    group_name="monitoring",
    owners=owners(),
    kinds={"postgres", "markdown"},
    description="The day's report in Markdown (health per category, incidents, performance), also in logs/.",
)
def diagnosis_report(
    context: AssetExecutionContext, ops_storage: PostgresResource
) -> MaterializeResult:
    start, end = _window(context)
    store = HistoryStore(ops_storage.value())
    try:
        cfg = load_config()
        paths = daily_report.write_daily_reports(
            store,
            start,
            end,
            target=DEFAULT_TARGET,
            availability_target=cfg.sla.targets.availability,
            tz=TIMEZONE,
            directory=log_dir(),
            stale_s=stale_s(cfg),
            min_measured_share=cfg.sla.min_measured_share,
        )
    finally:
        store.close()
    for key, path in zip(context.partition_keys, paths, strict=True):
        text = path.read_text()
        _add_day_metadata(
            context,
            {
                "verdict": daily_report.report_verdict(text),
                "path": MetadataValue.path(str(path)),
                "report": MetadataValue.md(text),
            },
            partition_key=key,
        )
    return MaterializeResult()
