"""Repairs against the real sandbox: each fault, its repair, the check green again, the
record of what changed; nothing lost, dry runs change nothing, the hourly limit holds."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from westep_ops.config import Category, load_config
from westep_ops.environment import Environment
from westep_ops.probes.health import run_health_check
from westep_ops.probes.performance import PerformanceMonitor
from westep_ops.probes.session import ProbeSession
from westep_ops.sandbox import faults
from westep_ops.sandbox.manager import Sandbox
from westep_ops_tests.helpers import run_cli, write_config
from westep_ops_tests.integration.conftest import clear_repair_audit


@pytest.fixture
def cfg(tmp_path: Path, sandbox: Sandbox) -> Path:
    """Short limits so tests need not wait minutes for a session to count as stuck."""
    clear_repair_audit()
    return write_config(
        tmp_path / "repair.json",
        repairs__stuckQuerySeconds=1,
        monitoring__thresholds__idleInTransactionSeconds=1,
        monitoring__thresholds__poolMaxWaitSeconds=1,
    )


def repair(
    cfg: Path, *args: str, env: dict[str, str] | None = None
) -> tuple[int, list[dict[str, Any]], str]:
    res = run_cli("--config", str(cfg), "repair", *args, "--json", env=env)
    assert "Traceback" not in res.stderr, res.stderr
    return (
        res.returncode,
        json.loads(res.stdout) if res.stdout.strip() else [],
        res.stdout + res.stderr,
    )


def status(cfg: Path, category: Category) -> str:
    with ProbeSession(Environment.from_env(), load_config(cfg)) as s:
        return run_health_check(s, [category])[0].status.value


def no_secrets(text: str, sb: Sandbox) -> None:
    for pw in (*sb.state.passwords.values(), sb.state.ops_password, sb.state.service_role_key):
        assert pw not in text


def table_digest(sb: Sandbox, table: str) -> tuple[int, str]:
    with sb.superuser_conn() as conn:
        row = conn.execute(
            sql.SQL(
                "SELECT count(*), md5(coalesce(string_agg(x::text, ',' ORDER BY x::text), '')) FROM {} AS x"
            ).format(sql.Identifier(*table.split(".")))
        ).fetchone()
    assert row is not None
    return row[0], row[1]


def empty_quarantine(sb: Sandbox) -> None:
    with sb.superuser_conn() as conn:
        conn.execute("DROP SCHEMA IF EXISTS westep_quarantine CASCADE")


# fault -> (action, check that must be green after, what the record must say changed, wait before)
CASES: dict[str, tuple[str, Category | None, Callable[[list[str]], bool], float]] = {
    "pool_pause": (
        "restore_connection_pool",
        Category.pool,
        lambda ch: ch == ["RESUME postgres"],  # a plain RESUME needs no RELOAD
        0,
    ),
    "pool_exhaust": (
        "restore_connection_pool",
        Category.pool,
        lambda ch: (
            sum("terminated query pinning a postgres pool server" in c for c in ch) == 10
            and ch[-2:] == ["RECONNECT postgres", "RELOAD"]
        ),
        1.5,
    ),
    "idle_in_tx": (
        "restore_db_connection",
        Category.pool,
        lambda ch: (
            len(ch) == 3 and all("westep-fault-idle_in_tx, idle in transaction" in c for c in ch)
        ),
        1.5,
    ),
    "grant_revoke": (
        "fix_table_permissions",
        Category.tables,
        lambda ch: ch == ['GRANT SELECT ON "public"."steps" TO "authenticated"'],
        0,
    ),
    "orphans": (
        "fix_data_integrity",
        Category.integrity,
        lambda ch: (
            len(ch) == 1
            and ch[0].startswith("quarantined 25 rows of public.step_logs (step_logs_orphans")
        ),
        0,
    ),
    "publication_drop": (
        "restore_realtime_publication",
        Category.realtime,
        lambda ch: (
            ch
            == [
                'CREATE PUBLICATION "supabase_realtime" FOR TABLE "public"."profiles", "public"."steps"'
            ]
        ),
        0,
    ),
    "bloat": (
        "optimize_performance",
        None,
        lambda ch: any(
            c.startswith('VACUUM (ANALYZE) "public"."step_logs" (') and "dead tuples" in c
            for c in ch
        ),
        1.1,
    ),
}


@pytest.mark.parametrize("fault", list(CASES))
def test_fault_is_repaired_verified_and_recorded(sandbox: Sandbox, cfg: Path, fault: str) -> None:
    action, category, changed, wait = CASES[fault]
    empty_quarantine(sandbox)
    faults.inject(sandbox, fault, True, 120)
    try:
        time.sleep(wait)
        if category is not None:
            assert status(cfg, category) != "ok"
        code, results, out = repair(cfg, action)
        (r,) = results
        assert code == 0 and r["outcome"] == "repaired", r
        assert changed(r["changes"]), r["changes"]
        if category is not None:
            assert status(cfg, category) == "ok"
            assert (
                r["before"][category.value]["status"] != "ok"
                and r["after"][category.value]["status"] == "ok"
            )
        else:  # bloat: the performance monitor no longer sees dead tuples
            time.sleep(0.5)
            with ProbeSession(Environment.from_env(), load_config(cfg)) as s:
                sample = PerformanceMonitor().sample(s)
            logs = next(t for t in sample.table_health if t["table"] == "public.step_logs")
            assert logs["dead"] < 1000
            assert any("autovacuum is disabled on public.step_logs" in n for n in r["notes"])
        no_secrets(out, sandbox)
        # Recorded in the ops store with what it changed.
        with psycopg.connect(os.environ["WESTEP_OPS_STORAGE_URL"]) as conn:
            rec = conn.execute(
                "SELECT outcome, changes, trigger FROM westep_ops.repair_attempts WHERE action = %s ORDER BY id DESC LIMIT 1",
                (action,),
            ).fetchone()
        assert (
            rec is not None
            and rec[0] == "repaired"
            and rec[1] == r["changes"]
            and rec[2] == "manual"
        )
    finally:
        faults.inject(sandbox, fault, False)
        empty_quarantine(sandbox)


def test_cleaning_keeps_every_row_and_restore_puts_them_back_identical(
    sandbox: Sandbox, cfg: Path
) -> None:
    empty_quarantine(sandbox)
    faults.inject(sandbox, "orphans", True)
    try:
        with sandbox.superuser_conn() as conn:
            originals = conn.execute(
                "SELECT l::text FROM public.step_logs l WHERE note = %s ORDER BY id",
                (faults.ORPHAN_MARK,),
            ).fetchall()
        count_before, _ = table_digest(sandbox, "public.step_logs")
        code, (r,), _ = repair(cfg, "fix_data_integrity")
        assert code == 0
        count_after, _ = table_digest(sandbox, "public.step_logs")
        listing = run_cli("--config", str(cfg), "quarantine", "list", "--json")
        (q,) = json.loads(listing.stdout)
        assert q["table"] == "public.step_logs" and q["rule"] == "step_logs_orphans"
        assert count_before == count_after + q["rows"] == count_after + 25
        with sandbox.superuser_conn() as conn:
            why = conn.execute(
                "SELECT DISTINCT rule, reason FROM westep_quarantine.public__step_logs"
            ).fetchall()
        assert why == [("step_logs_orphans", "step_id has no match in public.steps")]
        dry = run_cli(
            "--config", str(cfg), "quarantine", "restore", "public.step_logs", "--dry-run"
        )
        assert dry.returncode == 0 and "would restore 25 rows" in dry.stdout
        assert table_digest(sandbox, "public.step_logs")[0] == count_after
        res = run_cli("--config", str(cfg), "quarantine", "restore", "public.step_logs")
        assert res.returncode == 0 and "restored 25 rows into public.step_logs" in res.stdout
        with sandbox.superuser_conn() as conn:
            back = conn.execute(
                "SELECT l::text FROM public.step_logs l WHERE note = %s ORDER BY id",
                (faults.ORPHAN_MARK,),
            ).fetchall()
            left = conn.execute(
                "SELECT count(*) FROM westep_quarantine.public__step_logs"
            ).fetchone()
        assert back == originals and left == (0,)
        assert (
            run_cli("--config", str(cfg), "quarantine", "list").stdout.strip()
            == "quarantine is empty"
        )
    finally:
        faults.inject(sandbox, "orphans", False)
        empty_quarantine(sandbox)


def test_dry_runs_change_nothing(sandbox: Sandbox, cfg: Path) -> None:
    empty_quarantine(sandbox)
    for fault in ("orphans", "grant_revoke", "publication_drop", "pool_pause"):
        faults.inject(sandbox, fault, True)
    try:
        before = {
            t: table_digest(sandbox, t)
            for t in ("public.step_logs", "public.steps", "public.profiles")
        }
        with sandbox.superuser_conn() as conn:
            grants_before = conn.execute(
                "SELECT grantee, table_name, privilege_type FROM information_schema.role_table_grants ORDER BY 1, 2, 3"
            ).fetchall()
        code, results, out = repair(cfg, "--dry-run")  # everything the health check calls for
        assert code == 0
        assert {r["action"] for r in results} >= {
            "restore_connection_pool",
            "fix_table_permissions",
            "restore_realtime_publication",
            "fix_data_integrity",
        }
        assert all(r["outcome"] == "dry_run" and r["changes"] for r in results)
        assert all(c.startswith("would: ") for r in results for c in r["changes"])
        assert {t: table_digest(sandbox, t) for t in before} == before
        with sandbox.superuser_conn() as conn:
            assert (
                conn.execute(
                    "SELECT grantee, table_name, privilege_type FROM information_schema.role_table_grants ORDER BY 1, 2, 3"
                ).fetchall()
                == grants_before
            )
            assert conn.execute(
                "SELECT count(*) FROM pg_publication WHERE pubname = 'supabase_realtime'"
            ).fetchone() == (0,)
            assert conn.execute("SELECT to_regnamespace('westep_quarantine')").fetchone() == (None,)
        assert status(cfg, Category.pool) == "critical"  # still paused
        no_secrets(out, sandbox)
    finally:
        for fault in ("pool_pause", "publication_drop", "grant_revoke", "orphans"):
            faults.inject(sandbox, fault, False)


def test_fourth_attempt_in_an_hour_is_refused(sandbox: Sandbox, cfg: Path) -> None:
    for _ in range(3):  # separate processes: the count lives in the ops store
        code, (r,), _ = repair(cfg, "fix_table_permissions")
        assert code == 0 and r["outcome"] == "nothing_to_do"
    code, (r,), _ = repair(cfg, "fix_table_permissions")
    assert code == 1 and r["outcome"] == "refused" and r["escalation"] == 2
    assert "3 attempts of fix_table_permissions in the last hour (limit 3" in r["summary"]
    code, (r,), _ = repair(cfg, "fix_table_permissions", "--force")
    assert code == 0 and r["forced"] is True
    with psycopg.connect(os.environ["WESTEP_OPS_STORAGE_URL"]) as conn:
        outcomes = [
            o
            for (o,) in conn.execute(
                "SELECT outcome FROM westep_ops.repair_attempts WHERE action = 'fix_table_permissions' ORDER BY id"
            )
        ]
    assert outcomes == ["nothing_to_do"] * 3 + ["refused", "nothing_to_do"]
    audit = (
        (Path(os.environ["WESTEP_OPS_LOG_DIR"]) / "repair-attempts.jsonl").read_text().splitlines()
    )
    assert [json.loads(line)["outcome"] for line in audit] == outcomes


def test_rate_limit_holds_when_the_ops_store_is_down(sandbox: Sandbox, cfg: Path) -> None:
    """The local audit file keeps counting: an unreachable ops database is no way around the limit."""
    down = {"WESTEP_OPS_STORAGE_URL": "postgresql://westep_ops:x@127.0.0.1:1/westep_ops"}
    for _ in range(3):
        code, (r,), _ = repair(cfg, "repair_auth", env=down)
        assert code == 0
    code, (r,), _ = repair(cfg, "repair_auth", env=down)
    assert r["outcome"] == "refused" and "counted from local audit file" in r["summary"]


def _revoke_auth_usage(sb: Sandbox) -> None:
    """Revoke anon's USAGE on auth from every grantor (the owner's, and the repair's)."""
    with sb.superuser_conn() as conn:
        conn.execute("REVOKE USAGE ON SCHEMA auth FROM anon")
        with conn.transaction():
            conn.execute("SET LOCAL ROLE postgres")
            conn.execute("REVOKE USAGE ON SCHEMA auth FROM anon")


def test_repair_auth_restores_usage_on_the_auth_schema(sandbox: Sandbox, cfg: Path) -> None:
    _revoke_auth_usage(sandbox)
    try:
        assert status(cfg, Category.auth) == "critical"
        code, (r,), _ = repair(cfg, "repair_auth")
        assert code == 0 and r["changes"] == ['GRANT USAGE ON SCHEMA "auth" TO "anon"']
        assert status(cfg, Category.auth) == "ok"
    finally:  # back to the sandbox's original: granted by the schema owner only
        _revoke_auth_usage(sandbox)
        with sandbox.superuser_conn() as conn:
            conn.execute("GRANT USAGE ON SCHEMA auth TO anon")


def test_unknown_action_and_missing_repair_login(sandbox: Sandbox, cfg: Path) -> None:
    res = run_cli("--config", str(cfg), "repair", "reboot_the_cloud")
    assert res.returncode == 2
    assert res.stderr.strip().startswith(
        "error: unknown repair action 'reboot_the_cloud'; known: restore_db_connection"
    )
    assert len(res.stderr.strip().splitlines()) == 1
    code, (r,), _ = repair(cfg, "fix_table_permissions", env={"WESTEP_OPS_REPAIR_URL": ""})
    assert (
        code == 1
        and r["outcome"] == "failed"
        and "WESTEP_OPS_REPAIR_URL is not set" in r["summary"]
    )


@pytest.mark.parametrize(
    "fault,expected",
    [
        ("pg_down", "PostgreSQL does not accept connections"),
        ("bouncer_down", "start pgbouncer (westep-ops does not own the service)"),
        ("api_down", "the app does not answer: check its hosting (westep-ops does not own it)"),
    ],
)
def test_recovery_escalates_what_it_cannot_repair(
    sandbox: Sandbox, cfg: Path, fault: str, expected: str
) -> None:
    faults.inject(sandbox, fault, True)
    try:
        res = run_cli("--config", str(cfg), "recover", "--json")
    finally:
        faults.inject(sandbox, fault, False)
    assert "Traceback" not in res.stderr
    report = json.loads(res.stdout)
    assert res.returncode == 1
    assert report["verdict"].startswith("ESCALATED (level 2)")
    assert any(expected in e["reason"] and e["level"] == 2 for e in report["escalations"]), report[
        "escalations"
    ]
    text = Path(report["report"]).read_text()
    assert text.splitlines()[2].startswith("**Verdict: ESCALATED") and expected in text
    no_secrets(res.stdout + text, sandbox)
    if fault == "pg_down":  # the runbook's database status check was run and reported
        assert report["db_status"]["reachable"] is False and "## Database status" in text


def test_recovery_repairs_in_order_and_reports(sandbox: Sandbox, cfg: Path) -> None:
    empty_quarantine(sandbox)
    for fault in ("grant_revoke", "orphans", "pool_pause"):
        faults.inject(sandbox, fault, True)
    try:
        res = run_cli("--config", str(cfg), "recover", "--json")
        report = json.loads(res.stdout)
        assert res.returncode == 0, report["escalations"]
        assert [r["action"] for r in report["repairs"]] == [
            "restore_connection_pool",
            "fix_table_permissions",
            "fix_data_integrity",
        ]
        assert all(r["outcome"] == "repaired" for r in report["repairs"])
        assert all(c["status"] == "ok" for c in report["after"])
        text = Path(report["report"]).read_text()
        assert "**Verdict: recovered: 3 repair(s) ran" in text and "RESUME postgres" in text
        # Data cleaning comes with a diagnosis, as the runbook asks.
        assert report["diagnosis"] and Path(report["diagnosis"]).exists() and "## Diagnosis" in text
    finally:
        for fault in ("pool_pause", "orphans", "grant_revoke"):
            faults.inject(sandbox, fault, False)
        empty_quarantine(sandbox)


def test_disabled_auto_recovery_only_reports(sandbox: Sandbox, tmp_path: Path) -> None:
    clear_repair_audit()
    cfg = write_config(tmp_path / "off.json", monitoring__autoRecovery__enabled=False)
    faults.inject(sandbox, "grant_revoke", True)
    try:
        res = run_cli("--config", str(cfg), "recover", "--json")
        report = json.loads(res.stdout)
        assert report["verdict"] == "report only: 1 repair(s) would run"
        assert [r["outcome"] for r in report["repairs"]] == ["dry_run"]
        with sandbox.superuser_conn() as conn:
            assert conn.execute(
                "SELECT has_table_privilege('authenticated', 'public.steps', 'SELECT')"
            ).fetchone() == (False,)
    finally:
        faults.inject(sandbox, "grant_revoke", False)


def test_repair_job_in_dagster(sandbox: Sandbox, cfg: Path) -> None:
    from dagster import DagsterInstance

    from westep_ops.definitions import defs
    from westep_ops.defs.repairs.jobs import REPAIR_TAG

    faults.inject(sandbox, "grant_revoke", True)
    try:
        job = defs.get_job_def("repair_job")
        assert job.tags[REPAIR_TAG] == "default"
        with DagsterInstance.ephemeral() as instance:
            result = job.execute_in_process(
                instance=instance,
                run_config={
                    "ops": {"run_repair_op": {"config": {"action": "fix_table_permissions"}}}
                },
            )
        assert result.success
        with sandbox.superuser_conn() as conn:
            assert conn.execute(
                "SELECT has_table_privilege('authenticated', 'public.steps', 'SELECT')"
            ).fetchone() == (True,)
    finally:
        faults.inject(sandbox, "grant_revoke", False)


def test_damaged_audit_lines_do_not_break_the_limit(sandbox: Sandbox, cfg: Path) -> None:
    audit = Path(os.environ["WESTEP_OPS_LOG_DIR"]) / "repair-attempts.jsonl"
    audit.write_text(
        '{"action": "repair_auth"}\nnot json at all\n{"action": "repair_auth", "started_at": 5}\n'
    )
    down = {"WESTEP_OPS_STORAGE_URL": "postgresql://westep_ops:x@127.0.0.1:1/westep_ops"}
    code, (r,), _ = repair(cfg, "repair_auth", env=down)
    assert code == 0 and r["outcome"] == "nothing_to_do"
