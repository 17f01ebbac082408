"""Passwords and keys never appear in output or logs; `sandbox env` is the one exception."""

from __future__ import annotations

from pathlib import Path

from westep_ops.sandbox.manager import Sandbox
from westep_ops_tests.helpers import run_cli


def _leaks(text: str, secrets: list[str]) -> list[str]:
    return [s for s in secrets if s in text]


def test_sandbox_env_is_where_secrets_are_printed(sandbox: Sandbox, secrets: list[str]) -> None:
    out = run_cli("sandbox", "env").stdout
    assert set(_leaks(out, secrets)) >= {
        sandbox.state.passwords["westep_monitor"],
        sandbox.state.service_role_key,
    }


def test_no_secret_in_command_output(sandbox: Sandbox, secrets: list[str]) -> None:
    s = sandbox.state
    monitor_pw = s.passwords["westep_monitor"]
    runs = [
        run_cli("sandbox", "up"),
        run_cli("sandbox", "status"),
        run_cli("sandbox", "status", "--json"),
        run_cli("sandbox", "faults"),
        run_cli("config", "check"),
        run_cli("test-connection"),
        run_cli("test-connection", "--json"),
        # wrong password, with a real password elsewhere in the string
        run_cli(
            "test-connection",
            env={"DIRECT_URL": s.url("westep_monitor").replace(monitor_pw, monitor_pw + "x")},
        ),
        # wrong admin-console password
        run_cli(
            "test-connection",
            env={
                "PGBOUNCER_ADMIN_URL": f"postgresql://pgbouncer_stats:{monitor_pw}@127.0.0.1:{s.bouncer_port}/pgbouncer"
            },
        ),
        # unreachable host
        run_cli(
            "test-connection",
            env={"DIRECT_URL": f"postgresql://westep_monitor:{monitor_pw}@127.0.0.1:1/postgres"},
        ),
        # malformed URLs carrying a password
        run_cli(
            "test-connection",
            env={
                "DIRECT_URL": f"postgresql://westep_monitor:{monitor_pw}@127.0.0.1:notaport/postgres"
            },
        ),
        run_cli("test-connection", env={"DATABASE_URL": f"mysql://root:{monitor_pw}@127.0.0.1/x"}),
        run_cli("test-connection", env={"WEBHOOK_URL": f"ftp://hooks.example/{monitor_pw}"}),
    ]
    for res in runs:
        combined = res.stdout + res.stderr
        assert _leaks(combined, secrets) == [], res.args
        assert _leaks(combined, [monitor_pw + "x"]) == [], res.args
        assert "Traceback" not in combined


def test_wrong_password_and_unreachable_are_clear(sandbox: Sandbox) -> None:
    s = sandbox.state
    res = run_cli(
        "test-connection",
        "--json",
        env={"DIRECT_URL": s.url("westep_monitor").replace("@", "x@", 1)},
    )
    assert res.returncode == 1
    assert '"misconfigured: authentication failed (wrong user or password)"' in res.stdout
    res = run_cli("test-connection", env={"DIRECT_URL": "postgresql://u:p@127.0.0.1:1/postgres"})
    assert res.returncode == 1 and "connection refused" in res.stdout
    res = run_cli(
        "test-connection", env={"DIRECT_URL": "postgresql://u:p@127.0.0.1:notaport/postgres"}
    )
    assert res.returncode == 2
    assert res.stderr.strip() == "error: DIRECT_URL is not a valid URL (bad host or port)"
    res = run_cli("test-connection", env={"WEBHOOK_URL": "ftp://hooks.example/x"})
    assert (
        res.returncode == 2
        and res.stderr.strip() == "error: WEBHOOK_URL is not a valid http(s) URL"
    )


def test_no_secret_in_sandbox_logs(sandbox: Sandbox, secrets: list[str]) -> None:
    # Run something that makes every component log, including a failed login.
    run_cli(
        "test-connection",
        env={"DIRECT_URL": sandbox.state.url("westep_monitor").replace("@", "x@", 1)},
    )
    logs = [p for p in Path(sandbox.layout.root).rglob("*.log")]
    assert {p.name for p in logs} >= {"postgres.log", "pgbouncer.log", "app.log"}
    for p in logs:
        assert _leaks(p.read_text(errors="replace"), secrets) == [], p
    # pgbouncer's user list holds SCRAM verifiers, not passwords.
    userlist = (sandbox.layout.bouncer / "userlist.txt").read_text()
    assert _leaks(userlist, secrets) == [] and "SCRAM-SHA-256$" in userlist
