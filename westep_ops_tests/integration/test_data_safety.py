"""Data cleaning that loses nothing, names as exact identifiers, maintenance in order.

Against the real sandbox: rows whose DELETE would cascade into other tables are never
moved (the refusal names what would cascade, the dry run says the same, and every
table's rows are bit-for-bit unchanged); duplicates follow UNIQUE semantics and keep the
oldest row; a Prisma-style ``public."Step"`` works in H4, D2/D3, R5 and restore.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from westep_ops.config import Category, RepairAction, load_config, parse_config
from westep_ops.environment import Environment
from westep_ops.probes.diagnosis import d2_permissions, d3_integrity
from westep_ops.probes.health import run_health_check
from westep_ops.probes.session import ProbeSession
from westep_ops.repairs.base import run_repair
from westep_ops.repairs.recovery import plan_repairs, sweep
from westep_ops.sandbox.manager import Sandbox
from westep_ops_tests.helpers import ROOT, run_cli, write_config
from westep_ops_tests.integration.conftest import clear_repair_audit

APP_TABLES = ("auth.users", "public.profiles", "public.steps", "public.step_logs")
SHIPPED = json.loads((ROOT / "westep-ops.json").read_text())


def fingerprint(conn: psycopg.Connection, schema: str, table: str) -> tuple[int, str]:
    """Row count and md5 over every row (order-independent), computed by the test itself."""
    row = conn.execute(
        sql.SQL(
            "SELECT count(*), md5(coalesce(string_agg(x::text, ',' ORDER BY x::text), ''))"
            " FROM {} AS x"
        ).format(sql.Identifier(schema, table))
    ).fetchone()
    assert row is not None
    return int(row[0]), str(row[1])


def fingerprints(sb: Sandbox, tables: tuple[str, ...] = APP_TABLES) -> dict[str, tuple[int, str]]:
    with sb.superuser_conn() as conn:
        return {t: fingerprint(conn, *t.split(".")) for t in tables}


def repair_json(cfg: Path, *args: str) -> tuple[int, dict[str, Any]]:
    res = run_cli("--config", str(cfg), "repair", "fix_data_integrity", *args, "--json")
    assert "Traceback" not in res.stderr, res.stderr
    (result,) = json.loads(res.stdout)
    return res.returncode, result


def drop_quarantine(sb: Sandbox) -> None:
    with sb.superuser_conn() as conn:
        conn.execute("DROP SCHEMA IF EXISTS westep_quarantine CASCADE")


def rule(**fields: Any) -> dict[str, Any]:
    return {"severity": "warning", **fields}


# -- 1. no cascade, ever -------------------------------------------------------------------
DUP_USER = "00000000-0000-4000-8000-00000000d0b1"
NULL_USER = "00000000-0000-4000-8000-00000000d0b2"


@pytest.fixture
def cascading_rows(sandbox: Sandbox) -> Iterator[None]:
    """A later duplicate of profile user_1 and a profile without display_name, each with
    two steps: deleting either profile would cascade into public.steps (4 rows)."""
    with sandbox.superuser_conn() as conn:
        conn.execute("ALTER TABLE public.profiles DROP CONSTRAINT profiles_username_key")
        conn.execute(
            "INSERT INTO auth.users (id, email) VALUES (%s, 'dup@x.example'), (%s, 'null@x.example')",
            (DUP_USER, NULL_USER),
        )
        conn.execute(
            "INSERT INTO public.profiles (id, username, display_name, created_at) VALUES"
            " (%s, 'user_1', 'Dup', '2026-06-01'), (%s, 'nodisplay', NULL, '2026-06-01')",
            (DUP_USER, NULL_USER),
        )
        conn.execute(
            "INSERT INTO public.steps (id, user_id, title) VALUES"
            " (900001, %(a)s, 'a1'), (900002, %(a)s, 'a2'), (900003, %(b)s, 'b1'), (900004, %(b)s, 'b2')",
            {"a": DUP_USER, "b": NULL_USER},
        )
    drop_quarantine(sandbox)
    try:
        yield
    finally:
        with sandbox.superuser_conn() as conn:
            conn.execute("DELETE FROM public.steps WHERE id BETWEEN 900001 AND 900004")
            conn.execute("DELETE FROM public.profiles WHERE id IN (%s, %s)", (DUP_USER, NULL_USER))
            conn.execute("DELETE FROM auth.users WHERE id IN (%s, %s)", (DUP_USER, NULL_USER))
            conn.execute(
                "ALTER TABLE public.profiles ADD CONSTRAINT profiles_username_key UNIQUE (username)"
            )
        drop_quarantine(sandbox)


def test_cleaning_that_would_cascade_moves_nothing_and_escalates(
    sandbox: Sandbox, tmp_path: Path, cascading_rows: None
) -> None:
    clear_repair_audit()
    # The shipped profiles rule, opted in to cleaning, and a not_null rule on profiles.
    rules = [dict(r) for r in SHIPPED["integrityRules"]]
    for r in rules:
        if r["name"] == "profiles_username_unique":
            r["repair"] = "quarantine"
    rules.append(
        rule(
            name="profiles_display_name",
            kind="not_null",
            table="public.profiles",
            columns=["display_name"],
            key=["id"],
            repair="quarantine",
        )
    )
    cfg = write_config(tmp_path / "c.json", integrityRules=rules)
    before = fingerprints(sandbox)

    with ProbeSession(Environment.from_env(), load_config(cfg)) as s:
        (h4,) = run_health_check(s, [Category.integrity])
    assert h4.values["violations"]["profiles_username_unique"] == 1
    assert h4.values["violations"]["profiles_display_name"] == 1

    dry_code, dry = repair_json(cfg, "--dry-run")
    code, real = repair_json(cfg)
    for result in (dry, real):
        assert result["outcome"] == "failed" and result["escalation"] == 2
        summary = result["summary"]
        for name in ("profiles_username_unique", "profiles_display_name"):
            assert f"{name}: refused to move 1 rows of public.profiles" in summary
        assert summary.count("delete 2 rows of public.steps") == 2
        assert "foreign key steps_user_id_fkey ON DELETE CASCADE" in summary
        assert result["changes"] == []
    assert dry["summary"] == real["summary"]  # the dry run says exactly what the run does
    assert code == 1
    assert fingerprints(sandbox) == before  # not a row changed anywhere
    with sandbox.superuser_conn() as conn:
        assert conn.execute("SELECT to_regnamespace('westep_quarantine')").fetchone() == (None,)


def test_report_only_rules_are_not_planned_for_cleaning(
    sandbox: Sandbox, cascading_rows: None
) -> None:
    """The shipped profiles rule is report-only: recovery escalates it with its count."""
    config = load_config(os.environ["WESTEP_OPS_CONFIG"])
    results, perf = sweep(Environment.from_env(), config)
    plan, escalations = plan_repairs(results, perf, config)
    assert "fix_data_integrity" not in {p.action.value for p in plan}
    (esc,) = [e for e in escalations if "profiles_username_unique" in e.reason]
    assert esc.level == 2 and "1 rows" in esc.reason and "report-only" in esc.reason


def test_a_delete_trigger_blocks_the_move(sandbox: Sandbox, tmp_path: Path) -> None:
    """Orphans in step_logs, which has a DELETE trigger: nothing moves, the trigger is named."""
    clear_repair_audit()
    drop_quarantine(sandbox)
    with sandbox.superuser_conn() as conn:
        conn.execute(
            "CREATE FUNCTION public.westep_test_noop() RETURNS trigger LANGUAGE plpgsql"
            " AS $$ BEGIN RETURN OLD; END $$"
        )
        conn.execute(
            "CREATE TRIGGER westep_test_on_delete BEFORE DELETE ON public.step_logs"
            " FOR EACH ROW EXECUTE FUNCTION public.westep_test_noop()"
        )
        conn.execute(
            "INSERT INTO public.step_logs (id, step_id, note) VALUES (990001, 99999999, 'trigger test')"
        )
    try:
        cfg = write_config(tmp_path / "c.json")
        before = fingerprints(sandbox)
        code, r = repair_json(cfg)
        assert code == 1 and r["outcome"] == "failed"
        assert "step_logs_orphans: refused to move 1 rows of public.step_logs" in r["summary"]
        assert "fire trigger westep_test_on_delete on public.step_logs" in r["summary"]
        assert fingerprints(sandbox) == before
    finally:
        with sandbox.superuser_conn() as conn:
            conn.execute("DROP TRIGGER westep_test_on_delete ON public.step_logs")
            conn.execute("DROP FUNCTION public.westep_test_noop()")
            conn.execute("DELETE FROM public.step_logs WHERE id = 990001")
        drop_quarantine(sandbox)


def test_r5_is_judged_on_the_rules_it_may_clean(sandbox: Sandbox, tmp_path: Path) -> None:
    """A report-only rule still violated after R5 is not R5's failure (it never touches it)."""
    clear_repair_audit()
    drop_quarantine(sandbox)
    with sandbox.superuser_conn() as conn:
        (sid, title) = conn.execute(
            "SELECT id, title FROM public.steps ORDER BY id LIMIT 1"
        ).fetchone()
        conn.execute("UPDATE public.steps SET title = NULL WHERE id = %s", (sid,))  # report-only
        conn.execute(
            "INSERT INTO public.step_logs (id, step_id, note) VALUES (990002, 99999999, 'r5 judge')"
        )  # an orphan: the shipped step_logs_orphans rule opts in
    try:
        cfg = write_config(tmp_path / "c.json")
        code, r = repair_json(cfg)
        assert code == 0 and r["outcome"] == "repaired", r
        assert any("steps_title_not_null" in n for n in r["notes"]), r["notes"]
        with sandbox.superuser_conn() as conn:
            assert (
                conn.execute("SELECT count(*) FROM public.step_logs WHERE id = 990002").fetchone()[
                    0
                ]
                == 0
            )
            assert (
                conn.execute("SELECT title FROM public.steps WHERE id = %s", (sid,)).fetchone()[0]
                is None
            )
    finally:
        with sandbox.superuser_conn() as conn:
            conn.execute("UPDATE public.steps SET title = %s WHERE id = %s", (title, sid))
        drop_quarantine(sandbox)


# -- duplicates: UNIQUE semantics, the oldest row stays --------------------------------------
@pytest.fixture
def scratch_schema(sandbox: Sandbox) -> Iterator[str]:
    """A schema owned by the repair login (postgres), readable by the monitor."""
    with sandbox.superuser_conn() as conn:
        conn.execute("DROP SCHEMA IF EXISTS westep_test CASCADE")
        conn.execute("CREATE SCHEMA westep_test AUTHORIZATION postgres")
        conn.execute("GRANT USAGE ON SCHEMA westep_test TO westep_monitor")
        conn.execute(
            "ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA westep_test"
            " GRANT SELECT ON TABLES TO westep_monitor"
        )
    drop_quarantine(sandbox)
    try:
        yield "westep_test"
    finally:
        with sandbox.superuser_conn() as conn:
            conn.execute("DROP SCHEMA westep_test CASCADE")
        drop_quarantine(sandbox)


def test_null_keys_are_not_duplicates_and_the_oldest_row_survives(
    sandbox: Sandbox, tmp_path: Path, scratch_schema: str
) -> None:
    clear_repair_audit()
    with psycopg.connect(os.environ["WESTEP_OPS_REPAIR_URL"], autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE westep_test.accounts (id int PRIMARY KEY, email text, created_at timestamptz)"
        )
        # id 2 is the oldest "a"; ids 4 and 5 have NULL emails (never duplicates).
        conn.execute(
            "INSERT INTO westep_test.accounts VALUES"
            " (1, 'a', '2026-01-02'), (2, 'a', '2026-01-01'), (3, 'a', '2026-01-03'),"
            " (4, NULL, '2026-01-01'), (5, NULL, '2026-01-02'), (6, 'b', '2026-01-01')"
        )
    with sandbox.superuser_conn() as conn:
        original = fingerprint(conn, "westep_test", "accounts")
    cfg = write_config(
        tmp_path / "c.json",
        integrityRules=[
            rule(
                name="accounts_email_unique",
                kind="duplicates",
                table="westep_test.accounts",
                columns=["email"],
                key=["id"],
                orderBy=["created_at", "id"],
                repair="quarantine",
            )
        ],
    )
    with ProbeSession(Environment.from_env(), load_config(cfg)) as s:
        (h4,) = run_health_check(s, [Category.integrity])
    assert h4.values["violations"] == {"accounts_email_unique": 2}

    code, dry = repair_json(cfg, "--dry-run")
    assert code == 0 and dry["outcome"] == "dry_run" and dry["summary"] == "would quarantine 2 rows"
    code, r = repair_json(cfg)
    assert code == 0 and r["outcome"] == "repaired", r
    assert r["summary"] == "quarantined 2 rows"
    with sandbox.superuser_conn() as conn:
        left = [i for (i,) in conn.execute("SELECT id FROM westep_test.accounts ORDER BY id")]
        kept = [
            i
            for (i,) in conn.execute(
                'SELECT id FROM westep_quarantine."westep_test__accounts" ORDER BY id'
            )
        ]
    assert left == [2, 4, 5, 6] and kept == [1, 3]

    res = run_cli("--config", str(cfg), "quarantine", "restore", "westep_test.accounts")
    assert res.returncode == 0 and "restored 2 rows" in res.stdout, res.stdout + res.stderr
    with sandbox.superuser_conn() as conn:
        assert fingerprint(conn, "westep_test", "accounts") == original

    # An orderBy column that does not exist is that rule's own, exact error.
    bad = write_config(
        tmp_path / "bad.json",
        integrityRules=[
            rule(
                name="accounts_email_unique",
                kind="duplicates",
                table="westep_test.accounts",
                columns=["email"],
                orderBy=["signed_up"],
            )
        ],
    )
    with ProbeSession(Environment.from_env(), load_config(bad)) as s:
        (h4,) = run_health_check(s, [Category.integrity])
    assert h4.status.value == "error"
    assert "column signed_up does not exist in westep_test.accounts" in h4.summary


def test_referencing_keys_are_counted_and_only_rows_nothing_references_move(
    sandbox: Sandbox, tmp_path: Path, scratch_schema: str
) -> None:
    """NO ACTION (the DELETE would fail) and SET NULL are refused and named; a parent
    row that nothing references moves, with the referencing tables left as they were."""
    clear_repair_audit()
    with psycopg.connect(os.environ["WESTEP_OPS_REPAIR_URL"], autocommit=True) as conn:
        conn.execute("CREATE TABLE westep_test.parent (id int PRIMARY KEY, name text)")
        conn.execute(
            "CREATE TABLE westep_test.strict_child (id int PRIMARY KEY,"
            " parent_id int CONSTRAINT strict_fk REFERENCES westep_test.parent)"
        )
        conn.execute(
            "CREATE TABLE westep_test.loose_child (id int PRIMARY KEY,"
            " parent_id int CONSTRAINT loose_fk REFERENCES westep_test.parent ON DELETE SET NULL)"
        )
        conn.execute("INSERT INTO westep_test.parent VALUES (1, 'ok'), (2, NULL), (3, NULL)")
        conn.execute("INSERT INTO westep_test.strict_child VALUES (1, 1), (2, 2)")
        conn.execute("INSERT INTO westep_test.loose_child VALUES (1, 2), (2, 1)")
    tables = ("westep_test.parent", "westep_test.strict_child", "westep_test.loose_child")
    name_rule = rule(
        name="parent_name",
        kind="not_null",
        table="westep_test.parent",
        columns=["name"],
        key=["id"],
        repair="quarantine",
    )
    cfg = write_config(tmp_path / "c.json", integrityRules=[name_rule])
    before = fingerprints(sandbox, tables)
    for args in (("--dry-run",), ()):
        code, r = repair_json(cfg, *args)
        assert code == 1 and r["outcome"] == "failed", r
        assert "refused to move 2 rows of westep_test.parent" in r["summary"]
        assert (
            "fail: 1 rows of westep_test.strict_child still reference them"
            " (foreign key strict_fk ON DELETE NO ACTION)" in r["summary"]
        )
        assert (
            "SET NULL parent_id in 1 rows of westep_test.loose_child"
            " (foreign key loose_fk ON DELETE SET NULL)" in r["summary"]
        )
        assert fingerprints(sandbox, tables) == before

    # Once the dependents are dealt with by a person, the one unreferenced row moves.
    with psycopg.connect(os.environ["WESTEP_OPS_REPAIR_URL"], autocommit=True) as conn:
        conn.execute("UPDATE westep_test.parent SET name = 'fixed' WHERE id = 2")
    before = fingerprints(sandbox, tables)
    code, r = repair_json(cfg)
    assert code == 0 and r["outcome"] == "repaired" and r["summary"] == "quarantined 1 rows", r
    after = fingerprints(sandbox, tables)
    assert after["westep_test.parent"][0] == before["westep_test.parent"][0] - 1
    assert {t: after[t] for t in tables[1:]} == {t: before[t] for t in tables[1:]}


# -- 2. quoted and mixed-case names ------------------------------------------------------
@pytest.fixture
def prisma_tables(sandbox: Sandbox) -> Iterator[None]:
    """public."Step" ("userId" -> public."User".id, no foreign key) and a lower-case
    public.step beside it, each with orphans, created as the repair login."""
    with psycopg.connect(os.environ["WESTEP_OPS_REPAIR_URL"], autocommit=True) as conn:
        conn.execute('CREATE TABLE public."User" (id bigint PRIMARY KEY)')
        conn.execute(
            'CREATE TABLE public."Step" (id bigint PRIMARY KEY, "userId" bigint, "createdAt" timestamptz)'
        )
        conn.execute("CREATE TABLE public.step (id bigint PRIMARY KEY, user_id bigint)")
        conn.execute('INSERT INTO public."User" VALUES (1), (2)')
        conn.execute(
            'INSERT INTO public."Step" VALUES (1, 1, now()), (2, 2, now()), (3, 77, now()), (4, 78, now())'
        )
        conn.execute("INSERT INTO public.step VALUES (1, 1), (2, 99)")
    drop_quarantine(sandbox)
    try:
        yield
    finally:
        with psycopg.connect(os.environ["WESTEP_OPS_REPAIR_URL"], autocommit=True) as conn:
            conn.execute('DROP TABLE IF EXISTS public."Step", public.step, public."User"')
        drop_quarantine(sandbox)


def test_mixed_case_quoted_tables_work_end_to_end(
    sandbox: Sandbox, tmp_path: Path, prisma_tables: None
) -> None:
    clear_repair_audit()
    cfg = write_config(
        tmp_path / "c.json",
        criticalTables=[
            *SHIPPED["criticalTables"],
            {"table": 'public."Step"', "roles": ["authenticated"]},
        ],
        grants=[
            *SHIPPED["grants"],
            {"table": 'public."Step"', "role": "authenticated", "privileges": ["SELECT"]},
        ],
        integrityRules=[
            rule(
                name="step_user_orphans",
                kind="orphans",
                table='public."Step"',
                columns=['"userId"'],
                references='public."User"',
                key=["id"],
                repair="quarantine",
            ),
            rule(
                name="lower_step_orphans",
                kind="orphans",
                table="public.step",
                columns=["user_id"],
                references='public."User"',
                key=["id"],
                repair="quarantine",
            ),
        ],
    )
    config = load_config(cfg)
    env = Environment.from_env()
    with sandbox.superuser_conn() as conn:
        step_before = fingerprint(conn, "public", "Step")
        lower_before = fingerprint(conn, "public", "step")

    # H4 and D3 count the exact table, not the case-folded public.step.
    with ProbeSession(env, config) as s:
        (h4,) = run_health_check(s, [Category.integrity])
        d3 = {e["rule"]: e for e in d3_integrity(config, s)}
    assert h4.values["violations"] == {"step_user_orphans": 2, "lower_step_orphans": 1}, h4.summary
    assert d3["step_user_orphans"]["count"] == 2
    assert d3["step_user_orphans"]["sample_keys"] == {"id": ["3", "4"]}

    # D2: the grant is seen on public."Step" itself; a revoke shows as "not granted".
    with psycopg.connect(os.environ["WESTEP_OPS_REPAIR_URL"], autocommit=True) as conn:
        conn.execute('REVOKE SELECT ON public."Step" FROM authenticated')
    try:
        with ProbeSession(env, config) as s:
            d2 = d2_permissions(config, s)
        (missing,) = [m for m in d2["missing"] if m["table"] == "public.Step"]
        assert missing["role"] == "authenticated" and missing["why"] == "not granted"
        assert any(t["table"] == "public.Step" for t in d2["rls"])
    finally:
        with psycopg.connect(os.environ["WESTEP_OPS_REPAIR_URL"], autocommit=True) as conn:
            conn.execute('GRANT SELECT ON public."Step" TO authenticated')

    # R5 moves each table's rows into its own quarantine table.
    r = run_repair(RepairAction.fix_data_integrity, env, config, trigger="test")
    assert r.outcome == "repaired", r.summary
    assert r.summary == "quarantined 3 rows"
    with sandbox.superuser_conn() as conn:
        q_step = conn.execute(
            'SELECT id, "userId" FROM westep_quarantine."public__Step" ORDER BY id'
        ).fetchall()
        q_lower = conn.execute(
            "SELECT id, user_id FROM westep_quarantine.public__step ORDER BY id"
        ).fetchall()
    assert q_step == [(3, 77), (4, 78)] and q_lower == [(2, 99)]
    with ProbeSession(env, config) as s:
        (h4,) = run_health_check(s, [Category.integrity])
    assert h4.status.value == "ok", h4.summary

    listing = json.loads(
        run_cli("--config", str(cfg), "quarantine", "list", "--json").stdout or "[]"
    )
    assert {q["table"] for q in listing} == {"public.Step", "public.step"}

    res = run_cli("--config", str(cfg), "quarantine", "restore", 'public."Step"')
    assert res.returncode == 0 and "restored 2 rows" in res.stdout, res.stdout + res.stderr
    res = run_cli("--config", str(cfg), "quarantine", "restore", "public.step")
    assert res.returncode == 0 and "restored 1 rows" in res.stdout, res.stdout + res.stderr
    with sandbox.superuser_conn() as conn:
        assert fingerprint(conn, "public", "Step") == step_before
        assert fingerprint(conn, "public", "step") == lower_before


def test_config_init_writes_mixed_case_and_quoted_names(
    sandbox: Sandbox, tmp_path: Path, prisma_tables: None
) -> None:
    with psycopg.connect(os.environ["WESTEP_OPS_REPAIR_URL"], autocommit=True) as conn:
        conn.execute('CREATE TABLE public."step log" (id bigint PRIMARY KEY, step_id bigint)')
    try:
        out = tmp_path / "init.json"
        res = run_cli("config", "init", "--output", str(out))
        assert res.returncode == 0, res.stderr
        assert "skipped" not in res.stdout
        data = json.loads(out.read_text())
        config = parse_config(data)  # what init writes loads again
    finally:
        with psycopg.connect(os.environ["WESTEP_OPS_REPAIR_URL"], autocommit=True) as conn:
            conn.execute('DROP TABLE public."step log"')
    tables = {t["table"] for t in data["criticalTables"]}
    assert {"public.Step", "public.User", "public.step", 'public."step log"'} <= tables
    assert any(g["table"] == "public.Step" for g in data["grants"])
    # public."step log".step_id has no foreign key and public.step (the fixture's, tried
    # before public.steps) has an id: a rule with a plain name, naming the table exactly.
    (r,) = [r for r in config.integrity_rules if r.table == 'public."step log"']
    assert r.name == "step_log_step_id_orphans" and r.references == "public.step"
    assert r.repair == "report"


def test_optimize_performance_vacuums_a_quoted_table(sandbox: Sandbox, tmp_path: Path) -> None:
    """public."step log" (a name that needs quotes) with dead tuples gets its VACUUM."""
    clear_repair_audit()
    with psycopg.connect(os.environ["WESTEP_OPS_REPAIR_URL"], autocommit=True) as conn:
        conn.execute(
            'CREATE TABLE public."step log" (id bigint PRIMARY KEY) WITH (autovacuum_enabled = false)'
        )
        conn.execute('INSERT INTO public."step log" SELECT g FROM generate_series(1, 3000) g')
        conn.execute('DELETE FROM public."step log" WHERE id > 10')
    try:
        with psycopg.connect(os.environ["WESTEP_OPS_REPAIR_URL"], autocommit=True) as conn:
            for _ in range(50):  # the backend reports its dead tuples a moment later
                conn.execute("SELECT pg_stat_clear_snapshot()")
                row = conn.execute(
                    "SELECT n_dead_tup FROM pg_stat_user_tables"
                    " WHERE schemaname = 'public' AND relname = 'step log'"
                ).fetchone()
                if row and row[0] >= 1000:
                    break
                time.sleep(0.1)
        cfg = write_config(
            tmp_path / "c.json",
            criticalTables=[{"table": 'public."step log"', "roles": ["authenticated"]}],
            integrityRules=[],
        )
        config = load_config(cfg)
        r = run_repair(RepairAction.optimize_performance, Environment.from_env(), config)
        assert r.outcome == "repaired", r.summary
        assert any(c.startswith('VACUUM (ANALYZE) "public"."step log"') for c in r.changes), (
            r.changes
        )
        assert any('autovacuum is disabled on public."step log"' in n for n in r.notes)
    finally:
        with psycopg.connect(os.environ["WESTEP_OPS_REPAIR_URL"], autocommit=True) as conn:
            conn.execute('DROP TABLE public."step log"')


# -- 3. weekly maintenance in order ------------------------------------------------------
def test_weekly_maintenance_runs_vacuum_before_analyze(sandbox: Sandbox) -> None:
    from dagster import DagsterInstance

    from westep_ops.definitions import defs

    job = defs.get_job_def("weekly_maintenance_job")
    deps = job.graph.dependency_structure
    upstream = {
        out.node_name
        for outs in deps.input_to_upstream_outputs_for_node("update_statistics").values()
        for out in outs
    }
    assert upstream == {"weekly_optimize"}  # ANALYZE waits for VACUUM, never beside it
    clear_repair_audit()
    with DagsterInstance.ephemeral() as instance:
        result = job.execute_in_process(instance=instance)
    assert result.success
    order = [
        e.step_key
        for e in result.all_events
        if e.event_type_value in ("STEP_START", "STEP_SUCCESS")
        and e.step_key in ("weekly_optimize", "update_statistics")
    ]
    assert order == ["weekly_optimize", "weekly_optimize", "update_statistics", "update_statistics"]
