"""Dagster over a fleet, without a sandbox: partitions by date x target for a 2-target
config, and repair runs tagged with their target's name."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from westep_ops.defs.monitoring.sensors import feed_summary, repair_request
from westep_ops.defs.repairs.jobs import REPAIR_TAG
from westep_ops.monitoring.feed import Feed, FeedCursor, TargetFeed
from westep_ops.monitoring.repair_queue import QueuedRepair
from westep_ops_tests.helpers import ROOT

SHIPPED = json.loads((ROOT / "westep-ops.json").read_text())
TWO = {
    **SHIPPED,
    "targets": [
        {"name": "staging", "env": {"DIRECT_URL": "STAGING_DIRECT_URL"}},
        {"name": "prod", "env": {"DIRECT_URL": "PROD_DIRECT_URL"}},
    ],
}

# Loads the definitions in a fresh interpreter (the target keys are read when they load).
PROBE = """
import json
from datetime import datetime, timezone
from dagster import AssetKey
from westep_ops.definitions import defs
graph = defs.get_repository_def().asset_graph
at = datetime(2026, 12, 6, 3, 0, tzinfo=timezone.utc)  # 12:00 in Tokyo
def keys(name):
    p = graph.get(AssetKey(name)).partitions_def
    return [str(k) for k in p.get_partition_keys(current_time=at)]
out = {n: keys(n) for n in ("health_samples", "monthly_sla_report", "probe_samples", "health_check")}
req = defs.get_job_def("repair_job").tags
out["repair_job_tag"] = req.get("westep-ops/repair-target")
print(json.dumps(out))
"""


def _load(tmp_path: Path, config: dict) -> dict:
    path = tmp_path / "westep-ops.json"
    path.write_text(json.dumps(config))
    env = {**os.environ, "WESTEP_OPS_CONFIG": str(path)}
    res = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr[-2000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_a_two_target_config_partitions_every_day_and_month_by_target(tmp_path: Path) -> None:
    out = _load(tmp_path, TWO)
    daily = out["health_samples"]
    # date x target, in the config's order, today (Tokyo) included
    assert daily[:2] == ["2026-01-01|staging", "2026-01-01|prod"]
    assert daily[-2:] == ["2026-12-06|staging", "2026-12-06|prod"]
    assert len(daily) == 2 * 340
    monthly = out["monthly_sla_report"]
    assert monthly[-2:] == ["2026-12-01|staging", "2026-12-01|prod"]
    assert out["probe_samples"] == out["health_check"] == ["staging", "prod"]
    # a person's launch without a tag of its own: the fleet-wide value (runs queue)
    assert out["repair_job_tag"] == "fleet"


def test_without_targets_the_one_target_is_default(tmp_path: Path) -> None:
    out = _load(tmp_path, SHIPPED)
    assert out["health_samples"][-1] == "2026-12-06|default"
    assert out["probe_samples"] == ["default"]
    assert out["repair_job_tag"] == "default"


def test_a_repair_run_request_carries_its_target() -> None:
    queued = QueuedRepair(
        run_key="incident-12-restore_connection_pool-0",
        target="staging",
        incident_id=12,
        category="pool",
        action="restore_connection_pool",
        attempt=0,
        requested_at=datetime(2026, 12, 6, 3, 0, tzinfo=UTC),
    )
    req = repair_request(queued)
    # the per-target concurrency tag's value is the target's name, not a constant
    assert req.tags[REPAIR_TAG] == "staging"
    assert req.tags["westep-ops/action"] == "restore_connection_pool"
    assert req.run_key == "incident-12-restore_connection_pool-0"
    config = req.run_config["ops"]["run_repair_op"]["config"]
    assert config["target"] == "staging" and config["incident_id"] == 12


def test_the_tick_text_says_what_was_read_and_requested() -> None:
    before = FeedCursor(10, 3, "2026-12-06T03:00:05+00:00")
    idle = Feed(before, before, {}, more=False)
    assert (
        feed_summary(idle, []) == "idle: no new samples since 12:00:05, requested 0 repair run(s)"
    )
    staging = TargetFeed(
        "staging",
        [{"category": "tables", "status": "critical"}, {"category": "pool", "status": "ok"}],
        performance=1,
        opened=[4],
    )
    busy = Feed(
        before, before, {"prod": TargetFeed("prod", [{}] * 0, 1), "staging": staging}, False
    )
    req = repair_request(
        QueuedRepair("k", "staging", 4, "tables", "fix_table_permissions", 0, datetime.now(UTC))
    )
    assert feed_summary(busy, [req]) == (
        "read 4 samples of 2 target(s) (1 failing: staging tables), 1 incident(s) opened,"
        " 0 closed, requested 1 repair run(s)"
    )


def test_ui_starts_one_worker_and_stops_it_with_dagster() -> None:
    from click.testing import CliRunner

    from westep_ops.cli.ui import stop_worker, ui

    help_text = CliRunner().invoke(ui, ["--help"]).output
    assert "--worker / --no-worker" in help_text and "--repairs dagster" in help_text
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    stop_worker(child, wait_s=5)
    assert child.poll() is not None  # stopped (SIGTERM), not left behind
