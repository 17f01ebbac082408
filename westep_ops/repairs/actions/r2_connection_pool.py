"""R2 ``restore_connection_pool``: pgbouncer RESUME/ENABLE; when the pool is exhausted by
stuck queries, end them, RECONNECT and RELOAD."""

from __future__ import annotations

import time
from typing import Any

from psycopg import sql

from westep_ops.config import Category, RepairAction
from westep_ops.db import admin_command, admin_show, dict_rows
from westep_ops.repairs.actions.common import (
    SESSION_COLS,
    terminate_sessions,
    unless_silenced,
)
from westep_ops.repairs.base import LEVEL_MANUAL, RepairContext, RepairFailed, repair


@repair(
    RepairAction.restore_connection_pool,
    "pgbouncer: RESUME a paused database; when exhausted, end queries pinning every server"
    " connection, RECONNECT and RELOAD",
    (Category.pool,),
)
def restore_connection_pool(ctx: RepairContext) -> str:
    unless_silenced(ctx, Category.pool)  # a pause during a silence is the operator's
    try:
        with ctx.pgbouncer_admin() as admin:
            _restore_pool(ctx, admin)
    except RepairFailed as e:
        if "connection refused" in str(e):
            raise RepairFailed(
                "pgbouncer is not running: start it (e.g. systemctl start pgbouncer); "
                "westep-ops does not own the service",
                LEVEL_MANUAL,
            ) from None
        raise
    if not ctx.changes:
        return f"pgbouncer database {ctx.config.database_name!r} not paused and not exhausted: nothing to do"
    return "; ".join(c.removeprefix("would: ") for c in ctx.changes)


def _restore_pool(ctx: RepairContext, admin: Any) -> None:
    db = ctx.config.database_name
    stuck_s = ctx.config.repairs.stuck_query_seconds
    databases = {d["name"]: d for d in admin_show(admin, "databases")}
    if db not in databases:
        raise RepairFailed(
            f"pgbouncer has no database {db!r}: fix its [databases] section", LEVEL_MANUAL
        )
    if databases[db]["paused"]:
        if ctx.may_resume is not None and not ctx.may_resume(db):
            # Seam for silences and maintenance windows: a pause someone made on purpose.
            raise RepairFailed(
                f"pgbouncer database {db} is paused during a silence or maintenance window:"
                " not resumed; it is judged afresh when the window ends",
                LEVEL_MANUAL,
            )
        ctx.change(f"RESUME {db}")
        if not ctx.dry_run:
            admin_command(admin, "RESUME", db)
    if databases[db].get("disabled"):
        ctx.change(f"ENABLE {db}")
        if not ctx.dry_run:
            admin_command(admin, "ENABLE", db)
    pool_size = int(databases[db]["pool_size"] or 0)
    pools = [p for p in admin_show(admin, "pools") if p["database"] == db]
    exhausted = [p for p in pools if pool_size and p["sv_active"] >= pool_size]
    if exhausted:
        # SHOW SERVERS gives the backend pid behind each server connection; the ones
        # running longer than the limit are what pins the pool.
        servers = [
            s
            for s in admin_show(admin, "servers")
            if s["database"] == db
            and s["state"] == "active"
            and s["user"] in {p["user"] for p in exhausted}
        ]
        pids = [s["remote_pid"] for s in servers if s.get("remote_pid")]
        with ctx.db() as conn:
            stuck = dict_rows(
                conn,
                sql.SQL(
                    "SELECT {} FROM pg_stat_activity WHERE pid = ANY(%s) AND state = 'active'"
                    " AND now() - coalesce(query_start, xact_start) > make_interval(secs => %s)"
                ).format(SESSION_COLS),
                (pids, stuck_s),
            )
            conn.rollback()
        if stuck:
            n, protected = terminate_sessions(
                ctx, stuck, f"query pinning a {db} pool server longer than {stuck_s} s"
            )
            if protected and not n and not ctx.dry_run:
                raise RepairFailed(
                    f"the queries pinning the {db} pool may not be terminated (see notes):"
                    " a person must decide (level 2)",
                    LEVEL_MANUAL,
                )
        else:
            ctx.notes.append(
                f"pool exhausted but no server query older than {stuck_s} s: real load? "
                "raise default_pool_size or find the slow queries (diagnose)"
            )
            raise RepairFailed(
                f"pool for {', '.join(p['user'] for p in exhausted)} exhausted by queries younger "
                f"than {stuck_s} s: not stuck, so not killed; a person must decide (level 2)",
                LEVEL_MANUAL,
            )
        ctx.change(f"RECONNECT {db}")
        if not ctx.dry_run:
            admin_command(admin, "RECONNECT", db)
        # After an exhaustion, re-read pgbouncer.ini too: a pool size raised in the file
        # but not loaded is how pools stay exhausted. A plain RESUME needs no RELOAD (it
        # would apply whatever half-edited file is on disk for no reason).
        ctx.change("RELOAD")
        if not ctx.dry_run:
            admin_command(admin, "RELOAD")
    if ctx.changes and not ctx.dry_run:
        _wait_pool_drained(admin, db, pool_size)


def _wait_pool_drained(admin: Any, db: str, pool_size: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pools = [p for p in admin_show(admin, "pools") if p["database"] == db]
        if all(
            p["cl_waiting"] == 0 and (not pool_size or p["sv_active"] < pool_size) for p in pools
        ):
            return
        time.sleep(0.1)
