"""R6 ``optimize_performance``: VACUUM (ANALYZE) the tables whose dead tuples or stale
statistics call for it."""

from __future__ import annotations

import time
from typing import Any

from psycopg import sql

from westep_ops.config import RepairAction, qualified_name, split_name
from westep_ops.db import dict_rows
from westep_ops.repairs.base import RepairContext, RepairFailed, repair

STATS_SQL = """
SELECT s.schemaname::text AS schema_name, s.relname::text AS table_name, s.n_live_tup AS live, s.n_dead_tup AS dead,
       s.n_mod_since_analyze AS modified, greatest(s.last_analyze, s.last_autoanalyze) AS analyzed,
       coalesce((SELECT option_value FROM pg_options_to_table(c.reloptions)
                 WHERE option_name = 'autovacuum_enabled'), 'true') AS autovacuum
FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
JOIN unnest(%s::text[], %s::text[]) AS x(s, n) ON x.s = s.schemaname AND x.n = s.relname
"""


def _tables_to_optimize(ctx: RepairContext, conn: Any) -> list[dict[str, Any]]:
    th = ctx.config.monitoring.thresholds
    tables = sorted(
        {t.table for t in ctx.config.critical_tables}
        | {r.table for r in ctx.config.integrity_rules}
    )
    # Exact names, matched in the catalogs (public."Step" is not public.step).
    parts = [split_name(t) for t in tables]
    out = []
    for row in dict_rows(conn, STATS_SQL, ([p[0] for p in parts], [p[1] for p in parts])):
        row["t"] = qualified_name(row["schema_name"], row["table_name"])
        live = row["live"] if row["live"] and row["live"] > 0 else 0  # stats may be unknown
        reasons = []
        if row["dead"] >= 1000 and (not live or row["dead"] / live > th.dead_tuple_ratio):
            reasons.append(
                f"{row['dead']} dead tuples"
                + (f" ({row['dead'] / live:.0%} of live)" if live else "")
            )
        if row["analyzed"] is None or (live and row["modified"] > 0.2 * live):
            reasons.append("statistics stale" if row["analyzed"] else "never analyzed")
        if reasons:
            row["reasons"] = reasons
            out.append(row)
    return out


@repair(
    RepairAction.optimize_performance,
    "VACUUM (ANALYZE) the tables whose dead tuples or stale statistics call for it",
    (),
)
def optimize_performance(ctx: RepairContext) -> str:
    with ctx.db(autocommit=True) as conn:  # VACUUM cannot run inside a transaction
        # A probe's few seconds are not enough for VACUUM on a real table; lock_timeout
        # still keeps it from waiting behind other sessions' locks.
        timeout_ms = int(ctx.config.repairs.maintenance_timeout_seconds * 1000)
        conn.execute(sql.SQL("SET statement_timeout = {}").format(sql.Literal(timeout_ms)))
        todo = _tables_to_optimize(ctx, conn)
        for row in todo:
            stmt = sql.SQL("VACUUM (ANALYZE) {}").format(
                sql.Identifier(row["schema_name"], row["table_name"])
            )
            ctx.change(f"{stmt.as_string(conn)} ({', '.join(row['reasons'])})")
            if row["autovacuum"] == "false":
                ctx.notes.append(
                    f"autovacuum is disabled on {row['t']}: left as it is, worth a look"
                )
            if not ctx.dry_run:
                conn.execute(stmt)
        if ctx.dry_run or not todo:
            return (
                "no table needs VACUUM or ANALYZE"
                if not todo
                else f"would vacuum {len(todo)} tables"
            )
        # Verify: the vacuum's own report lands in the statistics a moment later.
        left: list[dict[str, Any]] = []
        for _ in range(30):
            conn.execute("SELECT pg_stat_clear_snapshot()")
            left = [
                r for r in _tables_to_optimize(ctx, conn) if any("dead" in x for x in r["reasons"])
            ]
            if not left:
                break
            time.sleep(0.1)
    if left:
        raise RepairFailed(
            "dead tuples remain after VACUUM (a long transaction may hold them back): "
            + ", ".join(r["t"] for r in left)
        )
    return f"vacuumed and analyzed {len(todo)} tables"
