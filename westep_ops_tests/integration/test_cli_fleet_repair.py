"""`repair` and `recover` on one target of a real two-target sandbox (issue 14, item 2): a
fault on target 2 is seen there only, a repair that matches both targets is refused, and
the repair runs on target 2 only, recorded under its name.

A sandbox of its own (`sandbox up --targets 2`, ports base+20..base+24, its own ops
PostgreSQL), made and stopped here; never the session sandbox.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from westep_ops.sandbox.manager import Sandbox
from westep_ops_tests.helpers import ROOT, run_cli
from westep_ops_tests.integration.conftest import BASE_PORT

FLEET_DIR = ROOT / ".westep" / "test-sandbox-cli-fleet"
FLEET_PORT = BASE_PORT + 20
PER_TARGET = (
    "DIRECT_URL",
    "DATABASE_URL",
    "PGBOUNCER_ADMIN_URL",
    "WESTEP_OPS_REPAIR_URL",
    "WESTEP_OPS_PGBOUNCER_REPAIR_URL",
)
SHARED = (
    "WESTEP_OPS_APP_URL",
    "NEXT_PUBLIC_SUPABASE_URL",
    "SUPABASE_SERVICE_ROLE_KEY",
    "SUPABASE_ANON_KEY",
)


@pytest.fixture(scope="module")
def two() -> Iterator[Sandbox]:
    Sandbox(FLEET_DIR).down()  # left running by an interrupted earlier run
    shutil.rmtree(FLEET_DIR, ignore_errors=True)
    try:
        up = run_cli(
            "sandbox", "up", "--dir", str(FLEET_DIR), "--base-port", str(FLEET_PORT),
            "--targets", "2", timeout=300,
        )  # fmt: skip
        assert up.returncode == 0, up.stderr
        yield Sandbox(FLEET_DIR)
    finally:
        Sandbox(FLEET_DIR).down()
        shutil.rmtree(FLEET_DIR, ignore_errors=True)


def _fleet(sb: Sandbox, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    shipped = json.loads((ROOT / "westep-ops.json").read_text())
    environ: dict[str, str] = {
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "WESTEP_OPS_LOG_DIR": str(tmp_path / "logs"),
    }
    (tmp_path / "logs").mkdir()
    targets = []
    for t in (1, 2):
        env = sb.state.env(t)
        mapping = {v: f"T{t}_{v}" for v in PER_TARGET}
        mapping.update({v: v for v in SHARED if v in env})
        environ.update({f"T{t}_{v}": env[v] for v in PER_TARGET})
        environ.update({v: env[v] for v in (*SHARED, "WESTEP_OPS_STORAGE_URL") if v in env})
        target: dict[str, object] = {"name": f"t{t}", "env": mapping, "tags": {"fleet": "x"}}
        if t == 2:  # H1/H2 watch target 2's own pool (see `sandbox env --target 2`)
            target["overrides"] = {"databaseName": "westep_t2"}
        targets.append(target)
    path = tmp_path / "fleet.json"
    path.write_text(json.dumps({**shipped, "targets": targets}))
    return path, environ


def _statuses(doc: dict[str, object]) -> dict[str, str]:
    return {c["category"]: c["status"] for c in doc["checks"]}  # type: ignore[attr-defined]


def test_a_fault_on_one_target_is_repaired_there_only(two: Sandbox, tmp_path: Path) -> None:
    path, environ = _fleet(two, tmp_path)
    cfg = ("--config", str(path))
    fault = run_cli(
        "sandbox", "fault", "grant_revoke", "on", "--target", "2", "--dir", str(FLEET_DIR),
        env=two.state.env(2),
    )  # fmt: skip
    assert fault.returncode == 0, fault.stderr

    before = run_cli(*cfg, "health-check", "--json", env=environ)
    assert before.returncode == 2, before.stdout + before.stderr
    doc = json.loads(before.stdout)
    assert doc["t1"]["status"] == "ok" and _statuses(doc["t1"])["tables"] == "ok"
    assert _statuses(doc["t2"])["tables"] == "critical"

    both = run_cli(*cfg, "repair", "fix_table_permissions", env=environ)
    assert both.returncode == 2
    assert both.stderr.strip() == (
        "error: repair acts on one target and 2 match: t1, t2 (pass --target NAME)"
    )
    fixed = run_cli(
        *cfg, "repair", "fix_table_permissions", "--target", "t2", "--json", env=environ
    )
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    (result,) = json.loads(fixed.stdout)
    assert result["target"] == "t2" and result["outcome"] == "repaired"
    assert result["database"].endswith("/westep_t2")
    with psycopg.connect(two.state.env(1)["WESTEP_OPS_STORAGE_URL"]) as conn:
        rows = conn.execute(
            "SELECT target, action, outcome FROM westep_ops.repair_attempts ORDER BY id"
        ).fetchall()
    assert rows == [("t2", "fix_table_permissions", "repaired")]

    after = run_cli(*cfg, "health-check", "--tag", "fleet=x", env=environ)
    assert after.returncode == 0, after.stdout + after.stderr

    recovered = run_cli(*cfg, "recover", "--target", "t1", "--json", env=environ)
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    report = json.loads(recovered.stdout)
    assert report["target"] == "t1" and report["verdict"] == "healthy: nothing to recover"
    (written,) = (tmp_path / "logs").glob("recovery-*.md")
    assert written.name.startswith("recovery-t1-")
    assert written.read_text().startswith("# Recovery of t1 ")


# Run by the test below in a subprocess: the real CLI, with the ops store frozen (SIGSTOP)
# right after the first target's alerts were read, so the second target meets the
# process's store pool with a server that no longer answers.
_FREEZE_AFTER_FIRST_READ = """
import os, signal, sys
from westep_ops.monitoring import history
read = history.HistoryStore.alerts
def alerts(self, **kw):
    out = read(self, **kw)
    os.kill(int(os.environ["OPS_PID"]), signal.SIGSTOP)
    return out
history.HistoryStore.alerts = alerts
from westep_ops.cli.root import main
sys.argv = ["westep-ops", *sys.argv[1:]]
main()
"""


def test_an_ops_store_that_stops_answering_is_one_error_line_per_target(
    two: Sandbox, tmp_path: Path
) -> None:
    import os
    import signal
    import subprocess
    import sys

    path, environ = _fleet(two, tmp_path)
    pid = int((two.layout.ops / "data" / "postmaster.pid").read_text().split()[0])
    try:
        out = subprocess.run(
            [sys.executable, "-c", _FREEZE_AFTER_FIRST_READ, "--config", str(path)]
            + ["alerts", "list"],
            capture_output=True,
            text=True,
            env={**os.environ, **environ, "OPS_PID": str(pid)},
            cwd=ROOT,
            timeout=60,
        )
    finally:
        os.kill(pid, signal.SIGCONT)
    assert out.returncode == 3, out.stdout + out.stderr
    # One line, for the target that met the frozen store; nothing from psycopg-pool (its
    # "couldn't stop thread ..." when the pool closes on the way out).
    (line,) = out.stderr.splitlines()
    assert line.startswith("error: target t2: ops store unavailable: "), line
    assert out.stdout == "no alerts in t1\n"
    assert "Traceback" not in out.stderr
