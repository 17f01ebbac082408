"""Dagster test idioms the integration tests share: one sensor tick, this month's report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dagster import DagsterInstance, ExecuteInProcessResult, build_sensor_context, materialize


def sensor_tick(instance: DagsterInstance) -> Any:
    """Evaluate ``monitoring_sensor`` once, as the daemon would, on ``instance``."""
    from westep_ops.definitions import defs
    from westep_ops.resources import default_resources

    sensor = defs.get_sensor_def("monitoring_sensor")
    with build_sensor_context(
        instance=instance, resources=default_resources(), definitions=defs
    ) as ctx:
        return sensor(ctx)


def materialize_month(
    instance: DagsterInstance, month: str, reports_dir: Path
) -> ExecuteInProcessResult:
    """Materialize ``monthly_sla_report`` for ``month`` (YYYY-MM), writing into ``reports_dir``."""
    from westep_ops.defs.sla.assets import monthly_sla_report
    from westep_ops.resources import default_resources

    return materialize(
        [monthly_sla_report],
        resources=default_resources(),
        instance=instance,
        partition_key=f"{month}-01",
        run_config={"ops": {"monthly_sla_report": {"config": {"reports_dir": str(reports_dir)}}}},
    )
