"""Issue 9 items 3 and 5: the monitor's own misconfiguration is not an outage, and the
API probe sees what the app's clients see.

Against the real sandbox: the monitor gets a wrong password, a database that does not
exist, ``sslmode=require`` against a server without SSL, or loses CONNECT on the
database; each time the server answers and refuses it, and ``health-check`` must say
"monitoring is misconfigured: <cause>" (exit 3), ``recover`` must run no repair, and the
SLA must count the time as unknown. A refused connection stays an outage.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from westep_ops.db import refusal
from westep_ops.environment import Environment
from westep_ops.redact import redact
from westep_ops.sandbox.manager import Sandbox
from westep_ops_tests.helpers import run_cli, write_config
from westep_ops_tests.integration.conftest import clear_history, clear_repair_audit

# Not any sandbox secret; long and odd so that redaction of real secrets cannot mask it.
WRONG_PASSWORD = "not-the-monitor-password-7f3q"


def _replace(
    url: str, *, password: str | None = None, db: str | None = None, query: str = ""
) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc
    if password is not None:
        user_info, host = netloc.rsplit("@", 1)
        netloc = f"{user_info.split(':', 1)[0]}:{quote(password, safe='')}@{host}"
    path = f"/{db}" if db is not None else parts.path
    return urlunsplit((parts.scheme, netloc, path, query or parts.query, ""))


def _monitor_env(**kw: Any) -> dict[str, str]:
    """The monitor's two URLs (direct and pooled) changed the same way."""
    return {
        "DIRECT_URL": _replace(os.environ["DIRECT_URL"], **kw),
        "DATABASE_URL": _replace(os.environ["DATABASE_URL"], **kw),
    }


@pytest.fixture(scope="module")
def all_secrets(sandbox: Sandbox) -> list[str]:
    s = sandbox.state
    return [*s.passwords.values(), s.ops_password, s.service_role_key, s.anon_key]


def _no_secret(text: str, secrets: list[str]) -> None:
    for secret in secrets:
        assert secret not in text


@pytest.fixture
def no_connect(sandbox: Sandbox) -> Iterator[None]:
    """The monitoring login loses CONNECT on the database (every other login keeps it)."""
    with sandbox.superuser_conn() as conn:
        # Logins without a CONNECT grant of their own get one, so only the monitor loses it.
        others = [
            r
            for (r,) in conn.execute(
                "SELECT r.rolname FROM pg_roles r WHERE r.rolcanlogin AND NOT r.rolsuper"
                " AND r.rolname <> 'westep_monitor' AND NOT EXISTS ("
                "   SELECT 1 FROM pg_database d, aclexplode(d.datacl) a"
                "   WHERE d.datname = 'postgres' AND a.grantee = r.oid"
                "   AND a.privilege_type = 'CONNECT')"
            )
        ]
        for role in others:
            conn.execute(
                sql.SQL("GRANT CONNECT ON DATABASE postgres TO {}").format(sql.Identifier(role))
            )
        conn.execute("REVOKE CONNECT ON DATABASE postgres FROM PUBLIC")
        # Sessions already in are not re-checked: end the monitor's, pgbouncer's included.
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'westep_monitor'"
        )
    try:
        yield
    finally:
        with sandbox.superuser_conn() as conn:
            conn.execute("GRANT CONNECT ON DATABASE postgres TO PUBLIC")
            for role in others:
                conn.execute(
                    sql.SQL("REVOKE CONNECT ON DATABASE postgres FROM {}").format(
                        sql.Identifier(role)
                    )
                )
        _wait_pooled_ok()


def _wait_pooled_ok(timeout_s: float = 15) -> None:
    """pgbouncer retries a failed server login after server_login_retry: wait for it."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with psycopg.connect(
                os.environ["DATABASE_URL"],
                autocommit=True,
                prepare_threshold=None,
                connect_timeout=3,
            ) as c:
                c.execute("SELECT 1")
            return
        except psycopg.Error:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _repair_attempts() -> int:
    """Repair attempts on record in the ops store (a store no repair ever used has none)."""
    with psycopg.connect(os.environ["WESTEP_OPS_STORAGE_URL"]) as conn:
        if conn.execute("SELECT to_regclass('westep_ops.repair_attempts')").fetchone()[0] is None:
            return 0
        return conn.execute("SELECT count(*) FROM westep_ops.repair_attempts").fetchone()[0]


def _h1(res: Any) -> dict[str, Any]:
    checks = json.loads(res.stdout)["checks"]
    return next(c for c in checks if c["check"] == "H1 connection")


CASES = {
    "wrong_password": (
        lambda: _monitor_env(password=WRONG_PASSWORD),
        ["wrong password", 'password authentication failed for user "westep_monitor"'],
    ),
    "missing_database": (
        lambda: _monitor_env(db="no_such_db"),
        ["the database does not exist", "no_such_db"],
    ),
    "ssl_required": (
        lambda: _monitor_env(query="sslmode=require"),
        ["SSL is required", "server does not support SSL"],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_refused_monitor_is_misconfigured_not_an_outage(
    sandbox: Sandbox, all_secrets: list[str], case: str
) -> None:
    make_env, names = CASES[case]
    env = make_env()
    res = run_cli("health-check", env=env)
    assert res.returncode == 3, res.stdout + res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, res.stderr
    assert errors[0].startswith("error: monitoring is misconfigured: ")
    for name in names:
        assert name in errors[0]
    assert "CRITICAL" not in res.stdout  # no symptom of it overrides the cause
    _no_secret(res.stdout + res.stderr, all_secrets)

    as_json = run_cli("health-check", "--json", env=env)
    h1 = _h1(as_json)
    assert h1["status"] == "error" and h1["findings"] == ["monitor_misconfigured"]
    assert h1["summary"].startswith("monitoring is misconfigured: direct: ")
    assert "; pooled: " in h1["summary"]  # pgbouncer refuses it too, for the same cause


def test_monitor_without_connect_privilege_is_misconfigured(
    sandbox: Sandbox, all_secrets: list[str], no_connect: None
) -> None:
    res = run_cli("health-check", "--json")
    assert res.returncode == 3, res.stdout + res.stderr
    (error,) = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert error.startswith("error: monitoring is misconfigured: direct: permission denied")
    assert 'permission denied for database "postgres"' in error
    h1 = _h1(res)
    # pgbouncer logs in to PostgreSQL as the same login and cannot: the pooled failure is
    # the same refusal, not a pool outage that would turn the exit code into 2.
    assert h1["status"] == "error" and "monitor_misconfigured" in h1["findings"]
    assert "pooled_connection_failed" not in h1["findings"]
    statuses = {c["check"]: c["status"] for c in json.loads(res.stdout)["checks"]}
    assert "critical" not in statuses.values(), statuses
    _no_secret(res.stdout + res.stderr, all_secrets)


def test_connection_refused_stays_an_outage(sandbox: Sandbox) -> None:
    closed = sandbox.state.base_port + 9  # nothing of the sandbox listens there
    env = {
        "DIRECT_URL": os.environ["DIRECT_URL"].replace(
            f":{sandbox.state.target_port}/", f":{closed}/"
        ),
    }
    assert env["DIRECT_URL"] != os.environ["DIRECT_URL"]
    res = run_cli("health-check", "--json", env=env)
    assert res.returncode == 2, res.stdout + res.stderr
    h1 = _h1(res)
    assert h1["status"] == "critical" and "direct_connection_failed" in h1["findings"]
    assert "monitor_misconfigured" not in h1["findings"]
    assert "misconfigured" not in res.stderr


def test_an_outage_the_monitor_still_sees_is_not_hidden_by_its_misconfiguration(
    sandbox: Sandbox,
) -> None:
    """H7 is measured over HTTP, not with the refused login: the app down stays critical."""
    from westep_ops.sandbox import faults

    faults.inject(sandbox, "api_down", True)
    try:
        res = run_cli("health-check", "--json", env=_monitor_env(password=WRONG_PASSWORD))
    finally:
        faults.inject(sandbox, "api_down", False)
    assert res.returncode == 2, res.stdout + res.stderr
    checks = {c["check"]: c for c in json.loads(res.stdout)["checks"]}
    assert checks["H1 connection"]["status"] == "error"
    assert checks["H7 api"]["status"] == "critical"
    assert checks["H7 api"]["suspected_cause"] is None  # not a symptom of the refusal
    assert checks["H3 tables"]["suspected_cause"] == "connection"  # blind: a symptom


def test_refusal_is_only_about_logins_and_grants(sandbox: Sandbox) -> None:
    """A query error that is about the target (no such table) is not a refusal."""
    with psycopg.connect(os.environ["DIRECT_URL"], autocommit=True) as conn:
        with pytest.raises(psycopg.Error) as missing:
            conn.execute("SELECT * FROM public.no_such_table_for_the_test")
        with pytest.raises(psycopg.Error) as denied:  # a grant the monitoring login lacks
            conn.execute("SELECT pg_read_file('postgresql.conf')")
    assert refusal(missing.value) is None
    assert refusal(denied.value) is not None and "permission denied" in refusal(denied.value)


@pytest.mark.parametrize("case", [*CASES, "no_connect"])
def test_recover_runs_no_repair_for_a_misconfigured_monitor(
    sandbox: Sandbox,
    all_secrets: list[str],
    tmp_path: Path,
    request: pytest.FixtureRequest,
    case: str,
) -> None:
    if case == "no_connect":
        request.getfixturevalue("no_connect")
        env, cause = {}, "direct: permission denied"
    else:
        make_env, names = CASES[case]
        env, cause = make_env(), f"direct: {names[0]}"
    clear_repair_audit()
    logs = tmp_path / "logs"
    logs.mkdir()
    env["WESTEP_OPS_LOG_DIR"] = str(logs)
    res = run_cli("recover", env=env)
    out = res.stdout + res.stderr
    assert res.returncode == 1, out  # escalated to a person: the monitor must be fixed
    assert "MONITOR MISCONFIGURED: no repair ran" in res.stdout
    assert f"monitoring is misconfigured: {cause}" in res.stdout
    assert "does not accept connections" not in out
    assert _repair_attempts() == 0
    assert not (logs / "repair-attempts.jsonl").exists()
    (report,) = logs.glob("recovery-*.md")
    text = report.read_text()
    assert "## Repairs" not in text and "monitoring is misconfigured" in text
    _no_secret(out + text, all_secrets)

    as_json = json.loads(run_cli("recover", "--json", env=env).stdout)
    assert as_json["plan"] == [] and as_json["repairs"] == []
    first, *others = as_json["escalations"]
    assert first["category"] == "monitor"
    # Anything else that fails meanwhile (e.g. the monitor's own pooled probe queued
    # behind a pgbouncer that cannot log in as it) is escalated, never repaired.
    assert all(
        e["reason"].startswith("not repaired while the monitor is misconfigured") for e in others
    )


def test_test_connection_names_the_refusal(sandbox: Sandbox, all_secrets: list[str]) -> None:
    res = run_cli("test-connection", env=_monitor_env(password=WRONG_PASSWORD))
    direct = next(line for line in res.stdout.splitlines() if line.lstrip().startswith("direct"))
    assert "misconfigured: authentication failed (wrong user or password)" in direct
    _no_secret(res.stdout + res.stderr, all_secrets)


def test_monitor_raises_one_monitor_degraded_alert_and_repairs_nothing(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    clear_history()
    logs = tmp_path / "logs"
    logs.mkdir()
    cfg = write_config(tmp_path / "mon.json", monitoring__alerting__confirmDelaySeconds=0.2)
    env = {**_monitor_env(password=WRONG_PASSWORD), "WESTEP_OPS_LOG_DIR": str(logs)}
    run_cli("--config", str(cfg), "monitor", "--once", env=env)
    alerts = [
        line
        for p in sorted(logs.glob("monitoring-alerts-*.log"))
        for line in p.read_text().splitlines()
    ]
    assert len(alerts) == 1 and "monitor degraded" in alerts[0], alerts
    assert _repair_attempts() == 0
    with psycopg.connect(os.environ["WESTEP_OPS_STORAGE_URL"]) as conn:
        assert conn.execute(
            "SELECT count(*) FROM westep_ops.incidents WHERE category = 'connection'"
        ).fetchone() == (0,)


# -- item 5: the API probe sees what clients see ----------------------------------------
ENDPOINTS = [
    {
        "name": "rest_steps",
        "base": "supabase",
        "path": "/rest/v1/steps?limit=1",
        "expectStatus": 200,
    },
    {
        "name": "rest_steps_service",
        "base": "supabase",
        "path": "/rest/v1/steps?limit=1",
        "expectStatus": 200,
        "auth": "service_role",
    },
]


def _endpoints(res: Any) -> dict[str, dict[str, Any]]:
    (h7,) = json.loads(res.stdout)["checks"]
    return {e["name"]: e for e in h7["values"]["endpoints"]}


def test_rest_endpoint_probed_as_anon_goes_critical_when_anon_loses_select(
    sandbox: Sandbox, all_secrets: list[str], tmp_path: Path
) -> None:
    cfg = str(write_config(tmp_path / "api.json", endpoints=ENDPOINTS))
    args = ("--config", cfg, "health-check", "--category", "api", "--json")
    before = run_cli(*args)
    assert before.returncode == 0, before.stdout + before.stderr
    eps = _endpoints(before)
    assert (
        eps["rest_steps"]["auth"] == "anon" and eps["rest_steps_service"]["auth"] == "service_role"
    )

    with sandbox.superuser_conn() as conn:
        conn.execute("REVOKE SELECT ON public.steps FROM anon")
    try:
        during = run_cli(*args)
        text = run_cli("--config", cfg, "health-check", "--category", "api")
    finally:
        with sandbox.superuser_conn() as conn:
            conn.execute("GRANT SELECT ON public.steps TO anon")
    assert during.returncode == 2, during.stdout + during.stderr
    eps = _endpoints(during)
    assert not eps["rest_steps"]["ok"] and eps["rest_steps"]["status"] == 401
    assert "permission denied for table steps" in eps["rest_steps"]["error"]
    # The service role bypasses grants and RLS: probing with it would have seen nothing.
    assert eps["rest_steps_service"]["ok"]
    assert (
        "H7 api" in text.stdout
        and "CRITICAL" in text.stdout
        and "rest_steps: HTTP 401" in text.stdout
    )

    after = run_cli(*args)
    assert after.returncode == 0, after.stdout + after.stderr
    for res in (before, during, text, after):
        _no_secret(res.stdout + res.stderr, all_secrets)


def test_a_wrong_or_missing_anon_key_is_the_monitors_misconfiguration(
    sandbox: Sandbox, all_secrets: list[str], tmp_path: Path
) -> None:
    cfg = str(write_config(tmp_path / "api.json", endpoints=ENDPOINTS[:1]))
    wrong = run_cli(
        "--config",
        cfg,
        "health-check",
        "--category",
        "api",
        env={"SUPABASE_ANON_KEY": "sandbox-anon-not-the-key"},
    )
    assert wrong.returncode == 3, wrong.stdout + wrong.stderr
    (error,) = [line for line in wrong.stderr.splitlines() if line.startswith("error:")]
    assert error == (
        "error: monitoring is misconfigured: rest_steps: SUPABASE_ANON_KEY is not accepted"
        " (HTTP 401 Invalid API key)"
    )
    unset = run_cli(
        "--config",
        cfg,
        "health-check",
        "--category",
        "api",
        "--json",
        env={"SUPABASE_ANON_KEY": ""},
    )
    assert unset.returncode == 3
    (h7,) = json.loads(unset.stdout)["checks"]
    assert h7["status"] == "error" and "SUPABASE_ANON_KEY is not set" in h7["summary"]
    for res in (wrong, unset):
        _no_secret(res.stdout + res.stderr, all_secrets)


def test_anon_key_is_exported_and_masked(sandbox: Sandbox) -> None:
    key = sandbox.state.anon_key
    assert key and key != sandbox.state.service_role_key
    res = run_cli("sandbox", "env")
    assert f"export SUPABASE_ANON_KEY={key}" in res.stdout.replace("'", "")
    env = Environment.from_env({"SUPABASE_ANON_KEY": key})
    assert env.anon_key == key and key not in redact(f"apikey: {key}")
