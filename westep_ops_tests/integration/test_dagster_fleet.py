"""Dagster over a fleet, on the sandbox's ops store: the sensor only reads what workers
stored (each target's check evaluations naming their target) and turns a queued repair
request into exactly one repair run for that target; a backfill of one target's week
gives that target's figures only.

The sensor is evaluated as the daemon would (``build_sensor_context`` on a Dagster
instance in a temporary DAGSTER_HOME), in a fresh interpreter whose definitions load a
2-target config (the target keys are read when the definitions load). The targets'
connection variables point at port 1 (refused at once): nothing may probe them.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from westep_ops.config import RepairAction
from westep_ops.monitoring import repair_queue
from westep_ops.monitoring.observation import RepairRequest
from westep_ops.sandbox.manager import Sandbox
from westep_ops.store_schema import migrate
from westep_ops_tests.helpers import ROOT
from westep_ops_tests.integration.conftest import clear_history

REFUSED = "postgresql://westep_monitor:x@127.0.0.1:1/postgres"

# Evaluates monitoring_sensor ``ticks`` times on one instance (cursor carried over, as
# the daemon keeps it); between ticks, creates the runs the daemon would launch for the
# requests (with the tags the daemon adds: run key and sensor name). Prints one JSON line.
TICKS = """
import json, os, sys
from dagster import DagsterInstance, build_sensor_context
from westep_ops.definitions import defs
from westep_ops.resources import default_resources

sensor = defs.get_sensor_def("monitoring_sensor")
out = []
with DagsterInstance.get() as instance:
    cursor = None
    for _ in range(int(sys.argv[1])):
        with build_sensor_context(
            instance=instance, resources=default_resources(), definitions=defs, cursor=cursor
        ) as ctx:
            tick = sensor.evaluate_tick(ctx)
        cursor = tick.cursor
        for event in tick.asset_events:  # what the daemon stores of a tick
            instance.report_runless_asset_event(event)
        for r in tick.run_requests:  # what the daemon launches (run keys deduplicated)
            job = defs.get_job_def(r.job_name)
            instance.create_run_for_job(
                job_def=job,
                run_config=r.run_config,
                tags={**r.tags, "dagster/run_key": r.run_key, "dagster/sensor_name": "monitoring_sensor"},
            )
        out.append({
            "skip": tick.skip_message,
            "evaluations": [
                [e.asset_check_key.name, e.partition, e.passed, e.metadata["status_level"].value,
                 e.metadata["target"].value]
                for e in tick.asset_events if hasattr(e, "asset_check_key")
            ],
            "observations": [
                [e.partition, e.metadata["samples"].value]
                for e in tick.asset_events if not hasattr(e, "asset_check_key")
            ],
            "runs": [
                [r.job_name, r.run_key, r.tags.get("westep-ops/repair-target"),
                 (r.run_config.get("ops", {}).get("run_repair_op", {}).get("config", {}) or {}).get("target"),
                 r.partition_key]
                for r in tick.run_requests
            ],
        })
    out.append({"repair_runs": [
        [r.tags.get("westep-ops/repair-target"), r.tags.get("dagster/run_key")]
        for r in instance.get_runs() if r.job_name == "repair_job"
    ]})
print(json.dumps(out))
"""


def fleet_config(tmp_path: Path) -> Path:
    shipped = json.loads((ROOT / "westep-ops.json").read_text())
    shipped["targets"] = [
        {
            "name": name,
            "env": {
                "DIRECT_URL": f"{name.upper()}_DIRECT_URL",
                "DATABASE_URL": f"{name.upper()}_DB",
            },
        }
        for name in ("staging", "prod")
    ]
    path = tmp_path / "fleet.json"
    path.write_text(json.dumps(shipped))
    return path


def ticks(tmp_path: Path, n: int) -> list[dict]:
    home = tmp_path / "dagster_home"
    home.mkdir(exist_ok=True)
    env = {
        **os.environ,
        "WESTEP_OPS_CONFIG": str(fleet_config(tmp_path)),
        "DAGSTER_HOME": str(home),
        **{f"{t}_{v}": REFUSED for t in ("STAGING", "PROD") for v in ("DIRECT_URL", "DB")},
    }
    res = subprocess.run(
        [sys.executable, "-c", TICKS, str(n)], env=env, capture_output=True, text=True, timeout=180
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def store_samples(url: str, target: str, rows: list[tuple[str, str, dict]]) -> None:
    """What a worker's tick stores for ``target``: (category, status, values) rows."""
    with psycopg.connect(url, autocommit=True) as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO westep_ops.samples (target, ts, kind, category, status, summary,"
            " duration_ms, value) VALUES (%s, now(), 'cheap', %s, %s, %s, 12.5, %s)",
            [(target, c, s, f"{c} {s}", psycopg.types.json.Jsonb(v)) for c, s, v in rows],
        )


@pytest.fixture
def store(sandbox: Sandbox) -> str:
    clear_history()
    url = os.environ["WESTEP_OPS_STORAGE_URL"]
    with psycopg.connect(url, autocommit=True) as conn:
        migrate(conn)  # the schema, migrations included
        conn.execute("TRUNCATE westep_ops.repair_requests")
    return url


def test_sensor_reads_what_workers_stored_per_target_and_launches_one_repair_run(
    store: str, tmp_path: Path
) -> None:
    store_samples(
        store,
        "staging",
        [("connection", "ok", {"connect_ms": 3}), ("tables", "critical", {"missing": 2})],
    )
    store_samples(store, "prod", [("connection", "ok", {"connect_ms": 4})])
    incident = random.randint(10**9, 2 * 10**9)
    request = RepairRequest(incident, "tables", RepairAction.fix_table_permissions)
    assert repair_queue.enqueue(store, "staging", [request]) == 1
    assert repair_queue.enqueue(store, "staging", [request]) == 0  # a worker's next tick
    first, second, third, runs = ticks(tmp_path, 3)

    # each target's samples as evaluations naming it (run-less check evaluations cannot be
    # partitioned in Dagster 1.13: see defs/health/assets.py), with the stored numbers
    assert sorted(first["evaluations"]) == [
        ["h1_connection", None, True, 0, "prod"],
        ["h1_connection", None, True, 0, "staging"],
        ["h3_tables", None, False, 2, "staging"],
    ]
    assert sorted(first["observations"]) == [["prod", 1], ["staging", 2]]
    # the queued request: one repair run for staging, its name as the concurrency tag
    assert first["runs"] == [
        ["repair_job", request.key, "staging", "staging", None],
    ]
    assert first["skip"] is None
    # nothing new: idle, and the request (its run exists now) is not requested again
    assert second["evaluations"] == [] and second["runs"] == []
    assert second["skip"].startswith("idle: no new samples since ")
    assert third["runs"] == []
    assert runs["repair_runs"] == [["staging", request.key]]  # exactly one run
    assert repair_queue.pending(store) == []  # marked launched once its run existed


def test_an_incident_refreshes_that_target_s_today_only(store: str, tmp_path: Path) -> None:
    with psycopg.connect(store, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO westep_ops.incidents (target, category, severity, started_at,"
            " detected_at, summary) VALUES ('prod', 'pool', 'critical', now(), now(), 'x')"
        )
    store_samples(store, "prod", [("pool", "critical", {})])
    (tick, _) = ticks(tmp_path, 1)
    today = datetime.now(UTC).astimezone(__import__("zoneinfo").ZoneInfo("Asia/Tokyo"))
    refreshes = [r for r in tick["runs"] if r[0] == "daily_monitoring_job"]
    assert [r[4] for r in refreshes] == [f"{today:%Y-%m-%d}|prod"]


def seed_week(url: str, target: str, days: list[str], status: str, incidents: int) -> None:
    """Every 10 minutes of ``days`` (Tokyo): connection samples of ``status``, and
    ``incidents`` incidents a day, for ``target``."""
    with psycopg.connect(url, autocommit=True) as conn, conn.cursor() as cur:
        for key in days:
            day = datetime.fromisoformat(key).replace(tzinfo=UTC) - timedelta(hours=9)
            cur.executemany(
                "INSERT INTO westep_ops.samples (target, ts, kind, category, status, summary)"
                " VALUES (%s, %s, 'cheap', 'connection', %s, 'x')",
                [(target, day + timedelta(minutes=m), status) for m in range(0, 1440, 10)],
            )
            cur.executemany(
                "INSERT INTO westep_ops.incidents (target, category, severity, started_at,"
                " detected_at, resolved_at, closed_at, summary)"
                " VALUES (%s, 'connection', 'critical', %s, %s, %s, %s, 'x')",
                [
                    (
                        target,
                        day + timedelta(hours=1 + n),
                        day + timedelta(hours=1 + n, seconds=30),
                        day + timedelta(hours=1 + n, minutes=5),
                        day + timedelta(hours=1 + n, minutes=6),
                    )
                    for n in range(incidents)
                ],
            )


def test_a_backfill_of_one_target_s_week_gives_that_target_s_figures_only(store: str) -> None:
    from dagster import AssetKey, AssetRecordsFilter, DagsterInstance, materialize

    from westep_ops.defs.monitoring.assets import health_samples, incidents
    from westep_ops.resources import default_resources

    days = [f"2026-05-0{i}" for i in range(1, 8)]
    seed_week(store, "default", days, "ok", 1)
    seed_week(store, "noisy", days, "critical", 3)  # another target's history, same days
    with DagsterInstance.ephemeral() as instance:
        result = materialize(
            [health_samples, incidents],
            resources=default_resources(),
            instance=instance,
            tags={
                "dagster/asset_partition_range_start": f"{days[0]}|default",
                "dagster/asset_partition_range_end": f"{days[-1]}|default",
            },
        )
        assert result.success
        assert len(instance.get_run_records()) == 1  # one run for the target's week

        def meta(asset: str, day: str) -> dict:
            (record,) = instance.fetch_materializations(
                AssetRecordsFilter(asset_key=AssetKey(asset), asset_partitions=[f"{day}|default"]),
                limit=1,
            ).records
            m = record.asset_materialization.metadata
            return {k: getattr(v, "value", v) for k, v in m.items()}

        for day in days:
            health = meta("health_samples", day)
            assert health["target"] == "default"
            assert health["samples"] == 144 and health["worst_status"] == "ok", day
            assert meta("incidents", day)["incidents"] == 1, day
    with psycopg.connect(store) as conn:
        rolled = conn.execute(
            "SELECT target, count(*) FROM westep_ops.daily_health GROUP BY target"
        ).fetchall()
    assert rolled == [("default", 7)]  # the other target's rollups were not touched
