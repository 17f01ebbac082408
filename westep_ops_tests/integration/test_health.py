"""Health checks H1-H7 against the real sandbox: healthy, each fault, bad credentials."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest

from westep_ops.config import Category, load_config
from westep_ops.environment import Environment
from westep_ops.probes.base import Status
from westep_ops.probes.health import run_health_check
from westep_ops.probes.session import ProbeSession
from westep_ops.sandbox import faults
from westep_ops.sandbox.manager import Sandbox
from westep_ops_tests.helpers import HEALTH_CHECKS, ROOT, run_cli
from westep_ops_tests.integration.conftest import admin_rows

ALL = [c.value for c in Category]


@pytest.fixture(scope="module")
def health_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped sandbox config with 1 s idle-in-transaction and pool-wait limits (so
    tests need not wait)."""
    data = json.loads((ROOT / "westep-ops.json").read_text())
    data["monitoring"]["thresholds"]["idleInTransactionSeconds"] = 1
    data["monitoring"]["thresholds"]["poolMaxWaitSeconds"] = 1
    p = tmp_path_factory.mktemp("cfg") / "health.json"
    p.write_text(json.dumps(data))
    return p


def health(
    config: Path, *args: str, env: dict[str, str] | None = None
) -> tuple[int, dict[str, Any], str]:
    res = run_cli("--config", str(config), "health-check", "--json", *args, env=env)
    assert "Traceback" not in res.stderr, res.stderr
    return res.returncode, json.loads(res.stdout), res.stderr


def by_category(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["category"]: c for c in report["checks"]}


def test_healthy_sandbox_is_all_ok(sandbox: Sandbox, health_config: Path) -> None:
    code, report, _ = health(health_config)
    checks = by_category(report)
    assert code == 0, report
    assert list(checks) == ALL
    assert {c: v["status"] for c, v in checks.items()} == {c: "ok" for c in ALL}
    assert checks["pool"]["source"] == "pgbouncer-admin"
    assert checks["pool"]["values"]["pool_size"] == 10
    assert checks["tables"]["values"]["readable"] == 8
    assert checks["integrity"]["values"]["violations"] == {
        "step_logs_orphans": 0,
        "steps_title_not_null": 0,
        "profiles_username_unique": 0,
    }
    assert checks["realtime"]["values"]["publication_tables"] == ["public.profiles", "public.steps"]
    assert checks["realtime"]["values"]["notify_ms"] > 0
    assert [e["status"] for e in checks["api"]["values"]["endpoints"]] == [200, 200]


# fault -> (root category, its status, finding, {symptom category: status})
EXPECTED: dict[str, tuple[str, set[str], str, dict[str, set[str]]]] = {
    "pool_pause": (
        "pool",
        {"critical"},
        "pool_paused",
        {"connection": {"critical"}, "api": {"critical"}},
    ),
    "pool_exhaust": ("pool", {"critical"}, "pool_exhausted", {"api": {"critical"}}),
    "grant_revoke": ("tables", {"critical"}, "grant_missing", {}),
    "orphans": ("integrity", {"warning"}, "integrity:step_logs_orphans", {}),
    "idle_in_tx": ("pool", {"warning"}, "idle_in_transaction", {}),
    "pg_down": (
        "connection",
        {"critical"},
        "direct_connection_failed",
        {c: {"error", "critical"} for c in ("tables", "integrity", "realtime", "auth", "api")},
    ),
    "bouncer_down": (
        "pool",
        {"critical"},
        "pgbouncer_down",
        {"connection": {"critical"}, "api": {"critical"}},
    ),
    "api_down": ("api", {"critical"}, "endpoint_down", {}),
    "publication_drop": ("realtime", {"critical"}, "publication_missing", {}),
}


@pytest.mark.parametrize("fault", list(EXPECTED))
def test_fault_turns_the_right_category(sandbox: Sandbox, health_config: Path, fault: str) -> None:
    root, root_status, finding, symptoms = EXPECTED[fault]
    faults.inject(sandbox, fault, True, 120)
    try:
        if fault in ("idle_in_tx", "pool_exhaust"):
            time.sleep(1.2)  # older than the 1 s limits of the test config
        code, report, _ = health(health_config)
    finally:
        faults.inject(sandbox, fault, False)
    checks = by_category(report)
    assert checks[root]["status"] in root_status, checks[root]
    assert finding in checks[root]["findings"]
    for cat, check in checks.items():
        if cat == root:
            continue
        if cat in symptoms:
            assert check["status"] in symptoms[cat], (cat, check)
            assert check["suspected_cause"] == root, (cat, check)
        else:
            assert check["status"] == "ok", (cat, check)
    assert code == (2 if "critical" in root_status else 1)
    # And the sandbox is healthy again.
    code, report, _ = health(health_config)
    assert code == 0, by_category(report)


def test_pool_exhaustion_is_reported_within_the_probe_timeout(
    sandbox: Sandbox, health_config: Path
) -> None:
    cfg = load_config(health_config)
    faults.inject(sandbox, "pool_exhaust", True, 60)
    try:
        time.sleep(1.2)  # every server pinned longer than the 1 s limit of the test config
        with ProbeSession(Environment.from_env(), cfg) as session:
            t0 = time.perf_counter()
            (pool,) = run_health_check(session, [Category.pool])
            elapsed_ms = (time.perf_counter() - t0) * 1000
    finally:
        faults.inject(sandbox, "pool_exhaust", False)
    assert pool.status is Status.critical
    assert "pool authenticator cannot serve: all 10 servers busy for over 1 s" in pool.summary
    assert "pool_exhausted" in pool.findings
    # Read from the admin console: it never waits for a server connection, so the verdict
    # comes before the probe's own timeout would have fired.
    assert elapsed_ms < cfg.monitoring.timeouts.connect


def test_category_filter(sandbox: Sandbox, health_config: Path) -> None:
    code, report, _ = health(health_config, "--category", "tables", "--category", "integrity")
    assert code == 0 and [c["category"] for c in report["checks"]] == ["tables", "integrity"]


def _secrets_absent(text: str, sandbox: Sandbox) -> None:
    for pw in sandbox.state.passwords.values():
        assert pw not in text


def test_wrong_password_unreachable_and_wrong_admin_password(
    sandbox: Sandbox, health_config: Path
) -> None:
    s = sandbox.state
    pw = s.passwords["westep_monitor"]
    bad_pw = {"DIRECT_URL": s.url("westep_monitor").replace(pw, "not-the-password")}
    code, report, err = health(health_config, env=bad_pw)
    checks = by_category(report)
    assert code == 3  # the server answered and refused the monitor: not an outage (issue 9)
    assert (
        checks["connection"]["values"]["direct_error"]
        == "authentication failed (wrong user or password)"
    )
    assert (
        checks["tables"]["status"] == "error"
        and checks["tables"]["suspected_cause"] == "connection"
    )
    _secrets_absent(json.dumps(report) + err, sandbox)

    unreachable = {"DIRECT_URL": f"postgresql://westep_monitor:{pw}@127.0.0.1:1/postgres"}
    code, report, err = health(health_config, "--category", "connection", env=unreachable)
    assert code == 2
    assert "connection refused" in by_category(report)["connection"]["summary"]
    _secrets_absent(json.dumps(report) + err, sandbox)

    admin = s.env()["PGBOUNCER_ADMIN_URL"].replace(s.passwords["pgbouncer_stats"], "wrong")
    code, report, err = health(
        health_config, "--category", "pool", env={"PGBOUNCER_ADMIN_URL": admin}
    )
    pool = by_category(report)["pool"]
    assert code == 3 and pool["status"] == "error"
    assert "authentication failed" in pool["summary"]
    _secrets_absent(json.dumps(report) + err, sandbox)

    # The human table says the same in one screen, without a traceback or password.
    res = run_cli("--config", str(health_config), "health-check", env=bad_pw)
    assert res.returncode == 3 and "H1 connection" in res.stdout and "ERROR" in res.stdout
    assert "error: monitoring is misconfigured: direct: wrong password" in res.stderr
    _secrets_absent(res.stdout + res.stderr, sandbox)


def test_bad_config_means_could_not_run(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"monitoring": {"thresholds": {"responseTime": "fast"}}}')
    res = run_cli("--config", str(bad), "health-check")
    assert res.returncode == 3
    assert (
        res.stderr.startswith("error: config error") and len(res.stderr.strip().splitlines()) == 1
    )


def test_debug_prints_queries_without_secrets(sandbox: Sandbox, health_config: Path) -> None:
    res = run_cli(
        "--config",
        str(health_config),
        "health-check",
        "--category",
        "tables",
        env={"DEBUG": "true"},
    )
    assert res.returncode == 0
    debug = [line for line in res.stderr.splitlines() if line.startswith("[debug]")]
    assert any("<connect>" in line for line in debug)
    assert any("_privilege(" in line and " ms " in line for line in debug)
    _secrets_absent(res.stderr, sandbox)


def test_monitor_holds_few_connections_and_releases_them(
    sandbox: Sandbox, health_config: Path
) -> None:
    cfg = load_config(health_config)
    # Start from an empty pool: server connections pgbouncer keeps from earlier tests'
    # sweeps are the pooler's, not this monitor's, and would count in the peak below.
    s = sandbox.state
    with psycopg.connect(
        s.url("pgbouncer_admin", s.bouncer_port, "pgbouncer"),
        autocommit=True,
        prepare_threshold=None,
    ) as admin:
        admin.execute("RECONNECT")
    deadline = time.monotonic() + 10
    with sandbox.superuser_conn() as conn:
        while time.monotonic() < deadline:
            (left,) = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = 'westep_monitor'"
            ).fetchone()
            if left == 0:
                break
            time.sleep(0.05)
    peak = 0
    stop = threading.Event()

    def watch() -> None:
        nonlocal peak
        with sandbox.superuser_conn() as conn:
            while not stop.is_set():
                (n,) = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE usename = 'westep_monitor'"
                ).fetchone()
                peak = max(peak, n)
                time.sleep(0.002)

    t = threading.Thread(target=watch)
    t.start()
    try:
        with ProbeSession(Environment.from_env(), cfg) as session:
            for _ in range(5):
                run_health_check(session)
                session.end_sweep()
    finally:
        stop.set()
        t.join()
    assert 1 <= peak <= 2
    # Afterwards: no client of ours at pgbouncer, and the only monitor-role backends left
    # are the idle server connections pgbouncer itself keeps pooled.
    time.sleep(0.2)
    clients = [c for c in admin_rows(sandbox, "CLIENTS") if c["user"] == "westep_monitor"]
    pooled = sum(
        p["sv_idle"] + p["sv_active"] + p["sv_used"] + p["sv_tested"] + p["sv_login"]
        for p in admin_rows(sandbox, "POOLS")
        if p["user"] == "westep_monitor"
    )
    with sandbox.superuser_conn() as conn:
        (backends,) = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = 'westep_monitor'"
        ).fetchone()
    assert clients == [] and backends == pooled


def test_partial_view_is_said_not_undercounted(sandbox: Sandbox, health_config: Path) -> None:
    with sandbox.superuser_conn() as conn:
        conn.execute("DROP ROLE IF EXISTS westep_limited")
        conn.execute("CREATE ROLE westep_limited LOGIN PASSWORD 'limited-pw-123'")
    try:
        env = {
            "DIRECT_URL": f"postgresql://westep_limited:limited-pw-123@127.0.0.1:{sandbox.state.target_port}/postgres"
        }
        code, report, _ = health(health_config, "--category", "pool", env=env)
        pool = by_category(report)["pool"]
        assert "sessions hidden" in pool["values"]["partial"]
    finally:
        with sandbox.superuser_conn() as conn:
            conn.execute("DROP ROLE westep_limited")


# -- hosted Supabase paths, served by local HTTP servers ---------------------------------
class _Server:
    def __init__(self, routes: dict[str, tuple[int, str]], auth: str | None = None) -> None:
        routes_ = routes
        seen: list[dict[str, str]] = []

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a: object) -> None:
                pass

            def do_GET(self) -> None:
                seen.append(dict(self.headers))
                if auth is not None and self.headers.get("Authorization") != auth:
                    self.send_response(401)
                    self.end_headers()
                    return
                status, body = routes_.get(self.path.split("?")[0], (404, "not found"))
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.seen = seen
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Any]:
    made: list[_Server] = []

    def make(routes: dict[str, tuple[int, str]], auth: str | None = None) -> _Server:
        made.append(_Server(routes, auth))
        return made[-1]

    yield make
    for s in made:
        s.close()


PGBOUNCER_EXPOSITION = """# HELP pgbouncer_pools_client_active_connections Client connections linked to server connection
# TYPE pgbouncer_pools_client_active_connections gauge
pgbouncer_pools_client_active_connections{supabase_project_ref="abcdefghijkl",service_type="db",database="postgres",user="authenticator"} 15
pgbouncer_pools_client_active_connections{supabase_project_ref="abcdefghijkl",service_type="db",database="pgbouncer",user="pgbouncer"} 1
# HELP pgbouncer_pools_client_waiting_connections Client connections waiting on a server connection
# TYPE pgbouncer_pools_client_waiting_connections gauge
pgbouncer_pools_client_waiting_connections{supabase_project_ref="abcdefghijkl",service_type="db",database="postgres",user="authenticator"} {waiting}
# HELP pgbouncer_pools_server_active_connections Server connections linked to a client connection
# TYPE pgbouncer_pools_server_active_connections gauge
pgbouncer_pools_server_active_connections{supabase_project_ref="abcdefghijkl",service_type="db",database="postgres",user="authenticator"} {active}
# HELP pgbouncer_pools_server_idle_connections Server connections idle and ready for a client query
# TYPE pgbouncer_pools_server_idle_connections gauge
pgbouncer_pools_server_idle_connections{supabase_project_ref="abcdefghijkl",service_type="db",database="postgres",user="authenticator"} 3
# HELP pgbouncer_pools_client_maxwait_seconds Age of oldest unserved client connection
# TYPE pgbouncer_pools_client_maxwait_seconds gauge
pgbouncer_pools_client_maxwait_seconds{supabase_project_ref="abcdefghijkl",service_type="db",database="postgres",user="authenticator"} {maxwait}
# HELP pgbouncer_databases_pool_size Maximum number of server connections
# TYPE pgbouncer_databases_pool_size gauge
pgbouncer_databases_pool_size{supabase_project_ref="abcdefghijkl",service_type="db",database="postgres",name="postgres",pool_mode="transaction",port="5432"} 15
pgbouncer_databases_pool_size{supabase_project_ref="abcdefghijkl",service_type="db",database="pgbouncer",name="pgbouncer",pool_mode="statement",port="6543"} 0
# HELP pgbouncer_databases_paused 1 if this database is currently paused, else 0
# TYPE pgbouncer_databases_paused gauge
pgbouncer_databases_paused{supabase_project_ref="abcdefghijkl",service_type="db",database="postgres",name="postgres",pool_mode="transaction",port="5432"} 0
# HELP node_load1 1m load average.
# TYPE node_load1 gauge
node_load1{supabase_project_ref="abcdefghijkl",service_type="db"} 0.42
"""

SUPAVISOR_EXPOSITION = """# HELP supavisor_connections_active The total count of active clients for a tenant.
# TYPE supavisor_connections_active gauge
supavisor_connections_active{tenant="abcdefghijkl",user="postgres",mode="transaction",type="single"} 42
# HELP supavisor_pool_checkout_duration Duration of the checkout process in the tenant db pool.
# TYPE supavisor_pool_checkout_duration histogram
supavisor_pool_checkout_duration_bucket{tenant="abcdefghijkl",user="postgres",mode="transaction",type="single",le="125"} 90
supavisor_pool_checkout_duration_bucket{tenant="abcdefghijkl",user="postgres",mode="transaction",type="single",le="+Inf"} 100
supavisor_pool_checkout_duration_sum{tenant="abcdefghijkl",user="postgres",mode="transaction",type="single"} 2500
supavisor_pool_checkout_duration_count{tenant="abcdefghijkl",user="postgres",mode="transaction",type="single"} 100
"""


def _expo(waiting: int, active: int, maxwait: float) -> str:
    return (
        PGBOUNCER_EXPOSITION.replace("{waiting}", str(waiting))
        .replace("{active}", str(active))
        .replace("{maxwait}", str(maxwait))
    )


def _metrics_env(url: str, key: str) -> dict[str, str]:
    return {
        "PGBOUNCER_ADMIN_URL": "",
        "WESTEP_OPS_METRICS_URL": url,
        "SUPABASE_SERVICE_ROLE_KEY": key,
    }


def test_pool_from_the_metrics_endpoint(sandbox: Sandbox, health_config: Path, server: Any) -> None:
    import base64

    key = "test-service-role-key-123"
    auth = "Basic " + base64.b64encode(f"service_role:{key}".encode()).decode()
    path = "/customer/v1/privileged/metrics"
    calm = server({path: (200, _expo(0, 4, 0))}, auth=auth)
    code, report, _ = health(
        health_config, "--category", "pool", env=_metrics_env(calm.url + path, key)
    )
    pool = by_category(report)["pool"]
    assert code == 0 and pool["source"] == "metrics-endpoint (pgbouncer)"
    assert pool["values"]["metrics_client_active"] == 15  # the pgbouncer admin db is not counted
    assert pool["values"]["metrics_pool_size"] == 15

    # Every server busy, 7 queued for 4 ms: load, not exhaustion.
    loaded = server({path: (200, _expo(7, 15, 0.004))}, auth=auth)
    code, report, _ = health(
        health_config, "--category", "pool", env=_metrics_env(loaded.url + path, key)
    )
    pool = by_category(report)["pool"]
    assert code == 0 and pool["values"]["utilisation"] == 1.0, pool

    busy = server({path: (200, _expo(7, 15, 9.5))}, auth=auth)
    code, report, err = health(
        health_config, "--category", "pool", env=_metrics_env(busy.url + path, key)
    )
    pool = by_category(report)["pool"]
    assert code == 2 and "pool_wait" in pool["findings"]
    assert "has waited 9.5 s" in pool["summary"]
    assert key not in json.dumps(report) + err

    code, report, _ = health(
        health_config, "--category", "pool", env=_metrics_env(busy.url + path, "wrong-key")
    )
    pool = by_category(report)["pool"]
    assert code == 3 and "HTTP 401" in pool["summary"]

    supa = server({path: (200, SUPAVISOR_EXPOSITION)}, auth=auth)
    code, report, _ = health(
        health_config, "--category", "pool", env=_metrics_env(supa.url + path, key)
    )
    pool = by_category(report)["pool"]
    assert code == 0 and pool["source"] == "metrics-endpoint (supavisor)"
    assert pool["values"]["metrics_client_active"] == 42
    assert pool["values"]["metrics_checkout_ms_mean"] == 25


def test_without_console_or_metrics_the_pool_comes_from_pg_stat_activity(
    sandbox: Sandbox, health_config: Path
) -> None:
    code, report, _ = health(health_config, "--category", "pool", env={"PGBOUNCER_ADMIN_URL": ""})
    pool = by_category(report)["pool"]
    assert code == 0 and pool["source"] == "pg_stat_activity" and pool["values"]["backends"] >= 1


def test_paused_supabase_project(sandbox: Sandbox, health_config: Path, server: Any) -> None:
    page = "<html><title>Project paused</title>This project is paused. Restore it from the dashboard.</html>"
    platform = server({"/rest/v1/": (540, page)})
    env = {
        "DIRECT_URL": "postgresql://westep_monitor:x@127.0.0.1:1/postgres",
        "DATABASE_URL": "postgresql://westep_monitor:x@127.0.0.1:1/postgres",
        "NEXT_PUBLIC_SUPABASE_URL": platform.url,
    }
    code, report, _ = health(health_config, "--category", "connection", env=env)
    conn = by_category(report)["connection"]
    assert code == 2 and "project_paused" in conn["findings"]
    assert "the Supabase project is paused (HTTP 540" in conn["summary"]
    res = run_cli("--config", str(health_config), "db-status", env=env)
    assert res.returncode == 2 and "paused" in res.stdout


def test_db_status(sandbox: Sandbox) -> None:
    res = run_cli("db-status", "--json")
    st = json.loads(res.stdout)
    assert res.returncode == 0 and st["reachable"] and st["version"].startswith("15.")
    assert (
        st["database"] == "postgres" and st["size_bytes"] > 1_000_000 and st["in_recovery"] is False
    )


def test_health_asset_reports_one_check_per_category(sandbox: Sandbox) -> None:
    from dagster import AssetCheckSeverity, DagsterInstance, materialize

    from westep_ops.defs.health.assets import health_check
    from westep_ops.resources import default_resources

    faults.inject(sandbox, "grant_revoke", True)
    try:
        with DagsterInstance.ephemeral() as instance:
            result = materialize(
                [health_check],
                resources=default_resources(),
                instance=instance,
                partition_key="default",
            )
    finally:
        faults.inject(sandbox, "grant_revoke", False)
    assert result.success  # a failing check is reported, it does not crash the run
    evals = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert sorted(evals) == HEALTH_CHECKS
    failed = {n for n, e in evals.items() if not e.passed}
    assert failed == {"h3_tables"}
    h3 = evals["h3_tables"]
    assert h3.severity is AssetCheckSeverity.ERROR
    assert h3.metadata["findings"].value == "grant_missing"
    assert "authenticated has no SELECT on public.steps" in h3.metadata["summary"].value


def test_process_stays_light(sandbox: Sandbox) -> None:
    """The CLI's health path imports neither Dagster nor pandas."""
    import subprocess
    import sys

    code = "import sys, westep_ops.cli, westep_ops.cli.health, westep_ops.probes.health; print(sorted(m for m in ('dagster','pandas','matplotlib') if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ)
    )
    assert out.stdout.strip() == "[]"


def test_monitor_role_really_is_read_only_through_the_pool(sandbox: Sandbox) -> None:
    with psycopg.connect(os.environ["DATABASE_URL"], prepare_threshold=None) as conn:
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("DELETE FROM public.step_logs WHERE id = 1")


def test_replication_slot_lag_is_reported(
    sandbox: Sandbox, health_config: Path, tmp_path: Path
) -> None:
    """An inactive logical slot that falls behind (realtime server gone) is a warning."""
    data = json.loads(health_config.read_text())
    data["monitoring"]["thresholds"]["replicationLagBytes"] = 1024
    cfg = tmp_path / "lag.json"
    cfg.write_text(json.dumps(data))
    with sandbox.superuser_conn() as conn:
        conn.execute(
            "SELECT pg_create_logical_replication_slot('westep_test_slot', 'test_decoding')"
        )
    try:
        with sandbox.superuser_conn() as conn:  # make WAL the slot has not consumed
            conn.execute("CREATE TEMP TABLE wal_maker AS SELECT g FROM generate_series(1, 20000) g")
            conn.execute("UPDATE public.step_logs SET note = note WHERE id <= 100")
        code, report, _ = health(cfg, "--category", "realtime")
    finally:
        with sandbox.superuser_conn() as conn:
            conn.execute("SELECT pg_drop_replication_slot('westep_test_slot')")
    rt = by_category(report)["realtime"]
    slot = next(s for s in rt["values"]["slots"] if s["name"] == "westep_test_slot")
    assert slot["active"] is False and slot["lag_bytes"] > 1024
    assert code == 1 and rt["status"] == "warning" and "replication_lag" in rt["findings"]
    assert "slot westep_test_slot (inactive) is" in rt["summary"]


def test_health_asset_runs_without_an_admin_console(sandbox: Sandbox) -> None:
    """Hosted Supabase has no pgbouncer admin console: a Dagster run must not require one."""
    from dagster import DagsterInstance, materialize

    from westep_ops.defs.health.assets import health_check
    from westep_ops.resources import default_resources

    saved = os.environ.pop("PGBOUNCER_ADMIN_URL")
    try:
        with DagsterInstance.ephemeral() as instance:
            result = materialize(
                [health_check],
                resources=default_resources(),
                instance=instance,
                partition_key="default",
            )
    finally:
        os.environ["PGBOUNCER_ADMIN_URL"] = saved
    evals = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert result.success and all(e.passed for e in evals.values())
    assert evals["h2_pool"].metadata["source"].value == "pg_stat_activity"
