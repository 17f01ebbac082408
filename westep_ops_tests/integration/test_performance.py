"""Performance monitor P1-P4 against the real sandbox."""

from __future__ import annotations

import json
import time

import psycopg

from westep_ops.config import load_config
from westep_ops.environment import Environment
from westep_ops.probes.health import run_health_check
from westep_ops.probes.performance import PerformanceMonitor
from westep_ops.probes.session import ProbeSession
from westep_ops.sandbox import faults
from westep_ops.sandbox.manager import Sandbox
from westep_ops_tests.helpers import ROOT, run_cli


def _sample(monitor: PerformanceMonitor, session: ProbeSession) -> None:
    monitor.sample(session, run_health_check(session))
    session.end_sweep()


def test_latest_metrics_and_summary(sandbox: Sandbox) -> None:
    monitor = PerformanceMonitor()
    assert monitor.latest() is None and monitor.summary() == "No performance samples yet."
    with ProbeSession(
        Environment.from_env(), load_config(ROOT / "westep-ops.json"), keep_open=True
    ) as s:
        _sample(monitor, s)
        # Real transactions between the samples, so throughput has something to count.
        with psycopg.connect(sandbox.state.env()["DIRECT_URL"], autocommit=True) as conn:
            for _ in range(200):
                conn.execute("SELECT 1")  # each is a transaction in pg_stat_database
        time.sleep(1.1)  # cumulative statistics are flushed about once a second
        _sample(monitor, s)
    latest = monitor.latest()
    assert latest is not None
    assert set(latest.api_ms) == {"api_health", "rest_steps"} and latest.http_failures == 0
    assert latest.error_rate == 0.0
    assert latest.tps is not None and latest.tps > 50 and latest.tps_source == "pg_stat_database"
    assert latest.monitor_rss_mb and latest.monitor_rss_mb > 10
    assert latest.postgres_pss_mb and latest.postgres_pss_mb > 1  # local sandbox: visible
    assert {t["table"] for t in latest.table_health} == {
        "public.profiles",
        "public.steps",
        "public.step_logs",
    }
    text = monitor.summary()
    assert "transactions/s (pg_stat_database)" in text and text.endswith("Status: OK.")


def test_bloat_shows_as_performance_degradation(sandbox: Sandbox) -> None:
    monitor = PerformanceMonitor()
    faults.inject(sandbox, "bloat", True)
    try:
        time.sleep(1.1)
        with ProbeSession(Environment.from_env(), load_config(ROOT / "westep-ops.json")) as s:
            _sample(monitor, s)
    finally:
        faults.inject(sandbox, "bloat", False)
    latest = monitor.latest()
    assert latest is not None and latest.status == "warning"
    logs = next(t for t in latest.table_health if t["table"] == "public.step_logs")
    assert logs["dead"] >= 5000 and logs["dead_ratio"] > 0.2
    assert any("public.step_logs" in p for p in latest.problems)
    assert "WARNING" in monitor.summary()


def test_api_failures_count_in_the_error_rate(sandbox: Sandbox) -> None:
    monitor = PerformanceMonitor()
    faults.inject(sandbox, "api_down", True)
    try:
        with ProbeSession(Environment.from_env(), load_config(ROOT / "westep-ops.json")) as s:
            _sample(monitor, s)
    finally:
        faults.inject(sandbox, "api_down", False)
    latest = monitor.latest()
    assert latest is not None and latest.http_requests == 2 and latest.http_failures == 1
    assert latest.error_rate == 0.5 and latest.status == "warning"


def test_performance_command(sandbox: Sandbox) -> None:
    res = run_cli("performance", "--samples", "2", "--interval", "0.2", "--json")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["error_rate"] == 0.0 and data["mean_api_ms"] > 0
    res = run_cli("performance", "--samples", "1")
    assert res.returncode == 0 and "Status: OK." in res.stdout
