"""The repairs domain: one repair (``repair_job``, launched per incident by the monitoring
sensor or by a person) and automatic recovery (``recovery_job``)."""

from dagster import Definitions

from westep_ops.defs.repairs.jobs import recovery_job, repair_job

defs = Definitions(jobs=[repair_job, recovery_job])
