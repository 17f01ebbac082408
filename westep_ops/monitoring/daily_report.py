"""The day's report in Markdown (``logs/daily-report-<day>.md``) and its pieces for the UI.

Plain code (pandas, matplotlib, no Dagster): the ``diagnosis_report`` asset writes one
report per day of its run from the stored rollups (``monitoring/rollups.py``), and the
other daily assets show the same tables and chart as metadata. Times are shown in the
team's zone; the database stores UTC.
"""

from __future__ import annotations

import base64
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

from westep_ops.lib.sla import state_intervals
from westep_ops.monitoring.history import HistoryStore
from westep_ops.monitoring.rollups import day_rollups, read_samples, service_figures
from westep_ops.targets import DEFAULT_TARGET

INCIDENT_COLUMNS = [
    "id",
    "category",
    "severity",
    "started_at",
    "detect_s",
    "detect_upper_s",
    "recover_s",
    "recovered_by",
    "escalation",
]


def markdown_table(frame: pd.DataFrame) -> str:
    """``frame`` as a Markdown table whose missing values (NaN, NaT, None) are empty cells."""
    return frame.astype(object).where(frame.notna(), None).to_markdown(index=False, missingval="")


def health_table(day: pd.DataFrame) -> str:
    """One day's ``daily_health_frame`` rows as a Markdown table, or "no samples"."""
    return day.drop(columns=["day"]).to_markdown(index=False) if len(day) else "no samples"


def incident_table(frame: pd.DataFrame, tz: str) -> str:
    """One day's incidents (``rollups.load_incidents``) as a Markdown table, or "no
    incidents"; times in ``tz``, detection as its two bounds, an open one's recovery empty."""
    if not len(frame):
        return "no incidents"
    return markdown_table(_local(frame, tz).reindex(columns=INCIDENT_COLUMNS))


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
    availability_target: float = 0.999,
    tz: str,
    measured_share: float | None = None,
    min_measured_share: float = 0.9,
    target: str | None = None,
) -> str:
    """The day's Markdown; times in ``tz``, categories below ``availability_target`` named;
    ``target`` (the monitored target's name) in the title when given.

    ``measured_share``: the share of the day (so far) for which the service's state was
    measured (``rollups.service_figures``). The verdict is about time, as in the monthly
    report: "no data" when nothing was measured, "insufficient data" under
    ``min_measured_share``; never "HEALTHY all day" for a day the monitor did not see.
    Categories with no measured sample (and not "not configured") are named.
    """
    bad = health[health["availability"] < availability_target] if len(health) else health
    unseen = (
        sorted(health.loc[health["availability"].isna() & (health["error"] > 0), "category"])
        if len(health)
        else []
    )
    measured = health["availability"].notna().any() if len(health) else False
    below = ", ".join(bad["category"]) or "none"
    findings = f"{len(inc)} incident(s); below {availability_target:.1%}: {below}"
    if not measured or measured_share == 0:
        verdict = "no data" if inc.empty else f"no data; {len(inc)} incident(s)"
    elif measured_share is not None and measured_share < min_measured_share:
        verdict = f"insufficient data ({measured_share:.0%} of the day measured); {findings}"
    elif bad.empty and inc.empty:
        verdict = (
            "no incident; every measured category on target"
            if unseen
            else "HEALTHY all day"
            if measured_share is not None
            else "healthy"
        )
    else:
        verdict = findings
    if unseen and verdict != "no data":
        verdict += f"; not measured: {', '.join(unseen)}"
    inc, perf = _local(inc, tz), _local(perf, tz)
    out = [
        f"# Daily report {day}{f', target {target}' if target else ''} ({tz})",
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


def report_verdict(text: str) -> str:
    """The verdict line of a report ``render_daily_report`` wrote."""
    return text.split("**Verdict: ", 1)[1].split("**", 1)[0]


def write_daily_reports(
    store: HistoryStore,
    start: datetime,
    end: datetime,
    *,
    target: str,
    availability_target: float,
    tz: str,
    directory: Path,
    stale_s: float = 125.0,
    min_measured_share: float = 0.9,
    now: datetime | None = None,
) -> list[Path]:
    """One report of ``target`` per local day in [start, end), from its stored rollups,
    written to ``directory/daily-report-<day>.md`` (``daily-report-<target>-<day>.md`` for
    a target other than ``default``, so a fleet's reports sit side by side); the paths in
    day order. The share of each day measured comes from the target's samples (each holds
    at most ``stale_s``), up to ``now`` for today."""
    paths = []
    day = start
    now = now or datetime.now(UTC)
    # One read of the range's samples, not one per day (a backfill's range is a month).
    intervals = state_intervals(
        read_samples(store, start, end, tz, stale_s, target=target), stale_s
    )
    prefix = "daily-report-" if target == DEFAULT_TARGET else f"daily-report-{target}-"
    while day < end:
        nxt = day + timedelta(days=1)
        r = day_rollups(store, day, nxt, target=target)
        share = service_figures(intervals, day, max(day, min(nxt, now)))["measured_share"]
        text = render_daily_report(
            day.strftime("%Y-%m-%d"),
            r.health,
            r.incidents,
            r.performance,
            availability_target=availability_target,
            tz=tz,
            measured_share=share,
            min_measured_share=min_measured_share,
            target=None if target == DEFAULT_TARGET else target,
        )
        path = directory / f"{prefix}{day:%Y-%m-%d}.md"
        path.write_text(text, encoding="utf-8")
        paths.append(path)
        day = nxt
    return paths


def api_chart(day: pd.DataFrame, title: str, tz: str) -> str:
    """Mean API response per hour of one day's hourly rows as an inline Markdown PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 2.2))
    try:
        local = pd.to_datetime(day["hour"], utc=True).dt.tz_convert(tz)
        ax.plot(local.dt.tz_localize(None), day["mean_api_ms"], marker=".")
        ax.set_ylabel("API ms")
        ax.set_title(title)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=72, bbox_inches="tight")
    finally:
        plt.close(fig)
    return "![chart](data:image/png;base64," + base64.b64encode(buf.getvalue()).decode() + ")"
