"""Daily-partitioned views of the monitoring history, recomputed from the ops store.

Each asset reads the stored samples/incidents of its days and writes its own rollup rows
(so re-running a past day gives the same answer). Backfills run the whole range in one
run, and each day still gets its own figures: the metadata is added per partition
(``context.add_asset_metadata(..., partition_key=day)``, which Dagster merges into that
day's materialization event; whatever a ``MaterializeResult`` carries would be stamped
on every day of the range, so it carries none). ``health_samples``' availability checks
are partitioned too: one evaluation per day, so the UI says which day missed the target.

Where the numbers come from: the samples are what the monitoring sensor's sweeps store
(the observable source asset ``probe_samples``); the daily assets read them.
"""

import base64
import io
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

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
from westep_ops.defs.monitoring.tables import markdown_table
from westep_ops.lib import sla
from westep_ops.monitoring.history import HistoryStore
from westep_ops.resources import PostgresResource
from westep_ops.store import log_dir


def _availability_target() -> float:
    """The configured availability target (config ``sla.targets.availability``)."""
    return load_config().sla.targets.availability


# Local hours (PostgreSQL 12+ truncates in a zone, DST included): in a half-hour zone
# (Asia/Kolkata) a UTC hour straddles local midnight and two days wrote the same row.
HOURLY_SQL = (
    "SELECT date_trunc('hour', ts, %s) AS hour, mean_api_ms, http_requests, http_failures, tps,"
    " monitor_rss_mb, postgres_pss_mb FROM westep_ops.performance_samples WHERE ts >= %s AND ts < %s"
)


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


def _frame(store: HistoryStore, query: str, params: tuple) -> pd.DataFrame:
    with store.tx() as conn:
        cur = conn.execute(query, params)
        cols = [d.name for d in cur.description or []]
        return pd.DataFrame(cur.fetchall(), columns=cols)


def _png(fig: object) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=72, bbox_inches="tight")  # type: ignore[attr-defined]
    return "![chart](data:image/png;base64," + base64.b64encode(buf.getvalue()).decode() + ")"


def _add_day_metadata(context: AssetExecutionContext, metadata: dict, partition_key: str) -> None:
    """One day's metadata on that day's own materialization, marked in progress while the
    day is not over in the team's zone (today's partition is refreshed during the day)."""
    context.add_asset_metadata(
        {**metadata, **partition_progress(partition_key, datetime.now(UTC))},
        partition_key=partition_key,
    )


def daily_health_frame(samples: pd.DataFrame) -> pd.DataFrame:
    """Per day and category: sample counts by status and availability.

    Only scheduled samples (cheap/full) count; confirmation and verification re-probes
    would weight failures twice. "Available" is the monthly report's definition
    (``lib/sla.status_state``): ok and warning are up, critical is down; an ``error``
    sample (the monitor could not look) is unknown and a ``not_configured`` one does not
    apply, so availability = up / (up + down) samples; no measured sample -> None.
    """
    s = samples[samples["kind"].isin(["cheap", "full"])]
    if s.empty:
        return pd.DataFrame(
            columns=[
                "day",
                "category",
                "samples",
                "ok",
                "warning",
                "critical",
                "error",
                "availability",
            ]
        )
    counts = s.pivot_table(
        index=["day", "category"], columns="status", values="ts", aggfunc="count", fill_value=0
    )
    for col in ("ok", "warning", "critical", "error"):
        if col not in counts:
            counts[col] = 0
    out = counts[["ok", "warning", "critical", "error"]].reset_index()
    out["samples"] = out[["ok", "warning", "critical", "error"]].sum(axis=1)
    up = sum(out[c] for c in ("ok", "warning", "critical", "error") if sla.STATE[c] == "up")
    measured = sum(
        out[c] for c in ("ok", "warning", "critical", "error") if sla.STATE[c] != "unknown"
    )
    out["availability"] = (up / measured.where(measured > 0)).astype(object)
    out.loc[measured == 0, "availability"] = None
    return out[["day", "category", "samples", "ok", "warning", "critical", "error", "availability"]]


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
    monitored, the monitor could not look, or not configured): no made-up 100%.
    """
    by_cat = frame.set_index("category") if len(frame) else pd.DataFrame()
    out = []
    for c in Category:
        row = by_cat.loc[c.value] if c.value in by_cat.index else None
        samples = int(row["samples"]) if row is not None else 0
        measured = int(row[["ok", "warning", "critical"]].sum()) if row is not None else 0
        metadata: dict = {"day": day, "samples": samples, "target": target}
        if measured:
            avail = float(row[["ok", "warning"]].sum() / measured)  # type: ignore[index]
            metadata |= {
                "availability": avail,
                "critical_samples": int(row["critical"]),  # type: ignore[index]
                "measured_samples": measured,
            }
            passed = avail >= target
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


def service_metadata(intervals: "sla.Intervals", start: datetime, end: datetime) -> dict:
    """The service's availability over time in [start, end): measured share, down and
    unknown minutes, and availability only when some time was measured."""
    service = intervals.seconds(int(pd.Timestamp(start).value), int(pd.Timestamp(end).value))
    measured_s = service["up"] + service["down"]
    meta: dict = {
        "measured_share": measured_s / max(1.0, (end - start).total_seconds()),
        "down_minutes": service["down"] / 60,
        "unknown_minutes": service["unknown"] / 60,
    }
    if measured_s:  # no figure rather than a made-up one
        meta["availability"] = service["up"] / measured_s
    return meta


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
    iv = cfg.monitoring.intervals
    stale = 2 * iv.performance / 1000 + cfg.monitoring.alerting.confirm_delay_seconds
    store = HistoryStore(ops_storage.value())
    try:
        # From one cheap interval before the range: the sample just before midnight holds
        # into it (the service's availability over time, as in the monthly report).
        earlier = _frame(
            store,
            "SELECT ts, (ts AT TIME ZONE %s)::date AS day, kind, category, status FROM westep_ops.samples"
            " WHERE ts >= %s AND ts < %s",
            (TIMEZONE, start - timedelta(seconds=stale), end),
        )
        if len(earlier):
            earlier["ts"] = pd.to_datetime(earlier["ts"], utc=True)
        samples = earlier[earlier["ts"] >= start] if len(earlier) else earlier
        frame = daily_health_frame(samples)
        with store.tx() as conn:
            conn.execute(
                "DELETE FROM westep_ops.daily_health WHERE day >= %s AND day < %s",
                (start.date(), end.date()),
            )
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO westep_ops.daily_health VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                    [tuple(r) for r in frame.itertuples(index=False)],
                )
    finally:
        store.close()
    intervals = sla.state_intervals(earlier, stale)
    selected = {k.name for k in context.selected_asset_check_keys}
    evaluations: list[AssetCheckEvaluation] = []
    for key, d_start, d_end in days(context):
        day = frame[frame["day"] == d_start.date()] if len(frame) else frame
        n = int((samples["day"] == d_start.date()).sum()) if len(samples) else 0
        worst = (
            "critical"
            if day["critical"].sum()
            else "warning"
            if day["warning"].sum()
            else "ok"
            if len(day)
            else "no data"
        )
        checks = availability_evaluations(key, day, target)
        _add_day_metadata(
            context,
            {
                "samples": n,
                "worst_status": worst,
                **service_metadata(intervals, d_start, d_end),
                "categories_below_target": ", ".join(
                    e.check_name.removesuffix("_available")
                    for e in checks
                    if not e.passed and "availability" in e.metadata
                )
                or "none",
                "by_category": MetadataValue.md(
                    day.drop(columns=["day"]).to_markdown(index=False) if len(day) else "no samples"
                ),
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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    start, end = _window(context)
    store = HistoryStore(ops_storage.value())
    try:
        perf = _frame(store, HOURLY_SQL, (TIMEZONE, start, end))
        if perf.empty:
            hourly = pd.DataFrame(
                columns=[
                    "hour",
                    "samples",
                    "mean_api_ms",
                    "p95_api_ms",
                    "error_rate",
                    "mean_tps",
                    "max_monitor_rss_mb",
                    "max_postgres_pss_mb",
                ]
            )
        else:
            g = perf.groupby("hour")
            hourly = pd.DataFrame(
                {
                    "samples": g.size(),
                    "mean_api_ms": g["mean_api_ms"].mean(),
                    "p95_api_ms": g["mean_api_ms"].quantile(0.95),
                    "error_rate": g["http_failures"].sum()
                    / g["http_requests"].sum().where(lambda x: x > 0),
                    "mean_tps": g["tps"].mean(),
                    "max_monitor_rss_mb": g["monitor_rss_mb"].max(),
                    "max_postgres_pss_mb": g["postgres_pss_mb"].max(),
                }
            ).reset_index()
        with store.tx() as conn:
            conn.execute(
                "DELETE FROM westep_ops.hourly_performance WHERE hour >= %s AND hour < %s",
                (start, end),
            )
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO westep_ops.hourly_performance VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                    [
                        tuple(None if pd.isna(v) else v for v in r)
                        for r in hourly.itertuples(index=False)
                    ],
                )
    finally:
        store.close()
    local_day = (
        pd.to_datetime(hourly["hour"], utc=True).dt.tz_convert(TIMEZONE).dt.date
        if len(hourly)
        else pd.Series(dtype=object)
    )
    for key, d_start, _d_end in days(context):
        day = hourly[local_day == d_start.date()] if len(hourly) else hourly
        metadata: dict = {"hours": int(len(day)), "samples": int(day["samples"].sum())}
        if len(day):
            fig, ax = plt.subplots(figsize=(6, 2.2))
            local = pd.to_datetime(day["hour"], utc=True).dt.tz_convert(TIMEZONE)
            ax.plot(local.dt.tz_localize(None), day["mean_api_ms"], marker=".")
            ax.set_ylabel("API ms")
            ax.set_title(f"{key}: mean API response per hour ({TIMEZONE})")
            metadata["chart"] = MetadataValue.md(_png(fig))
            plt.close(fig)
            metadata["mean_api_ms"] = float(day["mean_api_ms"].mean())
            if day["error_rate"].notna().any():
                metadata["error_rate"] = float(day["error_rate"].mean())
        _add_day_metadata(context, metadata, partition_key=key)
    return MaterializeResult()


def incident_frame(incidents: pd.DataFrame) -> pd.DataFrame:
    """Detection (first failing sample -> alert) and recovery (alert -> first passing sample)."""
    if incidents.empty:
        return incidents.assign(detect_s=pd.Series(dtype=float), recover_s=pd.Series(dtype=float))
    out = incidents.copy()
    out["detect_s"] = (out["detected_at"] - out["started_at"]).dt.total_seconds()
    # All still open (today's partition, say): resolved_at is all None, not datetimes.
    resolved = pd.to_datetime(out["resolved_at"], utc=True)
    out["recover_s"] = (resolved - out["detected_at"]).dt.total_seconds()
    return out


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
        frame = incident_frame(
            _frame(
                store,
                "SELECT id, category, severity, started_at, detected_at, resolved_at, recovered_by, escalation"
                " FROM westep_ops.incidents WHERE started_at >= %s AND started_at < %s ORDER BY started_at",
                (start, end),
            )
        )
    finally:
        store.close()
    started = pd.to_datetime(frame["started_at"], utc=True) if len(frame) else None
    for key, d_start, d_end in days(context):
        day = (
            frame[(started >= pd.Timestamp(d_start)) & (started < pd.Timestamp(d_end))]
            if started is not None
            else frame
        )
        _add_day_metadata(context, incident_metadata(day), partition_key=key)
    return MaterializeResult()


def incident_metadata(frame: pd.DataFrame) -> dict:
    """One day's incident figures; mean times only when there is something to average."""
    shown = frame[
        [
            "id",
            "category",
            "severity",
            "started_at",
            "detect_s",
            "recover_s",
            "recovered_by",
            "escalation",
        ]
    ]
    metadata: dict = {
        "incidents": int(len(frame)),
        "open": int(frame["resolved_at"].isna().sum()) if len(frame) else 0,
        "table": MetadataValue.md(markdown_table(shown) if len(frame) else "no incidents"),
    }
    if len(frame):
        metadata["mean_detect_s"] = float(frame["detect_s"].mean())
    if len(frame) and frame["recover_s"].notna().any():
        metadata["mean_recover_s"] = float(frame["recover_s"].mean())
    return metadata


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
    paths = []
    try:
        day = start
        while day < end:
            nxt = day + timedelta(days=1)
            health = _frame(
                store,
                "SELECT * FROM westep_ops.daily_health WHERE day = %s ORDER BY category",
                (day.date(),),
            )
            inc = incident_frame(
                _frame(
                    store,
                    "SELECT id, category, severity, started_at, detected_at, resolved_at, recovered_by, escalation"
                    " FROM westep_ops.incidents WHERE started_at >= %s AND started_at < %s ORDER BY started_at",
                    (day, nxt),
                )
            )
            perf = _frame(
                store,
                "SELECT * FROM westep_ops.hourly_performance WHERE hour >= %s AND hour < %s"
                " ORDER BY hour",
                (day, nxt),
            )
            text = render_daily_report(
                day.strftime("%Y-%m-%d"), health, inc, perf, target=_availability_target()
            )
            path = log_dir() / f"daily-report-{day:%Y-%m-%d}.md"
            path.write_text(text, encoding="utf-8")
            paths.append(path)
            day = nxt
    finally:
        store.close()
    for key, path in zip(context.partition_keys, paths, strict=True):
        text = path.read_text()
        _add_day_metadata(
            context,
            {
                "verdict": text.split("**Verdict: ", 1)[1].split("**", 1)[0],
                "path": MetadataValue.path(str(path)),
                "report": MetadataValue.md(text),
            },
            partition_key=key,
        )
    return MaterializeResult()


def _local(frame: pd.DataFrame, tz: str) -> pd.DataFrame:
    """Timestamps shown in the configured zone (stored in UTC)."""
    out = frame.copy()
    for c in ("hour", "started_at", "detected_at", "resolved_at"):
        if c in out and len(out):
            out[c] = pd.to_datetime(out[c], utc=True).dt.tz_convert(tz)
    return out


def render_daily_report(
    day: str,
    health: pd.DataFrame,
    inc: pd.DataFrame,
    perf: pd.DataFrame,
    *,
    target: float = 0.999,
    tz: str = TIMEZONE,
) -> str:
    """The day's Markdown; times in ``tz``, categories below ``target`` named."""
    bad = health[health["availability"] < target] if len(health) else health
    verdict = (
        "no data"
        if health.empty
        else "HEALTHY all day"
        if bad.empty and inc.empty
        else f"{len(inc)} incident(s); below {target:.1%}: {', '.join(bad['category']) or 'none'}"
    )
    inc, perf = _local(inc, tz), _local(perf, tz)
    out = [
        f"# Daily report {day} ({tz})",
        "",
        f"**Verdict: {verdict}**",
        "",
        "## Health per category",
        "",
    ]
    out.append(health.to_markdown(index=False) if len(health) else "no samples")
    out += ["", "## Incidents", ""]
    out.append(
        inc.drop(columns=["started_at"], errors="ignore").to_markdown(index=False)
        if len(inc)
        else "none"
    )
    out += ["", "## Performance per hour", ""]
    out.append(perf.to_markdown(index=False) if len(perf) else "no samples")
    return "\n".join(out) + "\n"
