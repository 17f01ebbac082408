"""Findings of the review of issue 9: grouping, observe-only load, blinding, exit lines.

The grouping and planning rules are judged on constructed observations against the real
ops store (incidents written through ``HistoryStore``); the probes against the sandbox.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from westep_ops.config import Category, load_config
from westep_ops.environment import Environment
from westep_ops.monitoring.engine import Monitor, Observation, TickResult
from westep_ops.monitoring.history import HistoryStore
from westep_ops.monitoring.notify import Notifier
from westep_ops.probes.base import MONITOR_MISCONFIGURED, Status
from westep_ops.repairs.recovery import plan_repairs
from westep_ops.sandbox.manager import Sandbox
from westep_ops_tests.helpers import ROOT, run_cli, write_config
from westep_ops_tests.integration.conftest import clear_history
from westep_ops_tests.unit.test_review9 import _obs


def _monitor(tmp_path: Path, **overrides: object) -> Monitor:
    cfg = write_config(tmp_path / "c.json", **overrides)
    env = Environment.from_env()
    config = load_config(cfg)
    return Monitor(env, config, HistoryStore(env.storage_url), Notifier(env, config.timezone))


def _open(category: str, severity: str, closed_ago_s: float | None = None) -> None:
    history = HistoryStore(os.environ["WESTEP_OPS_STORAGE_URL"])
    now = datetime.now(UTC)
    iid = history.open_incident(
        category, severity, now - timedelta(minutes=30), now - timedelta(minutes=29), "x"
    )
    if closed_ago_s is not None:
        closed = now - timedelta(seconds=closed_ago_s)
        history.close_incident(iid, closed, closed, None)
    history.close()


def _grouped(m: Monitor, obs: list[Observation]) -> dict[str, str | None]:
    m._group_with_recent(datetime.now(UTC), obs, m.history.open_incidents())  # noqa: SLF001
    return {o.category: o.suspected_cause for o in obs}


# -- H2: grouping hides nothing real ------------------------------------------------------
def test_a_lingering_pool_warning_hides_no_endpoint_or_performance_failure(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    clear_history()
    _open("pool", "warning")  # e.g. idle_in_transaction, open for hours
    m = _monitor(tmp_path)
    try:
        obs = [
            _obs(Category.connection),
            _obs(Category.pool, (Status.warning, "idle_in_transaction")),
            _obs(Category.api, (Status.critical, "endpoint_down")),
        ]
        assert _grouped(m, obs)["api"] is None
    finally:
        m.close()


def test_a_critical_pool_incident_no_longer_failing_explains_nothing(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    clear_history()
    _open("pool", "critical")
    m = _monitor(tmp_path)
    try:
        # the pool incident is still open but the pool passes now: the API failure is news
        obs = [_obs(Category.pool), _obs(Category.api, (Status.critical, "endpoint_down"))]
        assert _grouped(m, obs)["api"] is None
        # while the pool really cannot serve in this sweep, the API failure is its symptom
        obs = [
            _obs(Category.pool, (Status.critical, "pool_wait")),
            _obs(Category.api, (Status.critical, "endpoint_down")),
        ]
        assert _grouped(m, obs)["api"] == "pool"
    finally:
        m.close()


def test_a_slow_connection_warning_does_not_swallow_a_pool_that_cannot_serve(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    clear_history()
    _open("connection", "warning")  # slow_connection
    m = _monitor(tmp_path)
    try:
        obs = [
            _obs(Category.connection, (Status.warning, "slow_connection")),
            _obs(Category.pool, (Status.critical, "pool_exhausted")),
        ]
        assert _grouped(m, obs)["pool"] is None
        # ...nor does a critical connection incident whose direct login works (pooled only)
        clear_history()
        _open("connection", "critical")
        obs = [
            _obs(Category.connection, (Status.critical, "pooled_connection_failed")),
            _obs(Category.pool, (Status.critical, "pool_wait")),
        ]
        assert _grouped(m, obs)["pool"] is None
        # the plan for that pool failure is the pool repair
        plan, _ = m._plan_for(obs[1])  # noqa: SLF001
        assert [p.action.value for p in plan] == ["restore_connection_pool"]
    finally:
        m.close()


def _queued_through_restart() -> Observation:
    """H2 as after PostgreSQL restarted: the oldest waiter queued before the start."""
    o = _obs(Category.pool, (Status.critical, "pool_wait"))
    assert o.result is not None
    o.result.values.update(max_wait_s=40.0, max_wait_since_server_start_s=3.0)
    return o


def test_the_tail_of_a_critical_incident_is_grouped_a_warning_one_is_not(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    clear_history()
    _open("connection", "warning", closed_ago_s=2)
    m = _monitor(tmp_path, monitoring__alerting__groupGraceIntervals=10)
    try:
        assert _grouped(m, [_obs(Category.connection), _queued_through_restart()])["pool"] is None
        api = _obs(Category.api, (Status.critical, "endpoint_down"))
        assert _grouped(m, [_obs(Category.connection), api])["api"] is None
        _open("connection", "critical", closed_ago_s=2)
        # a waiter that queued through the restart: the outage's tail
        assert _grouped(m, [_obs(Category.connection), _queued_through_restart()])["pool"] == (
            "connection"
        )
        # a pool that cannot serve with PostgreSQL up and no restart behind it: its own
        plain = _obs(Category.pool, (Status.critical, "pool_exhausted"))
        assert _grouped(m, [_obs(Category.connection), plain])["pool"] is None
        # requests that failed meanwhile are the tail too
        api = _obs(Category.api, (Status.critical, "endpoint_down"))
        assert _grouped(m, [_obs(Category.connection), api])["api"] == "connection"
        # ...but only within the grace
        clear_history()
        _open("connection", "critical", closed_ago_s=3600)
        api = _obs(Category.api, (Status.critical, "endpoint_down"))
        assert _grouped(m, [_obs(Category.connection), api])["api"] is None
    finally:
        m.close()


def test_a_pool_warning_with_only_pool_queue_opens_no_incident(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    clear_history()
    m = _monitor(tmp_path, monitoring__alerting__failureThreshold=1)
    try:
        now = datetime.now(UTC)
        obs = [_obs(Category.pool, (Status.warning, "pool_queue"))]
        m._store(now, "cheap", obs)  # noqa: SLF001
        out = TickResult()
        m._evaluate(now, obs, out)  # noqa: SLF001
        assert out.opened == [] and out.repairs == []
        # a real pool warning on the same path does open one (the test can fail)
        obs = [_obs(Category.pool, (Status.warning, "idle_in_transaction"))]
        m._store(now + timedelta(seconds=1), "cheap", obs)  # noqa: SLF001
        m._evaluate(now + timedelta(seconds=1), obs, out)  # noqa: SLF001
        assert len(out.opened) == 1
    finally:
        m.close()


def test_an_incident_closes_while_only_observe_only_warnings_remain(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """A hosted stack's H2 stays a pool_unwatched warning for good: a pool incident opened
    for something else (idle in transaction) must still close once that is gone."""
    clear_history()
    _open("pool", "warning")
    m = _monitor(tmp_path, monitoring__alerting__successThreshold=2)
    try:
        now = datetime.now(UTC)
        for i in range(2):
            obs = [_obs(Category.pool, (Status.warning, "pool_unwatched"))]
            m._store(now + timedelta(seconds=i), "cheap", obs)  # noqa: SLF001
        out = TickResult()
        m._evaluate(now + timedelta(seconds=2), obs, out)  # noqa: SLF001
        assert len(out.closed) == 1, out
        assert [a.kind for a in out.alerts] == ["resolved"]
    finally:
        m.close()


def test_monitor_repairs_nothing_while_its_login_is_refused(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """Wrong monitor password plus a paused pool (seen by the admin console, a separate
    login): the monitor may alert, but requests and runs no repair."""
    from westep_ops.sandbox import faults
    from westep_ops_tests.integration.test_misconfiguration import (
        WRONG_PASSWORD,
        _monitor_env,
        _repair_attempts,
    )

    clear_history()
    logs = tmp_path / "logs"
    logs.mkdir()
    cfg = write_config(tmp_path / "mon.json", monitoring__alerting__confirmDelaySeconds=0.2)
    env = {**_monitor_env(password=WRONG_PASSWORD), "WESTEP_OPS_LOG_DIR": str(logs)}
    faults.inject(sandbox, "pool_pause", True)
    try:
        mon = run_cli("--config", str(cfg), "monitor", "--once", env=env)
        # the repair command refuses too: its own before-probe sees the refusal
        rep = run_cli("--config", str(cfg), "repair", "restore_connection_pool", env=env)
    finally:
        faults.inject(sandbox, "pool_pause", False)
    assert "Traceback" not in mon.stderr + rep.stderr, mon.stderr + rep.stderr
    with psycopg.connect(os.environ["WESTEP_OPS_STORAGE_URL"]) as conn:
        outcomes = conn.execute(
            "SELECT action, outcome, summary FROM westep_ops.repair_attempts"
        ).fetchall()
    assert [(a, o) for a, o, _ in outcomes] == [("restore_connection_pool", "refused")], outcomes
    assert "monitoring is misconfigured" in outcomes[0][2]
    assert rep.returncode == 1, rep.stdout + rep.stderr
    assert _repair_attempts() == 1


# -- H4: pgbouncer refusing a login PostgreSQL accepts is an outage ------------------------
def test_pgbouncer_refusing_the_monitors_good_login_is_critical(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    from westep_ops.sandbox.scram import scram_verifier

    s = sandbox.state
    userlist = sandbox.layout.bouncer / "userlist.txt"
    saved = userlist.read_text()
    # pgbouncer's auth file now holds another password for the monitor's login only
    broken = [
        f'"westep_monitor" "{scram_verifier("not-the-password-in-the-urls")}"'
        if line.startswith('"westep_monitor" ')
        else line
        for line in saved.splitlines()
    ]
    assert broken != saved.splitlines()

    base = userlist.stat().st_mtime

    def write(text: str, later_s: float) -> None:
        # pgbouncer re-reads its auth file on RELOAD only when size or mtime changed, and
        # both versions have the same size: give each its own mtime.
        userlist.write_text(text)
        os.utime(userlist, (base + later_s, base + later_s))

    def reload() -> None:
        with psycopg.connect(
            s.url("pgbouncer_admin", s.bouncer_port, "pgbouncer"),
            autocommit=True,
            prepare_threshold=None,
        ) as conn:
            conn.execute("RELOAD")

    write("\n".join(broken) + "\n", 5)
    try:
        reload()
        res = run_cli("health-check", "--json")
    finally:
        write(saved, 10)
        reload()
    with psycopg.connect(os.environ["DATABASE_URL"], prepare_threshold=None) as conn:
        conn.execute("SELECT 1")  # pgbouncer took the restored file back
    h1 = next(c for c in json.loads(res.stdout)["checks"] if c["category"] == "connection")
    assert h1["status"] == "critical", h1
    assert "pooled_connection_failed" in h1["findings"], h1
    assert "auth_file/auth_query" in h1["summary"]
    assert res.returncode == 2, res.stdout + res.stderr


# -- L1 + M6: a quoted table's lock is found up front; a long-held lock is critical -------
QUOTED = 'public."step-logs"'


def test_a_long_lock_on_a_quoted_table_is_found_and_escalates(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    import time

    from psycopg import sql

    from westep_ops.probes.health import collect, run_health_check
    from westep_ops.probes.session import ProbeSession

    with psycopg.connect(os.environ["WESTEP_OPS_REPAIR_URL"], autocommit=True) as conn:
        conn.execute('CREATE TABLE public."step-logs" (id bigint PRIMARY KEY, step_id bigint)')
        conn.execute('GRANT SELECT ON public."step-logs" TO westep_monitor, authenticated')
    holder = psycopg.connect(sandbox.state.url("postgres"), autocommit=False)
    try:
        holder.execute(
            sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(
                sql.Identifier("public", "step-logs")
            )
        )
        pid = holder.info.backend_pid
        time.sleep(1.5)  # the holder's query is now older than the 1 s limit below
        data = json.loads((ROOT / "westep-ops.json").read_text())

        def cfg(name: str, **changes: object) -> Path:
            return write_config(
                tmp_path / name,
                criticalTables=[
                    *data["criticalTables"],
                    {"table": QUOTED, "roles": ["authenticated"]},
                ],
                integrityRules=[
                    {
                        "name": "quoted_orphans",
                        "kind": "orphans",
                        "table": QUOTED,
                        "columns": ["step_id"],
                        "references": "public.steps",
                        "severity": "warning",
                    }
                ],
                **changes,
            )

        env = Environment.from_env()
        short = load_config(cfg("short.json", repairs__stuckQuerySeconds=1))
        with ProbeSession(env, short) as s:
            # L1: the prefetch's lock lookup keys the table as the config spells it
            held = collect(s, {Category.tables, Category.integrity}).answers.locks.held
            assert QUOTED in held, held
        with ProbeSession(env, short) as s:
            h3, h4 = run_health_check(s, [Category.tables, Category.integrity])
        for r in (h3, h4):
            assert r.status is Status.critical and "table_locked" in r.findings, r.summary
            assert f"blocked by a lock held by pid {pid}" in r.summary
        # with the default limit (300 s) the same lock is a warning
        with ProbeSession(env, load_config(cfg("default.json"))) as s:
            h3, h4 = run_health_check(s, [Category.tables, Category.integrity])
        assert h3.status is Status.warning and h4.status is Status.warning, (h3.summary, h4.summary)
        # a person decides: no repair is planned for a lock, however long
        plan, escalations = plan_repairs([h3, h4], None, short)
        assert plan == [] and {e.category for e in escalations} == {"tables", "integrity"}
    finally:
        holder.close()
        with psycopg.connect(os.environ["WESTEP_OPS_REPAIR_URL"], autocommit=True) as conn:
            conn.execute('DROP TABLE IF EXISTS public."step-logs"')


# -- H3: the app pool's blind spots are visible ------------------------------------------
def test_h2_cannot_see_hidden_app_sessions_is_an_error_not_ok(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    cfg = write_config(tmp_path / "c.json", pool={"appUsers": ["authenticator"], "size": 10})
    hosted = {"PGBOUNCER_ADMIN_URL": "", "WESTEP_OPS_METRICS_URL": ""}
    app = psycopg.connect(sandbox.state.url("authenticator"), autocommit=True)
    try:
        seen = run_cli(
            "--config", str(cfg), "health-check", "--json", "--category", "pool", env=hosted
        )
        with sandbox.superuser_conn() as conn:
            conn.execute("REVOKE pg_monitor FROM westep_monitor")
        try:
            hidden = run_cli(
                "--config", str(cfg), "health-check", "--json", "--category", "pool", env=hosted
            )
        finally:
            with sandbox.superuser_conn() as conn:
                conn.execute("GRANT pg_monitor TO westep_monitor")
    finally:
        app.close()
    (ok,) = json.loads(seen.stdout)["checks"]
    assert ok["status"] == "ok", ok  # with pg_monitor the app's sessions are judged
    (h2,) = json.loads(hidden.stdout)["checks"]
    assert h2["status"] == "error", h2
    assert MONITOR_MISCONFIGURED in h2["findings"]
    assert "cannot see the app's sessions" in h2["summary"]
    assert "pg_read_all_stats" in h2["summary"]
    assert hidden.returncode == 3, hidden.stdout + hidden.stderr


# -- L5: exit 3 always comes with one line naming the cause ------------------------------
def test_health_check_exit_3_names_the_check_that_could_not_run(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    with psycopg.connect(os.environ["WESTEP_OPS_REPAIR_URL"], autocommit=True) as conn:
        conn.execute("CREATE TABLE public.review9_private (id bigint PRIMARY KEY, ref bigint)")
        conn.execute("REVOKE ALL ON public.review9_private FROM westep_monitor")
    try:
        cfg = write_config(
            tmp_path / "c.json",
            integrityRules=[
                {
                    "name": "private_orphans",
                    "kind": "orphans",
                    "table": "public.review9_private",
                    "columns": ["ref"],
                    "references": "public.steps",
                    "severity": "warning",
                }
            ],
        )
        res = run_cli("--config", str(cfg), "health-check", "--category", "integrity")
    finally:
        with psycopg.connect(os.environ["WESTEP_OPS_REPAIR_URL"], autocommit=True) as conn:
            conn.execute("DROP TABLE IF EXISTS public.review9_private")
    assert res.returncode == 3, res.stdout + res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, res.stderr
    assert "H4 integrity" in errors[0] and "lacks SELECT on public.review9_private" in errors[0]


def test_config_init_suggests_the_app_pool_logins_and_size(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    from westep_ops.sandbox.state import POOL_SIZE

    s = sandbox.state
    # the app's login through pgbouncer: pgbouncer opens a server session for its pool
    with psycopg.connect(
        s.url("authenticator", s.bouncer_port), autocommit=True, prepare_threshold=None
    ) as app:
        app.execute("SELECT 1")
        out = tmp_path / "init.json"
        res = run_cli("config", "init", "--output", str(out))
    assert res.returncode == 0, res.stdout + res.stderr
    pool = json.loads(out.read_text())["pool"]
    assert "authenticator" in pool["appUsers"] and "westep_monitor" not in pool["appUsers"]
    assert pool["size"] == POOL_SIZE
    # with it, H2 without a console watches the app's pool instead of saying it cannot
    hosted = {"PGBOUNCER_ADMIN_URL": "", "WESTEP_OPS_METRICS_URL": ""}
    h = run_cli("--config", str(out), "health-check", "--json", "--category", "pool", env=hosted)
    (h2,) = json.loads(h.stdout)["checks"]
    assert "pool_unwatched" not in h2["findings"], h2
    assert any(p["user"] == "authenticator" for p in h2["values"]["pool_servers"]), h2


# -- M7: config init finds Prisma's camelCase references; endpoints as anon sees them -----
def test_config_init_prisma_references_and_anon_endpoints(sandbox: Sandbox, tmp_path: Path) -> None:
    with psycopg.connect(os.environ["WESTEP_OPS_REPAIR_URL"], autocommit=True) as conn:
        conn.execute('CREATE TABLE public."Author" (id bigint PRIMARY KEY)')
        conn.execute('CREATE TABLE public."Post" (id bigint PRIMARY KEY, "authorId" bigint)')
        conn.execute('GRANT SELECT ON public."Author", public."Post" TO westep_monitor')
    try:
        out = tmp_path / "init.json"
        # only the anon key: the REST endpoint is found as a client sees it
        res = run_cli("config", "init", "--output", str(out), env={"SUPABASE_SERVICE_ROLE_KEY": ""})
    finally:
        with psycopg.connect(os.environ["WESTEP_OPS_REPAIR_URL"], autocommit=True) as conn:
            conn.execute('DROP TABLE IF EXISTS public."Post", public."Author"')
    assert res.returncode == 0, res.stdout + res.stderr
    data = json.loads(out.read_text())
    from westep_ops.config import split_name

    (rule,) = [r for r in data["integrityRules"] if split_name(r["table"]) == ("public", "Post")]
    assert [c.strip('"') for c in rule["columns"]] == ["authorId"], rule
    assert split_name(rule["references"]) == ("public", "Author"), rule
    assert [e["base"] for e in data["endpoints"] if e["base"] == "supabase"], data["endpoints"]
