"""What the Dagster UI shows, read back from a Dagster instance as the UI reads it.

Dagster's own idioms on the real sandbox history: a single-run backfill over 7 days
(``materialize`` with a partition range) gives each day its own materialization and
availability-check evaluations; a repair run's verification probe becomes the check's
latest evaluation; a sensor evaluation stays short with a slow Slack webhook and many
endpoints.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest

from westep_ops.sandbox import faults
from westep_ops.sandbox.manager import Sandbox
from westep_ops_tests.helpers import write_config
from westep_ops_tests.integration.conftest import clear_history

DAYS = [f"2026-04-0{i}" for i in range(1, 8)]  # local days (Asia/Tokyo)
BAD_DAY = "2026-04-04"  # the day pool misses the availability target


@pytest.fixture
def cfg(tmp_path: Path, sandbox: Sandbox) -> Iterator[Path]:
    clear_history()
    path = write_config(tmp_path / "ui.json", monitoring__alerting__confirmDelaySeconds=0.2)
    os.environ["WESTEP_OPS_CONFIG"], saved = str(path), os.environ["WESTEP_OPS_CONFIG"]
    try:
        yield path
    finally:
        os.environ["WESTEP_OPS_CONFIG"] = saved


def seven_days(store_url: str) -> None:
    """Day i (0-6) of DAYS: samples every 2 minutes, i incidents, API at 100 + 10 i ms;
    pool critical for 10 minutes on BAD_DAY."""
    with psycopg.connect(store_url, autocommit=True) as conn, conn.cursor() as cur:
        for i, key in enumerate(DAYS):
            day = datetime.fromisoformat(key).replace(tzinfo=UTC) - timedelta(hours=9)
            bad = key == BAD_DAY
            cur.executemany(
                "INSERT INTO westep_ops.samples (ts, kind, category, status, summary)"
                " VALUES (%s, 'cheap', %s, %s, 'x')",
                [
                    (
                        day + timedelta(minutes=m),
                        cat,
                        "critical" if bad and cat == "pool" and 600 <= m < 610 else "ok",
                    )
                    for m in range(0, 1440, 2)
                    for cat in ("connection", "pool")
                ],
            )
            cur.executemany(
                "INSERT INTO westep_ops.performance_samples (ts, mean_api_ms, http_requests,"
                " http_failures, tps, status) VALUES (%s, %s, 2, 0, 10, 'ok')",
                [(day + timedelta(minutes=m), 100.0 + 10 * i) for m in range(0, 1440, 10)],
            )
            cur.executemany(
                "INSERT INTO westep_ops.incidents (category, severity, started_at, detected_at,"
                " resolved_at, closed_at, summary) VALUES ('pool', 'critical', %s, %s, %s, %s, 'x')",
                [
                    (
                        day + timedelta(hours=1 + n),
                        day + timedelta(hours=1 + n, seconds=30),
                        day + timedelta(hours=1 + n, minutes=5),
                        day + timedelta(hours=1 + n, minutes=6),
                    )
                    for n in range(i)
                ],
            )


def latest_metadata(instance: Any, asset: str, partition: str) -> dict[str, Any]:
    """The partition's latest materialization's metadata, as the UI shows it."""
    from dagster import AssetKey, AssetRecordsFilter

    (record,) = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey(asset), asset_partitions=[partition]), limit=1
    ).records
    return {k: getattr(v, "value", v) for k, v in record.asset_materialization.metadata.items()}


def test_single_run_backfill_gives_each_day_its_own_figures(cfg: Path) -> None:
    from dagster import (
        AssetCheckKey,
        AssetKey,
        DagsterInstance,
        materialize,
    )

    from westep_ops.defs.monitoring.assets import (
        diagnosis_report,
        health_samples,
        incidents,
        performance_metrics,
    )
    from westep_ops.resources import default_resources

    seven_days(os.environ["WESTEP_OPS_STORAGE_URL"])
    with DagsterInstance.ephemeral() as instance:
        result = materialize(
            [health_samples, performance_metrics, incidents, diagnosis_report],
            resources=default_resources(),
            instance=instance,
            tags={
                "dagster/asset_partition_range_start": DAYS[0],
                "dagster/asset_partition_range_end": DAYS[-1],
            },
        )
        assert result.success
        assert len(instance.get_run_records()) == 1  # the single run of the backfill policy
        for i, day in enumerate(DAYS):
            inc = latest_metadata(instance, "incidents", day)
            assert inc["incidents"] == i, day
            assert ("mean_detect_s" in inc) == (i > 0)  # nothing to average: no figure
            assert latest_metadata(instance, "performance_metrics", day)[
                "mean_api_ms"
            ] == pytest.approx(100 + 10 * i)
            health = latest_metadata(instance, "health_samples", day)
            assert health["samples"] == 1440 and health["availability"] == 1.0
            assert health["categories_below_target"] == ("pool" if day == BAD_DAY else "none")
            report = latest_metadata(instance, "diagnosis_report", day)
            assert f"# Daily report {day}" in report["report"]
            assert report["verdict"].startswith(f"{i} incident(s)" if i else "HEALTHY")
        # One availability evaluation per day and category: the UI can say which day missed.
        history = instance.event_log_storage.get_asset_check_execution_history(
            AssetCheckKey(AssetKey("health_samples"), "pool_available"), limit=50
        )
        by_day = {
            r.event.asset_check_evaluation.partition: r.event.asset_check_evaluation
            for r in history
        }
        assert sorted(by_day) == DAYS
        assert [d for d, e in by_day.items() if not e.passed] == [BAD_DAY]
        bad = by_day[BAD_DAY].metadata
        assert bad["availability"].value == pytest.approx(1 - 5 / 720)  # 5 of 720 samples
        assert bad["target"].value == 0.999 and bad["day"].value == BAD_DAY


def test_monthly_report_says_how_complete_its_daily_partitions_are(cfg: Path) -> None:
    from dagster import DagsterInstance, materialize

    from westep_ops.defs.monitoring.assets import health_samples
    from westep_ops.defs.sla.assets import monthly_sla_report
    from westep_ops.resources import default_resources

    seven_days(os.environ["WESTEP_OPS_STORAGE_URL"])
    with DagsterInstance.ephemeral() as instance:
        materialize(
            [health_samples],
            resources=default_resources(),
            instance=instance,
            partition_key=DAYS[0],
        )
        result = materialize(
            [monthly_sla_report],
            resources=default_resources(),
            instance=instance,
            partition_key="2026-04-01",
            run_config={
                "ops": {"monthly_sla_report": {"config": {"reports_dir": str(cfg.parent)}}}
            },
        )
    (mat,) = result.asset_materializations_for_node("monthly_sla_report")
    meta = {k: getattr(v, "value", v) for k, v in mat.metadata.items()}
    assert meta["days_in_month"] == 30 and meta["daily_partitions_due"] == 30
    assert meta["daily_partitions_materialized"] == 1
    assert meta["daily_partitions_missing"] == "2026-04-02..2026-04-30"
    assert "raw samples" in meta["built_from"]


def test_repair_verification_flips_the_check_to_passed(sandbox: Sandbox, cfg: Path) -> None:
    from dagster import AssetCheckKey, AssetKey, DagsterInstance, build_sensor_context

    from westep_ops.definitions import defs
    from westep_ops.resources import default_resources

    sensor = defs.get_sensor_def("monitoring_sensor")
    h3 = AssetCheckKey(AssetKey("health_check"), "h3_tables")

    def latest(instance: Any) -> Any:
        record = instance.event_log_storage.get_latest_asset_check_execution_by_key([h3])[h3]
        return record.event.asset_check_evaluation

    faults.inject(sandbox, "grant_revoke", True)
    try:
        with DagsterInstance.ephemeral() as instance:
            with build_sensor_context(
                instance=instance, resources=default_resources(), definitions=defs
            ) as ctx:
                tick = sensor.evaluate_tick(ctx)
            for event in tick.asset_events:  # what the daemon stores of a tick
                instance.report_runless_asset_event(event)
            failed = latest(instance)
            assert not failed.passed and failed.metadata["probe"].value == "confirmation"
            assert failed.metadata["status_level"].value == 2
            # the repair, and a refresh of today's daily assets for the opened incident
            (request,) = [r for r in tick.run_requests if r.job_name == "repair_job"]
            result = defs.get_job_def("repair_job").execute_in_process(
                instance=instance, run_config=request.run_config
            )
            assert result.success
            passed = latest(instance)
    finally:
        faults.inject(sandbox, "grant_revoke", False)
    assert passed.passed and passed.metadata["probe"].value == "verification"
    # the same numeric metadata as the sensor's evaluations: the Plots tab draws both
    numeric = {
        k for k, v in failed.metadata.items() if isinstance(getattr(v, "value", None), int | float)
    }
    assert {"status_level", "duration_ms"} <= numeric
    assert {
        k for k, v in passed.metadata.items() if isinstance(getattr(v, "value", None), int | float)
    } >= {"status_level", "duration_ms"}


class SlowWebhook:
    """A Slack stand-in that takes ``delay`` seconds to answer each post."""

    def __init__(self, delay: float) -> None:
        self.posts = 0
        hook = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a: object) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                hook.posts += 1
                time.sleep(delay)
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/services/T0/B0/slow-secret"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()


def test_sensor_evaluation_stays_short_with_slow_slack_and_many_endpoints(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    from dagster import DagsterInstance, build_sensor_context

    from westep_ops.definitions import defs
    from westep_ops.resources import default_resources

    clear_history()
    endpoints = [
        {"name": f"ep{i}", "base": "app", "path": "/api/health", "expectStatus": 200}
        for i in range(10)
    ]
    path = write_config(
        tmp_path / "many.json", endpoints=endpoints, monitoring__alerting__confirmDelaySeconds=1
    )
    hook = SlowWebhook(10)
    saved = dict(os.environ)
    os.environ.update(WESTEP_OPS_CONFIG=str(path), WEBHOOK_URL=hook.url)
    sensor = defs.get_sensor_def("monitoring_sensor")
    faults.inject(sandbox, "grant_revoke", True)  # an incident: an alert goes to Slack
    try:
        with DagsterInstance.ephemeral() as instance:
            with build_sensor_context(
                instance=instance, resources=default_resources(), definitions=defs
            ) as ctx:
                t0 = time.monotonic()
                tick = sensor.evaluate_tick(ctx)
                took = time.monotonic() - t0
            for _ in range(50):  # the alert is posted in the background, after the tick
                if hook.posts:
                    break
                time.sleep(0.1)
    finally:
        faults.inject(sandbox, "grant_revoke", False)
        os.environ.clear()
        os.environ.update(saved)
        hook.close()
    assert tick.run_requests and hook.posts >= 1
    assert took < 10, f"a sensor evaluation took {took:.1f} s"
    print(f"sensor evaluation with a 10 s webhook and 10 endpoints: {took:.2f} s")


def test_idle_tick_says_when_the_next_sweep_is_due(cfg: Path) -> None:
    from dagster import DagsterInstance, build_sensor_context

    from westep_ops.definitions import defs
    from westep_ops.resources import default_resources

    sensor = defs.get_sensor_def("monitoring_sensor")
    with DagsterInstance.ephemeral() as instance:
        reasons = []
        for _ in range(2):
            with build_sensor_context(
                instance=instance, resources=default_resources(), definitions=defs
            ) as ctx:
                reasons.append(sensor.evaluate_tick(ctx).skip_message)
    assert reasons[0] == "swept full: 7 checks, 0 failing"
    assert re.fullmatch(r"idle: next cheap sweep due in (5\d|60) s", reasons[1] or "")
