"""All of westep-ops' Dagster definitions in one ``Definitions`` (what workspace.yaml loads).

Loading this module needs no secret and touches no database; resources read their
environment variables when a run starts.
"""

from __future__ import annotations

from dagster import Definitions

from westep_ops.defs.health.assets import health_check
from westep_ops.defs.health.jobs import test_connection_job
from westep_ops.defs.repairs.jobs import recovery_job, repair_job
from westep_ops.resources import default_resources

defs = Definitions(
    assets=[health_check],
    jobs=[test_connection_job, repair_job, recovery_job],
    resources=default_resources(),
)
