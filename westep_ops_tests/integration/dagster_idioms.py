"""Dagster test idioms the integration tests share: one monitoring tick (a worker's tick,
then the sensor's read of it), this month's report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dagster import DagsterInstance, ExecuteInProcessResult, build_sensor_context, materialize

from westep_ops.targets import DEFAULT_TARGET

_cursors: dict[int, str | None] = {}


def worker_tick(target: str = DEFAULT_TARGET) -> Any:
    """One tick of ``westep-ops monitor --repairs dagster`` on the default target: probe,
    store, and queue the repairs the state calls for (the worker never repairs itself)."""
    from westep_ops.config import load_config
    from westep_ops.environment import Environment
    from westep_ops.monitoring import repair_queue
    from westep_ops.monitoring.driver import build

    env = Environment.from_env()
    monitor = build(env, load_config(), recovery=True, target=target)  # type: ignore[call-arg]
    try:
        result = monitor.tick()
    finally:
        monitor.close()
    if result.repairs and env.storage_url:
        repair_queue.enqueue(env.storage_url, target, result.repairs)
    return result


def sensor_tick(instance: DagsterInstance, *, worker: bool = True) -> Any:
    """One monitoring tick as a deployment runs it: a worker's tick (unless ``worker`` is
    false), then ``monitoring_sensor`` evaluated once, as the daemon would, on
    ``instance`` (its cursor kept per instance, as the daemon keeps it)."""
    from westep_ops.definitions import defs
    from westep_ops.resources import default_resources

    if worker:
        worker_tick()
    sensor = defs.get_sensor_def("monitoring_sensor")
    with build_sensor_context(
        instance=instance,
        resources=default_resources(),
        definitions=defs,
        cursor=_cursors.get(id(instance)),
    ) as ctx:
        tick = sensor.evaluate_tick(ctx)
    _cursors[id(instance)] = tick.cursor
    return tick


def materialize_month(
    instance: DagsterInstance, month: str, reports_dir: Path, target: str = DEFAULT_TARGET
) -> ExecuteInProcessResult:
    """Materialize ``monthly_sla_report`` for ``target``'s ``month`` (YYYY-MM), writing
    into ``reports_dir``."""
    from westep_ops.defs.sla.assets import monthly_sla_report
    from westep_ops.resources import default_resources

    return materialize(
        [monthly_sla_report],
        resources=default_resources(),
        instance=instance,
        partition_key=f"{month}-01|{target}",
        run_config={"ops": {"monthly_sla_report": {"config": {"reports_dir": str(reports_dir)}}}},
    )
