"""SLA arithmetic on constructed data with known answers (no database needed).

Availability is measured over time: each scheduled sample holds until the next one, at
most 2x the cheap interval + the confirmation delay (here 2 x 60 + 5 = 125 s).
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd
import pytest

from westep_ops.config import Sla, SlaTargets, parse_config
from westep_ops.lib.sla import compute, judge, local_days
from westep_ops.lib.sla_report import render

DAY = datetime(2026, 10, 1, tzinfo=UTC)
END = DAY + timedelta(days=1)
EMPTY: dict[str, Any] = {
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
    "alerts": pd.DataFrame(columns=["id", "incident_id", "ts", "kind", "category", "label"]),
    "repairs": pd.DataFrame(columns=["incident_id", "outcome"]),
}


def samples(
    statuses: dict[float, str],
    cats: tuple[str, ...] = ("connection", "api"),
    at: datetime = DAY,
    kind: str = "cheap",
) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "ts": pd.Timestamp(at + timedelta(minutes=m)),
                "kind": kind,
                "category": c,
                "status": s,
            }
            for m, s in statuses.items()
            for c in cats
        ]
    )


def t(minutes: float, at: datetime = DAY) -> pd.Timestamp:
    return pd.Timestamp(at + timedelta(minutes=minutes))


def test_availability_is_over_measured_time_and_a_gap_is_unknown() -> None:
    st = {m: "ok" for m in range(1440) if not 1340 <= m < 1380}  # a 40-minute gap
    st.update({m: "critical" for m in range(1380, 1390)})  # 10 minutes down
    f = compute(DAY, END, **{**EMPTY, "samples": samples(st)})
    # The sample at 22:19 holds 125 s (the staleness limit) into the gap; the rest is unknown.
    up = 1390 + 65 / 60
    assert f.period_minutes == 1440
    assert (f.up_minutes, f.down_minutes, f.unknown_minutes) == pytest.approx(
        (up, 10, 40 - 65 / 60)
    )
    assert f.availability == pytest.approx(up / (up + 10))  # over the measured time
    assert f.measured_share == pytest.approx((up + 10) / 1440)
    assert f.availability_lower_bound == pytest.approx(up / 1440)  # unknown counted as down
    assert f.daily == [
        {
            "day": "2026-10-01",
            "availability": pytest.approx(up / (up + 10)),
            "measured": pytest.approx((up + 10) / 1440),
            "down_minutes": pytest.approx(10),
            "unknown_minutes": pytest.approx(40 - 65 / 60),
        }
    ]
    assert f.status()["availability"] == "fail" and f.verdicts()["availability"] is False


def test_a_warning_is_degraded_but_up_and_one_critical_service_check_is_down() -> None:
    frame = samples({m: "ok" for m in range(1440)})
    frame.loc[(frame["ts"] == t(5)) & (frame["category"] == "api"), "status"] = "critical"
    frame.loc[(frame["ts"] == t(6)) & (frame["category"] == "api"), "status"] = "warning"
    f = compute(DAY, END, **{**EMPTY, "samples": frame})
    assert (f.up_minutes, f.down_minutes, f.unknown_minutes) == pytest.approx((1439, 1, 0))


def test_jittered_samples_of_a_healthy_hour_make_no_unknown_time() -> None:
    """The Dagster sensor's 30 s ticks: samples 62-70 s apart, drifting past a 60 s grid."""
    rnd = random.Random(11)
    start = DAY
    rows: list[dict[str, Any]] = []
    ts, last_full = start - timedelta(seconds=40), None  # the loader brings the one before
    while ts < start + timedelta(hours=1):
        full = last_full is None or (ts - last_full).total_seconds() >= 300
        cats = ("connection", "pool", "tables", "integrity", "realtime", "auth", "api")
        for c in cats if full else tuple(c for c in cats if c != "integrity"):
            rows.append(
                {
                    "ts": pd.Timestamp(ts),
                    "kind": "full" if full else "cheap",
                    "category": c,
                    "status": "ok",
                }
            )
        last_full = ts if full else last_full
        ts += timedelta(seconds=rnd.uniform(62, 70))
    f = compute(start, start + timedelta(hours=1), **{**EMPTY, "samples": pd.DataFrame(rows)})
    assert f.availability == 1.0
    assert f.availability_lower_bound is not None and f.availability_lower_bound >= 0.999
    assert f.measured_share >= 0.999 and f.unknown_minutes == 0
    assert f.coverage is not None and f.coverage >= 0.99
    assert f.status()["availability"] == "pass"


def test_local_days_in_tokyo_and_in_a_half_hour_zone() -> None:
    tokyo = ZoneInfo("Asia/Tokyo")
    start = datetime(2026, 12, 1, tzinfo=tokyo)  # 2026-11-30 15:00 UTC
    days = local_days(start, start + timedelta(days=2), "Asia/Tokyo")
    assert [d.isoformat() for d, _, _ in days] == ["2026-12-01", "2026-12-02"]
    # 30 minutes down across local midnight: 15 minutes on each local day.
    st = {m: "critical" if 1425 <= m < 1455 else "ok" for m in range(2880)}
    f = compute(
        start,
        start + timedelta(days=2),
        **{**EMPTY, "samples": samples(st, at=start)},
        tz="Asia/Tokyo",
    )
    assert [(d["day"], d["down_minutes"]) for d in f.daily] == [
        ("2026-12-01", pytest.approx(15)),
        ("2026-12-02", pytest.approx(15)),
    ]
    kolkata = ZoneInfo("Asia/Kolkata")
    kstart = datetime(2026, 12, 1, tzinfo=kolkata)
    assert kstart.astimezone(UTC).strftime("%H:%M") == "18:30"
    (day,) = local_days(kstart, kstart + timedelta(days=1), "Asia/Kolkata")
    assert day[0].isoformat() == "2026-12-01"
    assert (day[1], day[2]) == (
        pd.Timestamp(kstart).value,
        pd.Timestamp(kstart + timedelta(days=1)).value,
    )
    # The same two UTC days cut at Kolkata's midnight: three local days, the first from 05:30.
    days = local_days(
        datetime(2026, 12, 1, tzinfo=UTC), datetime(2026, 12, 3, tzinfo=UTC), "Asia/Kolkata"
    )
    assert [(d.isoformat(), (b - a) / 3.6e12) for d, a, b in days] == [
        ("2026-12-01", 18.5),
        ("2026-12-02", 24.0),
        ("2026-12-03", 5.5),
    ]


def test_a_month_monitored_from_day_30_is_insufficient_data_with_a_lower_bound() -> None:
    tokyo = ZoneInfo("Asia/Tokyo")
    start, end = datetime(2026, 12, 1, tzinfo=tokyo), datetime(2027, 1, 1, tzinfo=tokyo)
    began = datetime(2026, 12, 30, tzinfo=tokyo)
    st = {m: "ok" for m in range(2 * 1440)}
    f = compute(start, end, **{**EMPTY, "samples": samples(st, at=began)}, tz="Asia/Tokyo")
    assert f.availability == 1.0  # nothing measured went down
    assert f.measured_share == pytest.approx(2 / 31)
    assert f.availability_lower_bound == pytest.approx(2 / 31)
    assert f.status()["availability"] == "insufficient data"
    assert f.verdicts()["availability"] is None  # neither pass nor fail
    assert len(f.daily) == 31 and f.daily[0]["day"] == "2026-12-01"
    assert f.daily[0]["availability"] is None and f.daily[0]["measured"] == 0
    assert f.daily[-1]["availability"] == 1.0
    prev = compute(start - timedelta(days=30), start, **EMPTY, tz="Asia/Tokyo")
    assert prev.availability is None  # no data: "-", not 0.000%
    text = render("2026-12", "Asia/Tokyo", f, prev, {}, "en", [])
    assert "| availability | 100.000% | >= 99.900% | insufficient data | - |" in text
    assert "| measured share (of the month so far) | 6.5% | >= 90.0% | - | 0.0% |" in text
    assert "| availability lower bound (unknown time as down) | 6.452% | - | - | - |" in text
    assert "データ不足" in render("2026-12", "Asia/Tokyo", f, prev, {}, "ja", [])


def test_a_configured_minimum_measured_share_and_targets_change_the_verdicts() -> None:
    st = {m: "critical" if m < 5 else "ok" for m in range(1440)}  # 5 minutes down: 99.65%
    kw = {**EMPTY, "samples": samples(st)}
    assert compute(DAY, END, **kw).status()["availability"] == "fail"
    lax = Sla(targets=SlaTargets(availability=0.99, coverage=0.2))
    f = compute(DAY, END, **kw, sla_cfg=lax)
    assert f.status()["availability"] == "pass" and f.targets["availability"].target == 0.99
    assert f.coverage == pytest.approx(2 / 7) and f.status()["coverage"] == "pass"
    strict = Sla(min_measured_share=1.0, targets=SlaTargets(availability=0.99))
    gap = {m: s for m, s in st.items() if m < 1430}  # the last minutes unmeasured
    assert (
        compute(DAY, END, **{**kw, "samples": samples(gap)}, sla_cfg=strict).status()[
            "availability"
        ]
        == "insufficient data"
    )
    # The config file's block, camelCase.
    cfg = parse_config(
        {
            "sla": {
                "minMeasuredShare": 0.5,
                "targets": {"availability": 0.95, "detectionSeconds": 90},
            }
        },
        "x.json",
    )
    assert cfg.sla.targets.availability == 0.95 and cfg.sla.targets.detection_seconds == 90
    assert cfg.sla.targets.mean_response_ms == 2000 and cfg.sla.min_measured_share == 0.5
    text = render("2026-10", "UTC", compute(DAY, END, **kw, sla_cfg=cfg.sla), None, {})
    assert "| availability | 99.653% | >= 95.000% | PASS | - |" in text
    assert "| detection (MTTD) | - | < 90 s | not measured | - |" in text


def _incident(
    i: int,
    cat: str,
    started: float,
    detected: float,
    resolved: float | None,
    by: str | None = None,
    at: datetime = DAY,
) -> dict[str, Any]:
    return {
        "id": i,
        "category": cat,
        "severity": "critical",
        "started_at": t(started, at),
        "detected_at": t(detected, at),
        "resolved_at": None if resolved is None else t(resolved, at),
        "recovered_by": by,
    }


def test_detection_is_a_bound_and_an_open_incident_counts_as_at_least() -> None:
    inc = pd.DataFrame(
        [
            _incident(1, "pool", 599, 600, 610, "auto:restore_connection_pool"),
            _incident(2, "tables", 604.5, 605, 607),
            _incident(3, "api", 700, 702, None),  # still open at the period's end
        ]
    )
    # Last passing samples: pool at 598 (cheap, every minute), tables at 600 (full,
    # every 5 minutes); api has none in the data (upper bound unknown).
    st = pd.concat(
        [
            samples({m: "ok" for m in range(599)}, ("pool",)),
            samples({m: "ok" for m in range(0, 601, 5)}, ("tables",), kind="full"),
        ]
    )
    repairs = pd.DataFrame(
        [{"incident_id": 1, "outcome": "repaired"}, {"incident_id": 2, "outcome": "failed"}]
    )
    f = compute(DAY, END, **{**EMPTY, "incidents": inc, "repairs": repairs, "samples": st})
    assert f.incidents == 3 and f.incidents_by == {
        "api/critical": 1,
        "pool/critical": 1,
        "tables/critical": 1,
    }
    # Both ends over the bounded incidents (pool, tables); api has no upper bound.
    assert f.mttd_lower_mean_s == pytest.approx((60 + 30) / 2)
    assert f.mttd_upper_mean_s == pytest.approx((120 + 300) / 2) and f.mttd_unbounded == 1
    assert f.status()["mttd_upper_mean_s"] == "pass"  # judged on the upper bound
    # MTTR: 600 s, 120 s, and the open one at least until the period's end.
    open_s = (1440 - 702) * 60
    assert f.mttr_open_incidents == 1
    assert f.mttr_mean_s == pytest.approx((600 + 120 + open_s) / 3)
    assert f.auto_recovery_attempted == 2 and f.auto_recovery_success == 0.5
    text = render("2026-10", "UTC", f, None, {})
    assert "MTTD 45-210 s (first failing sample - last passing sample before it" in text
    assert "| detection (MTTD) | 45-210 s | < 300 s | PASS | - |" in text
    assert f"| recovery (MTTR) | >= {(600 + 120 + open_s) / 3:.0f} s | < 900 s | FAIL |" in text
    assert "at least: 1 incident(s) still open" in text
    tight = Sla(targets=SlaTargets(detection_seconds=200))
    assert (
        compute(
            DAY,
            END,
            **{**EMPTY, "incidents": inc, "repairs": repairs, "samples": st},
            sla_cfg=tight,
        ).status()["mttd_upper_mean_s"]
        == "fail"
    )


def test_an_incident_across_the_month_boundary_counts_once_in_its_start_month() -> None:
    nov = datetime(2026, 11, 1, tzinfo=UTC)
    oct_ = datetime(2026, 10, 1, tzinfo=UTC)
    inc = pd.DataFrame([_incident(7, "pool", -2, 1, 9, "auto:restore_connection_pool", at=nov)])
    alerts = pd.DataFrame(
        [
            {
                "id": 1,
                "incident_id": 7,
                "ts": t(1, nov),
                "kind": "opened",
                "category": "pool",
                "label": True,
            },
            {
                "id": 2,
                "incident_id": None,
                "ts": t(30, nov),
                "kind": "opened",
                "category": "api",
                "label": False,
            },
        ]
    )
    repairs = pd.DataFrame([{"incident_id": 7, "outcome": "repaired"}])
    kw = {**EMPTY, "incidents": inc, "alerts": alerts, "repairs": repairs}
    october = compute(oct_, nov, **kw)
    november = compute(nov, datetime(2026, 12, 1, tzinfo=UTC), **kw)
    assert (october.incidents, october.alerts, october.alerts_true) == (1, 1, 1)
    assert october.auto_recovery_attempted == 1 and october.auto_recovery_success == 1.0
    assert october.mttr_mean_s == 480 and october.mttr_open_incidents == 0
    # November: not the incident nor its alert, only the alert of no incident sent then.
    assert (november.incidents, november.alerts, november.alerts_false) == (0, 1, 1)
    assert november.auto_recovery_attempted == 0


def _alert(
    i: int, minutes: float, category: str = "pool", label: Any = None, incident: int | None = None
) -> dict[str, Any]:
    return {
        "id": i,
        "incident_id": incident,
        "ts": t(minutes),
        "kind": "opened",
        "category": category,
        "label": label,
    }


def test_unlabelled_alerts_outside_a_drill_are_unjudged_and_precision_is_not_measured() -> None:
    alerts = pd.DataFrame([_alert(1, 10), _alert(2, 20), {**_alert(3, 40), "kind": "resolved"}])
    f = compute(DAY, END, **{**EMPTY, "alerts": alerts})
    assert (f.alerts, f.alerts_true, f.alerts_false, f.alerts_unjudged) == (2, 0, 0, 2)
    assert f.alert_precision is None and f.false_positive_rate is None
    assert f.alert_judged_share == 0.0 and f.alert_judged_by == {"unjudged": 2}
    assert f.status()["alert_precision"] == "not measured"
    text = render("2026-10", "UTC", f, None, {})
    assert "| alert accuracy | - | >= 95.0% | not measured | - |" in text
    assert "| alerts judged | 0.0% | - | - | - |" in text


def test_precision_over_labelled_alerts_with_the_judged_share() -> None:
    alerts = pd.DataFrame(
        [
            _alert(1, 10),
            _alert(2, 20, label=False),
            _alert(3, 30, label=True),
            _alert(4, 35, label=True),
        ]
    )
    f = compute(DAY, END, **{**EMPTY, "alerts": alerts})
    assert (f.alerts, f.alerts_true, f.alerts_false, f.alerts_unjudged) == (4, 2, 1, 1)
    assert f.alert_precision == pytest.approx(2 / 3)
    assert f.false_positive_rate == pytest.approx(1 / 3)
    assert f.alert_judged_share == pytest.approx(3 / 4)
    assert f.alert_judged_by == {"label": 3, "unjudged": 1}


DRILL = pd.DataFrame(
    [
        {
            "drill": "d1",
            "fault": "quiet",
            "injected_at": t(0),
            "removed_at": t(8),
            "categories": [],
        },
        {
            "drill": "d1",
            "fault": "grant_revoke",
            "injected_at": t(9),
            "removed_at": t(15),
            "categories": ["tables"],
        },
        {
            "drill": "d1",
            "fault": "pool_pause",
            "injected_at": t(200),
            "removed_at": t(210),
            "categories": ["pool", "api"],
        },
        {
            "drill": "d0",
            "fault": "orphans",
            "injected_at": t(300),
            "removed_at": t(310),
            "categories": None,
        },
    ]
)


def test_drill_truth_judges_by_the_faults_category_and_quiet_windows() -> None:
    cases = {
        "quiet window": (_alert(1, 4, "api"), (False, "drill")),
        "matching fault": (_alert(2, 10, "tables"), (True, "drill")),
        "in the removal grace": (_alert(3, 15.5, "tables"), (True, "drill")),
        "another category's fault": (_alert(4, 12, "pool"), (False, "drill")),
        "second category of a fault": (_alert(5, 205, "api"), (True, "drill")),
        "an old row of unknown categories": (_alert(6, 305, "integrity"), (None, "unjudged")),
        "no drill running": (_alert(7, 900, "pool"), (None, "unjudged")),
        "a label beats the drill": (_alert(8, 10, "tables", label=False), (False, "label")),
    }
    for name, (alert, expected) in cases.items():
        row = next(pd.DataFrame([alert]).itertuples())
        assert judge(row, EMPTY["incidents"], DRILL) == expected, name
    alerts = pd.DataFrame([a for a, _ in cases.values()])
    f = compute(DAY, END, **{**EMPTY, "alerts": alerts, "drill": DRILL})
    assert (f.alerts_true, f.alerts_false, f.alerts_unjudged) == (3, 3, 2)
    assert f.alert_precision == pytest.approx(0.5) and f.alert_judged_share == pytest.approx(6 / 8)


def test_an_incident_closed_after_a_real_repair_judges_its_alert_true() -> None:
    inc = pd.DataFrame(
        [
            _incident(1, "pool", 9, 10, 12, "auto:restore_connection_pool"),
            _incident(2, "pool", 29, 30, 32, "auto:restore_connection_pool"),  # nothing to do
            _incident(3, "pool", 49, 50, 52),  # recovered by itself
        ]
    )
    repairs = pd.DataFrame(
        [
            {"incident_id": 1, "outcome": "repaired"},
            {"incident_id": 2, "outcome": "nothing_to_do"},
        ]
    )
    alerts = pd.DataFrame(
        [_alert(1, 10, incident=1), _alert(2, 30, incident=2), _alert(3, 50, incident=3)]
    )
    f = compute(DAY, END, **{**EMPTY, "alerts": alerts, "incidents": inc, "repairs": repairs})
    assert f.alert_judged_by == {"repaired": 1, "unjudged": 2}
    assert (f.alerts_true, f.alerts_false, f.alert_precision) == (1, 0, 1.0)
    assert f.alert_judged_share == pytest.approx(1 / 3)
    row = next(alerts.itertuples())
    assert judge(row, inc, None) == (None, "unjudged")  # no repairs given: no signal


def test_an_empty_month() -> None:
    f = compute(DAY, END, **EMPTY)
    assert f.availability is None and f.availability_lower_bound is None
    assert f.measured_share == 0.0 and f.unknown_minutes == f.period_minutes == 1440
    assert (
        f.incidents == 0
        and f.alert_precision is None
        and f.mttr_mean_s is None
        and f.coverage is None  # the monitor never ran: not measured, not 0%
    )
    assert f.status()["availability"] == "not measured"
    assert f.status()["coverage"] == "not measured"
    assert f.verdicts()["alert_precision"] is None  # no alert: nothing to judge, not a pass


def test_target_down_all_day() -> None:
    f = compute(DAY, END, **{**EMPTY, "samples": samples({m: "critical" for m in range(1440)})})
    assert f.availability == 0.0 and f.down_minutes == 1440


def test_performance_and_coverage_at_each_categorys_own_cadence() -> None:
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
    cheap = samples(
        {m: "ok" for m in range(1440)}, ("connection", "pool", "tables", "realtime", "api")
    )
    full = samples({m: "ok" for m in range(0, 1440, 5)}, ("integrity",), kind="full")
    f = compute(DAY, END, **{**EMPTY, "performance": perf, "samples": pd.concat([cheap, full])})
    assert f.mean_response_ms == pytest.approx(104.5) and f.error_rate == pytest.approx(1 / 200)
    assert f.coverage_by["auth"] == 0.0 and f.coverage_by["pool"] == 1.0
    assert f.coverage_by["integrity"] == 1.0  # every 5 minutes is its own cadence
    assert f.coverage == pytest.approx(6 / 7)
    # A category meant for the cheap probes but sampled only every 5 minutes is not covered
    # between its samples: fresh for 2 x 60 + 5 s of every 300 s.
    slow = samples({m: "ok" for m in range(0, 1440, 5)}, ("pool",), kind="full")
    f = compute(DAY, END, **{**EMPTY, "samples": slow})
    assert f.coverage_by["pool"] == pytest.approx(125 / 300)
    f = compute(DAY, END, **{**EMPTY, "samples": slow}, cadence_s={"pool": 300})
    assert f.coverage_by["pool"] == 1.0


def test_a_period_ending_mid_minute_counts_the_partial_minute() -> None:
    end = DAY + timedelta(minutes=10, seconds=30)  # e.g. a month still in progress
    f = compute(DAY, end, **{**EMPTY, "samples": samples({m: "ok" for m in range(11)})})
    assert (f.period_minutes, f.up_minutes, f.unknown_minutes) == pytest.approx((10.5, 10.5, 0))


def test_the_daily_rollup_and_the_month_share_one_definition_of_available() -> None:
    """A warning is degraded but up in both; critical is down; error is unknown in both."""
    from westep_ops.monitoring.rollups import daily_health_frame

    st = {
        m: "warning" if m < 30 else "critical" if m < 40 else "error" if m < 50 else "ok"
        for m in range(60)
    }
    frame = samples(st, ("connection",)).assign(day=DAY.date())
    daily = daily_health_frame(frame).set_index("category")
    assert daily.loc["connection", "availability"] == pytest.approx(40 / 50)
    f = compute(DAY, DAY + timedelta(hours=1), **{**EMPTY, "samples": frame})
    assert f.availability == pytest.approx(40 / 50)
    assert (f.up_minutes, f.down_minutes, f.unknown_minutes) == pytest.approx((40, 10, 10))


def test_a_manual_repair_is_no_automatic_recovery_nor_a_repaired_signal() -> None:
    """A person's run (trigger "manual ...") that fixed an incident counts neither as an
    automatic recovery attempt nor as the signal that judges its alert real."""
    inc = pd.DataFrame([_incident(1, "tables", 9, 10, 12, "manual (Dagster run 1a2b3c4d)")])
    repairs = pd.DataFrame(
        [{"incident_id": 1, "outcome": "repaired", "trigger": "manual (Dagster run 1a2b3c4d)"}]
    )
    alerts = pd.DataFrame([_alert(1, 10, category="tables", incident=1)])
    f = compute(DAY, END, **{**EMPTY, "alerts": alerts, "incidents": inc, "repairs": repairs})
    assert f.auto_recovery_attempted == 0 and f.auto_recovery_success is None
    assert f.alert_judged_by == {"unjudged": 1} and f.alert_precision is None


def test_the_whatif_and_the_month_judge_a_repaired_alert_by_one_rule() -> None:
    """The same incident: closed after a "repaired" attempt but not recovered by it (it
    recovered by itself) is unjudged in the monthly figures and in the what-if alike."""
    from westep_ops.lib.whatif import Setting, compare

    inc = pd.DataFrame([_incident(1, "pool", 10, 11, 20)])  # recovered_by None
    repairs = pd.DataFrame([{"incident_id": 1, "outcome": "repaired", "trigger": "incident #1"}])
    alerts = pd.DataFrame([_alert(1, 11, incident=1)])
    f = compute(DAY, END, **{**EMPTY, "alerts": alerts, "incidents": inc, "repairs": repairs})
    assert f.alert_judged_by == {"unjudged": 1}
    st = samples({m: ("critical" if 10 <= m < 20 else "ok") for m in range(40)}, ("pool",))
    frames = {
        "samples": st,
        "performance": EMPTY["performance"],
        "incidents": inc,
        "alerts": alerts,
        "repairs": repairs,
        "drill": pd.DataFrame(),
    }
    (current,) = compare(frames, [Setting("current")], t(40), ())
    assert current["alerts"] == 1 and current["unjudged"] == 1 and current["judged_true"] == 0


def test_a_killed_drills_open_fault_stops_judging() -> None:
    """A fault row never removed (the drill was killed) judges alerts only for a while."""
    from westep_ops.lib.sla import DRILL_OPEN_LIMIT

    drill = pd.DataFrame(
        [
            {
                "drill": "d1",
                "fault": "grant_revoke",
                "injected_at": t(0),
                "removed_at": pd.NaT,
                "categories": ["tables"],
            }
        ]
    )
    soon = next(pd.DataFrame([_alert(1, 5, category="tables")]).itertuples())
    assert judge(soon, None, drill) == (True, "drill")
    late_min = DRILL_OPEN_LIMIT.total_seconds() / 60 + 10
    late = next(pd.DataFrame([_alert(2, late_min, category="pool")]).itertuples())
    assert judge(late, None, drill) == (None, "unjudged")


def test_an_observe_only_warning_passes_for_the_detection_upper_bound() -> None:
    """The last passing sample before an incident is read as alerting reads it: a warning
    made only of observe-only findings (a deep pool queue) passes."""
    inc = pd.DataFrame([_incident(1, "pool", 10, 11, 20)])
    st = samples({m: "ok" for m in range(5)}, ("pool",))
    queue = samples({m: "warning" for m in range(5, 10)}, ("pool",))
    queue["findings"] = [["pool_queue"]] * len(queue)
    both = pd.concat([st, queue], ignore_index=True)
    seen = compute(DAY, END, **{**EMPTY, "incidents": inc, "samples": both})
    assert seen.mttd_upper_mean_s == pytest.approx((11 - 4) * 60)  # without observe-only
    read = compute(
        DAY, END, **{**EMPTY, "incidents": inc, "samples": both}, observe_only=("pool_queue",)
    )
    assert read.mttd_upper_mean_s == pytest.approx((11 - 9) * 60)


def test_incidents_a_drill_injected_are_said_so_in_the_report() -> None:
    drill = pd.DataFrame(
        [
            {
                "drill": "d1",
                "fault": "grant_revoke",
                "injected_at": t(100),
                "removed_at": t(110),
                "categories": ["tables"],
            }
        ]
    )
    inc = pd.DataFrame([_incident(1, "tables", 101, 102, 104), _incident(2, "pool", 300, 301, 303)])
    f = compute(DAY, END, **{**EMPTY, "incidents": inc, "drill": drill})
    assert (f.incidents, f.drill_incidents) == (2, 1)
    text = render("2026-10", "UTC", f, None, {})
    assert "1 of them injected by a fault drill (sandbox)" in text
