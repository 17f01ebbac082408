"""Daily-partitioned views of the monitoring history, recomputed from the ops store.

Each asset reads the stored samples/incidents of its days, writes its own rollup rows
(so re-running a past day gives the same answer) and returns a ``MaterializeResult``
with the figures as metadata; backfills run the whole range in one run.
"""

import base64
import io
from datetime import datetime, timedelta

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    BackfillPolicy,
    MaterializeResult,
    MetadataValue,
    asset,
)

from westep_ops.config import Category, load_config
from westep_ops.defs import owners
from westep_ops.defs.monitoring.partitions import TIMEZONE, daily
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


def _frame(store: HistoryStore, query: str, params: tuple) -> pd.DataFrame:
    with store.tx() as conn:
        cur = conn.execute(query, params)
        cols = [d.name for d in cur.description or []]
        return pd.DataFrame(cur.fetchall(), columns=cols)


def _png(fig: object) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=72, bbox_inches="tight")  # type: ignore[attr-defined]
    return "![chart](data:image/png;base64," + base64.b64encode(buf.getvalue()).decode() + ")"


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


@asset(
    partitions_def=daily,
    backfill_policy=BackfillPolicy.single_run(),
    check_specs=[
        AssetCheckSpec(
            f"{c.value}_available",
            asset="health_samples",
            description=f"{c.value}: the day's measured samples were ok at least 99.9% of the time.",
        )
        for c in Category
    ],
    group_name="monitoring",
    owners=owners(),
    kinds={"postgres", "pandas"},
    description="The day's health samples (H1-H7 and performance) per category: counts by status and availability.",
)
def health_samples(
    context: AssetExecutionContext, ops_storage: PostgresResource
) -> MaterializeResult:
    start, end = _window(context)
    cfg = load_config()
    target = cfg.sla.targets.availability
    iv = cfg.monitoring.intervals
    stale = 2 * iv.performance / 1000 + cfg.monitoring.alerting.confirm_delay_seconds
    store = HistoryStore(ops_storage.value())
    try:
        # From one cheap interval before the day: the sample just before midnight holds
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
    by_cat = (
        frame.groupby("category")[["samples", "ok", "warning", "critical"]].sum()
        if not frame.empty
        else pd.DataFrame()
    )
    checks = []
    for c in Category:
        measured = (
            int(by_cat.loc[c.value, ["ok", "warning", "critical"]].sum())
            if c.value in by_cat.index
            else 0
        )
        if measured:
            avail = float(by_cat.loc[c.value, ["ok", "warning"]].sum() / measured)
            checks.append(
                AssetCheckResult(
                    check_name=f"{c.value}_available",
                    passed=avail >= target,
                    severity=AssetCheckSeverity.WARN,
                    metadata={
                        "availability": avail,
                        "target": target,
                        "samples": int(by_cat.loc[c.value, "samples"]),
                    },
                )
            )
        else:
            checks.append(
                AssetCheckResult(
                    check_name=f"{c.value}_available",
                    passed=False,
                    severity=AssetCheckSeverity.WARN,
                    metadata={
                        "samples": int(by_cat.loc[c.value, "samples"])
                        if c.value in by_cat.index
                        else 0,
                        "note": "no measured samples: not monitored, or the monitor could not"
                        " look (error) or the check is not configured",
                    },
                )
            )
    service = sla.state_intervals(earlier, stale).seconds(
        int(pd.Timestamp(start).value), int(pd.Timestamp(end).value)
    )
    measured_s = service["up"] + service["down"]
    service_meta: dict = {
        "measured_share": measured_s / max(1.0, (end - start).total_seconds()),
        "down_minutes": service["down"] / 60,
        "unknown_minutes": service["unknown"] / 60,
    }
    if measured_s:  # no figure rather than a made-up one
        service_meta["availability"] = service["up"] / measured_s
    worst = (
        "critical"
        if frame["critical"].sum()
        else "warning"
        if frame["warning"].sum()
        else "ok"
        if len(frame)
        else "no data"
    )
    return MaterializeResult(
        metadata={
            "samples": int(len(samples)),
            "days": int(frame["day"].nunique()) if len(frame) else 0,
            "worst_status": worst,
            **service_meta,
            "by_category": MetadataValue.md(
                frame.to_markdown(index=False) if len(frame) else "no samples"
            ),
        },
        check_results=checks,
    )


@asset(
    partitions_def=daily,
    backfill_policy=BackfillPolicy.single_run(),
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
    metadata: dict = {"hours": int(len(hourly)), "samples": int(len(perf))}
    if len(hourly):
        fig, ax = plt.subplots(figsize=(6, 2.2))
        local = pd.to_datetime(hourly["hour"], utc=True).dt.tz_convert(TIMEZONE)
        ax.plot(local.dt.tz_localize(None), hourly["mean_api_ms"], marker=".")
        ax.set_ylabel("API ms")
        ax.set_title(f"mean API response per hour ({TIMEZONE})")
        metadata["chart"] = MetadataValue.md(_png(fig))
        plt.close(fig)
        metadata["mean_api_ms"] = float(hourly["mean_api_ms"].mean())
    return MaterializeResult(metadata=metadata)


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
    deps=[health_samples],
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
    return MaterializeResult(
        metadata={
            "incidents": int(len(frame)),
            "open": int(frame["resolved_at"].isna().sum()) if len(frame) else 0,
            "mean_detect_s": float(frame["detect_s"].mean()) if len(frame) else 0.0,
            "mean_recover_s": float(frame["recover_s"].mean())
            if frame["recover_s"].notna().any()
            else 0.0,
            "table": MetadataValue.md(markdown_table(shown) if len(frame) else "no incidents"),
        }
    )


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
    return MaterializeResult(
        metadata={
            "reports": len(paths),
            "path": MetadataValue.path(str(paths[-1])) if paths else "-",
            "report": MetadataValue.md(paths[-1].read_text()) if paths else "-",
        }
    )


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
