"""All of westep-ops' Dagster definitions in one ``Definitions`` (what workspace.yaml loads).

Each domain under ``defs/`` builds its own ``Definitions`` (its assets, jobs, schedules,
sensors); they are merged here and the resources, defined once in ``resources.py``, are
bound here for all of them. Loading this module needs no secret and touches no database;
resources read their environment variables when a run starts, and the config file (no
secrets) gives the time zone of partitions and schedules.
"""

from dagster import Definitions

from westep_ops.defs.health import definitions as health
from westep_ops.defs.maintenance import definitions as maintenance
from westep_ops.defs.monitoring import definitions as monitoring
from westep_ops.defs.repairs import definitions as repairs
from westep_ops.defs.sla import definitions as sla
from westep_ops.resources import default_resources

# The domains' modules, not their Definitions, at module scope: Dagster's loader refuses
# a module with more than one Definitions object in it.
defs = Definitions.merge(
    health.defs,
    monitoring.defs,
    repairs.defs,
    maintenance.defs,
    sla.defs,
    Definitions(resources=default_resources()),
)
