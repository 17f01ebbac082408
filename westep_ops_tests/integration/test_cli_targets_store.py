"""`alerts` and `silence` per target against the real ops store (issue 14, item 2), and
`alerts list` when the ops store is down (exit 3, one line, nothing from psycopg-pool).

Targets `blue` and `green` share the sandbox (and its ops store) under differently named
variables; each one's alerts and silences are its own rows.
"""

from __future__ import annotations

import json
import os
import socket
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from westep_ops.monitoring.history import HistoryStore
from westep_ops.sandbox.manager import Sandbox
from westep_ops_tests.helpers import ROOT, run_cli
from westep_ops_tests.integration.conftest import clear_history

CONNECTIONS = ("DIRECT_URL", "DATABASE_URL", "PGBOUNCER_ADMIN_URL")


@pytest.fixture
def fleet(tmp_path: Path, sandbox: Sandbox) -> tuple[Path, dict[str, str]]:
    store = HistoryStore(os.environ["WESTEP_OPS_STORAGE_URL"])
    with store.tx():  # the schema at its latest migration before the tables are emptied
        pass
    clear_history()
    with psycopg.connect(os.environ["WESTEP_OPS_STORAGE_URL"]) as conn:
        conn.execute("DELETE FROM westep_ops.silences")
    env = sandbox.state.env()
    shipped = json.loads((ROOT / "westep-ops.json").read_text())
    targets, environ = [], {}
    for name in ("blue", "green"):
        prefix = name.upper() + "_"
        targets.append(
            {
                "name": name,
                "env": {v: prefix + v for v in CONNECTIONS},
                "tags": {"colour": name},
            }
        )
        environ.update({prefix + v: env[v] for v in CONNECTIONS})
    path = tmp_path / "fleet.json"
    path.write_text(json.dumps({**shipped, "targets": targets}))
    return path, environ


def _alert(target: str, message: str) -> int:
    store = HistoryStore(os.environ["WESTEP_OPS_STORAGE_URL"], target=target)
    try:
        return store.add_alert(None, datetime.now(UTC), "opened", "critical", "pool", message, [])
    finally:
        store.close()


def test_alerts_are_listed_acked_and_labelled_per_target(
    fleet: tuple[Path, dict[str, str]], secrets: list[str]
) -> None:
    path, environ = fleet
    cfg = ("--config", str(path))
    blue = _alert("blue", "blue pool paused")
    green = _alert("green", "green pool paused")

    every = run_cli(*cfg, "alerts", "list", env=environ)
    assert every.returncode == 0, every.stderr
    lines = every.stdout.splitlines()
    assert lines[0].split()[:2] == ["target", "id"]
    assert sorted(line.split()[:2][0] for line in lines[1:]) == ["blue", "green"]
    only = run_cli(*cfg, "alerts", "list", "--target", "green", "--json", env=environ)
    assert only.returncode == 0, only.stderr
    rows = json.loads(only.stdout)
    assert [r["id"] for r in rows] == [green] and rows[0]["message"] == "green pool paused"
    keyed = json.loads(run_cli(*cfg, "alerts", "list", "--json", env=environ).stdout)
    assert [r["id"] for r in keyed["blue"]] == [blue] and [r["id"] for r in keyed["green"]] == [
        green
    ]

    # An alert id is found in its own target; another target does not have it.
    wrong = run_cli(*cfg, "alerts", "ack", str(blue), "--target", "green", env=environ)
    assert wrong.returncode == 2
    assert wrong.stderr.strip() == f"error: no alert {blue} in target green"
    ack = run_cli(*cfg, "alerts", "ack", str(blue), "--by", "kim", env=environ)
    assert ack.returncode == 0, ack.stderr
    assert ack.stdout.strip() == f"alert {blue} (target blue) acknowledged by kim"
    label = run_cli(
        *cfg, "alerts", "label", str(green), "--real", "--tag", "colour=green", env=environ
    )
    assert label.returncode == 0, label.stderr
    assert label.stdout.startswith(f"alert {green} (target green) labelled real")
    for out in (every, only, wrong, ack, label):
        assert "Traceback" not in out.stderr
        assert not [s for s in secrets if s in out.stdout + out.stderr]


def test_silences_are_per_target(fleet: tuple[Path, dict[str, str]]) -> None:
    path, environ = fleet
    cfg = ("--config", str(path))
    add = ["silence", "add", "--category", "pool", "--for", "1h", "--reason", "upgrade"]
    unsaid = run_cli(*cfg, *add, env=environ)
    assert unsaid.returncode == 2
    assert unsaid.stderr.strip() == (
        "error: silence add: the config has 2 targets (blue, green); say which with"
        " --target NAME or --tag KEY=VALUE"
    )
    added = run_cli(*cfg, *add, "--target", "blue", env=environ)
    assert added.returncode == 0, added.stderr
    assert added.stdout.strip().endswith("on pool (target blue)")
    sid = added.stdout.split()[1].lstrip("#")

    green = run_cli(*cfg, "silence", "list", "--target", "green", env=environ)
    assert green.returncode == 0 and green.stdout.strip() == "no active silences"
    listed = run_cli(*cfg, "silence", "list", "--json", env=environ)
    doc = json.loads(listed.stdout)
    assert [s["reason"] for s in doc["blue"]["silences"]] == ["upgrade"]
    assert doc["green"]["silences"] == [] and doc["green"]["target"] == "green"

    nothing = run_cli(*cfg, "silence", "expire", sid, "--target", "green", env=environ)
    assert nothing.returncode == 2
    assert nothing.stderr.strip() == f"error: no active silence {sid} in green"
    expired = run_cli(*cfg, "silence", "expire", sid, env=environ)
    assert expired.returncode == 0, expired.stderr
    assert expired.stdout.strip().endswith("(target blue)")


def test_alerts_list_with_the_ops_store_down_is_exit_3_and_one_line(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = os.environ["WESTEP_OPS_STORAGE_URL"].replace(f":{sandbox.state.ops_port}/", f":{port}/")
    for args in (["alerts", "list"], ["alerts", "list", "--json"], ["alerts", "ack", "1"]):
        out = run_cli(*args, env={"WESTEP_OPS_STORAGE_URL": down})
        assert out.returncode == 3, (args, out.stdout, out.stderr)
        assert out.stderr.splitlines() == [
            "error: ops store unavailable: connection refused (nothing listening: server down?)"
        ]
        assert out.stdout == ""


def test_alerts_list_over_a_fleet_with_the_ops_store_down_is_one_line(
    fleet: tuple[Path, dict[str, str]], sandbox: Sandbox
) -> None:
    path, environ = fleet
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = os.environ["WESTEP_OPS_STORAGE_URL"].replace(f":{sandbox.state.ops_port}/", f":{port}/")
    out = run_cli(
        "--config", str(path), "alerts", "list", env={**environ, "WESTEP_OPS_STORAGE_URL": down}
    )
    assert out.returncode == 3, out.stdout + out.stderr
    (line,) = out.stderr.splitlines()  # the store is shared: said once, not per target
    assert line.startswith("error: ops store unavailable: connection refused"), line
    assert "other target(s) that share it" in line
