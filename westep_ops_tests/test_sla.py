"""SLA arithmetic on constructed data with known answers (no database needed)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from westep_ops.lib.sla import compute

DAY = datetime(2026, 10, 1, tzinfo=UTC)
END = DAY + timedelta(days=1)
EMPTY = {
    "samples": pd.DataFrame(columns=["ts", "kind", "category", "status"]),
    "performance": pd.DataFrame(columns=["ts", "mean_api_ms", "http_requests", "http_failures"]),
    "incidents": pd.DataFrame(
        columns=[
            "id",
            "category",
            "severity",
            "started_at",
            "detected_at",
            "resolved_at",
            "recovered_by",
        ]
    ),
    "alerts": pd.DataFrame(columns=["id", "incident_id", "ts", "kind", "label"]),
    "repairs": pd.DataFrame(columns=["incident_id"]),
}


def samples(
    statuses: dict[int, str], cats: tuple[str, ...] = ("connection", "api")
) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"ts": DAY + timedelta(minutes=m), "kind": "cheap", "category": c, "status": s}
            for m, s in statuses.items()
            for c in cats
        ]
    )


def t(minutes: float) -> pd.Timestamp:
    return pd.Timestamp(DAY + timedelta(minutes=minutes))


def test_availability_counts_gaps_as_not_up() -> None:
    st = {m: "ok" for m in range(1440) if not 1340 <= m < 1380}  # a 40-minute gap
    st.update({m: "critical" for m in range(1380, 1390)})  # 10 minutes down
    f = compute(DAY, END, **{**EMPTY, "samples": samples(st)})
    assert (f.slots, f.up, f.down, f.unknown) == (1440, 1390, 10, 40)
    assert f.availability == pytest.approx(1390 / 1440)
    assert f.measured_share == pytest.approx(1400 / 1440)
    assert f.daily == [
        {
            "day": "2026-10-01",
            "availability": pytest.approx(1390 / 1440),
            "measured": pytest.approx(1400 / 1440),
        }
    ]
    assert f.verdicts()["availability"] is False


def test_a_warning_is_degraded_but_up_and_one_critical_service_check_is_down() -> None:
    st = {m: "ok" for m in range(1440)}
    frame = samples(st)
    frame.loc[
        (frame["ts"] == DAY + timedelta(minutes=5)) & (frame["category"] == "api"), "status"
    ] = "critical"
    frame.loc[
        (frame["ts"] == DAY + timedelta(minutes=6)) & (frame["category"] == "api"), "status"
    ] = "warning"
    f = compute(DAY, END, **{**EMPTY, "samples": frame})
    assert (f.up, f.down, f.unknown) == (1439, 1, 0)


def test_mttd_and_mttr_with_overlapping_incidents() -> None:
    inc = pd.DataFrame(
        [
            {
                "id": 1,
                "category": "pool",
                "severity": "critical",
                "started_at": t(599),
                "detected_at": t(600),
                "resolved_at": t(610),
                "recovered_by": "auto:restore_connection_pool",
            },
            {
                "id": 2,
                "category": "tables",
                "severity": "critical",
                "started_at": t(604.5),
                "detected_at": t(605),
                "resolved_at": t(607),
                "recovered_by": None,
            },
            {
                "id": 3,
                "category": "api",
                "severity": "critical",
                "started_at": t(700),
                "detected_at": t(702),
                "resolved_at": None,
                "recovered_by": None,
            },
        ]
    )
    repairs = pd.DataFrame([{"incident_id": 1}, {"incident_id": 2}])
    f = compute(DAY, END, **{**EMPTY, "incidents": inc, "repairs": repairs})
    assert f.incidents == 3 and f.incidents_by == {
        "api/critical": 1,
        "pool/critical": 1,
        "tables/critical": 1,
    }
    assert f.mttd_mean_s == pytest.approx((60 + 30 + 120) / 3)
    assert f.mttr_mean_s == pytest.approx((600 + 120) / 2)  # the open one is not recovered yet
    assert f.mttr_p90_s == pytest.approx(120 + 0.9 * 480)
    assert f.auto_recovery_attempted == 2 and f.auto_recovery_success == 0.5


def test_precision_with_a_false_alert() -> None:
    alerts = pd.DataFrame(
        [
            {"id": 1, "incident_id": 1, "ts": t(10), "kind": "opened", "label": None},
            {"id": 2, "incident_id": 2, "ts": t(20), "kind": "opened", "label": False},
            {"id": 3, "incident_id": 3, "ts": t(30), "kind": "opened", "label": True},
            {
                "id": 4,
                "incident_id": 3,
                "ts": t(40),
                "kind": "resolved",
                "label": None,
            },  # not judged
        ]
    )
    f = compute(DAY, END, **{**EMPTY, "alerts": alerts})
    assert (f.alerts, f.alerts_true, f.alerts_false) == (3, 2, 1)
    assert f.alert_precision == pytest.approx(2 / 3) and f.false_positive_rate == pytest.approx(
        1 / 3
    )
    assert f.alert_judged_by == {"confirmation": 1, "label": 2}


def test_drill_ground_truth_judges_unlabelled_alerts() -> None:
    alerts = pd.DataFrame(
        [
            {
                "id": 1,
                "incident_id": 1,
                "ts": t(10),
                "kind": "opened",
                "label": None,
            },  # during a fault
            {
                "id": 2,
                "incident_id": 2,
                "ts": t(100),
                "kind": "opened",
                "label": None,
            },  # drill on, no fault
            {
                "id": 3,
                "incident_id": 3,
                "ts": t(900),
                "kind": "opened",
                "label": None,
            },  # no drill running
        ]
    )
    drill = pd.DataFrame(
        [
            {"drill": "d1", "injected_at": t(9), "removed_at": t(15)},
            {"drill": "d1", "injected_at": t(200), "removed_at": t(210)},
        ]
    )
    f = compute(DAY, END, **{**EMPTY, "alerts": alerts, "drill": drill})
    assert (f.alerts_true, f.alerts_false) == (2, 1)
    assert f.alert_judged_by == {"drill": 2, "confirmation": 1}


def test_an_empty_month() -> None:
    f = compute(DAY, END, **EMPTY)
    assert f.availability == 0.0 and f.unknown == f.slots == 1440
    assert (
        f.incidents == 0
        and f.alert_precision is None
        and f.mttr_mean_s is None
        and f.coverage == 0.0
    )
    assert f.verdicts()["alert_precision"] is None  # no alert: nothing to judge, not a pass


def test_target_down_all_day() -> None:
    f = compute(DAY, END, **{**EMPTY, "samples": samples({m: "critical" for m in range(1440)})})
    assert f.availability == 0.0 and f.down == 1440


def test_performance_and_coverage() -> None:
    perf = pd.DataFrame(
        [
            {
                "ts": t(m),
                "mean_api_ms": 100.0 + m % 10,
                "http_requests": 2,
                "http_failures": 1 if m == 3 else 0,
            }
            for m in range(100)
        ]
    )
    every5 = pd.DataFrame(
        [
            {"ts": t(m), "kind": "full", "category": c, "status": "ok"}
            for m in range(0, 1440, 5)
            for c in ("connection", "pool", "tables", "integrity", "realtime", "auth", "api")
        ]
    )
    f = compute(
        DAY, END, **{**EMPTY, "performance": perf, "samples": every5[every5["category"] != "auth"]}
    )
    assert f.mean_response_ms == pytest.approx(104.5) and f.error_rate == pytest.approx(1 / 200)
    assert f.coverage_by["auth"] == 0.0 and f.coverage_by["pool"] == 1.0
    assert f.coverage == pytest.approx(6 / 7)


def test_a_period_ending_mid_slot_counts_the_partial_slot() -> None:
    end = DAY + timedelta(minutes=10, seconds=30)  # e.g. a month still in progress
    f = compute(DAY, end, **{**EMPTY, "samples": samples({m: "ok" for m in range(11)})})
    assert (f.slots, f.up, f.unknown) == (11, 11, 0)
