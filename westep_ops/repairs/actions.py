"""The repairs, by the seed's names (R1-R6), plus ``restore_realtime_publication``.

Each takes a :class:`RepairContext`, records what it changes (or would change, in a dry
run) with ``ctx.change`` and returns a one-line summary; the runner in ``base.py``
applies the rate limit, timeouts, verification and audit. SQL is composed with
``psycopg.sql`` from validated config names.
"""

from __future__ import annotations

import time
from typing import Any

from psycopg import sql

from westep_ops.config import Category, RepairAction, split_name
from westep_ops.db import admin_command, admin_show
from westep_ops.repairs.base import (
    LEVEL_EXTERNAL,
    LEVEL_MANUAL,
    RepairContext,
    RepairFailed,
    RepairSkipped,
    repair,
)
from westep_ops.repairs.quarantine import move_rule_violations


def _unless_silenced(ctx: RepairContext, category: Category) -> None:
    """Skip when a silence or maintenance window covers ``category`` (unless --force):
    what looks broken then may be an operator's deliberate work (a PAUSE, a migration)."""
    if ctx.force:
        return
    from westep_ops.silences import current

    s = current(ctx.config, ctx.env.storage_url).match(category.value)
    if s is not None:
        raise RepairSkipped(f"skipped: silenced by {s.describe(ctx.config.timezone)}")


# -- R1 ---------------------------------------------------------------------------------
STUCK_SQL = """
SELECT pid, usename, application_name, state,
       extract(epoch FROM now() - state_change)::int AS state_age_s,
       extract(epoch FROM now() - xact_start)::int AS xact_age_s,
       cardinality(pg_blocking_pids(pid)) AS blocked_by,
       EXISTS (SELECT 1 FROM pg_stat_activity o WHERE a.pid = ANY (pg_blocking_pids(o.pid))) AS blocking
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


def _terminate(ctx: RepairContext, rows: list[dict[str, Any]], why: str) -> int:
    done = 0
    with ctx.db(autocommit=True) as conn:
        for r in rows:
            label = f"{why}: pid {r['pid']} ({r['usename']}, {r['application_name'] or 'no name'}, {r['state']} {r['state_age_s']} s)"
            if ctx.dry_run:
                ctx.change(f"terminate {label}")
                continue
            (ok,) = conn.execute(
                "SELECT pg_terminate_backend(%s, 5000)", (r["pid"],)
            ).fetchone() or (False,)
            if ok:
                ctx.change(f"terminated {label}")
                done += 1
            else:
                ctx.notes.append(
                    f"could not terminate pid {r['pid']} (already gone, or a superuser's)"
                )
    return done


@repair(
    RepairAction.restore_db_connection,
    "terminate sessions idle in transaction too long and long transactions that block others",
    (Category.connection, Category.pool),
)
def restore_db_connection(ctx: RepairContext) -> str:
    th = ctx.config.monitoring.thresholds
    with ctx.db() as conn:
        cur = conn.execute(
            STUCK_SQL,
            {
                "idle_s": th.idle_in_transaction_seconds,
                "stuck_s": ctx.config.repairs.stuck_query_seconds,
            },
        )
        cols = [d.name for d in cur.description or []]
        rows = [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
        conn.rollback()
    if not rows:
        return "no session idle in transaction or blocking beyond the limits"
    n = _terminate(ctx, rows, "stuck session")
    return f"{'would terminate' if ctx.dry_run else 'terminated'} {len(rows) if ctx.dry_run else n} stuck sessions"


# -- R2 ---------------------------------------------------------------------------------
@repair(
    RepairAction.restore_connection_pool,
    "pgbouncer: RESUME a paused database, end queries pinning every server connection, RECONNECT",
    (Category.pool,),
)
def restore_connection_pool(ctx: RepairContext) -> str:
    _unless_silenced(ctx, Category.pool)  # a pause during a silence is the operator's
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
            cur = conn.execute(
                "SELECT pid, usename, application_name, state,"
                " extract(epoch FROM now() - state_change)::int AS state_age_s"
                " FROM pg_stat_activity WHERE pid = ANY(%s)"
                " AND now() - coalesce(query_start, xact_start) > make_interval(secs => %s)",
                (pids, stuck_s),
            )
            cols = [d.name for d in cur.description or []]
            stuck = [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
            conn.rollback()
        if stuck:
            _terminate(ctx, stuck, f"query pinning a {db} pool server longer than {stuck_s} s")
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
    if ctx.changes:
        # Re-read pgbouncer.ini as well: a fixed but unloaded config is how pools stay broken.
        ctx.change("RELOAD")
        if not ctx.dry_run:
            admin_command(admin, "RELOAD")
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


# -- R3 ---------------------------------------------------------------------------------
def missing_grants(ctx: RepairContext, conn: Any) -> list[tuple[str, str, str]]:
    """Declared (table, role, privilege) triples that the database does not grant."""
    triples = [(g.table, g.role, p) for g in ctx.config.grants for p in g.privileges]
    if not triples:
        return []
    rows = conn.execute(
        "SELECT t, r, p FROM unnest(%s::text[], %s::text[], %s::text[]) AS x(t, r, p)"
        " WHERE to_regclass(t) IS NOT NULL AND EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r)"
        " AND NOT has_table_privilege(r, to_regclass(t), p)",
        ([t[0] for t in triples], [t[1] for t in triples], [t[2] for t in triples]),
    ).fetchall()
    return [tuple(r) for r in rows]  # type: ignore[misc]


@repair(
    RepairAction.fix_table_permissions,
    "re-apply the declared grants (idempotent GRANTs), reporting exactly which were missing",
    (Category.tables,),
)
def fix_table_permissions(ctx: RepairContext) -> str:
    with ctx.db() as conn:
        missing = missing_grants(ctx, conn)
        for table, role, priv in missing:
            schema, name = split_name(table)
            stmt = sql.SQL("GRANT {} ON {} TO {}").format(
                sql.SQL(priv), sql.Identifier(schema, name), sql.Identifier(role)
            )
            ctx.apply(conn, stmt)
        conn.commit()
    if not missing:
        return "every declared grant is in place"
    return f"{'would grant' if ctx.dry_run else 'granted'} {len(missing)} missing privileges"


# -- R4 ---------------------------------------------------------------------------------
@repair(
    RepairAction.repair_auth,
    "give the API roles USAGE on the auth schema and let authenticator switch to them again",
    (Category.auth,),
)
def repair_auth(ctx: RepairContext) -> str:
    a = ctx.config.auth
    with ctx.db() as conn:
        row = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = %(s)s),"
            " ARRAY(SELECT r FROM unnest(%(api)s::text[]) r WHERE EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r)"
            "       AND NOT has_schema_privilege(r, %(s)s, 'USAGE')),"
            " ARRAY(SELECT r FROM unnest(%(api)s::text[]) r WHERE EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r)"
            "       AND EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticator')"
            "       AND NOT pg_has_role('authenticator', r, 'MEMBER'))",
            {"s": a.schema_name, "api": a.api_roles},
        ).fetchone()
        assert row is not None
        exists, no_usage, not_member = row
        if not exists:
            raise RepairFailed(
                f"schema {a.schema_name} is missing: restore the auth service's schema (Supabase support, level 3)",
                LEVEL_EXTERNAL,
            )
        stmts = [
            sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(
                sql.Identifier(a.schema_name), sql.Identifier(r)
            )
            for r in no_usage
        ] + [sql.SQL("GRANT {} TO authenticator").format(sql.Identifier(r)) for r in not_member]
        for stmt in stmts:
            ctx.apply(conn, stmt)
        conn.commit()
    if not stmts:
        return "auth schema usage and role memberships are in place"
    return f"{'would apply' if ctx.dry_run else 'applied'} {len(stmts)} auth grants"


# -- R5 ---------------------------------------------------------------------------------
@repair(
    RepairAction.fix_data_integrity,
    "move rows breaking the integrity rules into quarantine (same columns + when/why), then out of the table",
    (Category.integrity,),
)
def fix_data_integrity(ctx: RepairContext) -> str:
    total = 0
    with ctx.db() as conn:
        for rule in ctx.config.integrity_rules:
            moved = move_rule_violations(ctx, conn, rule)
            total += moved
        if ctx.dry_run:
            conn.rollback()
        else:
            conn.commit()
    if not total:
        return "no rows break the integrity rules"
    return f"{'would quarantine' if ctx.dry_run else 'quarantined'} {total} rows"


# -- R6 ---------------------------------------------------------------------------------
STATS_SQL = """
SELECT s.schemaname || '.' || s.relname AS t, s.n_live_tup AS live, s.n_dead_tup AS dead,
       s.n_mod_since_analyze AS modified, greatest(s.last_analyze, s.last_autoanalyze) AS analyzed,
       coalesce((SELECT option_value FROM pg_options_to_table(c.reloptions)
                 WHERE option_name = 'autovacuum_enabled'), 'true') AS autovacuum
FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
WHERE s.schemaname || '.' || s.relname = ANY(%s)
"""


def _tables_to_optimize(ctx: RepairContext, conn: Any) -> list[dict[str, Any]]:
    th = ctx.config.monitoring.thresholds
    tables = sorted(
        {t.table for t in ctx.config.critical_tables}
        | {r.table for r in ctx.config.integrity_rules}
    )
    cur = conn.execute(STATS_SQL, (tables,))
    cols = [d.name for d in cur.description or []]
    out = []
    for row in (dict(zip(cols, r, strict=True)) for r in cur.fetchall()):
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
            schema, name = split_name(row["t"])
            stmt = sql.SQL("VACUUM (ANALYZE) {}").format(sql.Identifier(schema, name))
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


# -- realtime -------------------------------------------------------------------------
@repair(
    RepairAction.restore_realtime_publication,
    "recreate the realtime publication or add back the declared tables",
    (Category.realtime,),
)
def restore_realtime_publication(ctx: RepairContext) -> str:
    _unless_silenced(ctx, Category.realtime)
    rt = ctx.config.realtime
    pub = sql.Identifier(rt.publication)
    with ctx.db() as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_publication WHERE pubname = %s", (rt.publication,)
        ).fetchone()
        present = {
            r[0]
            for r in conn.execute(
                "SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = %s",
                (rt.publication,),
            )
        }
        missing = [t for t in rt.tables if t not in present]
        tables = sql.SQL(", ").join(sql.Identifier(*split_name(t)) for t in missing)
        if not exists:
            stmt = (
                sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(pub, tables)
                if missing
                else sql.SQL("CREATE PUBLICATION {}").format(pub)
            )
        elif missing:
            stmt = sql.SQL("ALTER PUBLICATION {} ADD TABLE {}").format(pub, tables)
        else:
            return f"publication {rt.publication} holds every declared table"
        ctx.apply(conn, stmt)
        conn.commit()
    return f"{'would restore' if ctx.dry_run else 'restored'} publication {rt.publication} ({len(missing)} tables)"
