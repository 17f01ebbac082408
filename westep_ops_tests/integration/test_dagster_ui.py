"""What the Dagster UI shows, read back from a Dagster instance as the UI reads it.

Dagster's own idioms on the real sandbox history: a single-run backfill over 7 days of
the default target (``materialize`` with a partition range of date x target keys) gives
each day its own materialization and availability-check evaluations; a repair run's
verification probe becomes the check's latest evaluation in the target's partition; a
sensor tick with nothing new says since when.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from westep_ops.sandbox import faults
from westep_ops.sandbox.manager import Sandbox
from westep_ops_tests.helpers import write_config
from westep_ops_tests.integration.conftest import clear_history
from westep_ops_tests.integration.dagster_idioms import sensor_tick

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
                "INSERT INTO westep_ops.samples (target, ts, kind, category, status, summary)"
                " VALUES ('default', %s, 'cheap', %s, %s, 'x')",
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
                "INSERT INTO westep_ops.performance_samples (target, ts, mean_api_ms,"
                " http_requests, http_failures, tps, status)"
                " VALUES ('default', %s, %s, 2, 0, 10, 'ok')",
                [(day + timedelta(minutes=m), 100.0 + 10 * i) for m in range(0, 1440, 10)],
            )
            cur.executemany(
                "INSERT INTO westep_ops.incidents (target, category, severity, started_at,"
                " detected_at, resolved_at, closed_at, summary)"
                " VALUES ('default', 'pool', 'critical', %s, %s, %s, %s, 'x')",
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


def latest_metadata(instance: Any, asset: str, day: str) -> dict[str, Any]:
    """The default target's day's latest materialization's metadata, as the UI shows it."""
    from dagster import AssetKey, AssetRecordsFilter

    (record,) = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey(asset), asset_partitions=[f"{day}|default"]),
        limit=1,
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
                "dagster/asset_partition_range_start": f"{DAYS[0]}|default",
                "dagster/asset_partition_range_end": f"{DAYS[-1]}|default",
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
            r.event.asset_check_evaluation.partition.split("|")[0]: r.event.asset_check_evaluation
            for r in history
        }
        assert sorted(by_day) == DAYS
        assert [d for d, e in by_day.items() if not e.passed] == [BAD_DAY]
        bad = by_day[BAD_DAY].metadata
        assert bad["availability"].value == pytest.approx(1 - 5 / 720)  # 5 of 720 samples
        assert bad["goal"].value == 0.999 and bad["day"].value == BAD_DAY
        assert bad["target"].value == "default"


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
            partition_key=f"{DAYS[0]}|default",
        )
        result = materialize(
            [monthly_sla_report],
            resources=default_resources(),
            instance=instance,
            partition_key="2026-04-01|default",
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
    from dagster import AssetCheckKey, AssetKey, DagsterInstance

    from westep_ops.definitions import defs

    h3 = AssetCheckKey(AssetKey("health_check"), "h3_tables")

    def latest(instance: Any) -> Any:
        record = instance.event_log_storage.get_latest_asset_check_execution_by_key([h3])[h3]
        return record.event.asset_check_evaluation

    faults.inject(sandbox, "grant_revoke", True)
    try:
        with DagsterInstance.ephemeral() as instance:
            tick = sensor_tick(instance)  # a worker's tick, then the sensor's read of it
            for event in tick.asset_events:  # what the daemon stores of a tick
                instance.report_runless_asset_event(event)
            failed = latest(instance)
            assert not failed.passed and failed.metadata["probe"].value == "confirmation"
            assert failed.metadata["status_level"].value == 2
            assert failed.metadata["target"].text == "default"
            # the queued repair, and a refresh of today's daily assets for the opened incident
            (request,) = [r for r in tick.run_requests if r.job_name == "repair_job"]
            result = defs.get_job_def("repair_job").execute_in_process(
                instance=instance, run_config=request.run_config, tags=request.tags
            )
            assert result.success
            passed = latest(instance)
    finally:
        faults.inject(sandbox, "grant_revoke", False)
    assert passed.passed and passed.metadata["probe"].value == "verification"
    assert passed.metadata["target"].text == "default"
    # the same numeric metadata as the sensor's evaluations: the Plots tab draws both
    numeric = {
        k for k, v in failed.metadata.items() if isinstance(getattr(v, "value", None), int | float)
    }
    assert {"status_level", "duration_ms"} <= numeric
    assert {
        k for k, v in passed.metadata.items() if isinstance(getattr(v, "value", None), int | float)
    } >= {"status_level", "duration_ms"}


def test_a_tick_without_new_samples_says_since_when(cfg: Path) -> None:
    from dagster import DagsterInstance

    with DagsterInstance.ephemeral() as instance:
        first = sensor_tick(instance, worker=False).skip_message
        second = sensor_tick(instance, worker=False).skip_message
    assert first == "idle: no new samples in the last 120 s, requested 0 repair run(s)"
    assert re.fullmatch(
        r"idle: no new samples since \d\d:\d\d:\d\d, requested 0 repair run\(s\)", second or ""
    )
