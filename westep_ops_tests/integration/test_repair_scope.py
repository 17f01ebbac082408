"""Issue 10 items 2, 4 and 6 (H3/R3) against the real sandbox: H3 without the monitor's
old API-role membership, repairs that fix what was found broken and nothing else, and
quoted mixed-case names.

Grants are revoked and sessions held by real connections (as the project owner or the
sandbox's superuser), and put back afterwards; nothing is mocked.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from westep_ops.config import parse_config
from westep_ops.environment import Environment
from westep_ops.repairs.actions import terminate_sessions
from westep_ops.repairs.base import RepairContext
from westep_ops.sandbox.manager import Sandbox
from westep_ops_tests.helpers import ROOT, run_cli
from westep_ops_tests.integration.conftest import clear_repair_audit

MANY = 60  # hourly repair limit for these tests: the limit is not what they test


def config_file(tmp_path: Path, name: str = "cfg.json", **changes: Any) -> Path:
    """The shipped config with top-level keys replaced and dotted repairs/monitoring keys."""
    data = json.loads((ROOT / "westep-ops.json").read_text())
    data["monitoring"]["autoRecovery"]["maxAttemptsPerHour"] = MANY
    for key, value in changes.items():
        node = data
        *parents, leaf = key.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    p = tmp_path / name
    p.write_text(json.dumps(data))
    return p


def cli_json(*args: str, env: dict[str, str] | None = None) -> tuple[int, Any]:
    res = run_cli(*args, "--json", env=env)
    assert "Traceback" not in res.stderr, res.stderr
    assert res.stdout.strip(), (res.returncode, res.stderr)
    return res.returncode, json.loads(res.stdout)


def owner_conn(sb: Sandbox) -> psycopg.Connection:
    """The project owner (the repair login): what owns and grants on public's tables."""
    return psycopg.connect(sb.state.url("postgres"), autocommit=True)


def acl(sb: Sandbox, schema: str, table: str, grantee: str) -> set[tuple[str, str]]:
    """(privilege, grantor) pairs the table's ACL holds for ``grantee`` (aclexplode)."""
    with sb.superuser_conn() as conn:
        rows = conn.execute(
            "SELECT a.privilege_type, a.grantor::regrole::text"
            " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace,"
            " aclexplode(c.relacl) a"
            " WHERE n.nspname = %s AND c.relname = %s AND a.grantee = %s::regrole",
            (schema, table, grantee),
        ).fetchall()
    return {(p, g) for p, g in rows}


@pytest.fixture
def steps_grants_restored(sandbox: Sandbox) -> Iterator[None]:
    clear_repair_audit()
    yield
    with owner_conn(sandbox) as conn:
        conn.execute("GRANT SELECT, DELETE ON public.steps TO authenticated")


# -- R3: only what H3 found missing, as the owner -------------------------------------------
def test_automatic_r3_grants_back_select_only_and_as_the_owner(
    sandbox: Sandbox, steps_grants_restored: None, tmp_path: Path
) -> None:
    cfg = config_file(tmp_path)
    with owner_conn(sandbox) as conn:
        conn.execute("REVOKE SELECT, DELETE ON public.steps FROM authenticated")
    code, report = cli_json("--config", str(cfg), "recover")
    (r3,) = [r for r in report["repairs"] if r["action"] == "fix_table_permissions"]
    # H3 named the pair it found unreadable; R3 gave back exactly that.
    (plan,) = [p for p in report["plan"] if p["action"] == "fix_table_permissions"]
    assert plan["found"] == [["public.steps", "authenticated"]]
    assert r3["outcome"] == "repaired", r3
    assert r3["changes"] == ['GRANT SELECT ON "public"."steps" TO "authenticated"']
    assert any(
        "DELETE on public.steps to authenticated" in n and "--all-declared" in n
        for n in r3["notes"]
    ), r3["notes"]
    assert code == 0, report["verdict"]
    # Granted by the owner: a later REVOKE by the owner removes it, no second grantor.
    got = acl(sandbox, "public", "steps", "authenticated")
    assert ("SELECT", "postgres") in got and not any(p == "DELETE" for p, _ in got)
    assert {g for _, g in got} == {"postgres"}

    # The declared DELETE is drift: diagnose reports it, nothing grants it unasked.
    dcode, diag = cli_json("--config", str(cfg), "diagnose")
    missing = [(m["table"], m["role"], m["privilege"]) for m in diag["d2_permissions"]["missing"]]
    assert missing == [("public.steps", "authenticated", "DELETE")] and dcode == 1
    code, (again,) = cli_json("--config", str(cfg), "repair", "fix_table_permissions")
    assert again["changes"] == [] and code == 0
    assert not any(p == "DELETE" for p, _ in acl(sandbox, "public", "steps", "authenticated"))

    # A person's explicit request applies the rest, also as the owner.
    code, (full,) = cli_json(
        "--config", str(cfg), "repair", "fix_table_permissions", "--all-declared"
    )
    assert full["changes"] == ['GRANT DELETE ON "public"."steps" TO "authenticated"'], full
    assert code == 0
    assert ("DELETE", "postgres") in acl(sandbox, "public", "steps", "authenticated")
    dcode, diag = cli_json("--config", str(cfg), "diagnose")
    assert diag["d2_permissions"]["missing"] == []


def test_all_declared_is_refused_for_other_actions(sandbox: Sandbox) -> None:
    res = run_cli("repair", "restore_db_connection", "--all-declared")
    assert res.returncode == 2
    assert res.stderr.strip() == (
        "error: --all-declared applies only to: repair fix_table_permissions"
    )


@pytest.fixture
def foreign_owned(sandbox: Sandbox) -> Iterator[str]:
    """A table owned by a role the repair login cannot become, which the repair login may
    nevertheless grant on (SELECT WITH GRANT OPTION): the case where granting as itself
    would leave a second grantor behind."""
    with sandbox.superuser_conn() as conn:
        conn.execute("DROP SCHEMA IF EXISTS westep_scope CASCADE")
        conn.execute("CREATE SCHEMA westep_scope AUTHORIZATION postgres")
        conn.execute("CREATE TABLE westep_scope.foreign_owned (id int)")
        conn.execute("ALTER TABLE westep_scope.foreign_owned OWNER TO supabase_auth_admin")
        conn.execute("GRANT USAGE ON SCHEMA westep_scope TO authenticated, westep_monitor")
        conn.execute("GRANT SELECT ON westep_scope.foreign_owned TO postgres WITH GRANT OPTION")
    clear_repair_audit()
    try:
        yield "westep_scope.foreign_owned"
    finally:
        with sandbox.superuser_conn() as conn:
            conn.execute("DROP SCHEMA westep_scope CASCADE")


def test_r3_escalates_rather_than_grant_as_another_grantor(
    sandbox: Sandbox, foreign_owned: str, tmp_path: Path
) -> None:
    cfg = config_file(
        tmp_path, criticalTables=[{"table": foreign_owned, "roles": ["authenticated"]}]
    )
    code, (r,) = cli_json("--config", str(cfg), "repair", "fix_table_permissions")
    assert r["outcome"] == "failed" and r["escalation"] == 2, r
    assert "cannot grant as the owner" in r["summary"]
    assert "owner supabase_auth_admin" in r["summary"]
    assert r["changes"] == [] and code == 1
    assert acl(sandbox, "westep_scope", "foreign_owned", "authenticated") == set()


# -- item 6: a quoted mixed-case table in H3 and R3 ------------------------------------------
@pytest.fixture
def mixed_case_table(sandbox: Sandbox) -> Iterator[None]:
    with owner_conn(sandbox) as conn:
        conn.execute('DROP TABLE IF EXISTS public."Step"')
        conn.execute('CREATE TABLE public."Step" (id int PRIMARY KEY, "userId" uuid)')
        conn.execute('INSERT INTO public."Step" VALUES (1, NULL)')
        conn.execute('GRANT SELECT ON public."Step" TO anon, westep_monitor')
    clear_repair_audit()
    try:
        yield
    finally:
        with owner_conn(sandbox) as conn:
            conn.execute('DROP TABLE public."Step"')


def test_mixed_case_table_is_checked_and_repaired_by_name(
    sandbox: Sandbox, mixed_case_table: None, tmp_path: Path
) -> None:
    cfg = config_file(
        tmp_path,
        criticalTables=[{"table": 'public."Step"', "roles": ["anon"]}],
        grants=[{"table": 'public."Step"', "role": "anon", "privileges": ["SELECT"]}],
    )
    probe = {"WESTEP_OPS_ROLE_PROBE_URL": sandbox.state.role_probe_url}
    code, report = cli_json("--config", str(cfg), "health-check", "--category", "tables")
    (h3,) = report["checks"]
    assert h3["status"] == "ok" and code == 0, h3
    (item,) = h3["values"]["items"]
    assert (item["table"], item["verified"]) == ("public.Step", "catalog")
    # Read for real as anon through the role-probe login: the name reaches SQL quoted.
    code, report = cli_json("--config", str(cfg), "health-check", "--category", "tables", env=probe)
    (item,) = report["checks"][0]["values"]["items"]
    assert (item["verified"], item["rows_visible"]) == ("select", 1), item

    with owner_conn(sandbox) as conn:
        conn.execute('REVOKE SELECT ON public."Step" FROM anon')
    code, report = cli_json("--config", str(cfg), "health-check", "--category", "tables")
    (h3,) = report["checks"]
    assert code == 2 and h3["findings"] == ["grant_missing"], h3
    assert "anon has no SELECT on public.Step" in h3["summary"]

    code, (r,) = cli_json("--config", str(cfg), "repair", "fix_table_permissions")
    assert r["changes"] == ['GRANT SELECT ON "public"."Step" TO "anon"'], r
    assert r["outcome"] == "repaired" and code == 0
    got = acl(sandbox, "public", "Step", "anon")
    assert ("SELECT", "postgres") in got and {g for _, g in got} == {"postgres"}


# -- H3 from the catalogs -----------------------------------------------------------------
def test_h3_catches_rls_switched_off_on_a_table_anon_reads(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    tables = json.loads((ROOT / "westep-ops.json").read_text())["criticalTables"]
    for t in tables:
        t["rls"] = True
    cfg = config_file(tmp_path, criticalTables=tables)
    with sandbox.superuser_conn() as conn:
        conn.execute("ALTER TABLE public.steps DISABLE ROW LEVEL SECURITY")
    try:
        code, report = cli_json("--config", str(cfg), "health-check", "--category", "tables")
    finally:
        with sandbox.superuser_conn() as conn:
            conn.execute("ALTER TABLE public.steps ENABLE ROW LEVEL SECURITY")
    (h3,) = report["checks"]
    assert code == 2 and h3["findings"] == ["rls_disabled"], h3
    assert "row-level security is OFF on public.steps (declared on)" in h3["summary"]
    assert h3["values"]["read_as_role"] == "catalog only (WESTEP_OPS_ROLE_PROBE_URL is not set)"


def test_rls_without_a_policy_warns_only_where_rows_must_be_seen(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """anon holds SELECT on step_logs but no policy lets it read: by design unless the
    config says anon must see rows."""
    table = {"table": "public.step_logs", "roles": ["authenticated", "anon"]}
    cfg = config_file(tmp_path, "plain.json", criticalTables=[table])
    code, report = cli_json("--config", str(cfg), "health-check", "--category", "tables")
    (h3,) = report["checks"]
    assert code == 0 and h3["status"] == "ok", h3
    assert h3["values"]["no_rls_policy"] == ["anon@public.step_logs"]
    anon = next(i for i in h3["values"]["items"] if i.get("role") == "anon")
    assert "no SELECT policy for anon: it reads 0 rows" in anon["detail"]

    cfg = config_file(tmp_path, "must.json", criticalTables=[{**table, "mustSeeRows": ["anon"]}])
    code, report = cli_json("--config", str(cfg), "health-check", "--category", "tables")
    (h3,) = report["checks"]
    assert code == 1 and h3["findings"] == ["rls_no_policy"], h3
    assert "anon reads no rows of public.step_logs" in h3["summary"]
    # No repair writes policies: recovery escalates it to a person.
    code, rec = cli_json("--config", str(cfg), "recover", "--dry-run")
    assert rec["plan"] == [] and code == 1
    assert any("add one" in e["reason"] for e in rec["escalations"])


def test_role_probe_login_reads_as_each_role(sandbox: Sandbox, tmp_path: Path) -> None:
    cfg = config_file(tmp_path)
    probe = {"WESTEP_OPS_ROLE_PROBE_URL": sandbox.state.role_probe_url}
    code, report = cli_json("--config", str(cfg), "health-check", "--category", "tables", env=probe)
    (h3,) = report["checks"]
    assert code == 0 and h3["values"]["read_as_role"] == "SELECT as each role (westep_role_probe)"
    items = [i for i in h3["values"]["items"] if "role" in i]
    assert {i["verified"] for i in items} == {"select"} and len(items) == 8
    # RLS shows: anon sees public steps only, service_role (BYPASSRLS) every row.
    assert h3["values"]["rows_visible"]["anon@public.steps"] == 1
    # A role-probe login that cannot log in: catalog only, said so, never an outage.
    bad = {
        "WESTEP_OPS_ROLE_PROBE_URL": sandbox.state.role_probe_url.replace(
            "westep_role_probe:", "westep_role_probe:x"
        )
    }
    code, report = cli_json("--config", str(cfg), "health-check", "--category", "tables", env=bad)
    (h3,) = report["checks"]
    assert code == 0 and h3["status"] == "ok", h3
    assert h3["values"]["read_as_role"].startswith(
        "catalog only (the role-probe login is unavailable:"
    )


# -- R1: who may be terminated ---------------------------------------------------------------
class Idle:
    """A real session left idle in transaction (login, application_name)."""

    def __init__(self, sb: Sandbox, login: str, app: str) -> None:
        self.conn = psycopg.connect(sb.state.url(login), application_name=app)
        self.conn.execute("SELECT 1")  # BEGIN implied: now idle in transaction
        self.pid = self.conn.info.backend_pid

    def alive(self) -> bool:
        try:
            self.conn.execute("SELECT 1")
            return True
        except psycopg.OperationalError:
            return False

    def close(self) -> None:
        self.conn.close()


@pytest.fixture
def idle_sessions(sandbox: Sandbox) -> Iterator[dict[str, Idle]]:
    clear_repair_audit()
    sessions = {
        "denied": Idle(sandbox, "authenticator", "scope-denied"),
        "backup": Idle(sandbox, "postgres", "pg_dump"),
        "own": Idle(sandbox, "postgres", "westep-ops-monitor"),
        "internal": Idle(sandbox, "supabase_auth_admin", "gotrue"),
        "allowed": Idle(sandbox, "postgres", "scope-allowed"),
    }
    time.sleep(1.5)  # older than idleInTransactionSeconds = 1
    try:
        yield sessions
    finally:
        for s in sessions.values():
            s.close()


def test_r1_terminates_only_what_it_may(
    sandbox: Sandbox, idle_sessions: dict[str, Idle], tmp_path: Path
) -> None:
    cfg = config_file(
        tmp_path,
        monitoring__thresholds__idleInTransactionSeconds=1,
        repairs__terminate={"neverRoles": ["authenticator"]},
    )
    code, (r,) = cli_json("--config", str(cfg), "repair", "restore_db_connection")
    allowed = idle_sessions["allowed"]
    assert [c for c in r["changes"] if f"pid {allowed.pid} " in c] and len(r["changes"]) == 1, r
    assert not allowed.alive()
    for name in ("denied", "backup", "own", "internal"):
        assert idle_sessions[name].alive(), name
    notes = "\n".join(r["notes"])
    assert (
        f"(its login is in repairs.terminate.neverRoles): stuck session: pid {idle_sessions['denied'].pid}"
        in notes
    )
    assert f"(a backup): stuck session: pid {idle_sessions['backup'].pid}" in notes
    assert f"(westep-ops's own session): stuck session: pid {idle_sessions['own'].pid}" in notes
    assert (
        f"(a platform-internal login): stuck session: pid {idle_sessions['internal'].pid}" in notes
    )

    # Only protected sessions left stuck: nothing terminated, a person is told.
    time.sleep(1.5)  # alive() ran a statement: idle again for longer than the limit
    code, (r,) = cli_json("--config", str(cfg), "repair", "restore_db_connection")
    assert r["outcome"] == "failed" and r["escalation"] == 2 and r["changes"] == []
    assert code == 1
    assert idle_sessions["denied"].alive()

    # onlyRoles: a login not on the allow list is left alone too.
    time.sleep(1.5)
    cfg = config_file(
        tmp_path,
        "only.json",
        monitoring__thresholds__idleInTransactionSeconds=1,
        repairs__terminate={"onlyRoles": ["postgres"]},
    )
    code, (r,) = cli_json("--config", str(cfg), "repair", "restore_db_connection")
    assert r["changes"] == [] and idle_sessions["denied"].alive()
    assert "its login is not in repairs.terminate.onlyRoles" in "\n".join(r["notes"])


def session_rows(sb: Sandbox, pid: int) -> list[dict[str, Any]]:
    """The session as R1 selects it (the columns its terminating statement re-checks)."""
    with owner_conn(sb) as conn, conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT pid, backend_start, state, state_change, xact_start,"
            " usename::text AS usename, application_name, 0 AS state_age_s"
            " FROM pg_stat_activity WHERE pid = %s",
            (pid,),
        ).fetchall()


def test_r1_leaves_a_session_that_moved_on_since_it_was_selected(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """The terminating statement re-checks pid, backend_start, state and state_change: a
    session that ran something after it was selected is not the one that was stuck."""
    env = Environment.from_env()
    ctx = RepairContext(env, parse_config({}))
    s = Idle(sandbox, "postgres", "scope-moved")
    try:
        rows = session_rows(sandbox, s.pid)
        assert rows and rows[0]["state"] == "idle in transaction"
        s.conn.execute("SELECT 2")  # it moved on: a new state_change
        done, protected = terminate_sessions(ctx, rows, "test")
        assert (done, protected) == (0, 0) and s.alive()
        assert ctx.changes == [] and "changed state since it was selected" in ctx.notes[0]
        # Selected afresh, the same session is terminated.
        rows = session_rows(sandbox, s.pid)
        assert terminate_sessions(ctx, rows, "test") == (1, 0) and not s.alive()
    finally:
        s.close()


def test_connections_high_terminates_nothing_by_default(sandbox: Sandbox, tmp_path: Path) -> None:
    """A real connections_high warning (threshold set below today's use): no R1 in the plan
    unless repairs.terminate.onConnectionsHigh says so."""
    cfg = config_file(tmp_path, monitoring__thresholds__connectionUsage=0.01)
    code, rec = cli_json("--config", str(cfg), "recover", "--dry-run")
    pool = next(c for c in rec["before"] if c["category"] == "pool")
    assert "connections_high" in pool["findings"], pool
    assert "restore_db_connection" not in [p["action"] for p in rec["plan"]]
    assert any("nothing is terminated automatically" in e["reason"] for e in rec["escalations"])
    cfg = config_file(
        tmp_path,
        "opt-in.json",
        monitoring__thresholds__connectionUsage=0.01,
        repairs__terminate={"onConnectionsHigh": True},
    )
    code, rec = cli_json("--config", str(cfg), "recover", "--dry-run")
    assert "restore_db_connection" in [p["action"] for p in rec["plan"]]
