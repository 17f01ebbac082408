"""Silence and recovery rules that need no sandbox: maintenance windows, the report's lines."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd
import pytest

from westep_ops.lib import sla


def test_monthly_report_shows_maintenance_apart() -> None:
    """Constructed history: down only during the window; excluded, availability is 100%."""
    start = pd.Timestamp("2026-11-01", tz="UTC")
    end = start + pd.Timedelta(hours=4)
    ts = pd.date_range(start, end, freq="60s", inclusive="left")
    window = (start + pd.Timedelta(hours=1), start + pd.Timedelta(hours=2))
    status = ["critical" if window[0] <= t < window[1] else "ok" for t in ts]
    samples = pd.DataFrame(
        {
            "ts": list(ts) * 2,
            "kind": "cheap",
            "category": ["connection"] * len(ts) + ["api"] * len(ts),
            "status": status * 2,
        }
    )
    empty = pd.DataFrame(
        columns=["id", "incident_id", "ts", "kind", "label", "outcome", "started_at"]
    )
    kw: dict[str, Any] = dict(
        samples=samples,
        performance=pd.DataFrame(columns=["ts", "mean_api_ms", "http_requests", "http_failures"]),
        incidents=pd.DataFrame(columns=["id", "started_at", "detected_at", "resolved_at"]),
        alerts=empty,
        repairs=empty,
        maintenance=[(window[0].to_pydatetime(), window[1].to_pydatetime())],
    )
    inc = sla.compute(start, end, **kw)
    exc = sla.compute(start, end, exclude_maintenance=True, **kw)
    assert inc.maintenance_minutes == 60 and inc.maintenance_down_minutes == 60
    assert inc.availability == pytest.approx(0.75)
    assert exc.availability == pytest.approx(1.0) and exc.availability_outside_maintenance == 1.0
    from westep_ops.lib.sla_report import render

    text = render("2026-11", "UTC", inc, None, {}, "en", [])
    assert "maintenance windows: 60 min (60 min down)" in text
    assert "included in availability" in text


def test_nothing_to_do_is_no_auto_recovery_success() -> None:
    t = pd.Timestamp("2026-11-02", tz="UTC")
    incidents = pd.DataFrame(
        {
            "id": [1, 2],
            "category": ["pool", "pool"],
            "severity": ["critical", "critical"],
            "started_at": [t, t],
            "detected_at": [t, t],
            "resolved_at": [t + pd.Timedelta(minutes=2)] * 2,
            "recovered_by": ["auto:restore_connection_pool"] * 2,
        }
    )
    repairs = pd.DataFrame(
        {
            "incident_id": [1, 2],
            "action": ["restore_connection_pool"] * 2,
            "outcome": ["repaired", "nothing_to_do"],
        }
    )
    f = sla.compute(
        t,
        t + pd.Timedelta(days=1),
        samples=pd.DataFrame(columns=["ts", "kind", "category", "status"]),
        performance=pd.DataFrame(columns=["ts", "mean_api_ms", "http_requests", "http_failures"]),
        incidents=incidents,
        alerts=pd.DataFrame(columns=["id", "incident_id", "ts", "kind", "label"]),
        repairs=repairs,
    )
    assert f.auto_recovery_attempted == 2 and f.auto_recovery_success == 0.5


def test_the_seeds_sunday_window_recurs_in_the_configured_time_zone() -> None:
    from westep_ops.config import MaintenanceWindow
    from westep_ops.silences import window_intervals, window_occurrence

    w = MaintenanceWindow(
        name="weekly", cron="0 3 * * 0", duration_minutes=120, categories=["performance"]
    )
    start = datetime(2026, 11, 1, tzinfo=ZoneInfo("Asia/Tokyo"))
    end = datetime(2026, 12, 1, tzinfo=ZoneInfo("Asia/Tokyo"))
    spans = window_intervals(w, start, end, "Asia/Tokyo")
    # Sundays 03:00-05:00 JST = Saturdays 18:00-20:00 UTC; Nov 1 is a Sunday.
    assert [s.isoformat() for s, _e in spans] == [
        f"2026-{d}T18:00:00+00:00" for d in ("10-31", "11-07", "11-14", "11-21", "11-28")
    ]
    assert [s.astimezone(ZoneInfo("Asia/Tokyo")).day for s, _e in spans] == [1, 8, 15, 22, 29]
    assert all((e - s) == timedelta(minutes=120) for s, e in spans)
    inside = datetime(2026, 11, 8, 4, 59, tzinfo=ZoneInfo("Asia/Tokyo"))
    occ = window_occurrence(w, inside, "Asia/Tokyo")
    assert (
        occ is not None and occ.matches("performance", inside) and not occ.matches("pool", inside)
    )
    assert window_occurrence(w, inside + timedelta(minutes=1), "Asia/Tokyo") is None
