"""All of westep-ops' Dagster definitions in one ``Definitions`` (what workspace.yaml loads).

Loading this module needs no secret and touches no database; resources read their
environment variables when a run starts, and the config file (no secrets) gives the
time zone of partitions and schedules.
"""

from dagster import Definitions

from westep_ops.defs.health.assets import health_check
from westep_ops.defs.health.jobs import test_connection_job
from westep_ops.defs.maintenance.jobs import (
    daily_summary_job,
    performance_diagnosis_job,
    weekly_maintenance_job,
)
from westep_ops.defs.maintenance.schedules import (
    daily_monitoring_job,
    health_check_job,
    schedules,
)
from westep_ops.defs.monitoring.assets import (
    diagnosis_report,
    health_samples,
    incidents,
    performance_metrics,
    probe_samples,
)
from westep_ops.defs.monitoring.sensors import monitoring_sensor
from westep_ops.defs.repairs.jobs import recovery_job, repair_job
from westep_ops.defs.sla.assets import monthly_sla_report
from westep_ops.resources import default_resources

defs = Definitions(
    assets=[
        health_check,
        probe_samples,
        health_samples,
        performance_metrics,
        incidents,
        diagnosis_report,
        monthly_sla_report,
    ],
    jobs=[
        test_connection_job,
        repair_job,
        recovery_job,
        health_check_job,
        daily_monitoring_job,
        performance_diagnosis_job,
        daily_summary_job,
        weekly_maintenance_job,
    ],
    schedules=schedules,
    sensors=[monitoring_sensor],
    resources=default_resources(),
)
