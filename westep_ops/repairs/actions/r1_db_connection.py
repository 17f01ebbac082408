"""R1 ``restore_db_connection``: terminate sessions idle in transaction too long and long
transactions that block others (never the protected ones, see ``common.protected_reason``)."""

from __future__ import annotations

from psycopg import sql

from westep_ops.config import Category, RepairAction
from westep_ops.db import dict_rows
from westep_ops.repairs.actions.common import SESSION_COLS, terminate_sessions
from westep_ops.repairs.base import LEVEL_MANUAL, RepairContext, RepairFailed, repair

STUCK_SQL = sql.SQL(
    """SELECT {}
FROM pg_stat_activity a
WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
  AND (
        (state IN ('idle in transaction', 'idle in transaction (aborted)')
         AND now() - state_change > make_interval(secs => %(idle_s)s))
     OR (state = 'active' AND now() - xact_start > make_interval(secs => %(stuck_s)s)
         AND EXISTS (SELECT 1 FROM pg_stat_activity o WHERE a.pid = ANY (pg_blocking_pids(o.pid))))
  )
ORDER BY xact_start NULLS LAST
"""
).format(SESSION_COLS)


@repair(
    RepairAction.restore_db_connection,
    "terminate sessions idle in transaction too long and long transactions that block others"
    " (never replication, backups, platform-internal or westep-ops sessions; repairs.terminate)",
    (Category.connection, Category.pool),
)
def restore_db_connection(ctx: RepairContext) -> str:
    th = ctx.config.monitoring.thresholds
    with ctx.db() as conn:
        rows = dict_rows(
            conn,
            STUCK_SQL,
            {
                "idle_s": th.idle_in_transaction_seconds,
                "stuck_s": ctx.config.repairs.stuck_query_seconds,
            },
        )
        conn.rollback()
    if not rows:
        return "no session idle in transaction or blocking beyond the limits"
    n, protected = terminate_sessions(ctx, rows, "stuck session")
    if protected and not (n or (ctx.dry_run and ctx.changes)):
        raise RepairFailed(
            f"{protected} stuck session(s) may not be terminated (see notes): a person must"
            " end them or their cause (level 2)",
            LEVEL_MANUAL,
        )
    verb = "would terminate" if ctx.dry_run else "terminated"
    count = len(ctx.changes) if ctx.dry_run else n
    return f"{verb} {count} stuck sessions" + (
        f"; {protected} protected session(s) left alone" if protected else ""
    )
