"""The monthly SLA report from the history (the seed's analyze-monthly-trends.py, made real).

Loads a month of samples, performance samples, incidents, alerts, repair attempts and
drill ground truth from the ops store, computes the figures (``lib/sla.py``) for the month
and the month before, draws the charts, optionally replays alerting under other settings
(``lib/whatif.py``), and writes ``reports/YYYY-MM/sla-report.md`` with its PNGs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd

from westep_ops.config import Config
from westep_ops.errors import WestepError
from westep_ops.lib import sla, sla_report
from westep_ops.lib.whatif import CURRENT, Setting, compare, read_thresholds
from westep_ops.monitoring.history import HistoryStore

QUERIES = {
    "samples": "SELECT ts, kind, category, status FROM westep_ops.samples WHERE ts >= %s AND ts < %s",
    "performance": "SELECT ts, mean_api_ms, http_requests, http_failures FROM westep_ops.performance_samples"
    " WHERE ts >= %s AND ts < %s",
    "incidents": "SELECT id, category, severity, started_at, detected_at, resolved_at, recovered_by, escalation"
    " FROM westep_ops.incidents WHERE started_at >= %s AND started_at < %s ORDER BY started_at",
    "alerts": "SELECT id, incident_id, ts, kind, severity, category, label FROM westep_ops.alerts"
    " WHERE ts >= %s AND ts < %s AND suppressed_by IS NULL",  # a silenced alert was never sent
    "repairs": "SELECT incident_id, action, outcome FROM westep_ops.repair_attempts"
    " WHERE incident_id IS NOT NULL AND NOT dry_run AND started_at >= %s AND started_at < %s",
    "drill": "SELECT drill, fault, injected_at, removed_at FROM westep_ops.drill_faults"
    " WHERE injected_at >= %s AND injected_at < %s",
}


@dataclass
class MonthlyReport:
    month: str
    path: Path
    figures: sla.SlaFigures
    previous: sla.SlaFigures
    charts: dict[str, str] = field(default_factory=dict)
    whatif: list[dict[str, Any]] = field(default_factory=list)


_MONTH = re.compile(r"[0-9]{4}-(0[1-9]|1[0-2])")


def check_month(month: str) -> str:
    """``YYYY-MM`` exactly, a real month from 1970-01 to 2999-12: it names the report's folder."""
    # strptime alone took "2026-1" and the report went to reports/2026-1/.
    if not _MONTH.fullmatch(month) or not 1970 <= int(month[:4]) <= 2999:
        raise WestepError(f"--month must be YYYY-MM between 1970-01 and 2999-12 (got {month!r})")
    return month


def month_window(month: str, tz: str) -> tuple[datetime, datetime]:
    if not _MONTH.fullmatch(month):
        raise WestepError(f"--month must be YYYY-MM (got {month!r})")
    start = datetime.strptime(month, "%Y-%m").replace(tzinfo=ZoneInfo(tz))
    end = start.replace(year=start.year + (start.month == 12), month=start.month % 12 + 1)
    return start, end


def load(store: HistoryStore, start: datetime, end: datetime) -> dict[str, pd.DataFrame]:
    out = {}
    with store.tx() as conn:
        for name, q in QUERIES.items():
            cur = conn.execute(q, (start, end))
            out[name] = pd.DataFrame(
                cur.fetchall(), columns=[d.name for d in cur.description or []]
            )
    for name, cols in (
        ("samples", ["ts"]),
        ("performance", ["ts"]),
        ("alerts", ["ts"]),
        ("incidents", ["started_at", "detected_at", "resolved_at"]),
        ("drill", ["injected_at", "removed_at"]),
    ):
        for c in cols:
            out[name][c] = pd.to_datetime(out[name][c], utc=True)
    for c in ("mean_api_ms",):
        out["performance"][c] = pd.to_numeric(out["performance"][c])
    return out


def figures(
    frames: dict[str, pd.DataFrame], start: datetime, end: datetime, config: Config
) -> sla.SlaFigures:
    from westep_ops.silences import window_intervals

    iv = config.monitoring.intervals
    s, e = pd.Timestamp(start).tz_convert("UTC"), pd.Timestamp(end).tz_convert("UTC")
    windows = [
        span
        for w in config.maintenance_windows
        for span in window_intervals(w, s.to_pydatetime(), e.to_pydatetime(), config.timezone)
    ]
    return sla.compute(
        pd.Timestamp(start).tz_convert("UTC"),
        pd.Timestamp(end).tz_convert("UTC"),
        samples=frames["samples"],
        performance=frames["performance"],
        incidents=frames["incidents"],
        alerts=frames["alerts"],
        repairs=frames["repairs"],
        drill=frames["drill"] if len(frames["drill"]) else None,
        interval_s=iv.performance / 1000,
        full_interval_s=iv.health / 1000,
        maintenance=windows,
        exclude_maintenance=config.sla.exclude_maintenance,
    )


def parse_settings(path: str | None, config: Config) -> list[Setting]:
    """The current setting, then those of the thresholds file (see README)."""
    if path is None:
        return []
    a = config.monitoring.alerting
    current = Setting(
        CURRENT,
        a.failure_threshold,
        a.success_threshold,
        True,
        config.monitoring.thresholds.response_time,
    )

    def given(value: Any, default: Any) -> Any:
        return default if value is None else value

    return [current] + [
        Setting(
            e.name,
            given(e.failure_threshold, current.failure_threshold),
            given(e.success_threshold, current.success_threshold),
            e.confirm,
            given(e.response_time, current.response_time_ms),
        )
        for e in read_thresholds(path)
    ]


def ground_truth(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """What really happened: drill faults, and recorded incidents nobody labelled false."""
    drill = frames["drill"].rename(columns={"injected_at": "start", "removed_at": "end"})
    drill = drill[drill["fault"] != "quiet"]  # a drill's quiet window is no event
    alerts = frames["alerts"]
    opened = alerts[alerts["kind"] == "opened"]
    false_ids = set(opened.loc[opened["label"].eq(False), "incident_id"])
    inc = frames["incidents"]
    real = inc[~inc["id"].isin(false_ids)].rename(
        columns={"started_at": "start", "resolved_at": "end"}
    )
    if len(drill) and len(
        real
    ):  # an incident during a drill fault is that fault, not another event
        now = pd.Timestamp.now(tz="UTC")
        spans = list(zip(drill["start"], drill["end"].fillna(now), strict=True))
        real = real[[not any(s <= t <= e for s, e in spans) for t in real["start"]]]
    parts = [p[["start", "end"]] for p in (drill, real) if len(p)]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["start", "end"])


def build(
    store: HistoryStore,
    config: Config,
    month: str,
    *,
    lang: str = "en",
    thresholds: str | None = None,
    reports_dir: Path = Path("reports"),
) -> MonthlyReport:
    settings = parse_settings(thresholds, config)
    start, end = month_window(check_month(month), config.timezone)
    pstart, _ = month_window(
        (start.replace(day=1) - pd.Timedelta(days=1)).strftime("%Y-%m"), config.timezone
    )
    now = datetime.now(ZoneInfo(config.timezone))
    frames = load(store, start, end)
    this = figures(frames, start, min(end, max(start, now)), config)
    prev = figures(load(store, pstart, start), pstart, start, config)
    folder = reports_dir / month
    charts = sla_report.charts(
        this, frames["performance"], frames["incidents"], folder, config.timezone
    )
    whatif = []
    if settings:
        truth = ground_truth(frames)
        whatif = compare(
            frames["samples"], frames["performance"], truth, settings, pd.Timestamp(end)
        )
    text = sla_report.render(month, config.timezone, this, prev, charts, lang, whatif)
    path = folder / "sla-report.md"
    path.write_text(text, encoding="utf-8")
    return MonthlyReport(month, path, this, prev, charts, whatif)
