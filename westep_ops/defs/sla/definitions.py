"""The SLA domain: the monthly report over the monitoring history, on the 1st."""

from dagster import Definitions

from westep_ops.defs.sla.assets import monthly_sla_report
from westep_ops.defs.sla.jobs import monthly_sla_job
from westep_ops.defs.sla.schedules import monthly_sla_schedule

defs = Definitions(
    assets=[monthly_sla_report],
    jobs=[monthly_sla_job],
    schedules=[monthly_sla_schedule],
)
