"""Asset and sensor wiring on the offline stack (``OfflineStackResource``): no sandbox.

``health_check`` runs the same asset code as in production with canned H1-H7 results, so
its seven checks, their severities and its metadata are checked in well under a second.
The monitoring sensor reads what workers stored in the ops store, so it is evaluated
against the sandbox in ``integration/``; here its wiring is: the resource it asks for,
and how stored samples of offline results become evaluations of exactly the asset's
checks in their target's partition.
"""

from __future__ import annotations

from datetime import UTC, datetime

from dagster import AssetCheckSeverity, DagsterInstance, build_asset_context, materialize

from westep_ops.config import Category
from westep_ops.defs.health.assets import health_check
from westep_ops.defs.monitoring.sensors import monitoring_sensor, target_events
from westep_ops.monitoring.feed import TargetFeed
from westep_ops.monitoring.observation import observations
from westep_ops.probes.base import Status
from westep_ops.resources import LiveStackResource, MonitoredStackResource, OfflineStackResource
from westep_ops_tests.helpers import HEALTH_CHECKS

BROKEN = {"pool": "critical", "api": "warning", "auth": "error", "realtime": "not_configured"}


def test_the_offline_stack_is_a_monitored_stack_that_contacts_nothing() -> None:
    stack = OfflineStackResource()
    assert isinstance(stack, MonitoredStackResource)
    assert issubclass(LiveStackResource, MonitoredStackResource)
    env = stack.environment()
    assert env.direct_url is not None and "127.0.0.1:1/" in env.direct_url  # refuses at once
    assert stack.config().timezone == "Asia/Tokyo"  # the built-in default config
    assert OfflineStackResource(config_json='{"timezone": "UTC"}').config().timezone == "UTC"
    results = stack.health_check()
    assert [r.category for r in results] == list(Category)
    assert {r.status for r in results} == {Status.ok}


def test_health_check_materializes_with_seven_passing_checks() -> None:
    with DagsterInstance.ephemeral() as instance:
        result = materialize(
            [health_check],
            resources={"stack": OfflineStackResource()},
            instance=instance,
            partition_key="default",
        )
    assert result.success
    evaluations = result.get_asset_check_evaluations()
    assert [e.check_name for e in evaluations] == HEALTH_CHECKS
    assert all(e.passed for e in evaluations)
    (mat,) = result.asset_materializations_for_node("health_check")
    assert mat.metadata["worst_status"].value == "ok"
    assert mat.metadata["exit_code"].value == 0


def test_health_check_results_follow_the_canned_statuses() -> None:
    out = health_check(
        build_asset_context(partition_key="default"), stack=OfflineStackResource(statuses=BROKEN)
    )
    checks = {c.check_name: c for c in out.check_results}
    assert list(checks) == HEALTH_CHECKS
    for name in ("h1_connection", "h3_tables", "h4_integrity", "h5_realtime"):
        assert checks[name].passed, name  # not_configured has nothing to fail
    assert not checks["h2_pool"].passed
    assert checks["h2_pool"].severity == AssetCheckSeverity.ERROR
    assert not checks["h7_api"].passed
    assert checks["h7_api"].severity == AssetCheckSeverity.WARN
    assert not checks["h6_auth"].passed  # could not look: not a pass
    assert checks["h6_auth"].metadata["status_level"].value == 3
    assert checks["h2_pool"].metadata["probe"].text == "run"
    assert out.metadata["worst_status"] == "critical"
    assert out.metadata["exit_code"] == 2


def test_the_sensor_reads_the_ops_store_only() -> None:
    # no stack: the sensor never probes
    assert monitoring_sensor.required_resource_keys == {"ops_storage"}
    assert {j.name for j in monitoring_sensor.jobs} == {"repair_job", "daily_monitoring_job"}


def test_stored_samples_are_reported_as_the_assets_checks_of_their_target() -> None:
    results = OfflineStackResource(statuses=BROKEN).health_check()
    stored = [
        {**o.row(), "id": i, "kind": "full", "ts": datetime(2026, 12, 6, 3, tzinfo=UTC)}
        for i, o in enumerate(observations(results, None))
    ]
    events = target_events(TargetFeed("staging", stored))
    *evaluations, observed = events
    assert [e.check_name for e in evaluations] == HEALTH_CHECKS
    assert {e.asset_key.to_user_string() for e in evaluations} == {"health_check"}
    assert {e.partition for e in evaluations} == {None}  # see defs/health/assets.py
    failed = {e.check_name for e in evaluations if not e.passed}
    assert failed == {"h2_pool", "h6_auth", "h7_api"}
    assert all(e.metadata["probe"].text == "full" for e in evaluations)
    assert all(e.metadata["target"].text == "staging" for e in evaluations)
    # the same numbers a probe in a run reports, for the Plots tab
    pool = next(e for e in evaluations if e.check_name == "h2_pool")
    assert pool.metadata["status_level"].value == 2
    # the history's Description column tells which target and probe decided
    assert all(e.description and e.description.startswith("staging full: ") for e in evaluations)
    assert observed.asset_key.to_user_string() == "probe_samples"
    assert observed.partition == "staging"
    assert observed.metadata["failing_categories"].text == "api, pool"
