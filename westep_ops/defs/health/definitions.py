"""The health domain: the H1-H7 sweep as ``health_check``, its morning run, test-connection."""

from dagster import Definitions

from westep_ops.defs.health.assets import health_check
from westep_ops.defs.health.jobs import health_check_job, test_connection_job
from westep_ops.defs.health.schedules import morning_health_check_schedule

defs = Definitions(
    assets=[health_check],
    jobs=[test_connection_job, health_check_job],
    schedules=[morning_health_check_schedule],
)
