"""The monthly SLA report from the history (the seed's analyze-monthly-trends.py, made real).

Loads a month of samples, performance samples, incidents, alerts, repair attempts and
drill ground truth from the ops store, computes the figures (``lib/sla.py``) for the month
and the month before, draws the charts, optionally replays alerting under other settings
(``lib/whatif.py``), and writes ``reports/YYYY-MM/sla-report.md`` (``sla-report.ja.md`` in
Japanese) with its PNGs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd

from westep_ops.config import Config
from westep_ops.errors import WestepError
from westep_ops.lib import sla, sla_report
from westep_ops.lib.whatif import CURRENT, Setting, compare, read_thresholds
from westep_ops.monitoring.history import HistoryStore
from westep_ops.targets import DEFAULT_TARGET

# Samples start one full interval (+ one cheap interval of jitter) before the period: the
# sample just before it holds into the period, and bounds the detection of an incident
# that starts early in it. Incidents count in the period where they started; their
# alerts and repairs come with them (an alert of the 31st's incident sent on the 1st is
# the 31st's); alerts of no incident count by their own time. Drill rows are those
# whose window meets the period or the day after (an incident's late alert).
QUERIES = {
    # findings only of warnings: whether it is observe-only (passing) for detection bounds
    "samples": "SELECT ts, kind, category, status,"
    " CASE WHEN status = 'warning' THEN findings END AS findings FROM westep_ops.samples"
    " WHERE target = %(target)s AND ts >= %(samples_from)s AND ts < %(end)s",
    "performance": "SELECT ts, mean_api_ms, http_requests, http_failures FROM westep_ops.performance_samples"
    " WHERE target = %(target)s AND ts >= %(start)s AND ts < %(end)s",
    "incidents": "SELECT id, category, severity, started_at, detected_at, resolved_at, recovered_by, escalation"
    " FROM westep_ops.incidents WHERE target = %(target)s"
    " AND started_at >= %(start)s AND started_at < %(end)s ORDER BY started_at",
    "alerts": "SELECT a.id, a.incident_id, a.ts, a.kind, a.severity, a.category, a.label"
    " FROM westep_ops.alerts a LEFT JOIN westep_ops.incidents i ON i.id = a.incident_id"
    " WHERE a.target = %(target)s AND a.suppressed_by IS NULL"  # a silenced alert was never sent
    " AND CASE WHEN i.id IS NULL THEN a.ts >= %(start)s AND a.ts < %(end)s"
    " ELSE i.started_at >= %(start)s AND i.started_at < %(end)s END",
    "repairs": "SELECT r.incident_id, r.action, r.outcome, r.trigger FROM westep_ops.repair_attempts r"
    " JOIN westep_ops.incidents i ON i.id = r.incident_id"
    " WHERE r.target = %(target)s AND i.target = %(target)s"
    " AND NOT r.dry_run AND i.started_at >= %(start)s AND i.started_at < %(end)s",
    # to_jsonb(d): rows written before the drill recorded categories have none (NULL).
    "drill": "SELECT d.drill, d.fault, d.injected_at, d.removed_at,"
    " to_jsonb(d) -> 'categories' AS categories FROM westep_ops.drill_faults d"
    " WHERE d.target = %(target)s AND d.injected_at < %(end)s + interval '1 day'"
    " AND coalesce(d.removed_at, 'infinity') >= %(start)s",
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


def load(
    store: HistoryStore, start: datetime, end: datetime, *, target: str, margin_s: float = 360
) -> dict[str, pd.DataFrame]:
    """``target``'s frames of the period; samples from ``margin_s`` before ``start`` (see
    QUERIES)."""
    params = {
        "target": target,
        "start": start,
        "end": end,
        "samples_from": start - timedelta(seconds=margin_s),
    }
    out = {}
    with store.tx() as conn:
        for name, q in QUERIES.items():
            cur = conn.execute(q, params)
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
    drill = out["drill"]
    drill["categories"] = [
        [] if f == "quiet" and c is None else c
        for f, c in zip(drill["fault"], drill["categories"], strict=True)
    ]  # None left for an old fault row: unknown, it judges nothing
    return out


def margin_s(config: Config) -> float:
    """How far before a period the samples are loaded: one full and one cheap interval."""
    iv = config.monitoring.intervals
    return (iv.health + iv.performance) / 1000


def stale_s(config: Config) -> float:
    """How long a sample's state holds: 2x the cheap interval + the confirmation delay."""
    return (
        2 * config.monitoring.intervals.performance / 1000
        + config.monitoring.alerting.confirm_delay_seconds
    )


def figures(
    frames: dict[str, pd.DataFrame], start: datetime, end: datetime, config: Config
) -> sla.SlaFigures:
    from westep_ops.monitoring.engine import CHEAP
    from westep_ops.repairs.recovery import OBSERVE_ONLY
    from westep_ops.silences import window_intervals

    iv = config.monitoring.intervals
    s, e = pd.Timestamp(start).tz_convert("UTC"), pd.Timestamp(end).tz_convert("UTC")
    windows = [
        span
        for w in config.maintenance_windows
        for span in window_intervals(w, s.to_pydatetime(), e.to_pydatetime(), config.timezone)
    ]
    cheap = {str(c) for c in CHEAP}  # the categories the cheap probes look at
    return sla.compute(
        s,
        e,
        samples=frames["samples"],
        performance=frames["performance"],
        incidents=frames["incidents"],
        alerts=frames["alerts"],
        repairs=frames["repairs"],
        drill=frames["drill"] if len(frames["drill"]) else None,
        interval_s=iv.performance / 1000,
        full_interval_s=iv.health / 1000,
        confirm_s=config.monitoring.alerting.confirm_delay_seconds,
        cadence_s={
            c: (iv.performance if c in cheap else iv.health) / 1000 for c in sla.H_CATEGORIES
        },
        maintenance=windows,
        exclude_maintenance=config.sla.exclude_maintenance,
        tz=config.timezone,
        sla_cfg=config.sla,
        observe_only=OBSERVE_ONLY,
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
        config.monitoring.intervals.performance * a.group_grace_intervals / 1000,
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
            current.group_grace_s,
        )
        for e in read_thresholds(path)
    ]


# The what-if replays the samples as the engine read them: findings (observe-only), the
# sweep's suspected cause (a symptom opens nothing) and the figures grouping reads too.
WHATIF_SAMPLES = (
    "SELECT ts, kind, category, status, findings, suspected_cause, value FROM westep_ops.samples"
    " WHERE target = %s AND ts >= %s AND ts < %s ORDER BY ts, id"
)


def whatif(
    store: HistoryStore,
    frames: dict[str, pd.DataFrame],
    settings: list[Setting],
    start: datetime,
    end: datetime,
    *,
    target: str,
) -> list[dict[str, Any]]:
    """Replay the settings over ``target``'s samples of the month; judge them by labels and
    drills."""
    from westep_ops.monitoring.rollups import read_frame
    from westep_ops.repairs.recovery import OBSERVE_ONLY

    samples = read_frame(store, WHATIF_SAMPLES, (target, start, end))
    samples["ts"] = pd.to_datetime(samples["ts"], utc=True)
    return compare({**frames, "samples": samples}, settings, pd.Timestamp(end), OBSERVE_ONLY)


def target_folder(month_dir: Path, target: str) -> Path:
    """Where ``target``'s report of a month goes: the month's folder itself for the target
    ``default`` (as before targets existed), its own sub-folder for any other."""
    return month_dir if target == DEFAULT_TARGET else month_dir / target


def build(
    store: HistoryStore,
    config: Config,
    month: str,
    *,
    target: str,
    lang: str = "en",
    thresholds: str | None = None,
    reports_dir: Path = Path("reports"),
) -> MonthlyReport:
    """``target``'s report of ``month``: ``reports/YYYY-MM/`` for the target ``default``
    (a config without ``targets``), ``reports/YYYY-MM/<target>/`` for any other."""
    from westep_ops.lib import sla_charts  # the charts module (its own file)

    settings = parse_settings(thresholds, config)
    start, end = month_window(check_month(month), config.timezone)
    pstart, _ = month_window(
        (start.replace(day=1) - pd.Timedelta(days=1)).strftime("%Y-%m"), config.timezone
    )
    now = datetime.now(ZoneInfo(config.timezone))
    if start > now:  # nothing to report, and a folder of made-up "-" figures would stay
        raise WestepError(
            f"month {month} has not begun yet (it is {now:%Y-%m-%d %H:%M} in {config.timezone})"
        )
    margin = margin_s(config)
    frames = load(store, start, end, target=target, margin_s=margin)
    this = figures(frames, start, min(end, max(start, now)), config)
    prev = figures(
        load(store, pstart, start, target=target, margin_s=margin), pstart, start, config
    )
    folder = target_folder(reports_dir / month, target)
    t = config.sla.targets
    charts = sla_charts.charts(
        this,
        frames["performance"],
        frames["incidents"],
        folder,
        config.timezone,
        availability_target=t.availability,
        response_target_ms=t.mean_response_ms,
        min_measured_share=config.sla.min_measured_share,
    )
    replayed = (
        whatif(store, frames, settings, start, min(end, max(start, now)), target=target)
        if settings
        else []
    )
    text = sla_report.render(
        month,
        config.timezone,
        this,
        prev,
        charts,
        lang,
        replayed,
        stale_s=stale_s(config),
        cheap_s=config.monitoring.intervals.performance / 1000,
        target=None if target == DEFAULT_TARGET else target,
    )
    # One file per language: a Japanese run must not overwrite the English report.
    path = folder / ("sla-report.md" if lang == "en" else f"sla-report.{lang}.md")
    path.write_text(text, encoding="utf-8")
    return MonthlyReport(month, path, this, prev, charts, replayed)


@dataclass
class FleetReport:
    """``build_fleet``'s result: the fleet report and each target's own report."""

    month: str
    path: Path | None  # reports/YYYY-MM/fleet-report.md; None for the one target "default"
    reports: dict[str, MonthlyReport]

    def as_json(self) -> dict[str, Any]:
        return {
            "fleet_report": str(self.path) if self.path else None,
            "targets": {
                name: {
                    "report": str(r.path),
                    "figures": r.figures.as_dict(),
                    "verdicts": r.figures.verdicts(),
                    "whatif": r.whatif,
                }
                for name, r in self.reports.items()
            },
        }


def build_fleet(
    store: HistoryStore,
    month: str,
    targets: list[tuple[str, Config]],
    *,
    lang: str = "en",
    thresholds: str | None = None,
    reports_dir: Path = Path("reports"),
) -> FleetReport:
    """Each target's report of ``month`` (``build``, with the target's effective config),
    then, unless the only target is ``default`` (a config without ``targets``, whose
    report stays where it always was), the month's fleet report
    ``reports/YYYY-MM/fleet-report.md`` (``fleet-report.ja.md``): one row per target,
    judged with the same rule as its own report, linking to it."""
    reports = {
        name: build(
            store,
            config,
            month,
            target=name,
            lang=lang,
            thresholds=thresholds,
            reports_dir=reports_dir,
        )
        for name, config in targets
    }
    if [name for name, _ in targets] == [DEFAULT_TARGET]:
        return FleetReport(month, None, reports)
    folder = reports_dir / month
    rows = [(name, r.figures, r.path.relative_to(folder).as_posix()) for name, r in reports.items()]
    path = folder / ("fleet-report.md" if lang == "en" else f"fleet-report.{lang}.md")
    path.write_text(
        sla_report.render_fleet_report(month, targets[0][1].timezone, rows, lang),
        encoding="utf-8",
    )
    return FleetReport(month, path, reports)
