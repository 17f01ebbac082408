"""The Dagster definitions load without secrets and the job really runs on the sandbox.

Their shape (assets, checks, partitions, jobs, schedules, sensors) is snapshotted in
test_definitions_snapshot.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from dagster import DagsterInstance

from westep_ops.sandbox.manager import Sandbox
from westep_ops_tests.helpers import ROOT

DAGSTER_ENV = ("DATABASE_URL", "DIRECT_URL", "PGBOUNCER_ADMIN_URL", "WESTEP_OPS_STORAGE_URL")


def test_definitions_load_without_any_secret(tmp_path: Path) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in DAGSTER_ENV and not k.startswith(("WESTEP_", "NEXT_", "SUPABASE_"))
    }
    env["DAGSTER_HOME"] = str(tmp_path)  # no dagster.yaml: validates the code location only
    res = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert "All code locations passed validation" in res.stderr + res.stdout


def test_test_connection_job_runs_on_the_sandbox(sandbox: Sandbox, tmp_path: Path) -> None:
    from westep_ops.definitions import defs

    with DagsterInstance.ephemeral() as instance:
        result = defs.get_job_def("test_connection_job").execute_in_process(instance=instance)
    assert result.success


def test_test_connection_job_fails_clearly_when_a_part_is_down(sandbox: Sandbox) -> None:
    from dagster import DagsterInstance

    from westep_ops.definitions import defs

    saved = os.environ["DIRECT_URL"]
    os.environ["DIRECT_URL"] = "postgresql://westep_monitor:nope@127.0.0.1:1/postgres"
    try:
        with DagsterInstance.ephemeral() as instance:
            result = defs.get_job_def("test_connection_job").execute_in_process(
                instance=instance, raise_on_error=False
            )
    finally:
        os.environ["DIRECT_URL"] = saved
    assert not result.success
    failure = result.failure_data_for_node("test_connection")
    assert failure is not None and "direct: connection refused" in str(failure.error)
    assert "nope" not in str(failure.error)


def test_dagster_storage_in_ops_postgres(sandbox: Sandbox, tmp_path: Path) -> None:
    """dagster.yaml really puts runs and events in the ops PostgreSQL."""
    (tmp_path / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())
    env = dict(os.environ, DAGSTER_HOME=str(tmp_path))
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "dagster",
            "job",
            "execute",
            "-m",
            "westep_ops.definitions",
            "-j",
            "test_connection_job",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    import psycopg

    with psycopg.connect(os.environ["WESTEP_OPS_STORAGE_URL"]) as conn:
        n = conn.execute(
            "SELECT count(*) FROM runs WHERE pipeline_name = 'test_connection_job'"
        ).fetchone()
    assert n is not None and n[0] >= 1
