"""Sandbox life cycle against real processes: up, idempotent up, status, env, down."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import psycopg
import pytest

from westep_ops.sandbox import procs
from westep_ops.sandbox.manager import Sandbox
from westep_ops_tests.helpers import ROOT, run_cli
from westep_ops_tests.integration.conftest import BASE_PORT, app_get


def test_all_components_run_and_answer(sandbox: Sandbox) -> None:
    comps = sandbox.status()
    assert [c.name for c in comps] == [
        "target postgres",
        "ops postgres",
        "pgbouncer",
        "app stand-in",
        "supabase stand-in",
    ]
    assert all(c.running and c.pid for c in comps)
    assert app_get(sandbox, "/api/health").json()["status"] == "ok"
    assert app_get(sandbox, "/auth/v1/health").status_code == 200
    rows = app_get(sandbox, "/rest/v1/steps?limit=3").json()
    assert [r["id"] for r in rows] == [1, 2, 4]  # RLS hides private step 3 from anon


def test_schema_is_supabase_like(sandbox: Sandbox) -> None:
    with sandbox.superuser_conn() as conn:
        roles = dict(
            conn.execute(
                "SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname IN "
                "('anon','authenticated','service_role','authenticator','westep_monitor',"
                " 'westep_role_probe')"
            ).fetchall()
        )
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM auth.users), (SELECT count(*) FROM public.profiles),"
            " (SELECT count(*) FROM public.steps), (SELECT count(*) FROM public.step_logs)"
        ).fetchone()
        pub = {
            r[0]
            for r in conn.execute(
                "SELECT tablename FROM pg_publication_tables WHERE pubname = 'supabase_realtime'"
            )
        }
        wal = conn.execute("SHOW wal_level").fetchone()
        fk = conn.execute(
            "SELECT count(*) FROM pg_constraint WHERE conrelid = 'public.step_logs'::regclass AND contype = 'f'"
        ).fetchone()
    assert roles == {
        "anon": False,
        "authenticated": False,
        "service_role": False,
        "authenticator": True,
        "westep_monitor": True,
        "westep_role_probe": True,
    }
    assert counts == (500, 500, 2000, 5000)
    assert pub == {"profiles", "steps"}
    assert wal == ("logical",)
    assert fk == (0,)  # step_logs.step_id has no FK: orphans are possible


API_ROLES = ("anon", "authenticated", "service_role")
# Every way to change data or schema a login might have, each tried in its own transaction.
WRITES = (
    "INSERT INTO public.step_logs (step_id, note) VALUES (1, 'monitor wrote')",
    "UPDATE public.steps SET step_count = step_count + 1 WHERE id = 1",
    "DELETE FROM public.step_logs WHERE id = 1",
    "TRUNCATE public.step_logs",
    "CREATE TABLE public.monitor_wrote (id int)",
    "CREATE SCHEMA monitor_wrote",
    "ALTER TABLE public.steps DISABLE ROW LEVEL SECURITY",
)


def _member_of(conn: psycopg.Connection) -> list[str]:
    """Every role the session user is a member of, transitively (what SET ROLE may reach)."""
    return [
        r[0]
        for r in conn.execute(
            "SELECT rolname FROM pg_roles WHERE pg_has_role(session_user, oid, 'MEMBER')"
            " AND rolname <> session_user ORDER BY 1"
        )
    ]


@pytest.mark.parametrize("url_name", ["DIRECT_URL", "DATABASE_URL"])
def test_monitor_role_cannot_change_anything(sandbox: Sandbox, url_name: str) -> None:
    """With any trick: a read-write transaction, SET LOCAL ROLE to each API role and to
    every role the monitor belongs to, then every kind of write. All fail."""
    with psycopg.connect(
        sandbox.state.env()[url_name], autocommit=True, prepare_threshold=None
    ) as conn:
        # It can read (including other sessions' activity, through pg_monitor)...
        assert conn.execute("SELECT count(*) FROM public.steps").fetchone() == (2000,)
        member_of = _member_of(conn)
        # pg_monitor and the read-only predefined roles it carries; nothing that can write.
        assert member_of and set(member_of) <= {
            "pg_monitor",
            "pg_read_all_settings",
            "pg_read_all_stats",
            "pg_stat_scan_tables",
            "pg_read_all_data",
        }, member_of
        tried = 0
        for role in (None, *API_ROLES, *member_of):
            for stmt in WRITES:
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    with conn.transaction():
                        # = BEGIN READ WRITE: the role's read-only default is lifted
                        conn.execute("SET TRANSACTION READ WRITE")
                        if role is not None:
                            conn.execute(
                                psycopg.sql.SQL("SET LOCAL ROLE {}").format(
                                    psycopg.sql.Identifier(role)
                                )
                            )
                        conn.execute(stmt)
                tried += 1
        assert tried == (1 + len(API_ROLES) + len(member_of)) * len(WRITES)
        # The read-only default can be lifted by anyone; privileges are what hold.
        conn.execute("SET default_transaction_read_only = off")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM public.step_logs WHERE id = 1")
    with sandbox.superuser_conn() as conn:
        assert conn.execute("SELECT count(*) FROM public.step_logs").fetchone() == (5000,)
        assert not conn.execute("SELECT to_regclass('public.monitor_wrote')").fetchone()[0]


def test_monitor_holds_no_write_privilege_anywhere(sandbox: Sandbox) -> None:
    """The catalogs agree, for the monitor and every role it can become: no write grant on
    any table, no ownership, no CREATE on any schema or the database."""
    with sandbox.superuser_conn() as conn:
        rows = conn.execute(
            """
            WITH reach AS (
                SELECT oid, rolname FROM pg_roles WHERE pg_has_role('westep_monitor', oid, 'MEMBER')
            )
            SELECT r.rolname, 'table ' || c.oid::regclass::text || ' ' || p.priv
            FROM reach r, pg_class c,
                 unnest(ARRAY['INSERT', 'UPDATE', 'DELETE', 'TRUNCATE']) AS p(priv)
            WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
              AND has_table_privilege(r.oid, c.oid, p.priv)
              -- pg_settings is UPDATE-able by PUBLIC: that is SET, a session setting
              AND c.relnamespace NOT IN (SELECT oid FROM pg_namespace
                                         WHERE nspname IN ('pg_catalog', 'information_schema')
                                            OR nspname LIKE 'pg_temp%%')
            UNION ALL
            SELECT r.rolname, 'owns ' || c.oid::regclass::text
            FROM reach r JOIN pg_class c ON c.relowner = r.oid
            UNION ALL
            SELECT r.rolname, 'CREATE on schema ' || n.nspname
            FROM reach r, pg_namespace n WHERE has_schema_privilege(r.oid, n.oid, 'CREATE')
            UNION ALL
            SELECT r.rolname, 'CREATE on the database'
            FROM reach r WHERE has_database_privilege(r.oid, current_database(), 'CREATE')
            """
        ).fetchall()
        reach = {
            r[0]
            for r in conn.execute(
                "SELECT rolname FROM pg_roles WHERE pg_has_role('westep_monitor', oid, 'MEMBER')"
            )
        }
        # The role-probe login is the one that can switch to the API roles, not the monitor.
        probe_reach = {
            r[0]
            for r in conn.execute(
                "SELECT rolname FROM pg_roles WHERE pg_has_role('westep_role_probe', oid, 'MEMBER')"
            )
        }
    assert rows == []
    assert "westep_monitor" in reach and not reach & set(API_ROLES)
    assert set(API_ROLES) <= probe_reach


def test_up_again_is_idempotent(sandbox: Sandbox) -> None:
    before = {c.name: c.pid for c in sandbox.status()}
    res = run_cli("sandbox", "up")
    assert res.returncode == 0, res.stderr
    after = {c.name: c.pid for c in Sandbox(sandbox.layout.root).status()}
    assert after == before


def test_env_prints_exports(sandbox: Sandbox) -> None:
    res = run_cli("sandbox", "env")
    assert res.returncode == 0
    names = {line.split("=", 1)[0].removeprefix("export ") for line in res.stdout.splitlines()}
    assert {
        "DATABASE_URL",
        "DIRECT_URL",
        "PGBOUNCER_ADMIN_URL",
        "NEXT_PUBLIC_SUPABASE_URL",
        "WESTEP_OPS_STORAGE_URL",
        "WESTEP_OPS_REPAIR_URL",
        "SUPABASE_SERVICE_ROLE_KEY",
        "WESTEP_OPS_DAGSTER_STORAGE_URL",
    } <= names


def _free_base_port() -> int:
    # Relative to the session's base port, so test runs on other base ports (parallel
    # checkouts) start their search elsewhere and do not race for the same ports.
    start = BASE_PORT + 570
    for base in range(start, start + 800, 10):
        if not any(procs.port_open(base + i) for i in range(5)):
            return base
    raise RuntimeError("no free ports")


def test_second_sandbox_full_cycle_and_down_stops_only_its_own(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    other_dir = ROOT / ".westep" / "test-sandbox-cycle"
    Sandbox(other_dir).down()
    shutil.rmtree(other_dir, ignore_errors=True)
    base = _free_base_port()
    other = Sandbox(other_dir)
    try:
        other.up(base)
        pids = [c.pid for c in other.status()]
        assert all(c.running for c in other.status())
        with other.superuser_conn() as conn:
            conn.execute(
                "INSERT INTO public.step_logs (step_id, note) VALUES (1, 'kept across restart')"
            )
        stopped = run_cli("sandbox", "down", "--dir", str(other_dir))
        assert stopped.returncode == 0
        assert "target postgres" in stopped.stdout and "pgbouncer" in stopped.stdout
        assert not any(procs.alive(p) for p in pids)
        assert not any(procs.port_open(base + i) for i in range(5))
        status = run_cli("sandbox", "status", "--dir", str(other_dir))
        assert status.returncode == 1 and "stopped" in status.stdout
        # The session sandbox was not touched by the other one's down.
        assert all(c.running for c in sandbox.status())
        # Up again: same data, new processes.
        other = Sandbox(other_dir)
        other.up(base)
        with other.superuser_conn() as conn:
            assert conn.execute(
                "SELECT count(*) FROM public.step_logs WHERE note = 'kept across restart'"
            ).fetchone() == (1,)
        # A down for a directory with no sandbox stops nothing, whatever else is running.
        empty = run_cli("sandbox", "down", env={"WESTEP_OPS_SANDBOX_DIR": str(tmp_path / "none")})
        assert empty.returncode == 0 and "nothing was running" in empty.stdout
        assert all(c.running for c in other.status())
        assert all(c.running for c in sandbox.status())
    finally:
        Sandbox(other_dir).down()
        shutil.rmtree(other_dir, ignore_errors=True)


def test_down_never_stops_another_sandboxs_process(sandbox: Sandbox, tmp_path: Path) -> None:
    """A recycled pid in a stale pid file of another sandbox must not reach our processes."""
    from westep_ops.sandbox.state import Layout, SandboxState

    other = tmp_path / "stale"
    Layout(other).save(SandboxState.new(_free_base_port()))
    victims = {c.name: c.pid for c in sandbox.status()}
    for site in ("app", "supabase"):
        (other / "app").mkdir(parents=True, exist_ok=True)
        (other / "app" / f"{site}.pid").write_text(f"{victims[f'{site} stand-in']}\n")
    (other / "faults").mkdir()
    (other / "faults" / "pool_exhaust.pid").write_text(f"{victims['app stand-in']}\n")
    (other / "pgbouncer").mkdir()
    (other / "pgbouncer" / "pgbouncer.pid").write_text(f"{victims['pgbouncer']}\n")
    assert Sandbox(other).down() == []
    assert {c.name: c.pid for c in sandbox.status()} == victims
    assert all(procs.alive(p) for p in victims.values())


def test_port_in_use_is_one_clear_line() -> None:
    other_dir = ROOT / ".westep" / "test-sandbox-busy"
    shutil.rmtree(other_dir, ignore_errors=True)
    base = _free_base_port()
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", base))
        s.listen()
        res = run_cli("sandbox", "up", "--dir", str(other_dir), "--base-port", str(base))
    Sandbox(other_dir).down()
    assert res.returncode == 2
    assert res.stderr.startswith("error: port") and len(res.stderr.strip().splitlines()) == 1
    assert "Traceback" not in res.stderr
