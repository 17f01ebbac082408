"""Every fault really breaks the sandbox, and ``off`` puts it back exactly as it was.

"As it was" is checked through real queries: table contents (md5 of every row), the API
roles' grants, the realtime publication, pgbouncer's SHOW DATABASES / SHOW POOLS, open
transactions, and the app's answers.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import psycopg
import pytest
from psycopg import sql

from westep_ops.sandbox import faults, procs
from westep_ops.sandbox.manager import Sandbox
from westep_ops.sandbox.state import POOL_SIZE
from westep_ops_tests.helpers import run_cli
from westep_ops_tests.integration.conftest import admin_rows, app_get

TABLES = ("auth.users", "public.profiles", "public.steps", "public.step_logs")


def snapshot(sb: Sandbox) -> dict[str, object]:
    out: dict[str, object] = {}
    with sb.superuser_conn() as conn:
        for t in TABLES:
            schema, table = t.split(".")
            out[t] = conn.execute(
                sql.SQL(
                    "SELECT count(*), md5(string_agg(x::text, ',' ORDER BY x::text)) FROM {} AS x"
                ).format(sql.Identifier(schema, table))
            ).fetchone()
        out["grants"] = conn.execute(
            "SELECT grantee, table_schema, table_name, privilege_type FROM information_schema.role_table_grants"
            " WHERE grantee IN ('anon','authenticated','service_role','westep_monitor') ORDER BY 1,2,3,4"
        ).fetchall()
        out["publication"] = conn.execute(
            "SELECT p.pubname, p.pubowner::regrole::text, t.tablename FROM pg_publication p"
            " LEFT JOIN pg_publication_tables t USING (pubname) ORDER BY 1, 3"
        ).fetchall()
        out["idle_in_tx"] = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction'"
        ).fetchone()
        out["reloptions"] = conn.execute(
            "SELECT relname, reloptions FROM pg_class WHERE relnamespace = 'public'::regnamespace"
            " AND relkind = 'r' ORDER BY 1"
        ).fetchall()
    out["paused"] = [(d["name"], d["paused"]) for d in admin_rows(sb, "DATABASES")]
    out["pools_busy"] = [
        (p["database"], p["user"], p["sv_active"], p["cl_waiting"])
        for p in admin_rows(sb, "POOLS")
        if p["sv_active"] or p["cl_waiting"]
    ]
    out["components"] = [(c.name, c.running) for c in sb.status()]
    out["api"] = app_get(sb, "/api/health").status_code
    out["faults_on"] = faults.active(sb)
    return out


def _api_status(sb: Sandbox, path: str = "/api/health", **kw: object) -> int:
    try:
        return app_get(sb, path, **kw).status_code  # type: ignore[arg-type]
    except httpx.ConnectError:
        return 0


def _paused(sb: Sandbox) -> None:
    assert dict((d["name"], d["paused"]) for d in admin_rows(sb, "DATABASES"))["postgres"] == 1
    assert _api_status(sb) == 503


def _exhausted(sb: Sandbox) -> None:
    pools = {p["user"]: p for p in admin_rows(sb, "POOLS") if p["database"] == "postgres"}
    assert pools["authenticator"]["sv_active"] == POOL_SIZE
    assert _api_status(sb) == 503  # the app's request waits for a server and gives up


def _revoked(sb: Sandbox) -> None:
    with sb.superuser_conn() as conn:
        assert conn.execute(
            "SELECT has_table_privilege('authenticated', 'public.steps', 'SELECT')"
        ).fetchone() == (False,)
    assert _api_status(sb, "/rest/v1/steps", headers={"Authorization": "Bearer t"}) == 403
    assert _api_status(sb, "/rest/v1/steps") == 200  # anon still reads


def _orphaned(sb: Sandbox) -> None:
    with sb.superuser_conn() as conn:
        assert conn.execute(
            "SELECT count(*) FROM public.step_logs l WHERE NOT EXISTS"
            " (SELECT 1 FROM public.steps s WHERE s.id = l.step_id)"
        ).fetchone() == (faults.ORPHAN_ROWS,)


def _bloated(sb: Sandbox) -> None:
    with sb.superuser_conn() as conn:
        dead = 0
        for _ in range(50):  # cumulative statistics are flushed within a second or so
            dead = conn.execute(
                "SELECT n_dead_tup FROM pg_stat_user_tables WHERE relid = 'public.step_logs'::regclass"
            ).fetchone()[0]
            if dead >= 5000:
                break
            time.sleep(0.1)
            conn.execute("SELECT pg_stat_clear_snapshot()")
    assert dead >= 5000


def _idle(sb: Sandbox) -> None:
    with sb.superuser_conn() as conn:
        assert conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction'"
            " AND application_name = 'westep-fault-idle_in_tx'"
        ).fetchone() == (3,)


def _pg_down(sb: Sandbox) -> None:
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(sb.state.env()["DIRECT_URL"], connect_timeout=2).close()
    assert _api_status(sb) == 503
    res = run_cli("test-connection")
    assert res.returncode == 1
    assert "connection refused" in res.stdout and "Traceback" not in res.stderr


def _bouncer_down(sb: Sandbox) -> None:
    assert not procs.port_open(sb.state.bouncer_port)
    assert _api_status(sb) == 503
    assert _api_status(sb, "/rest/v1/steps") == 200  # PostgREST connects directly


def _api_down(sb: Sandbox) -> None:
    assert _api_status(sb) == 0
    assert _api_status(sb, "/auth/v1/health") == 200  # the Supabase services are separate


def _pub_dropped(sb: Sandbox) -> None:
    with sb.superuser_conn() as conn:
        assert conn.execute(
            "SELECT count(*) FROM pg_publication WHERE pubname = 'supabase_realtime'"
        ).fetchone() == (0,)


EFFECTS: dict[str, Callable[[Sandbox], None]] = {
    "pool_pause": _paused,
    "pool_exhaust": _exhausted,
    "grant_revoke": _revoked,
    "orphans": _orphaned,
    "bloat": _bloated,
    "idle_in_tx": _idle,
    "pg_down": _pg_down,
    "bouncer_down": _bouncer_down,
    "api_down": _api_down,
    "publication_drop": _pub_dropped,
}


def test_every_fault_has_an_effect_check() -> None:
    assert set(EFFECTS) == set(faults.FAULTS)


@pytest.mark.parametrize("name", list(EFFECTS))
def test_fault_on_then_off_restores_the_sandbox(sandbox: Sandbox, name: str) -> None:
    before = snapshot(sandbox)
    assert before["faults_on"] == [] and before["api"] == 200
    on = run_cli("sandbox", "fault", name, "on", "--seconds", "120")
    assert on.returncode == 0, on.stderr
    try:
        assert faults.active(sandbox) == [name]
        EFFECTS[name](sandbox)
    finally:
        off = run_cli("sandbox", "fault", name, "off")
    assert off.returncode == 0, off.stderr
    assert snapshot(sandbox) == before


def test_unknown_fault_is_one_line(sandbox: Sandbox) -> None:
    res = run_cli("sandbox", "fault", "meteor_strike", "on")
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [res.stderr.strip()]
    assert "unknown fault 'meteor_strike'" in res.stderr


def test_fault_refuses_when_environment_points_elsewhere(sandbox: Sandbox) -> None:
    res = run_cli(
        "sandbox",
        "fault",
        "grant_revoke",
        "on",
        env={"DATABASE_URL": "postgresql://app:pw@db.example.com:6543/postgres"},
    )
    assert res.returncode == 2
    assert "refusing to inject a fault: DATABASE_URL points at db.example.com:6543" in res.stderr
    with sandbox.superuser_conn() as conn:
        assert conn.execute(
            "SELECT has_table_privilege('authenticated', 'public.steps', 'SELECT')"
        ).fetchone() == (True,)


def test_pool_exhaust_is_bounded_in_time(sandbox: Sandbox) -> None:
    res = run_cli("sandbox", "fault", "pool_exhaust", "on", "--seconds", "2")
    assert res.returncode == 0, res.stderr
    deadline = time.monotonic() + 15
    busy = None
    while time.monotonic() < deadline:
        busy = [
            p
            for p in admin_rows(sandbox, "POOLS")
            if p["user"] == "authenticator" and p["sv_active"]
        ]
        if not busy:
            break
        time.sleep(0.2)
    run_cli("sandbox", "fault", "pool_exhaust", "off")
    assert busy == []
