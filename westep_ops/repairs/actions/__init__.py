"""The repairs, by the seed's names (R1-R6), plus ``restore_realtime_publication``: one
module per repair, named after what it repairs, and ``common.py`` for what they share.

Importing this package registers every repair with ``repairs.base.REGISTRY`` (in R1-R6
order); the names other modules and tests use stay importable from here.
"""

from __future__ import annotations

from westep_ops.repairs.actions.common import (
    BACKUP_APPS,
    INTERNAL_ROLES,
    OWN_APP_PREFIX,
    TERMINATE_SQL,
    protected_reason,
    terminate_sessions,
)
from westep_ops.repairs.actions.r1_db_connection import STUCK_SQL, restore_db_connection
from westep_ops.repairs.actions.r2_connection_pool import restore_connection_pool
from westep_ops.repairs.actions.r3_table_permissions import (
    TABLE_PRIVS_SQL,
    fix_table_permissions,
    missing_grants,
)
from westep_ops.repairs.actions.r4_auth import repair_auth
from westep_ops.repairs.actions.r5_data_integrity import fix_data_integrity
from westep_ops.repairs.actions.r6_performance import STATS_SQL, optimize_performance
from westep_ops.repairs.actions.realtime_publication import restore_realtime_publication

__all__ = [
    "BACKUP_APPS",
    "INTERNAL_ROLES",
    "OWN_APP_PREFIX",
    "STATS_SQL",
    "STUCK_SQL",
    "TABLE_PRIVS_SQL",
    "TERMINATE_SQL",
    "fix_data_integrity",
    "fix_table_permissions",
    "missing_grants",
    "optimize_performance",
    "protected_reason",
    "repair_auth",
    "restore_connection_pool",
    "restore_db_connection",
    "restore_realtime_publication",
    "terminate_sessions",
]
