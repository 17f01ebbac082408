"""Continuous monitoring against the real sandbox, the real ops PostgreSQL and a real
Dagster instance: hysteresis, the incident life cycle, the sensor, Slack, daily assets,
log rotation, and the standalone driver."""

from __future__ import annotations

import json
import os
import re
import tarfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from westep_ops.config import load_config
from westep_ops.environment import Environment
from westep_ops.monitoring import driver
from westep_ops.monitoring.engine import Monitor
from westep_ops.monitoring.history import HistoryStore
from westep_ops.monitoring.notify import Alert, Notifier
from westep_ops.sandbox import faults
from westep_ops.sandbox.manager import Sandbox
from westep_ops_tests.helpers import run_cli, write_config
from westep_ops_tests.integration.conftest import Webhook, clear_history
from westep_ops_tests.integration.dagster_idioms import sensor_tick


@pytest.fixture
def cfg(tmp_path: Path, sandbox: Sandbox) -> Path:
    """A clean history, and a short confirmation delay so tests need not wait."""
    clear_history()
    return write_config(tmp_path / "mon.json", monitoring__alerting__confirmDelaySeconds=0.2)


def monitor(cfg: Path, **kw: Any) -> Monitor:
    env = Environment.from_env()
    config = load_config(cfg)
    return Monitor(env, config, HistoryStore(env.storage_url), Notifier(env, config.timezone), **kw)


def rows(query: str, *params: Any) -> list[tuple]:
    with psycopg.connect(os.environ["WESTEP_OPS_STORAGE_URL"]) as conn:
        return conn.execute(query, params).fetchall()


def test_healthy_sweep_stores_samples_and_opens_nothing(sandbox: Sandbox, cfg: Path) -> None:
    m = monitor(cfg)
    try:
        r = m.tick(force="full")
    finally:
        m.close()
    assert r.ran == "full" and r.opened == [] and r.alerts == [] and r.repairs == []
    stored = dict(rows("SELECT category, status FROM westep_ops.samples"))
    assert stored == {
        c: "ok"
        for c in (
            "connection",
            "pool",
            "tables",
            "integrity",
            "realtime",
            "auth",
            "api",
            "performance",
        )
    }
    assert rows("SELECT count(*) FROM westep_ops.performance_samples") == [(1,)]


def test_a_single_blip_opens_nothing(sandbox: Sandbox, cfg: Path) -> None:
    faults.inject(sandbox, "grant_revoke", True)
    # The fault goes away before the confirmation re-probe: a blip.
    m = monitor(cfg, sleep=lambda _s: faults.inject(sandbox, "grant_revoke", False))
    try:
        r = m.tick(force="full")
    finally:
        m.close()
        faults.inject(sandbox, "grant_revoke", False)
    assert r.opened == [] and r.alerts == []
    kinds = rows(
        "SELECT kind, status FROM westep_ops.samples WHERE category = 'tables' ORDER BY id"
    )
    assert kinds == [("full", "critical"), ("confirmation", "ok")]


def test_incident_is_confirmed_repaired_verified_and_closed(sandbox: Sandbox, cfg: Path) -> None:
    faults.inject(sandbox, "pool_pause", True)
    m = monitor(cfg)
    try:
        r = m.tick(force="full")
        assert len(r.opened) == 1, r.alerts
        (iid,) = r.opened
        assert [(a.kind, a.category, a.severity) for a in r.alerts] == [
            ("opened", "pool", "critical")
        ]
        assert [(q.category, q.action.value) for q in r.repairs] == [
            ("pool", "restore_connection_pool")
        ]
        # Symptoms (API failing, H1's pooled check) open nothing of their own.
        assert rows("SELECT count(*) FROM westep_ops.incidents") == [(1,)]
        driver.run_repairs(m, r)  # what the standalone driver does: repair, then re-probe
        again = m.tick(force="cheap")
        assert again.closed == [iid]
        assert [a.kind for a in again.alerts] == ["resolved"]
    finally:
        m.close()
        faults.inject(sandbox, "pool_pause", False)
    ((started, detected, resolved, closed, by),) = rows(
        "SELECT started_at, detected_at, resolved_at, closed_at, recovered_by FROM westep_ops.incidents"
    )
    assert started <= detected <= resolved <= closed and by == "auto:restore_connection_pool"
    ((kind,),) = rows(
        "SELECT kind FROM westep_ops.samples WHERE category = 'pool' AND status = 'ok' ORDER BY id LIMIT 1"
    )
    assert (
        kind == "verification"
    )  # the recovery time is measured from the re-probe after the repair
    log = next(Path(os.environ["WESTEP_OPS_LOG_DIR"]).glob("monitoring-alerts-*.log")).read_text()
    assert "CRITICAL [pool] incident #" in log and "opened" in log and "resolved" in log
    events = [
        json.loads(line)
        for line in next(Path(os.environ["WESTEP_OPS_LOG_DIR"]).glob("monitoring-events-*.json"))
        .read_text()
        .splitlines()
    ]
    assert {e.get("kind") for e in events if e["type"] == "alert"} >= {"opened", "resolved"}


def test_failed_repair_escalates(sandbox: Sandbox, cfg: Path) -> None:
    faults.inject(sandbox, "api_down", True)
    m = monitor(cfg)
    try:
        r = m.tick(force="full")
    finally:
        m.close()
        faults.inject(sandbox, "api_down", False)
    assert [a.kind for a in r.alerts] == ["opened", "escalated"]
    assert "level 2: the app does not answer" in r.alerts[1].message and r.repairs == []
    assert rows("SELECT escalation FROM westep_ops.incidents") == [(2,)]


def _age_samples() -> None:
    """Make the next sweep due, as if the interval had passed."""
    with psycopg.connect(os.environ["WESTEP_OPS_STORAGE_URL"], autocommit=True) as conn:
        conn.execute("UPDATE westep_ops.samples SET ts = ts - interval '10 minutes'")


def test_sensor_requests_one_repair_run_per_incident(sandbox: Sandbox, cfg: Path) -> None:
    from dagster import DagsterInstance

    from westep_ops.definitions import defs

    os.environ["WESTEP_OPS_CONFIG"], saved = str(cfg), os.environ["WESTEP_OPS_CONFIG"]
    try:
        with DagsterInstance.ephemeral() as instance:

            def tick() -> Any:
                return sensor_tick(instance)

            healthy = tick()
            assert (
                healthy.run_requests == [] and len(healthy.asset_events) == 8
            )  # H1-H7 + probe_samples
            assert all(e.passed for e in healthy.asset_events if hasattr(e, "passed"))
            stored = rows("SELECT count(*) FROM westep_ops.samples")[0][0]
            assert stored == 8  # H1-H7 + performance, no run launched
            # the 8 samples and the performance sample's row
            assert healthy.skip_message == (
                "read 9 samples of 1 target(s), requested 0 repair run(s)"
            )
            # a worker tick before the interval stores nothing: the sensor says so
            assert re.fullmatch(
                r"idle: no new samples since \d\d:\d\d:\d\d, requested 0 repair run\(s\)",
                tick().skip_message,
            )

            faults.inject(sandbox, "grant_revoke", True)
            _age_samples()
            opened = tick()
            (request,) = [r for r in opened.run_requests if r.job_name == "repair_job"]
            (refresh,) = [r for r in opened.run_requests if r.job_name == "daily_monitoring_job"]
            assert refresh.tags["westep-ops/in-progress"] == "true"  # today, with the incident
            ((iid,),) = rows("SELECT id FROM westep_ops.incidents WHERE closed_at IS NULL")
            # incident, action, attempts already on record: a refusal re-requests under a new key
            assert request.run_key == f"incident-{iid}-fix_table_permissions-0"
            # the per-target concurrency tag's value is the target's name
            assert request.tags["westep-ops/repair-target"] == "default"
            assert request.run_config["ops"]["run_repair_op"]["config"]["target"] == "default"
            assert request.tags["westep-ops/action"] == "fix_table_permissions"
            failed = [
                (e.check_name, e.metadata["probe"].value)
                for e in opened.asset_events
                if not getattr(e, "passed", True)
            ]
            assert failed == [("h3_tables", "full"), ("h3_tables", "confirmation")]
            # confirmed by an immediate re-probe before the incident opened
            assert rows(
                "SELECT kind FROM westep_ops.samples WHERE category = 'tables' AND status = 'critical'"
                " ORDER BY id"
            ) == [("full",), ("confirmation",)]

            _age_samples()
            # Still failing and not repaired yet: requested again from the state, under the
            # same run key, so Dagster launches it once (a lost tick or preview loses nothing).
            assert [r.run_key for r in tick().run_requests] == [request.run_key]

            # The repair run the sensor requested, with its config and the daemon's tag.
            result = defs.get_job_def("repair_job").execute_in_process(
                instance=instance,
                run_config=request.run_config,
                tags={**request.tags, "dagster/sensor_name": "monitoring_sensor"},
            )
            assert result.success
            run = instance.get_run_by_id(result.run_id)
            assert run is not None and run.tags["westep-ops/outcome"] == "repaired"
            (out,) = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
            meta = out.event_specific_data.metadata
            assert meta["outcome"].value == "repaired" and meta["changed"].value >= 1
            assert meta["trigger"].value == f"incident #{iid}"
            _age_samples()
            tick()
        assert rows("SELECT closed_at IS NOT NULL, recovered_by FROM westep_ops.incidents") == [
            (True, "auto:fix_table_permissions")
        ]
        kinds = [k for (k,) in rows("SELECT kind FROM westep_ops.alerts ORDER BY id")]
        assert kinds == ["opened", "resolved"]
    finally:
        os.environ["WESTEP_OPS_CONFIG"] = saved
        faults.inject(sandbox, "grant_revoke", False)


@pytest.fixture
def hook() -> Iterator[Any]:
    made: list[Webhook] = []

    def make(status: int = 200) -> Webhook:
        made.append(Webhook(status))
        return made[-1]

    yield make
    for h in made:
        h.close()


def test_slack_receives_alerts_without_secrets(sandbox: Sandbox, cfg: Path, hook: Any) -> None:
    h = hook()
    os.environ["WEBHOOK_URL"], os.environ["ALERT_CHANNEL"] = h.url, "#westep-alerts"
    faults.inject(sandbox, "publication_drop", True)
    try:
        m = monitor(cfg)
        try:
            r = m.tick(force="full")
        finally:
            m.close()
    finally:
        del os.environ["WEBHOOK_URL"], os.environ["ALERT_CHANNEL"]
        faults.inject(sandbox, "publication_drop", False)
    assert [a.kind for a in r.alerts] == ["opened"]
    (payload,) = h.payloads
    assert payload["channel"] == "#westep-alerts" and "`realtime` opened" in payload["text"]
    assert "publication supabase_realtime does not exist" in payload["text"]
    blob = json.dumps(payload)
    for secret in (
        *sandbox.state.passwords.values(),
        sandbox.state.service_role_key,
        "secret-token-xyz",
    ):
        assert secret not in blob
    assert rows("SELECT channels FROM westep_ops.alerts") == [(["log", "events", "slack"],)]


def test_a_failing_webhook_never_stops_monitoring(
    sandbox: Sandbox, cfg: Path, hook: Any, capfd: Any
) -> None:
    h = hook(status=500)
    env = Environment.from_env({**os.environ, "WEBHOOK_URL": h.url})
    n = Notifier(env, "Asia/Tokyo")
    channels = n.alert(Alert(datetime.now(UTC), "opened", "critical", "pool", "test alert", 1, 1))
    assert (
        channels == ["log", "events"] and len(h.payloads) == 3
    )  # retried with backoff, then given up
    err = capfd.readouterr().err
    assert (
        "slack webhook failed (HTTP 500 after 3 attempts)" in err and "secret-token-xyz" not in err
    )


def _known_day(store_url: str) -> None:
    """Two incidents and a day of samples on 2026-03-10 (Tokyo)."""
    day = datetime(2026, 3, 10, tzinfo=UTC) - timedelta(hours=9)  # 00:00 in Tokyo
    with psycopg.connect(store_url, autocommit=True) as conn:
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO westep_ops.samples (target, ts, kind, category, status, summary)"
                " VALUES ('default', %s, 'cheap', %s, %s, 'x')",
                [
                    (
                        day + timedelta(minutes=i),
                        cat,
                        "critical" if cat == "pool" and 600 <= i < 610 else "ok",
                    )
                    for i in range(1440)
                    for cat in ("connection", "pool")
                ],
            )
            cur.executemany(
                "INSERT INTO westep_ops.performance_samples (target, ts, mean_api_ms, http_requests,"
                " http_failures, tps, status) VALUES ('default', %s, %s, 2, 0, 10, 'ok')",
                [(day + timedelta(minutes=i), 100.0 + i % 60) for i in range(0, 1440, 5)],
            )
        conn.execute(
            "INSERT INTO westep_ops.incidents (target, category, severity, started_at, detected_at,"
            " resolved_at, closed_at, recovered_by, summary) VALUES"
            " ('default', 'pool', 'critical', %s, %s, %s, %s, 'auto:restore_connection_pool',"
            " 'paused'),"
            " ('default', 'integrity', 'warning', %s, %s, %s, %s, NULL, 'orphans')",
            (
                day + timedelta(minutes=600),
                day + timedelta(minutes=600, seconds=40),
                day + timedelta(minutes=610),
                day + timedelta(minutes=612),
                day + timedelta(hours=20),
                day + timedelta(hours=20, seconds=70),
                day + timedelta(hours=21),
                day + timedelta(hours=21, minutes=2),
            ),
        )


def test_daily_assets_for_a_day_with_known_samples(sandbox: Sandbox, cfg: Path) -> None:
    from dagster import DagsterInstance, materialize

    from westep_ops.defs.monitoring.assets import (
        diagnosis_report,
        health_samples,
        incidents,
        performance_metrics,
    )
    from westep_ops.resources import default_resources

    _known_day(os.environ["WESTEP_OPS_STORAGE_URL"])
    with DagsterInstance.ephemeral() as instance:
        result = materialize(
            [health_samples, performance_metrics, incidents, diagnosis_report],
            resources=default_resources(),
            instance=instance,
            partition_key="2026-03-10|default",
        )
    assert result.success
    materializations = [
        e.event_specific_data.materialization for e in result.get_asset_materialization_events()
    ]
    meta = {m.asset_key.to_user_string(): m.metadata for m in materializations}
    assert meta["incidents"]["incidents"].value == 2
    assert meta["incidents"]["mean_detect_s"].value == pytest.approx(55.0)  # (40 + 70) / 2
    assert meta["incidents"]["mean_recover_s"].value == pytest.approx((560 + 3530) / 2)
    assert meta["health_samples"]["samples"].value == 2880
    daily = dict(
        rows("SELECT category, availability FROM westep_ops.daily_health WHERE day = '2026-03-10'")
    )
    assert daily == {"connection": 1.0, "pool": pytest.approx(1 - 10 / 1440)}
    assert rows("SELECT count(*) FROM westep_ops.hourly_performance") == [(24,)]
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks["connection_available"] is True and checks["pool_available"] is False
    report = Path(os.environ["WESTEP_OPS_LOG_DIR"]) / "daily-report-2026-03-10.md"
    assert "**Verdict: 2 incident(s); below 99.9%: pool**" in report.read_text()
    # Re-running the day gives the same rows (a backfill recomputes, it does not add).
    with DagsterInstance.ephemeral() as instance:
        materialize(
            [health_samples],
            resources=default_resources(),
            instance=instance,
            partition_key="2026-03-10|default",
        )
    assert rows("SELECT count(*) FROM westep_ops.daily_health WHERE day = '2026-03-10'") == [(2,)]


def test_standalone_monitor_once_exits_with_the_health_code(sandbox: Sandbox, cfg: Path) -> None:
    res = run_cli("--config", str(cfg), "monitor", "--once", "--no-recovery")
    assert res.returncode == 0 and "full sweep" in res.stdout and "all ok" in res.stdout
    faults.inject(sandbox, "grant_revoke", True)
    try:
        res = run_cli("--config", str(cfg), "monitor", "--once", "--no-recovery")
    finally:
        faults.inject(sandbox, "grant_revoke", False)
    assert res.returncode == 2 and "ALERT" in res.stdout and "tables=critical" in res.stdout
    assert "automatic recovery is off" in res.stdout


def test_alerts_can_be_acknowledged_and_labelled(sandbox: Sandbox, cfg: Path) -> None:
    faults.inject(sandbox, "grant_revoke", True)
    try:
        m = monitor(cfg, recovery=False)
        try:
            r = m.tick(force="full")
        finally:
            m.close()
    finally:
        faults.inject(sandbox, "grant_revoke", False)
    alert_id = r.alerts[0].alert_id
    assert run_cli("alerts", "ack", str(alert_id), "--by", "oncall").returncode == 0
    assert run_cli("alerts", "label", str(alert_id), "--true").returncode == 0
    listing = json.loads(run_cli("alerts", "list", "--json").stdout)
    mine = next(a for a in listing if a["id"] == alert_id)
    assert mine["acknowledged_by"] == "oncall" and mine["label"] is True
    bad = run_cli("alerts", "ack", "999999")
    assert bad.returncode == 2 and bad.stderr.strip() == "error: no alert 999999"


def test_routines_run_on_the_sandbox(sandbox: Sandbox, cfg: Path) -> None:
    from dagster import DagsterInstance

    from westep_ops.definitions import defs

    logs = Path(os.environ["WESTEP_OPS_LOG_DIR"])
    (logs / "monitoring-alerts-2026-01-05.log").write_text("old alert\n")
    with DagsterInstance.ephemeral() as instance:
        weekly = defs.get_job_def("weekly_maintenance_job").execute_in_process(instance=instance)
        summary = defs.get_job_def("daily_summary_job").execute_in_process(instance=instance)
        noon = defs.get_job_def("performance_diagnosis_job").execute_in_process(instance=instance)
    assert weekly.success and summary.success and noon.success
    assert not (logs / "monitoring-alerts-2026-01-05.log").exists()
    archives = list(logs.glob("logs-*.tar.gz"))
    assert archives and any(
        "monitoring-alerts-2026-01-05.log" in tarfile.open(a).getnames() for a in archives
    )
    today = sorted(logs.glob("monitoring-alerts-*.log"))[-1].read_text()
    assert "[daily]" in today and "summary" in today and "critical alerts" in today
    assert sorted(logs.glob("diagnosis-report-*.md"))


def test_checks_that_cannot_run_because_the_database_is_down_are_no_monitor_degraded(
    sandbox: Sandbox, cfg: Path
) -> None:
    """pg_down: H3-H6 cannot run, but that is the outage's symptom, not the monitor's."""
    m = monitor(cfg)
    try:
        m.tick(force="full")
        faults.inject(sandbox, "pg_down", True)
        try:
            r = m.tick(force="full")
        finally:
            faults.inject(sandbox, "pg_down", False)
    finally:
        m.close()
    alerts = [(a.category, a.kind) for a in r.alerts]
    assert ("connection", "opened") in alerts, alerts
    assert all(category != "monitor" for category, _kind in alerts), alerts
