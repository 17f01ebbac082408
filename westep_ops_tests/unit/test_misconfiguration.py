"""A misconfigured monitor in the SLA figures and the daily rollup, on constructed frames."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from westep_ops.lib.sla import compute
from westep_ops_tests.unit.test_sla import EMPTY

# -- SLA: error and not_configured are unknown, not up and not down ---------------------
DAY = datetime(2026, 10, 1, tzinfo=UTC)


def _frames(rows: list[tuple[int, str, str]]) -> dict[str, pd.DataFrame]:
    samples = pd.DataFrame(
        [
            {"ts": DAY + timedelta(minutes=m), "kind": "cheap", "category": c, "status": s}
            for m, c, s in rows
        ]
    )
    return {**EMPTY, "samples": samples}  # the other frames empty, as in test_sla


def test_sla_counts_a_misconfigured_or_unconfigured_sample_as_unknown() -> None:
    rows: list[tuple[int, str, str]] = []
    for m in range(60):
        h1, h7 = "ok", "ok"
        if 10 <= m < 30:
            h1 = "error"  # the monitor was refused: 20 minutes nobody knows about
        elif 30 <= m < 35:
            h7 = "not_configured"  # does not apply: judged on H1 alone, up
        elif 35 <= m < 38:
            h1, h7 = "error", "critical"  # the API measurably failed: down
        elif 38 <= m < 40:
            h7 = "warning"  # degraded but up
        rows += [(m, "connection", h1), (m, "api", h7)]
    f = compute(DAY, DAY + timedelta(hours=1), **_frames(rows), interval_s=60)
    assert (f.period_minutes, f.up_minutes, f.down_minutes, f.unknown_minutes) == pytest.approx(
        (60, 37, 3, 20)
    )
    assert f.availability == pytest.approx(37 / 40)  # over the measured time
    assert f.measured_share == pytest.approx(40 / 60)


def test_sla_plain_postgresql_without_endpoints_is_judged_on_h1() -> None:
    # No endpoints: H7 is not_configured in every sample; H1 decides.
    rows: list[tuple[int, str, str]] = []
    for m in range(30):
        h1 = "critical" if m < 2 else "error" if m < 5 else "ok"
        rows += [(m, "connection", h1), (m, "api", "not_configured")]
    rows += [(30, "connection", "not_configured"), (30, "api", "not_configured")]
    f = compute(DAY, DAY + timedelta(minutes=31), **_frames(rows), interval_s=60)
    assert (f.period_minutes, f.up_minutes, f.down_minutes, f.unknown_minutes) == pytest.approx(
        (31, 25, 2, 4)
    )


def test_sla_an_up_sample_after_a_blind_one_is_up_from_its_own_time() -> None:
    rows = [(0, "connection", "error"), (0, "api", "ok")]
    rows += [(0, "connection", "ok"), (0, "api", "ok")]
    frames = _frames(rows)
    frames["samples"].loc[2:, "ts"] = DAY + timedelta(seconds=30)  # a second sweep 30 s later
    f = compute(DAY, DAY + timedelta(minutes=1), **frames, interval_s=60)
    assert (f.up_minutes, f.down_minutes, f.unknown_minutes) == pytest.approx((0.5, 0, 0.5))


def test_daily_rollup_availability_ignores_error_samples() -> None:
    from westep_ops.monitoring.rollups import daily_health_frame

    day = DAY.date()
    statuses = ["ok"] * 90 + ["critical"] * 10 + ["error"] * 50
    s = pd.DataFrame(
        [
            {
                "ts": DAY + timedelta(minutes=i),
                "day": day,
                "kind": "cheap",
                "category": "connection",
                "status": st,
            }
            for i, st in enumerate(statuses)
        ]
        + [
            {
                "ts": DAY + timedelta(minutes=i),
                "day": day,
                "kind": "cheap",
                "category": "api",
                "status": "error",
            }
            for i in range(5)
        ]
    )
    out = daily_health_frame(s).set_index("category")
    assert out.loc["connection", "samples"] == 150 and out.loc["connection", "error"] == 50
    assert out.loc["connection", "availability"] == pytest.approx(0.9)  # 90 of 100 measured
    assert out.loc["api", "availability"] is None  # nothing measured: unknown, not 0% or 100%
