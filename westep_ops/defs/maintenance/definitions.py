"""The maintenance domain: the seed's routines (noon diagnosis, evening summary, Sunday
upkeep) and their schedules."""

from dagster import Definitions

from westep_ops.defs.maintenance.jobs import (
    daily_summary_job,
    performance_diagnosis_job,
    weekly_maintenance_job,
)
from westep_ops.defs.maintenance.schedules import (
    evening_summary_schedule,
    noon_performance_schedule,
    weekly_maintenance_schedule,
)

defs = Definitions(
    jobs=[performance_diagnosis_job, daily_summary_job, weekly_maintenance_job],
    schedules=[noon_performance_schedule, evening_summary_schedule, weekly_maintenance_schedule],
)
