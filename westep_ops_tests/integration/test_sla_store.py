"""The monthly report's loader and the hourly rollup against the real ops store (sandbox)."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import psycopg

from westep_ops.config import Config
from westep_ops.monitoring import sla as monthly
from westep_ops.monitoring.history import HistoryStore
from westep_ops.monitoring.rollups import HOURLY_SQL
from westep_ops.sandbox.manager import Sandbox
from westep_ops_tests.integration.conftest import clear_history, clear_repair_audit

TOKYO = ZoneInfo("Asia/Tokyo")


def _url() -> str:
    """The ops store's URL, its schema created (as the monitor does on connecting)."""
    url = os.environ["WESTEP_OPS_STORAGE_URL"]
    store = HistoryStore(url)
    try:
        with store.tx():
            pass
    finally:
        store.close()
    return url


def test_an_incident_across_midnight_of_the_1st_is_loaded_once_with_its_late_alert(
    sandbox: Sandbox,
) -> None:
    clear_history()
    nov, dec = datetime(2026, 11, 1, tzinfo=TOKYO), datetime(2026, 12, 1, tzinfo=TOKYO)
    started = dec - timedelta(minutes=2)  # 23:58 on 30 November, local
    with psycopg.connect(_url(), autocommit=True) as conn:
        (iid,) = conn.execute(
            "INSERT INTO westep_ops.incidents (target, category, severity, started_at,"
            " detected_at, resolved_at, closed_at, recovered_by, summary)"
            " VALUES ('default', 'pool', 'critical', %s, %s, %s, %s, 'auto:restore_connection_pool', 'x')"
            " RETURNING id",
            (
                started,
                dec + timedelta(minutes=1),
                dec + timedelta(minutes=9),
                dec + timedelta(minutes=11),
            ),
        ).fetchone()
        conn.execute(
            "INSERT INTO westep_ops.alerts (target, incident_id, ts, kind, severity, category,"
            " message) VALUES ('default', %s, %s, 'opened', 'critical', 'pool', 'pool paused'),"
            " ('default', NULL, %s, 'opened', 'critical', 'api', 'no incident')",
            (iid, dec + timedelta(minutes=1), dec + timedelta(minutes=30)),
        )
        conn.execute(
            "INSERT INTO westep_ops.repair_attempts (target, action, trigger, database,"
            " started_at, finished_at, dry_run, outcome, summary, incident_id) VALUES"
            " ('default', 'restore_connection_pool', 'auto', 'pool', %s, %s, false, 'repaired', 'resumed', %s)",
            (dec + timedelta(minutes=2), dec + timedelta(minutes=3), iid),
        )
        conn.execute(
            "INSERT INTO westep_ops.samples (target, ts, kind, category, status, summary)"
            " VALUES ('default', %s, 'cheap', 'pool', 'ok', 'ok')",  # the last passing one, 4 min before
            (started - timedelta(minutes=4),),
        )
    store = HistoryStore(_url())
    config = Config()
    try:
        margin = monthly.margin_s(config)
        november = monthly.load(store, nov, dec, target="default", margin_s=margin)
        december = monthly.load(
            store, dec, datetime(2027, 1, 1, tzinfo=TOKYO), target="default", margin_s=margin
        )
    finally:
        store.close()
    assert list(november["incidents"]["id"]) == [iid]
    assert list(november["alerts"]["incident_id"]) == [iid]  # sent on the 1st, counted here
    assert list(november["repairs"]["incident_id"]) == [iid]
    assert len(november["samples"]) == 1  # the last passing sample: bounds the detection
    assert december["incidents"].empty and december["repairs"].empty
    assert list(december["alerts"]["category"]) == ["api"]  # the alert of no incident
    f = monthly.figures(november, nov, dec, config)
    assert (f.incidents, f.alerts, f.auto_recovery_success) == (1, 1, 1.0)
    assert (f.mttd_lower_mean_s, f.mttd_upper_mean_s) == (180, 420)
    assert f.alert_judged_by == {"repaired": 1} and f.alert_precision == 1.0
    g = monthly.figures(december, dec, datetime(2027, 1, 1, tzinfo=TOKYO), config)
    assert (g.incidents, g.alerts, g.alerts_unjudged) == (0, 1, 1)
    clear_history()
    clear_repair_audit()


def test_hourly_rollup_in_a_half_hour_zone_gives_each_local_day_its_own_hours(
    sandbox: Sandbox,
) -> None:
    """Asia/Kolkata (+05:30): a UTC hour straddles local midnight; local hours do not."""
    clear_history()
    kolkata = ZoneInfo("Asia/Kolkata")
    day1 = datetime(2026, 12, 1, tzinfo=kolkata)
    day2, day3 = day1 + timedelta(days=1), day1 + timedelta(days=2)
    with psycopg.connect(_url(), autocommit=True) as conn:
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO westep_ops.performance_samples (target, ts, mean_api_ms,"
                " http_requests, http_failures, tps, status)"
                " VALUES ('default', %s, 100, 2, 0, 10, 'ok')",
                [(day1 + timedelta(minutes=m),) for m in range(0, 2 * 1440, 5)],
            )
        hours = []
        for a, b in ((day1, day2), (day2, day3)):
            rows = conn.execute(HOURLY_SQL, ("Asia/Kolkata", "default", a, b)).fetchall()
            hours.append({r[0] for r in rows})
    first, second = hours
    assert len(first) == len(second) == 24 and not first & second
    assert min(first) == day1 and max(first) == day2 - timedelta(hours=1)
    assert min(second).astimezone(UTC).strftime("%H:%M") == "18:30"  # local midnight
    clear_history()


def test_two_refreshes_of_the_same_day_at_once_both_succeed(sandbox: Sandbox) -> None:
    """Today's hourly refresh and an incident's refresh may run at once: each DELETEs and
    INSERTs the same day's rollup keys, so without the rollup lock one INSERT failed."""
    from concurrent.futures import ThreadPoolExecutor

    from westep_ops.monitoring import rollups

    clear_history()
    url = _url()
    day = datetime(2026, 11, 3, tzinfo=TOKYO)
    with psycopg.connect(url, autocommit=True) as conn:
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO westep_ops.samples (target, ts, kind, category, status, summary)"
                " VALUES ('default', %s, 'cheap', %s, 'ok', 'ok')",
                [
                    (day + timedelta(minutes=m), c)
                    for m in range(0, 1440, 10)
                    for c in ("connection", "api", "pool")
                ],
            )

    def refresh(_i: int) -> int:
        store = HistoryStore(url)
        try:
            return len(
                rollups.roll_up_health(
                    store, day, day + timedelta(days=1), "Asia/Tokyo", 125, target="default"
                ).frame
            )
        finally:
            store.close()

    with ThreadPoolExecutor(max_workers=4) as pool:
        assert list(pool.map(refresh, range(8))) == [3] * 8
    with psycopg.connect(url) as conn:
        (n,) = conn.execute(
            "SELECT count(*) FROM westep_ops.daily_health WHERE day = %s", (day.date(),)
        ).fetchone()
    assert n == 3
    clear_history()
