"""Issue 9 items 6-8 against the real sandbox: bounded on a locked table, one verdict per
item, and a config written from the target (``config init``) that fits it.

Locks are taken by real connections, grants and schemas are changed as the sandbox's
superuser and put back afterwards; nothing is mocked.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from westep_ops.config import load_config, parse_config
from westep_ops.environment import Environment
from westep_ops.probes.base import MONITOR_MISCONFIGURED, Status
from westep_ops.probes.health import locks as health_mod
from westep_ops.probes.health import run_health_check
from westep_ops.probes.session import ProbeSession
from westep_ops.repairs.recovery import plan_repairs
from westep_ops.sandbox import faults
from westep_ops.sandbox.manager import Sandbox
from westep_ops_tests.helpers import ROOT, run_cli

LOCK_SECONDS = 20


def health(
    config: Path, *args: str, env: dict[str, str] | None = None
) -> tuple[int, dict[str, dict[str, Any]], float]:
    t0 = time.monotonic()
    res = run_cli("--config", str(config), "health-check", "--json", *args, env=env)
    elapsed = time.monotonic() - t0
    assert "Traceback" not in res.stderr, res.stderr
    report = json.loads(res.stdout)
    return res.returncode, {c["category"]: c for c in report["checks"]}, elapsed


def shipped(tmp_path: Path, name: str = "cfg.json", **changes: Any) -> Path:
    data = json.loads((ROOT / "westep-ops.json").read_text())
    for key, extend in changes.items():
        data[key] = data.get(key, []) + extend
    p = tmp_path / name
    p.write_text(json.dumps(data))
    return p


class LockHolder:
    """Another client holding ``ACCESS EXCLUSIVE`` on a table in an open transaction."""

    def __init__(self, sb: Sandbox, table: str = "public.steps") -> None:
        self.conn = psycopg.connect(sb.state.url("postgres"), autocommit=False)
        self.pid = self.conn.info.backend_pid
        schema, name = table.split(".")
        self.conn.execute(
            sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(sql.Identifier(schema, name))
        )
        # Held for LOCK_SECONDS at most, whatever happens to the test.
        self.timer = threading.Timer(LOCK_SECONDS, self.release)
        self.timer.start()

    def release(self) -> None:
        self.timer.cancel()
        try:
            self.conn.rollback()
            self.conn.close()
        except psycopg.Error:
            pass


@pytest.fixture
def steps_locked(sandbox: Sandbox) -> Iterator[LockHolder]:
    holder = LockHolder(sandbox)
    try:
        yield holder
    finally:
        holder.release()


# -- item 6: bounded on a locked table ---------------------------------------------------
def test_locked_table_whole_health_check_is_bounded_and_names_the_blocker(
    sandbox: Sandbox, steps_locked: LockHolder, tmp_path: Path
) -> None:
    cfg = shipped(tmp_path)
    code, checks, elapsed = health(cfg)
    assert elapsed < 8, f"health-check took {elapsed:.1f} s behind the lock"
    blocker = f"blocked by a lock held by pid {steps_locked.pid} (user postgres"
    for cat in ("tables", "integrity"):
        assert blocker in checks[cat]["summary"], checks[cat]
        assert "table_locked" in checks[cat]["findings"]
        assert checks[cat]["status"] == "warning"
    items = checks["tables"]["values"]["items"]
    by_table = {(i["table"], i.get("role")): i["status"] for i in items if "role" in i}
    # The locked table's pairs say so; every other pair still got read for real.
    assert {k: v for k, v in by_table.items() if k[0] == "public.steps"} == {
        ("public.steps", r): "warning" for r in ("anon", "authenticated", "service_role")
    }
    assert [v for k, v in by_table.items() if k[0] != "public.steps"] == ["ok"] * 5
    rules = {i["rule"]: i for i in checks["integrity"]["values"]["items"]}
    assert rules["profiles_username_unique"]["status"] == "ok"  # not on the locked table
    assert rules["profiles_username_unique"]["count"] == 0
    assert rules["step_logs_orphans"]["status"] == "warning"  # references public.steps
    # A lock is not a missing grant: recovery plans no permission repair for it.
    steps_locked.release()
    code, checks, _ = health(cfg)
    assert code == 0, checks


def test_lock_taken_after_the_catalog_look_costs_lock_timeout_once(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race: the lock appears between round trip 1 and the reads. Simulated by hiding
    the first lock look-up's answer; every later look at the catalog is real."""
    cfg = load_config(shipped(tmp_path))
    real = health_mod.record_locks
    calls: list[int] = []

    def first_look_sees_nothing(session: Any, tables: list[str], rows: list[Any]) -> None:
        calls.append(1)
        real(session, tables, [] if len(calls) == 1 else rows)

    holder = LockHolder(sandbox)
    monkeypatch.setattr(health_mod, "record_locks", first_look_sees_nothing)
    try:
        with ProbeSession(Environment.from_env(), cfg) as session:
            t0 = time.monotonic()
            results = {r.category.value: r for r in run_health_check(session, _db_categories())}
            elapsed = time.monotonic() - t0
    finally:
        holder.release()
    assert len(calls) >= 2  # the lock_timeout made it look again
    assert elapsed < 8
    for cat in ("tables", "integrity"):
        assert f"pid {holder.pid}" in results[cat].summary, results[cat].summary
        assert results[cat].status is Status.warning
    # one lock_timeout wait (2 s) for the whole sweep, not one per pair or rule
    lock_s = cfg.monitoring.timeouts.lock / 1000
    assert results["tables"].duration_ms / 1000 < lock_s
    assert results["integrity"].duration_ms / 1000 < lock_s


def _db_categories() -> list[Any]:
    from westep_ops.config import Category

    return [Category.tables, Category.integrity, Category.realtime]


def test_queued_exclusive_lock_is_reported_with_who_it_waits_for(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """A reader holds the table, a migration queues for ACCESS EXCLUSIVE: new readers
    queue behind the migration. H3 names it and the session it waits for."""
    reader = psycopg.connect(sandbox.state.url("postgres"), autocommit=False)
    reader.execute("SELECT 1 FROM public.profiles LIMIT 1")
    migration = psycopg.connect(sandbox.state.url("postgres"), autocommit=True)
    reader_pid, migration_pid = reader.info.backend_pid, migration.info.backend_pid
    waiter = threading.Thread(
        target=lambda: _try(
            migration,
            "SET lock_timeout = '15s'; LOCK TABLE public.profiles IN ACCESS EXCLUSIVE MODE",
        )
    )
    waiter.start()
    try:
        time.sleep(0.5)
        code, checks, elapsed = health(shipped(tmp_path), "--category", "tables")
    finally:
        reader.rollback()
        reader.close()
        waiter.join(20)
        migration.close()
    assert elapsed < 8
    h3 = checks["tables"]
    assert f"blocked behind pid {migration_pid}" in h3["summary"], h3
    assert f"queued for an ACCESS EXCLUSIVE lock and waits for pid {reader_pid}" in h3["summary"]


def _try(conn: psycopg.Connection, text: str) -> None:
    try:
        conn.execute(text)
    except psycopg.Error:
        pass


# -- item 7: one bad item does not blind a category ---------------------------------------
@pytest.fixture
def private_schema(sandbox: Sandbox) -> Iterator[None]:
    """A schema the API roles may read and the monitoring login may not (no USAGE)."""
    with sandbox.superuser_conn() as conn:
        conn.execute("DROP SCHEMA IF EXISTS westep_private CASCADE")
        conn.execute("CREATE SCHEMA westep_private AUTHORIZATION postgres")
        conn.execute("CREATE TABLE westep_private.notes (id int PRIMARY KEY, note text)")
        conn.execute("INSERT INTO westep_private.notes VALUES (1, 'a'), (2, NULL)")
        conn.execute("GRANT USAGE ON SCHEMA westep_private TO anon")
        conn.execute("GRANT SELECT ON westep_private.notes TO anon")
    try:
        yield
    finally:
        with sandbox.superuser_conn() as conn:
            conn.execute("DROP SCHEMA westep_private CASCADE")


def test_one_unreadable_table_among_several(
    sandbox: Sandbox, private_schema: None, tmp_path: Path
) -> None:
    cfg = shipped(
        tmp_path,
        criticalTables=[{"table": "westep_private.notes", "roles": ["anon"]}],
        integrityRules=[
            {
                "name": "notes_not_null",
                "kind": "not_null",
                "table": "westep_private.notes",
                "columns": ["note"],
            }
        ],
    )
    code, checks, _ = health(cfg, "--category", "tables", "--category", "integrity")
    h3, h4 = checks["tables"], checks["integrity"]
    # H3: anon really reads it, and the monitor's own lack of USAGE blinds nothing.
    assert h3["status"] == "ok", h3
    assert [i["status"] for i in h3["values"]["items"]] == ["ok"] * 9
    # H4: the unreadable rule is that rule's error, naming the grant; the others count.
    rules = {i["rule"]: i for i in h4["values"]["items"]}
    assert rules["notes_not_null"]["status"] == "error"
    assert (
        "the monitoring login westep_monitor lacks USAGE on schema westep_private: "
        "GRANT USAGE ON SCHEMA westep_private TO westep_monitor"
    ) in rules["notes_not_null"]["detail"]
    others = [r for name, r in rules.items() if name != "notes_not_null"]
    assert [(r["status"], r["count"]) for r in others] == [("ok", 0)] * 3
    assert h4["status"] == "error" and MONITOR_MISCONFIGURED in h4["findings"]
    assert code == 3

    # With USAGE but no SELECT, the rule names the missing SELECT instead.
    with sandbox.superuser_conn() as conn:
        conn.execute("GRANT USAGE ON SCHEMA westep_private TO westep_monitor")
    _, checks, _ = health(cfg, "--category", "integrity")
    rules = {i["rule"]: i for i in checks["integrity"]["values"]["items"]}
    assert (
        "GRANT SELECT ON westep_private.notes TO westep_monitor"
        in rules["notes_not_null"]["detail"]
    )
    # Given the grant, the rule runs and finds the NULL.
    with sandbox.superuser_conn() as conn:
        conn.execute("GRANT SELECT ON westep_private.notes TO westep_monitor")
    code, checks, _ = health(cfg, "--category", "integrity")
    rules = {i["rule"]: i for i in checks["integrity"]["values"]["items"]}
    assert (rules["notes_not_null"]["status"], rules["notes_not_null"]["count"]) == ("warning", 1)
    assert code == 1


def test_an_item_failing_at_run_time_is_isolated_by_the_one_by_one_rerun(
    sandbox: Sandbox, private_schema: None, tmp_path: Path
) -> None:
    """Nothing in the catalog predicts this failure: a view whose rows raise an error when
    read. The batch fails; the re-run finds which item it was, the others keep theirs."""
    with sandbox.superuser_conn() as conn:
        conn.execute("SET ROLE postgres")
        conn.execute(
            "CREATE VIEW westep_private.broken AS SELECT id, note FROM westep_private.notes"
            " WHERE 1 / (id - id) = 1"
        )
        conn.execute("GRANT SELECT ON westep_private.broken TO anon, westep_monitor")
        conn.execute("GRANT USAGE ON SCHEMA westep_private TO westep_monitor")
    cfg = shipped(
        tmp_path,
        criticalTables=[{"table": "westep_private.broken", "roles": ["anon"]}],
        integrityRules=[
            {
                "name": "broken_not_null",
                "kind": "not_null",
                "table": "westep_private.broken",
                "columns": ["note"],
            }
        ],
    )
    # H3 reads as the role only with the role-probe login; the catalog cannot see this.
    probe = {"WESTEP_OPS_ROLE_PROBE_URL": sandbox.state.role_probe_url}
    code, checks, elapsed = health(
        cfg, "--category", "tables", "--category", "integrity", env=probe
    )
    assert elapsed < 8
    pairs = {(i["table"], i["role"]): i for i in checks["tables"]["values"]["items"]}
    broken = pairs.pop(("westep_private.broken", "anon"))
    assert broken["status"] == "error" and "division by zero" in broken["detail"]
    assert {i["status"] for i in pairs.values()} == {"ok"} and len(pairs) == 8
    rules = {i["rule"]: i for i in checks["integrity"]["values"]["items"]}
    assert rules["broken_not_null"]["status"] == "error"
    assert "division by zero" in rules["broken_not_null"]["detail"]
    assert [rules[n]["count"] for n in rules if n != "broken_not_null"] == [0, 0, 0]
    assert code == 3


def test_rls_switched_off_where_declared_on_is_critical(sandbox: Sandbox, tmp_path: Path) -> None:
    data = json.loads((ROOT / "westep-ops.json").read_text())
    for t in data["criticalTables"]:
        t["rls"] = True
    cfg = tmp_path / "rls.json"
    cfg.write_text(json.dumps(data))
    with sandbox.superuser_conn() as conn:
        conn.execute("ALTER TABLE public.step_logs DISABLE ROW LEVEL SECURITY")
    try:
        code, checks, _ = health(cfg, "--category", "tables")
    finally:
        with sandbox.superuser_conn() as conn:
            conn.execute("ALTER TABLE public.step_logs ENABLE ROW LEVEL SECURITY")
    h3 = checks["tables"]
    assert code == 2 and "rls_disabled" in h3["findings"]
    assert "row-level security is OFF on public.step_logs (declared on)" in h3["summary"]
    rls = {i["table"]: i["status"] for i in h3["values"]["items"] if i.get("kind") == "rls"}
    assert rls == {"public.profiles": "ok", "public.steps": "ok", "public.step_logs": "critical"}
    code, checks, _ = health(cfg, "--category", "tables")
    assert code == 0, checks["tables"]


def test_a_role_that_lost_select_is_one_critical_pair(sandbox: Sandbox, tmp_path: Path) -> None:
    faults.inject(sandbox, "grant_revoke", True, 120)
    try:
        code, checks, _ = health(shipped(tmp_path), "--category", "tables")
    finally:
        faults.inject(sandbox, "grant_revoke", False)
    items = checks["tables"]["values"]["items"]
    bad = [(i["table"], i["role"]) for i in items if i["status"] != "ok"]
    assert bad == [("public.steps", "authenticated")]
    assert code == 2 and checks["tables"]["values"]["readable"] == 7


def test_rule_with_a_typo_leaves_the_other_rules_counting(sandbox: Sandbox, tmp_path: Path) -> None:
    cfg = shipped(
        tmp_path,
        integrityRules=[
            {
                "name": "steps_typo",
                "kind": "not_null",
                "table": "public.steps",
                "columns": ["titel"],
            }
        ],
    )
    faults.inject(sandbox, "orphans", True, 120)
    try:
        code, checks, _ = health(cfg, "--category", "integrity")
    finally:
        faults.inject(sandbox, "orphans", False)
    h4 = checks["integrity"]
    rules = {i["rule"]: i for i in h4["values"]["items"]}
    assert rules["steps_typo"]["status"] == "error"
    assert "column titel does not exist in public.steps" in rules["steps_typo"]["detail"]
    assert rules["step_logs_orphans"]["count"] == faults.ORPHAN_ROWS
    assert rules["step_logs_orphans"]["status"] == "warning"
    assert "integrity:step_logs_orphans" in h4["findings"]
    assert [rules[n]["status"] for n in ("steps_title_not_null", "profiles_username_unique")] == [
        "ok",
        "ok",
    ]


# -- item 8: config init / config show, not configured ------------------------------------
def test_config_init_fits_the_sandbox_and_detects_its_faults(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    out = tmp_path / "init.json"
    res = run_cli("config", "init", "--output", str(out))
    assert res.returncode == 0, res.stderr
    assert "target: supabase" in res.stdout
    data = json.loads(out.read_text())
    parse_config(data)
    rules = {r["name"]: r for r in data["integrityRules"]}
    # step_logs.step_id has no foreign key: a rule; steps.user_id has one: none.
    assert rules["step_logs_step_id_orphans"]["references"] == "public.steps"
    assert not any(r["table"] == "public.steps" for r in rules.values())
    assert data["realtime"] == {
        "publication": "supabase_realtime",
        "tables": ["public.profiles", "public.steps"],
    }
    assert "auth" in data and {"anon", "authenticated", "service_role"} <= set(
        data["auth"]["roles"]
    )
    assert {t["table"]: t["rls"] for t in data["criticalTables"]} == {
        "public.profiles": True,
        "public.step_logs": True,
        "public.steps": True,
    }

    # Never overwritten without --force: one line, exit 2, file untouched.
    before = out.read_text()
    again = run_cli("config", "init", "--output", str(out))
    assert again.returncode == 2
    assert again.stderr.strip() == f"error: {out} already exists (use --force to overwrite it)"
    assert out.read_text() == before
    assert run_cli("config", "init", "--output", str(out), "--force").returncode == 0

    code, checks, _ = health(out)
    assert code == 0, {c: v["summary"] for c, v in checks.items() if v["status"] != "ok"}
    for fault, cat, status, finding in (
        ("grant_revoke", "tables", "critical", "grant_missing"),
        ("orphans", "integrity", "warning", "integrity:step_logs_step_id_orphans"),
        ("publication_drop", "realtime", "critical", "publication_missing"),
    ):
        faults.inject(sandbox, fault, True, 120)
        try:
            code, checks, _ = health(out)
        finally:
            faults.inject(sandbox, fault, False)
        assert checks[cat]["status"] == status, (fault, checks[cat])
        assert finding in checks[cat]["findings"], (fault, checks[cat])


PLAIN_DB = "westep_plain"


@pytest.fixture
def plain_database(sandbox: Sandbox) -> Iterator[str]:
    """A plain PostgreSQL database (no auth schema, no API roles, no publication),
    created with the repair login, readable by the monitoring login."""
    s = sandbox.state
    with psycopg.connect(s.url("postgres"), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {PLAIN_DB} WITH (FORCE)")  # constant name
        conn.execute(f"CREATE DATABASE {PLAIN_DB}")
        conn.execute("DROP ROLE IF EXISTS westep_plain_app")
        conn.execute("CREATE ROLE westep_plain_app NOLOGIN")
    with psycopg.connect(s.url("postgres", db=PLAIN_DB), autocommit=True) as conn:
        conn.execute("CREATE TABLE public.items (id bigint PRIMARY KEY, name text)")
        conn.execute(
            "CREATE TABLE public.item_notes (id bigint PRIMARY KEY, item_id bigint, note text)"
        )
        conn.execute("INSERT INTO public.items VALUES (1, 'a'), (2, 'b')")
        conn.execute("INSERT INTO public.item_notes VALUES (1, 1, 'x'), (2, 2, 'y')")
        conn.execute("GRANT SELECT, INSERT ON public.items, public.item_notes TO westep_plain_app")
        conn.execute("GRANT SELECT ON public.items, public.item_notes TO westep_monitor")
    try:
        yield s.url("westep_monitor", db=PLAIN_DB)
    finally:
        with psycopg.connect(s.url("postgres"), autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {PLAIN_DB} WITH (FORCE)")
            conn.execute("DROP ROLE IF EXISTS westep_plain_app")


def _plain_env(url: str) -> dict[str, str]:
    return {
        "DIRECT_URL": url,
        "DATABASE_URL": "",
        "PGBOUNCER_ADMIN_URL": "",
        "NEXT_PUBLIC_SUPABASE_URL": "",
        "WESTEP_OPS_APP_URL": "",
        "SUPABASE_SERVICE_ROLE_KEY": "",
    }


DB_CHECKS = ("--category", "tables", "--category", "integrity", "--category", "realtime")
NOT_APPLICABLE = ("--category", "auth", "--category", "api")


def test_plain_postgresql_says_not_configured(
    sandbox: Sandbox, plain_database: str, tmp_path: Path
) -> None:
    env = _plain_env(plain_database)
    out = tmp_path / "plain.json"
    res = run_cli("config", "init", "-o", str(out), env=env)
    assert res.returncode == 0, res.stderr
    assert "target: postgresql" in res.stdout
    assert "auth: not configured" in res.stdout
    assert "realtime: not configured" in res.stdout
    data = json.loads(out.read_text())
    assert "auth" not in data and "realtime" not in data and data["endpoints"] == []
    assert data["criticalTables"] == [
        {"table": "public.item_notes", "roles": ["westep_plain_app"], "rls": False},
        {"table": "public.items", "roles": ["westep_plain_app"], "rls": False},
    ]
    assert [(r["table"], r["references"]) for r in data["integrityRules"]] == [
        ("public.item_notes", "public.items")
    ]

    code, checks, _ = health(out, *DB_CHECKS, *NOT_APPLICABLE, env=env)
    for cat in ("auth", "realtime", "api"):
        assert checks[cat]["status"] == "not_configured", checks[cat]
        assert checks[cat]["summary"].startswith("not configured ("), checks[cat]
    # The monitor is no member of the app's role: H3 judges from the catalog, and says so.
    assert checks["tables"]["status"] == "ok"
    items = checks["tables"]["values"]["items"]
    assert [i["verified"] for i in items if "role" in i] == ["catalog", "catalog"]
    assert [(i["kind"], i["status"]) for i in items if "role" not in i] == [("rls", "ok")] * 2
    assert checks["integrity"]["values"]["violations"] == {"item_notes_item_id_orphans": 0}
    assert code == 0

    # The config written by init still catches what it declares: an orphan note.
    with psycopg.connect(sandbox.state.url("postgres", db=PLAIN_DB), autocommit=True) as conn:
        conn.execute("INSERT INTO public.item_notes VALUES (3, 99, 'orphan')")
    code, checks, _ = health(out, "--category", "integrity", env=env)
    assert checks["integrity"]["values"]["violations"] == {"item_notes_item_id_orphans": 1}
    assert code == 1


def test_defaults_never_page_on_a_plain_database(
    sandbox: Sandbox, plain_database: str, tmp_path: Path
) -> None:
    """No config at all: the old default (auth.roles with authenticator) gave H6 CRITICAL."""
    empty = tmp_path / "empty.json"
    empty.write_text("{}")
    env = _plain_env(plain_database)
    code, checks, _ = health(empty, *DB_CHECKS, *NOT_APPLICABLE, env=env)
    assert {c: v["status"] for c, v in checks.items()} == {
        c: "not_configured" for c in ("tables", "integrity", "realtime", "auth", "api")
    }
    assert code == 0
    # ... and nothing that does not apply is "repaired".
    with ProbeSession(Environment.from_env({**_os_env(), **env}), load_config(empty)) as s:
        results = run_health_check(s)
    plan, escalations = plan_repairs(results, None, load_config(empty))
    assert "auth" not in {e.category for e in escalations}
    assert all(p.action.value != "repair_auth" for p in plan)


def _os_env() -> dict[str, str]:
    import os

    return dict(os.environ)


def test_an_auth_section_makes_the_auth_schema_required(
    sandbox: Sandbox, plain_database: str, tmp_path: Path
) -> None:
    cfg = tmp_path / "auth.json"
    cfg.write_text(json.dumps({"auth": {"schema": "auth"}}))
    code, checks, _ = health(cfg, "--category", "auth", env=_plain_env(plain_database))
    assert checks["auth"]["status"] == "critical"
    assert "auth_schema_missing" in checks["auth"]["findings"]
    assert code == 2


def test_config_show_prints_every_default_and_its_source(tmp_path: Path) -> None:
    empty = tmp_path / "empty.json"
    empty.write_text("{}")
    res = run_cli("--config", str(empty), "config", "show", "--json")
    assert res.returncode == 0, res.stderr
    shown = json.loads(res.stdout)
    assert shown["source"] == f"{empty.resolve()} (from --config)"
    # What is shown is a complete config: loading it gives the same effective config.
    assert parse_config(shown["config"]) == load_config(empty)
    assert shown["config"]["auth"]["required"] is False
    assert "authenticator" not in shown["config"]["auth"]["roles"]
    assert shown["config"]["realtime"]["required"] is False
    text = run_cli("--config", str(empty), "config", "show")
    assert text.returncode == 0
    assert text.stdout.splitlines()[0].startswith(f"# effective config from {empty.resolve()}")
    assert json.loads(text.stdout.split("\n", 1)[1]) == shown["config"]
