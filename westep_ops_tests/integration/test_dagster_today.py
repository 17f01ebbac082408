"""Today's partition on the real sandbox: it exists and updates as samples arrive."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import psycopg
from dagster import (
    AssetKey,
    DagsterInstance,
    materialize,
)

from westep_ops.defs.monitoring.partitions import daily
from westep_ops.sandbox.manager import Sandbox
from westep_ops.store_schema import migrate
from westep_ops_tests.integration.conftest import clear_history
from westep_ops_tests.unit.test_dagster_today import TOKYO


def test_today_partition_exists_and_updates(sandbox: Sandbox) -> None:
    """Materialize today's incidents twice: the second run sees the incident added since."""
    from westep_ops.defs.monitoring.assets import health_samples, incidents
    from westep_ops.resources import default_resources

    with psycopg.connect(os.environ["WESTEP_OPS_STORAGE_URL"], autocommit=True) as conn:
        migrate(conn)  # the schema, on first use
    clear_history()
    now = datetime.now(UTC)
    today = now.astimezone(TOKYO).strftime("%Y-%m-%d")
    start = datetime.strptime(today, "%Y-%m-%d").replace(tzinfo=TOKYO)

    def add_incident(minutes: int, category: str) -> None:
        at = start + timedelta(minutes=minutes)
        with psycopg.connect(os.environ["WESTEP_OPS_STORAGE_URL"], autocommit=True) as conn:
            conn.execute(
                "INSERT INTO westep_ops.incidents (target, category, severity, started_at,"
                " detected_at, summary) VALUES ('default', %s, 'critical', %s, %s, 'still open')",
                (category, at, at + timedelta(seconds=30)),
            )

    def incidents_today(instance: DagsterInstance) -> int:
        result = materialize(
            [health_samples, incidents],
            resources=default_resources(),
            instance=instance,
            partition_key=f"{today}|default",
        )
        assert result.success
        (m,) = [
            e.event_specific_data.materialization
            for e in result.get_asset_materialization_events()
            if e.asset_key.to_user_string() == "incidents"
        ]
        assert m.partition == f"{today}|default"
        assert m.metadata["in_progress"].value is True  # today's figures will still change
        return m.metadata["incidents"].value

    assert today in daily.get_partition_keys(current_time=now)
    with DagsterInstance.ephemeral() as instance:
        add_incident(0, "pool")
        assert incidents_today(instance) == 1
        add_incident(1, "auth")
        assert incidents_today(instance) == 2
        latest = instance.get_latest_materialization_event(AssetKey("incidents"))
        assert latest is not None
        assert latest.asset_materialization.partition == f"{today}|default"
    clear_history()
