"""The UI's "Preview tick result" runs the sensor for real, which only reads what the
workers stored: it shows what the next tick would report and request."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from westep_ops.sandbox import faults
from westep_ops.sandbox.manager import Sandbox
from westep_ops_tests.helpers import write_config
from westep_ops_tests.integration.conftest import clear_history

HISTORY = ("samples", "incidents", "alerts", "performance_samples")


def counts() -> dict[str, int]:
    with psycopg.connect(os.environ["WESTEP_OPS_STORAGE_URL"]) as conn:
        return {
            t: conn.execute(
                sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier("westep_ops", t))
            ).fetchone()[0]
            for t in HISTORY
        }


def alert_lines() -> list[str]:
    return [
        line
        for p in Path(os.environ["WESTEP_OPS_LOG_DIR"]).glob("monitoring-alerts-*.log")
        for line in p.read_text().splitlines()
    ]


@pytest.fixture
def broken(sandbox: Sandbox, tmp_path: Path) -> Iterator[None]:
    from westep_ops.monitoring.history import HistoryStore

    store = HistoryStore(os.environ["WESTEP_OPS_STORAGE_URL"])
    store.open_incidents()  # creates and migrates the history schema on a fresh sandbox
    store.close()
    clear_history()
    cfg = write_config(tmp_path / "mon.json", monitoring__alerting__confirmDelaySeconds=0.2)
    os.environ["WESTEP_OPS_CONFIG"], saved = str(cfg), os.environ["WESTEP_OPS_CONFIG"]
    faults.inject(sandbox, "grant_revoke", True)
    try:
        yield
    finally:
        faults.inject(sandbox, "grant_revoke", False)
        os.environ["WESTEP_OPS_CONFIG"] = saved
        clear_history()


def test_preview_only_reads_and_a_real_tick_then_reports_the_same(broken: None) -> None:
    from dagster import DagsterInstance, build_sensor_context

    from westep_ops.definitions import defs
    from westep_ops.defs.monitoring.sensors import is_preview
    from westep_ops.resources import default_resources
    from westep_ops_tests.integration.dagster_idioms import worker_tick

    sensor = defs.get_sensor_def("monitoring_sensor")
    worker_tick()  # a worker probed, stored the failure and queued the repair
    with DagsterInstance.ephemeral() as instance:

        def tick(**ctx_args: Any) -> Any:
            with build_sensor_context(
                instance=instance, resources=default_resources(), definitions=defs, **ctx_args
            ) as ctx:
                return is_preview(ctx), sensor(ctx)

        before, lines_before = counts(), alert_lines()
        # What sensorDryRun gives the sensor: no log key of a daemon tick.
        preview, shown = tick(repository_name="__repository__", sensor_name="monitoring_sensor")
        assert preview
        # It shows what the tick would report and request ...
        # (the sweep's failure, then the confirmation re-probe's, as the worker stored them)
        failing = [e.check_name for e in shown.asset_events if not getattr(e, "passed", True)]
        assert failing == ["h3_tables", "h3_tables"]
        assert [
            r.run_config["ops"]["run_repair_op"]["config"]["action"]
            for r in shown.run_requests
            if r.job_name == "repair_job"
        ] == ["fix_table_permissions"]
        # ... and it only read: nothing stored, nothing sent.
        assert counts() == before
        assert alert_lines() == lines_before

        # A real tick (the preview's cursor was not kept) reports and requests the same.
        preview, real = tick()
        assert not preview
        failing = [e.check_name for e in real.asset_events if not getattr(e, "passed", True)]
        assert failing == ["h3_tables", "h3_tables"]
        # One repair, and a refresh of today's daily assets for the opened incident.
        assert sorted(r.job_name for r in real.run_requests) == [
            "daily_monitoring_job",
            "repair_job",
        ]
        assert counts() == before


def _steps_item(res: Any) -> dict[str, Any]:
    import json

    (h3,) = json.loads(res.stdout)["checks"]
    return next(
        i
        for i in h3["values"]["items"]
        if i.get("table") == "public.steps" and i.get("role") == "authenticated"
    )


def test_h3_counts_column_grants_as_readable(sandbox: Sandbox) -> None:
    """Supabase's column-level security: SELECT on some columns is still readable."""
    from westep_ops_tests.helpers import run_cli

    with sandbox.superuser_conn() as conn:
        conn.execute("REVOKE SELECT ON public.steps FROM authenticated")
        conn.execute("GRANT SELECT (id, title) ON public.steps TO authenticated")
    try:
        res = run_cli("health-check", "--category", "tables", "--json")
        item = _steps_item(res)
        assert item["status"] == "ok" and "column grants" in item["detail"], item
        with sandbox.superuser_conn() as conn:
            conn.execute("REVOKE SELECT (id, title) ON public.steps FROM authenticated")
        res = run_cli("health-check", "--category", "tables", "--json")
        assert res.returncode == 2 and _steps_item(res)["finding"] == "grant_missing"
    finally:
        with sandbox.superuser_conn() as conn:
            conn.execute("REVOKE SELECT (id, title) ON public.steps FROM authenticated")
            conn.execute("GRANT SELECT ON public.steps TO authenticated")
