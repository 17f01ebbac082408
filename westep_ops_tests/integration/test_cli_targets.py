"""`--target` / `--tag` on the probe commands against the real sandbox (issue 14, item 2).

The fleet here is cheap: targets `blue` and `green` read their connection strings from
differently named variables that point at the same sandbox database; `orphan`'s are set
nowhere. A second real database is not needed to show that the selection filters, that
the output names each target, and that one target that cannot run does not stop the rest.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from westep_ops.sandbox.manager import Sandbox
from westep_ops_tests.helpers import ROOT, run_cli

CONNECTIONS = ("DIRECT_URL", "DATABASE_URL", "PGBOUNCER_ADMIN_URL")
# The app and Supabase stand-ins (H6, H7): the same for every target of this fleet.
SHARED_API = (
    "WESTEP_OPS_APP_URL",
    "NEXT_PUBLIC_SUPABASE_URL",
    "SUPABASE_SERVICE_ROLE_KEY",
    "SUPABASE_ANON_KEY",
)


def _fleet(tmp_path: Path, sandbox: Sandbox) -> tuple[Path, dict[str, str]]:
    env = sandbox.state.env()
    shipped = json.loads((ROOT / "westep-ops.json").read_text())
    targets, environ = [], {}
    for name in ("blue", "green", "orphan"):
        prefix = name.upper() + "_"
        mapping = {v: prefix + v for v in CONNECTIONS}
        mapping.update({v: v for v in SHARED_API if v in env})
        targets.append(
            {
                "name": name,
                "env": mapping,
                "tags": {"environment": "sandbox" if name != "orphan" else "nowhere"},
            }
        )
        if name != "orphan":
            environ.update({prefix + v: env[v] for v in CONNECTIONS})
    path = tmp_path / "fleet.json"
    path.write_text(json.dumps({**shipped, "targets": targets}))
    return path, environ


def test_health_check_over_a_fleet_names_each_target_and_runs_past_one_that_cannot(
    tmp_path: Path, sandbox: Sandbox, secrets: list[str]
) -> None:
    path, environ = _fleet(tmp_path, sandbox)
    every = run_cli("--config", str(path), "health-check", env=environ)
    # orphan cannot run (3, the worst); blue and green are probed and healthy.
    assert every.returncode == 3, every.stderr
    assert every.stderr.splitlines() == [
        "error: target orphan: not set: DATABASE_URL from $ORPHAN_DATABASE_URL,"
        " DIRECT_URL from $ORPHAN_DIRECT_URL"
    ]
    lines = every.stdout.splitlines()
    assert lines[0].split()[:3] == ["target", "check", "status"]
    rows = [line.split() for line in lines[1:15]]
    assert [r[0] for r in rows] == ["blue"] * 7 + ["green"] * 7
    assert {r[3] for r in rows} == {"ok"}, every.stdout
    assert lines[15].startswith("blue: 7 checks in ") and lines[16].startswith("green: 7 checks")

    blue = run_cli("--config", str(path), "health-check", "--target", "blue", env=environ)
    assert blue.returncode == 0, blue.stdout + blue.stderr
    assert {line.split()[0] for line in blue.stdout.splitlines()[1:8]} == {"blue"}
    assert "green" not in blue.stdout and blue.stderr == ""

    both = run_cli(
        "--config", str(path), "health-check", "--tag", "environment=sandbox", "--json", env=environ
    )
    assert both.returncode == 0, both.stderr
    doc = json.loads(both.stdout)
    assert list(doc) == ["blue", "green"]
    for name, one in doc.items():
        assert one["target"] == name and one["status"] == "ok" and one["exit_code"] == 0
        assert len(one["checks"]) == 7
    alone = run_cli(
        "--config", str(path), "health-check", "--target", "green", "--json", env=environ
    )
    assert set(json.loads(alone.stdout)) == {
        "target",
        "status",
        "exit_code",
        "duration_ms",
        "checks",
    }
    for out in (every, blue, both, alone):
        assert "Traceback" not in out.stderr
        assert not [s for s in secrets if s in out.stdout + out.stderr]


def test_without_targets_the_output_is_unchanged_and_json_gains_the_target(
    sandbox: Sandbox,
) -> None:
    text = run_cli("health-check")
    assert text.returncode == 0, text.stdout + text.stderr
    assert text.stdout.splitlines()[0].split() == ["check", "status", "time", "summary"]
    out = run_cli("health-check", "--json", "--target", "default")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert list(doc) == ["target", "status", "exit_code", "duration_ms", "checks"]
    assert doc["target"] == "default"
    conn = run_cli("test-connection", "--json")
    assert conn.returncode == 0 and isinstance(json.loads(conn.stdout), list)  # shape kept
    db = run_cli("db-status", "--json")
    assert db.returncode == 0 and json.loads(db.stdout)["target"] == "default"
    nope = run_cli("db-status", "--target", "blue")
    assert nope.returncode == 3
    assert nope.stderr.strip() == "error: unknown target blue (targets: default)"


def test_db_status_test_connection_and_diagnose_carry_the_target(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    path, environ = _fleet(tmp_path, sandbox)
    status = run_cli(
        "--config", str(path), "db-status", "--tag", "environment=sandbox", env=environ
    )
    assert status.returncode == 0, status.stderr
    heads = [line for line in status.stdout.splitlines() if line.startswith("target ")]
    assert heads == ["target blue  (environment=sandbox)", "target green  (environment=sandbox)"]

    conn = run_cli("--config", str(path), "test-connection", "--target", "green", env=environ)
    assert conn.returncode == 0, conn.stdout + conn.stderr
    lines = conn.stdout.splitlines()
    assert lines[0].split()[:3] == ["target", "connection", "status"]
    assert {line.split()[0] for line in lines[1:]} == {"green"}
    keyed = run_cli(
        "--config", str(path), "test-connection", "--target", "blue", "--target", "orphan",
        "--json", env=environ,
    )  # fmt: skip
    assert keyed.returncode == 3
    doc = json.loads(keyed.stdout)
    assert isinstance(doc["blue"], list) and doc["orphan"]["exit_code"] == 3

    diag = run_cli("--config", str(path), "diagnose", "--target", "blue", env=environ)
    assert diag.returncode == 0, diag.stdout + diag.stderr
    (report,) = [Path(x[8:]) for x in diag.stdout.splitlines() if x.startswith("report: ")]
    assert report.parent == Path(os.environ["WESTEP_OPS_LOG_DIR"])
    assert re.fullmatch(r"diagnosis-report-blue-\d{4}-\d{2}-\d{2}\.md", report.name)
    assert report.read_text().startswith("# Diagnosis of blue ")
