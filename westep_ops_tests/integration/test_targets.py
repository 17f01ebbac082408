"""`westep-ops targets list|check` on a fleet whose variables point at the real sandbox."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg

from westep_ops.config import load_config
from westep_ops.sandbox.manager import Sandbox
from westep_ops.targets import resolve_targets
from westep_ops_tests.helpers import ROOT, run_cli

VARIABLES = ("DIRECT_URL", "DATABASE_URL", "PGBOUNCER_ADMIN_URL")


def _fleet(tmp_path: Path, sandbox: Sandbox) -> tuple[Path, dict[str, str]]:
    env = sandbox.state.env()
    shipped = json.loads((ROOT / "westep-ops.json").read_text())
    targets, environ = [], {}
    for name, prefix in (("blue", "BLUE_"), ("green", "GREEN_")):
        targets.append(
            {
                "name": name,
                "env": {v: prefix + v for v in VARIABLES},
                "tags": {"environment": "sandbox", "colour": name},
            }
        )
        environ.update({prefix + v: env[v] for v in VARIABLES})
    targets.append(
        {"name": "orphan", "env": {v: "ORPHAN_" + v for v in VARIABLES}, "tags": {"colour": "none"}}
    )
    targets[1]["overrides"] = {"monitoring": {"thresholds": {"responseTime": 750}}}
    path = tmp_path / "fleet.json"
    path.write_text(json.dumps({**shipped, "targets": targets}))
    return path, environ


def test_targets_list_and_check_against_the_sandbox(
    tmp_path: Path, sandbox: Sandbox, secrets: list[str]
) -> None:
    path, environ = _fleet(tmp_path, sandbox)
    # ORPHAN_* are set nowhere; the sandbox's own DIRECT_URL (in os.environ) is never borrowed.
    listed = run_cli("--config", str(path), "targets", "list", "--json", env=environ)
    assert listed.returncode == 0, listed.stderr
    doc = {t["name"]: t for t in json.loads(listed.stdout)["targets"]}
    assert list(doc) == ["blue", "green", "orphan"]
    assert doc["green"]["tags"] == {"environment": "sandbox", "colour": "green"}
    assert doc["blue"]["variables"]["DIRECT_URL"] == {
        "from": "env",
        "name": "BLUE_DIRECT_URL",
        "set": True,
    }
    assert {doc["orphan"]["variables"][v]["set"] for v in VARIABLES} == {False}
    # The ops store is one per deployment: every target shares the process's.
    assert doc["orphan"]["variables"]["WESTEP_OPS_STORAGE_URL"] == {
        "from": "shared",
        "name": "WESTEP_OPS_STORAGE_URL",
        "set": True,
    }
    text = run_cli("--config", str(path), "targets", "list", env=environ)
    assert "$GREEN_DATABASE_URL" in text.stdout and "unset" in text.stdout

    checked = run_cli("--config", str(path), "targets", "check", env=environ)
    assert checked.returncode == 2
    lines = checked.stdout.splitlines()
    assert lines[0] == "ok  blue" and lines[1] == "ok  green"
    assert lines[2].startswith("FAIL  orphan: not set: DATABASE_URL from $ORPHAN_DATABASE_URL")
    assert checked.stderr.strip() == "error: 1 of 3 targets cannot be monitored as configured"
    both = run_cli(
        "--config", str(path), "targets", "check", "--tag", "environment=sandbox", env=environ
    )
    assert both.returncode == 0 and both.stdout.splitlines()[-1] == "2 targets ok"
    for out in (listed, text, checked, both):
        assert "Traceback" not in out.stderr
        assert not [s for s in secrets if s in out.stdout + out.stderr]

    # What the resolver hands a command is the sandbox itself: each target connects.
    blue, green, orphan = resolve_targets(load_config(path), environ, tmp_path)
    assert green.config.monitoring.thresholds.response_time == 750
    assert blue.config.monitoring.thresholds.response_time == 2000
    for target in (blue, green):
        with psycopg.connect(target.environment.require("direct_url"), connect_timeout=5) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    assert orphan.environment.direct_url is None and orphan.missing() == [
        "DATABASE_URL",
        "DIRECT_URL",
    ]


def test_config_init_target_writes_the_discovered_sections_into_its_overrides(
    tmp_path: Path, sandbox: Sandbox, secrets: list[str]
) -> None:
    path, environ = _fleet(tmp_path, sandbox)
    before = json.loads(path.read_text())
    out = run_cli("--config", str(path), "config", "init", "--target", "green", env=environ)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"wrote the overrides of target green into {path}")
    after = json.loads(path.read_text())
    green = after["targets"][1]["overrides"]
    # The discovered sections, plus the override the file already had.
    assert green["monitoring"] == {"thresholds": {"responseTime": 750}}
    assert {"public.profiles", "public.steps"} <= {t["table"] for t in green["criticalTables"]}
    assert green["grants"] and "realtime" in green
    # Nothing else moved: the shared sections and the other targets are as they were.
    assert {k: v for k, v in after.items() if k != "targets"} == {
        k: v for k, v in before.items() if k != "targets"
    }
    assert (
        after["targets"][0] == before["targets"][0] == json.loads(json.dumps(before))["targets"][0]
    )
    assert not [s for s in secrets if s in path.read_text() + out.stdout + out.stderr]
    checked = run_cli("--config", str(path), "targets", "check", "--target", "green", env=environ)
    assert checked.returncode == 0, checked.stdout + checked.stderr

    missing = run_cli("--config", str(path), "config", "init", "--target", "teal", env=environ)
    assert missing.returncode == 2
    assert missing.stderr.startswith(f"error: target teal is not in {path}: add")
    unset = run_cli("--config", str(path), "config", "init", "--target", "orphan", env=environ)
    assert unset.returncode == 2 and unset.stderr.strip() == (
        "error: target orphan: DIRECT_URL is not set (from $ORPHAN_DIRECT_URL)"
    )
