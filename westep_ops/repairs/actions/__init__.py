"""The repairs, by the seed's names (R1-R6), plus ``restore_realtime_publication``: one
module per repair, named after what it repairs, and ``common.py`` for what they share.

Importing this package registers every repair with ``repairs.base.REGISTRY`` (in R1-R6
order); the repairs and ``terminate_sessions`` (which tests call) are importable from here.
"""

from __future__ import annotations

# Importing each module registers its repair, in R1-R6 order.
from westep_ops.repairs.actions.common import terminate_sessions
from westep_ops.repairs.actions.r1_db_connection import restore_db_connection
from westep_ops.repairs.actions.r2_connection_pool import restore_connection_pool
from westep_ops.repairs.actions.r3_table_permissions import fix_table_permissions
from westep_ops.repairs.actions.r4_auth import repair_auth
from westep_ops.repairs.actions.r5_data_integrity import fix_data_integrity
from westep_ops.repairs.actions.r6_performance import optimize_performance
from westep_ops.repairs.actions.realtime_publication import restore_realtime_publication

__all__ = [
    "fix_data_integrity",
    "fix_table_permissions",
    "optimize_performance",
    "repair_auth",
    "restore_connection_pool",
    "restore_db_connection",
    "restore_realtime_publication",
    "terminate_sessions",
]
