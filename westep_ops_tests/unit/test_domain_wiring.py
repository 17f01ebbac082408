"""Domains own their wiring, and the logic the daily assets call is plain code.

No sandbox, no database: each ``defs/<domain>/definitions.py`` resolves on its own with
the shared resources (so a domain's schedules and jobs name only what it holds or
targets), the merged definitions hold exactly the union of the domains, the plain
modules load without Dagster, and the rollups and the daily report are checked on
constructed frames.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from datetime import UTC, datetime

import pandas as pd
import pytest
from dagster import Definitions

from westep_ops.monitoring import daily_report, rollups

DOMAINS = ("health", "monitoring", "repairs", "maintenance", "sla")
PLAIN = (
    "westep_ops.monitoring.rollups",
    "westep_ops.monitoring.daily_report",
    "westep_ops.maintenance.routines",
)


def _domain(name: str) -> Definitions:
    return importlib.import_module(f"westep_ops.defs.{name}.definitions").defs


@pytest.mark.parametrize("name", DOMAINS)
def test_each_domain_resolves_on_its_own(name: str) -> None:
    from westep_ops.resources import default_resources

    repo = Definitions.merge(
        _domain(name), Definitions(resources=default_resources())
    ).get_repository_def()
    assert repo.get_all_jobs()


def test_the_merged_definitions_are_the_domains_union() -> None:
    from westep_ops.definitions import defs

    repo = defs.get_repository_def()
    schedules = {s.name for d in DOMAINS for s in _domain(d).schedules or []}
    sensors = {s.name for d in DOMAINS for s in _domain(d).sensors or []}
    assert schedules == {s.name for s in repo.schedule_defs}
    assert sensors == {s.name for s in repo.sensor_defs}
    # Every schedule sits with its job's domain (the monthly SLA one in sla/, ...).
    owner = {j.name: d for d in DOMAINS for j in _domain(d).jobs or []}
    for d in DOMAINS:
        for s in _domain(d).schedules or []:
            assert owner[s.job_name] == d, (s.name, d)


def test_plain_modules_do_not_import_dagster() -> None:
    code = f"import sys\nfor m in {PLAIN!r}: __import__(m)\nprint('dagster' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _health(day: str, category: str, ok: int, warning: int, critical: int, error: int) -> dict:
    return {
        "day": pd.Timestamp(day).date(),
        "category": category,
        "samples": ok + warning + critical + error,
        "ok": ok,
        "warning": warning,
        "critical": critical,
        "error": error,
        "availability": (ok + warning) / (ok + warning + critical)
        if ok + warning + critical
        else None,
    }


def test_category_availability_only_when_measured() -> None:
    frame = pd.DataFrame(
        [
            _health("2026-11-03", "connection", 90, 5, 5, 0),
            _health("2026-11-03", "api", 0, 0, 0, 12),
        ]
    )
    assert rollups.category_availability(frame, "connection") == {
        "samples": 100,
        "availability": pytest.approx(0.95),
        "critical_samples": 5,
        "measured_samples": 100,
    }
    # Only errors (the monitor could not look): a count, no availability figure.
    assert rollups.category_availability(frame, "api") == {"samples": 12}
    assert rollups.category_availability(frame, "auth") == {"samples": 0}
    assert rollups.worst_status(frame) == "critical"
    assert rollups.worst_status(frame.iloc[0:0]) == "no data"


def test_incident_figures_and_the_daily_report() -> None:
    t = datetime(2026, 11, 3, 1, 0, tzinfo=UTC)
    raw = pd.DataFrame(
        [
            {
                "id": 7,
                "category": "pool",
                "severity": "critical",
                "started_at": pd.Timestamp(t),
                "detected_at": pd.Timestamp(t) + pd.Timedelta(seconds=40),
                "resolved_at": None,
                "recovered_by": None,
                "escalation": 0,
            }
        ]
    )
    inc = rollups.incident_frame(raw)
    assert rollups.incident_figures(inc) == {"incidents": 1, "open": 1, "mean_detect_s": 40.0}
    assert rollups.incident_figures(rollups.incident_frame(raw.iloc[0:0])) == {
        "incidents": 0,
        "open": 0,
    }
    table = daily_report.incident_table(inc, "Asia/Tokyo")
    assert "| pool  " in table and "| critical  " in table and "recover_s" in table
    assert "+09:00" in table  # started_at in the team's zone, not UTC
    health = pd.DataFrame([_health("2026-11-03", "pool", 90, 0, 10, 0)])
    perf = pd.DataFrame(columns=rollups.HOURLY_COLUMNS)
    text = daily_report.render_daily_report(
        "2026-11-03", health, inc, perf, availability_target=0.999, tz="Asia/Tokyo"
    )
    assert text.startswith("# Daily report 2026-11-03 (Asia/Tokyo)")
    assert daily_report.report_verdict(text) == "1 incident(s); below 99.9%: pool"
    empty = daily_report.render_daily_report(
        "2026-11-04", health.iloc[0:0], inc.iloc[0:0], perf, tz="Asia/Tokyo"
    )
    assert daily_report.report_verdict(empty) == "no data"
    # The incident's times are shown in the team's zone (10:00 in Tokyo).
    assert "10:00:40+09:00" in text


def test_the_daily_verdict_is_about_measured_time() -> None:
    """A day the monitor did not see is never "HEALTHY all day"."""
    perf = pd.DataFrame(columns=rollups.HOURLY_COLUMNS)
    none = pd.DataFrame(columns=["id"])

    def verdict(health: list[dict], share: float | None) -> str:
        text = daily_report.render_daily_report(
            "2026-11-03", pd.DataFrame(health), none, perf, tz="Asia/Tokyo", measured_share=share
        )
        return daily_report.report_verdict(text)

    blind = [_health("2026-11-03", "connection", 0, 0, 0, 1440)]
    assert verdict(blind, 0.0) == "no data"
    healthy = [_health("2026-11-03", c, 1440, 0, 0, 0) for c in ("connection", "api")]
    assert verdict(healthy, 60 / 1440).startswith("insufficient data (4% of the day measured)")
    assert verdict(healthy, 1.0) == "HEALTHY all day"
    unseen = healthy + [_health("2026-11-03", "pool", 0, 0, 0, 1440)]
    assert (
        verdict(unseen, 1.0) == "no incident; every measured category on target; not measured: pool"
    )


def test_a_category_that_is_not_configured_passes_its_daily_check() -> None:
    from westep_ops.defs.monitoring.assets import availability_evaluations

    frame = pd.DataFrame(
        [
            _health("2026-11-03", "connection", 1440, 0, 0, 0),
            {**_health("2026-11-03", "api", 0, 0, 0, 0), "samples": 0},  # not_configured
        ]
    )
    got = {e.check_name: e for e in availability_evaluations("2026-11-03", frame, 0.999)}
    assert (
        got["api_available"].passed
        and "not configured" in got["api_available"].metadata["note"].value
    )
    assert got["connection_available"].passed
    assert not got["pool_available"].passed  # never sampled: not monitored
