"""A real fault on one target of a two-target sandbox: its incident, ground truth and SLA
are that target's, never the other's.

A sandbox of its own (``sandbox up --targets 2``, ports base+20..base+24, directory under
the checkout's ``.westep/`` as the other extra sandboxes of the tests), made and stopped
here.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
import pytest

from westep_ops.config import load_config
from westep_ops.monitoring import sla as monthly
from westep_ops.monitoring.history import HistoryStore
from westep_ops.sandbox import faults
from westep_ops.sandbox.manager import Sandbox
from westep_ops_tests.helpers import ROOT, run_cli

DIR = ROOT / ".westep" / "test-sandbox-reports"
PORT = int(os.environ.get("WESTEP_OPS_TEST_BASE_PORT", "25530")) + 20
# Each target's own connections; the ops store, keys and stand-ins are shared.
OWN = ("DATABASE_URL", "DIRECT_URL", "WESTEP_OPS_REPAIR_URL")


@pytest.fixture(scope="module")
def two() -> Iterator[Sandbox]:
    Sandbox(DIR).down()  # left running by an interrupted earlier run
    shutil.rmtree(DIR, ignore_errors=True)
    try:
        up = run_cli("sandbox", "up", "--dir", str(DIR), "--base-port", str(PORT), "--targets", "2")
        assert up.returncode == 0, up.stderr
        yield Sandbox(DIR)
    finally:
        Sandbox(DIR).down()
        shutil.rmtree(DIR, ignore_errors=True)


def _fleet(sb: Sandbox, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    shipped = json.loads((ROOT / "westep-ops.json").read_text())
    environ = {
        **sb.state.env(1),  # the unprefixed variables: this sandbox's, as the guard wants
        "WESTEP_OPS_SANDBOX_DIR": str(DIR),
        "WESTEP_OPS_LOG_DIR": str(tmp_path / "logs"),
        "XDG_STATE_HOME": str(tmp_path / "state"),
    }
    targets = []
    for n, name in ((1, "alpha"), (2, "beta")):
        env = sb.state.env(n)
        prefix = name.upper() + "_"
        environ.update({prefix + v: env[v] for v in OWN})
        targets.append(
            {
                "name": name,
                "env": {v: prefix + v for v in OWN},
                "tags": {"environment": "sandbox"},
                # the pgbouncer pool to watch is the target's own database
                "overrides": {"databaseName": "postgres" if n == 1 else f"westep_t{n}"},
            }
        )
    path = tmp_path / "fleet.json"
    path.write_text(json.dumps({**shipped, "targets": targets}))
    return path, environ


def test_a_fault_on_beta_is_beta_s_incident_and_sla_not_alpha_s(
    two: Sandbox, tmp_path: Path
) -> None:
    config_path, environ = _fleet(two, tmp_path)
    url = environ["WESTEP_OPS_STORAGE_URL"]
    res = run_cli(
        "--config",
        str(config_path),
        "drill",
        "--target",
        "beta",
        "--faults",
        "grant_revoke",
        "--interval",
        "2",
        "--quiet",
        "0",
        "--json",
        env=environ,
        timeout=300,
    )
    assert "Traceback" not in res.stderr, res.stderr
    out = json.loads(res.stdout)
    (r,) = out["results"]
    assert r["detected"] and r["category"] == "tables" and r["rows_lost"] == 0, out
    # The fault went to beta's database (sandbox target 2) and is off again everywhere.
    assert faults.active_by_target(two) == {1: [], 2: []}
    with psycopg.connect(url) as conn:
        truth = conn.execute(
            "SELECT target, fault FROM westep_ops.drill_faults WHERE drill = %s", (out["drill"],)
        ).fetchall()
        incidents = conn.execute(
            "SELECT target, category FROM westep_ops.incidents ORDER BY id"
        ).fetchall()
        sampled = {t for (t,) in conn.execute("SELECT DISTINCT target FROM westep_ops.samples")}
    assert truth == [("beta", "grant_revoke")]
    assert incidents and {t for t, _ in incidents} == {"beta"}
    assert ("beta", "tables") in incidents and sampled == {"beta"}

    # beta's month has the incident; alpha's has nothing (and says so, never "met").
    config = load_config(config_path)
    month = datetime.now(ZoneInfo(config.timezone)).strftime("%Y-%m")
    store = HistoryStore(url)
    try:
        fleet = monthly.build_fleet(
            store,
            month,
            [("alpha", config), ("beta", config)],
            reports_dir=tmp_path / "reports",
        )
    finally:
        store.close()
    a, b = fleet.reports["alpha"].figures, fleet.reports["beta"].figures
    assert a.incidents == 0 and a.alerts == 0 and a.availability is None
    assert b.incidents == len(incidents) and b.incidents_by.get("tables/critical", 0) >= 1
    assert b.drill_incidents >= 1  # judged against beta's own ground truth
    text = fleet.path.read_text() if fleet.path else ""
    assert "| alpha | - | 0.0% | not measured | 0 / 0 |" in text

    # status: beta measured (just now), alpha never.
    status = run_cli("--config", str(config_path), "status", "--json", env=environ)
    doc = {t["target"]: t for t in json.loads(status.stdout)["targets"]}
    assert doc["alpha"]["state"] == "not measured" and doc["alpha"]["last_sample_at"] is None
    assert doc["beta"]["last_sample_at"] is not None and doc["beta"]["open_incidents"] == []
