"""The monitoring domain: the workers' samples per target, the four daily assets over
them (date x target), their schedules, and the sensor that reads what the workers stored
and launches the repairs they queued (M1-M4)."""

from dagster import Definitions

from westep_ops.defs.monitoring.assets import (
    diagnosis_report,
    health_samples,
    incidents,
    performance_metrics,
    probe_samples,
)
from westep_ops.defs.monitoring.jobs import daily_monitoring_job
from westep_ops.defs.monitoring.schedules import daily_assets_schedule, today_refresh_schedule
from westep_ops.defs.monitoring.sensors import monitoring_sensor

defs = Definitions(
    assets=[probe_samples, health_samples, performance_metrics, incidents, diagnosis_report],
    jobs=[daily_monitoring_job],
    schedules=[daily_assets_schedule, today_refresh_schedule],
    sensors=[monitoring_sensor],
)
