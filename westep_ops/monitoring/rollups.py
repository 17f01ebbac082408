"""The daily rollups of the monitoring history: what the daily assets compute and store.

Plain code (pandas and the ops store, no Dagster): each rollup reads one target's stored
samples or incidents of a window [start, end) and replaces that target's rows for that window
(``westep_ops.daily_health``, ``westep_ops.hourly_performance``), so re-running a past
day or a backfill's range gives the same answer. The definitions are the monthly
report's (``lib/sla.py``): a figure nothing measured is None, never a made-up 100%.
The Dagster assets in ``defs/monitoring/assets.py`` call these and turn the frames into
per-day metadata and check evaluations.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pandas as pd

from westep_ops.lib import sla
from westep_ops.monitoring.history import HistoryStore

STATUSES = ("ok", "warning", "critical", "error")

# Local hours (PostgreSQL 12+ truncates in a zone, DST included): in a half-hour zone
# (Asia/Kolkata) a UTC hour straddles local midnight and two days wrote the same row.
HOURLY_SQL = (
    "SELECT date_trunc('hour', ts, %s) AS hour, mean_api_ms, http_requests, http_failures, tps,"
    " monitor_rss_mb, postgres_pss_mb FROM westep_ops.performance_samples"
    " WHERE target = %s AND ts >= %s AND ts < %s"
)
SAMPLES_SQL = (
    "SELECT ts, (ts AT TIME ZONE %s)::date AS day, kind, category, status FROM westep_ops.samples"
    " WHERE target = %s AND ts >= %s AND ts < %s"
)
# Two refreshes of the same day at once (the hourly one and an incident's) would both
# DELETE then INSERT the same keys, and the second INSERT would fail: one at a time.
ROLLUP_LOCK = "SELECT pg_advisory_xact_lock(hashtext(%s))"
INCIDENTS_SQL = (
    "SELECT id, category, severity, started_at, detected_at, resolved_at, recovered_by, escalation,"
    # the last passing sample of the category before the incident: detection's upper bound
    " (SELECT max(s.ts) FROM westep_ops.samples s WHERE s.target = i.target"
    "  AND s.category = i.category"
    "  AND s.status = 'ok' AND s.ts < i.started_at"
    "  AND s.ts > i.started_at - interval '1 day') AS last_ok_at"
    " FROM westep_ops.incidents i WHERE i.target = %s AND started_at >= %s AND started_at < %s"
    " ORDER BY started_at"
)
DAILY_HEALTH_OF_DAY_SQL = (
    "SELECT day, category, samples, ok, warning, critical, error, availability"
    " FROM westep_ops.daily_health WHERE target = %s AND day = %s ORDER BY category"
)
HOURLY_PERFORMANCE_SQL = (
    "SELECT hour, samples, mean_api_ms, p95_api_ms, error_rate, mean_tps, max_monitor_rss_mb,"
    " max_postgres_pss_mb FROM westep_ops.hourly_performance"
    " WHERE target = %s AND hour >= %s AND hour < %s ORDER BY hour"
)
HOURLY_COLUMNS = [
    "hour",
    "samples",
    "mean_api_ms",
    "p95_api_ms",
    "error_rate",
    "mean_tps",
    "max_monitor_rss_mb",
    "max_postgres_pss_mb",
]
DAILY_HEALTH_COLUMNS = ["day", "category", "samples", *STATUSES, "availability"]


def read_frame(store: HistoryStore, query: str, params: tuple[Any, ...]) -> pd.DataFrame:
    """The rows of ``query`` as a frame, with the query's column names (even when empty)."""
    with store.tx() as conn:
        cur = conn.execute(query, params)
        cols = [d.name for d in cur.description or []]
        return pd.DataFrame(cur.fetchall(), columns=cols)


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
        return pd.DataFrame(columns=DAILY_HEALTH_COLUMNS)
    counts = s.pivot_table(
        index=["day", "category"], columns="status", values="ts", aggfunc="count", fill_value=0
    )
    for col in STATUSES:
        if col not in counts:
            counts[col] = 0
    out = counts[list(STATUSES)].reset_index()
    out["samples"] = out[list(STATUSES)].sum(axis=1)
    up = sum(out[c] for c in STATUSES if sla.STATE[c] == "up")
    measured = sum(out[c] for c in STATUSES if sla.STATE[c] != "unknown")
    out["availability"] = (up / measured.where(measured > 0)).astype(object)
    out.loc[measured == 0, "availability"] = None
    return out[DAILY_HEALTH_COLUMNS]


def category_availability(frame: pd.DataFrame, category: str) -> dict[str, int | float]:
    """One category's figures in one day's ``daily_health_frame``: its sample count and,
    only when some sample was measured (ok, warning or critical), its availability
    (ok+warning / measured), critical and measured sample counts."""
    rows = frame[frame["category"] == category] if len(frame) else frame
    if not len(rows):
        return {"samples": 0}
    row = rows.iloc[0]
    out: dict[str, int | float] = {"samples": int(row["samples"])}
    if not out["samples"]:  # sampled, but every sample said the check does not apply
        out["not_configured"] = 1
    measured = int(row[["ok", "warning", "critical"]].sum())
    if measured:
        out |= {
            "availability": float(row[["ok", "warning"]].sum() / measured),
            "critical_samples": int(row["critical"]),
            "measured_samples": measured,
        }
    return out


def worst_status(day: pd.DataFrame) -> str:
    """The worst status of one day's ``daily_health_frame`` rows, or "no data"."""
    if day["critical"].sum():
        return "critical"
    if day["warning"].sum():
        return "warning"
    return "ok" if len(day) else "no data"


@dataclass
class HealthRollup:
    """What ``roll_up_health`` read and wrote.

    ``earlier``: the samples from one staleness interval before the window (the sample
    just before midnight holds into the day: availability over time); ``samples``: those
    inside the window; ``frame``: the ``daily_health_frame`` rows written.
    """

    earlier: pd.DataFrame
    samples: pd.DataFrame
    frame: pd.DataFrame


def read_samples(
    store: HistoryStore, start: datetime, end: datetime, tz: str, stale_s: float, *, target: str
) -> pd.DataFrame:
    """``target``'s samples of [start - stale_s, end): the one just before ``start`` holds
    into it."""
    out = read_frame(store, SAMPLES_SQL, (tz, target, start - timedelta(seconds=stale_s), end))
    if len(out):
        out["ts"] = pd.to_datetime(out["ts"], utc=True)
    return out


def roll_up_health(
    store: HistoryStore, start: datetime, end: datetime, tz: str, stale_s: float, *, target: str
) -> HealthRollup:
    """Recompute ``target``'s rows of ``westep_ops.daily_health`` for the local days in
    [start, end) (another target's rows are left alone)."""
    earlier = read_samples(store, start, end, tz, stale_s, target=target)
    samples = earlier[earlier["ts"] >= start] if len(earlier) else earlier
    frame = daily_health_frame(samples)
    with store.tx() as conn:
        conn.execute(ROLLUP_LOCK, (f"westep_ops.daily_health:{target}",))
        conn.execute(
            "DELETE FROM westep_ops.daily_health WHERE target = %s AND day >= %s AND day < %s",
            (target, start.date(), end.date()),
        )
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO westep_ops.daily_health (target, day, category, samples, ok, warning,"
                " critical, error, availability) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                [(target, *r) for r in frame.itertuples(index=False)],
            )
    return HealthRollup(earlier, samples, frame)


def service_figures(intervals: sla.Intervals, start: datetime, end: datetime) -> dict[str, float]:
    """The service's availability over time in [start, end): measured share, down and
    unknown minutes, and availability only when some time was measured."""
    service = intervals.seconds(int(pd.Timestamp(start).value), int(pd.Timestamp(end).value))
    measured_s = service["up"] + service["down"]
    out = {
        "measured_share": measured_s / (end - start).total_seconds() if end > start else 0.0,
        "down_minutes": service["down"] / 60,
        "unknown_minutes": service["unknown"] / 60,
    }
    if measured_s:  # no figure rather than a made-up one
        out["availability"] = service["up"] / measured_s
    return out


def hourly_performance_frame(perf: pd.DataFrame) -> pd.DataFrame:
    """P1-P4 per local hour from ``HOURLY_SQL``'s rows: response time (mean, p95), error
    rate (None for an hour without requests), throughput, peak memory."""
    if perf.empty:
        return pd.DataFrame(columns=HOURLY_COLUMNS)
    g = perf.groupby("hour")
    return pd.DataFrame(
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


def roll_up_performance(
    store: HistoryStore, start: datetime, end: datetime, tz: str, *, target: str
) -> pd.DataFrame:
    """Recompute ``target``'s rows of ``westep_ops.hourly_performance`` for [start, end);
    the hours written."""
    hourly = hourly_performance_frame(read_frame(store, HOURLY_SQL, (tz, target, start, end)))
    with store.tx() as conn:
        conn.execute(ROLLUP_LOCK, (f"westep_ops.hourly_performance:{target}",))
        conn.execute(
            "DELETE FROM westep_ops.hourly_performance"
            " WHERE target = %s AND hour >= %s AND hour < %s",
            (target, start, end),
        )
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO westep_ops.hourly_performance (target, hour, samples, mean_api_ms,"
                " p95_api_ms, error_rate, mean_tps, max_monitor_rss_mb, max_postgres_pss_mb) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                [
                    (target, *(None if pd.isna(v) else v for v in r))
                    for r in hourly.itertuples(index=False)
                ],
            )
    return hourly


def local_dates(frame: pd.DataFrame, column: str, tz: str) -> pd.Series:
    """The local calendar date in ``tz`` of each row's UTC timestamp ``column``."""
    if not len(frame):
        return pd.Series(dtype=object)
    return pd.to_datetime(frame[column], utc=True).dt.tz_convert(tz).dt.date


def incident_frame(incidents: pd.DataFrame) -> pd.DataFrame:
    """Detection (first failing sample -> alert) and recovery (alert -> first passing sample)."""
    if incidents.empty:
        return incidents.assign(detect_s=pd.Series(dtype=float), recover_s=pd.Series(dtype=float))
    out = incidents.copy()
    # Detection is a bound (as in the monthly report): from the first failing sample
    # (lower) and from the last passing one before it (upper; None when none is stored).
    out["detect_s"] = (out["detected_at"] - out["started_at"]).dt.total_seconds()
    if "last_ok_at" in out:
        last_ok = pd.to_datetime(out["last_ok_at"], utc=True)
        out["detect_upper_s"] = (out["detected_at"] - last_ok).dt.total_seconds()
    # All still open (today's partition, say): resolved_at is all None, not datetimes.
    resolved = pd.to_datetime(out["resolved_at"], utc=True)
    out["recover_s"] = (resolved - out["detected_at"]).dt.total_seconds()
    return out


def load_incidents(
    store: HistoryStore, start: datetime, end: datetime, *, target: str
) -> pd.DataFrame:
    """``target``'s incidents that started in [start, end), with detection and recovery
    times."""
    return incident_frame(read_frame(store, INCIDENTS_SQL, (target, start, end)))


def incidents_between(frame: pd.DataFrame, start: datetime, end: datetime) -> pd.DataFrame:
    """The rows of ``frame`` (``load_incidents``) that started in [start, end)."""
    if not len(frame):
        return frame
    started = pd.to_datetime(frame["started_at"], utc=True)
    return frame[(started >= pd.Timestamp(start)) & (started < pd.Timestamp(end))]


def incident_figures(frame: pd.DataFrame) -> dict[str, int | float]:
    """One day's incident figures; mean times only when there is something to average."""
    out: dict[str, int | float] = {
        "incidents": int(len(frame)),
        "open": int(frame["resolved_at"].isna().sum()) if len(frame) else 0,
    }
    if len(frame):
        out["mean_detect_s"] = float(frame["detect_s"].mean())
    if len(frame) and "detect_upper_s" in frame and frame["detect_upper_s"].notna().any():
        out["mean_detect_upper_s"] = float(frame["detect_upper_s"].mean())
    if len(frame) and frame["recover_s"].notna().any():
        # closed incidents only; open ones are counted apart ("open"), as the month's
        # MTTR counts them: at least until the period's end
        out["mean_recover_s"] = float(frame["recover_s"].mean())
    return out


@dataclass
class DayRollups:
    """One day's stored rollups, as the daily report shows them."""

    health: pd.DataFrame
    incidents: pd.DataFrame
    performance: pd.DataFrame


def day_rollups(store: HistoryStore, start: datetime, end: datetime, *, target: str) -> DayRollups:
    """``target``'s stored rollups of the local day [start, end) (written by the rollups
    above)."""
    return DayRollups(
        health=read_frame(store, DAILY_HEALTH_OF_DAY_SQL, (target, start.date())),
        incidents=load_incidents(store, start, end, target=target),
        performance=read_frame(store, HOURLY_PERFORMANCE_SQL, (target, start, end)),
    )
