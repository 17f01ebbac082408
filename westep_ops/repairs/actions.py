"""The repairs, by the seed's names (R1-R6), plus ``restore_realtime_publication``.

Each takes a :class:`RepairContext`, records what it changes (or would change, in a dry
run) with ``ctx.change`` and returns a one-line summary; the runner in ``base.py``
applies the rate limit, timeouts, verification and audit. SQL is composed with
``psycopg.sql`` from validated config names.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from westep_ops.config import Category, RepairAction, qualified_name, split_name
from westep_ops.db import admin_command, admin_show
from westep_ops.errors import WestepError
from westep_ops.repairs.base import (
    LEVEL_EXTERNAL,
    LEVEL_MANUAL,
    RepairContext,
    RepairFailed,
    RepairSkipped,
    repair,
)
from westep_ops.repairs.quarantine import MoveRefused, count_violations, move_rule_violations


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
# Never terminated, whatever the config says: the platform's own services (Supabase's
# admin, auth, storage and realtime logins; the API's authenticator pool is the app's,
# not internal), backups, and westep-ops itself. Replication (walsenders) is not a
# 'client backend' and never selected.
INTERNAL_ROLES = (
    "supabase_admin",
    "supabase_auth_admin",
    "supabase_realtime_admin",
    "supabase_storage_admin",
    "supabase_replication_admin",
    "supabase_functions_admin",
    "supabase_read_only_user",
    "pgbouncer",
)
BACKUP_APPS = ("pg_dump", "pg_dumpall", "pg_basebackup", "pg_restore")
OWN_APP_PREFIX = "westep-ops"

# What identifies a session and the state it was selected in: the terminating statement
# re-checks all of it, so a pid reused by a new session, or a session that moved on, is
# left alone.
_SESSION_COLS = sql.SQL("""
       pid, backend_start, state, state_change, xact_start, usename::text AS usename,
       application_name,
       extract(epoch FROM now() - state_change)::int AS state_age_s,
       extract(epoch FROM now() - xact_start)::int AS xact_age_s""")

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
).format(_SESSION_COLS)

# One statement: only sessions still exactly as selected are terminated.
TERMINATE_SQL = """
SELECT a.pid, pg_terminate_backend(a.pid) AS terminated
FROM pg_stat_activity a
JOIN unnest(%s::int[], %s::timestamptz[], %s::text[], %s::timestamptz[], %s::timestamptz[])
     AS x(pid, started, state, changed, xact)
  ON a.pid = x.pid AND a.backend_start = x.started AND a.state = x.state
 AND a.state_change = x.changed AND a.xact_start IS NOT DISTINCT FROM x.xact
WHERE a.backend_type = 'client backend' AND a.pid <> pg_backend_pid()
"""


def protected_reason(ctx: RepairContext, row: dict[str, Any]) -> str | None:
    """Why R1/R2 must not terminate this session, or None when they may."""
    user, app = row["usename"], row["application_name"] or ""
    rules = ctx.config.repairs.terminate
    if user is None:
        return "its login is not visible to the repair login"
    if user in INTERNAL_ROLES:
        return "a platform-internal login"
    if app in BACKUP_APPS:
        return "a backup"
    if app.startswith(OWN_APP_PREFIX):
        return "westep-ops's own session"
    if user in rules.never_roles:
        return "its login is in repairs.terminate.neverRoles"
    if rules.only_roles and user not in rules.only_roles:
        return "its login is not in repairs.terminate.onlyRoles"
    return None


def _label(why: str, r: dict[str, Any]) -> str:
    return (
        f"{why}: pid {r['pid']} ({r['usename']}, {r['application_name'] or 'no name'}, "
        f"{r['state']} {r['state_age_s']} s)"
    )


def terminate_sessions(ctx: RepairContext, rows: list[dict[str, Any]], why: str) -> tuple[int, int]:
    """Terminate the sessions in ``rows`` that may be ended, in one re-checking statement.

    Returns (terminated, protected)."""
    allowed, protected = [], 0
    for r in rows:
        reason = protected_reason(ctx, r)
        if reason is None:
            allowed.append(r)
        else:
            protected += 1
            ctx.notes.append(f"not terminated ({reason}): {_label(why, r)}")
    if ctx.dry_run or not allowed:
        for r in allowed:
            ctx.change(f"terminate {_label(why, r)}")
        return 0, protected
    with ctx.db(autocommit=True) as conn:
        done = {
            pid
            for pid, ok in conn.execute(
                TERMINATE_SQL,
                (
                    [r["pid"] for r in allowed],
                    [r["backend_start"] for r in allowed],
                    [r["state"] for r in allowed],
                    [r["state_change"] for r in allowed],
                    [r["xact_start"] for r in allowed],
                ),
            ).fetchall()
            if ok
        }
        _wait_gone(conn, [r for r in allowed if r["pid"] in done])
    for r in allowed:
        if r["pid"] in done:
            ctx.change(f"terminated {_label(why, r)}")
        else:
            ctx.notes.append(
                f"left pid {r['pid']} alone: it ended or changed state since it was selected"
            )
    return len(done), protected


def _wait_gone(conn: Any, rows: list[dict[str, Any]], timeout: float = 5) -> None:
    """pg_terminate_backend only signals: wait (bounded) until the sessions have exited."""
    deadline = time.monotonic() + timeout
    while rows and time.monotonic() < deadline:
        left = conn.execute(
            "SELECT count(*) FROM pg_stat_activity a"
            " JOIN unnest(%s::int[], %s::timestamptz[]) AS x(pid, started)"
            " ON a.pid = x.pid AND a.backend_start = x.started",
            ([r["pid"] for r in rows], [r["backend_start"] for r in rows]),
        ).fetchone()
        if not left or not left[0]:
            return
        time.sleep(0.05)


def _dicts(conn: Any, query: Any, params: Any = None) -> list[dict[str, Any]]:
    """The rows of ``query`` as dicts (psycopg's ``dict_row``)."""
    return conn.cursor(row_factory=dict_row).execute(query, params).fetchall()


@repair(
    RepairAction.restore_db_connection,
    "terminate sessions idle in transaction too long and long transactions that block others"
    " (never replication, backups, platform-internal or westep-ops sessions; repairs.terminate)",
    (Category.connection, Category.pool),
)
def restore_db_connection(ctx: RepairContext) -> str:
    th = ctx.config.monitoring.thresholds
    with ctx.db() as conn:
        rows = _dicts(
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


# -- R2 ---------------------------------------------------------------------------------
@repair(
    RepairAction.restore_connection_pool,
    "pgbouncer: RESUME a paused database; when exhausted, end queries pinning every server"
    " connection, RECONNECT and RELOAD",
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
            stuck = _dicts(
                conn,
                sql.SQL(
                    "SELECT {} FROM pg_stat_activity WHERE pid = ANY(%s) AND state = 'active'"
                    " AND now() - coalesce(query_start, xact_start) > make_interval(secs => %s)"
                ).format(_SESSION_COLS),
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


# -- R3 ---------------------------------------------------------------------------------
# Names are matched in pg_namespace/pg_class (never to_regclass(text), which folds case).
# ``owner`` is who the GRANT runs as; ``can_become`` whether the repair login may SET ROLE
# to it (membership; a superuser always may).
TABLE_PRIVS_SQL = """
SELECT x.t, x.r, x.p, c.oid IS NOT NULL AS table_exists, ro.oid IS NOT NULL AS role_exists,
       CASE WHEN c.oid IS NOT NULL AND ro.oid IS NOT NULL
            THEN has_table_privilege(ro.oid, c.oid, x.p) END AS granted,
       CASE WHEN n.oid IS NOT NULL AND ro.oid IS NOT NULL
            THEN has_schema_privilege(ro.oid, n.oid, 'USAGE') END AS schema_usage,
       pg_get_userbyid(c.relowner)::text AS owner,
       CASE WHEN c.oid IS NOT NULL THEN pg_has_role(session_user, c.relowner, 'MEMBER') END
            AS can_become,
       pg_get_userbyid(n.nspowner)::text AS schema_owner,
       CASE WHEN n.oid IS NOT NULL THEN pg_has_role(session_user, n.nspowner, 'MEMBER') END
            AS can_become_schema_owner
FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[])
     WITH ORDINALITY AS x(t, s, n, r, p, i)
LEFT JOIN pg_namespace n ON n.nspname = x.s
LEFT JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = x.n
     AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
LEFT JOIN pg_roles ro ON ro.rolname = x.r
ORDER BY x.i
"""


def _privilege_rows(conn: Any, triples: Sequence[tuple[str, str, str]]) -> list[dict[str, Any]]:
    if not triples:
        return []
    names = [split_name(t) for t, _, _ in triples]
    return _dicts(
        conn,
        TABLE_PRIVS_SQL,
        (
            [t for t, _, _ in triples],
            [s for s, _ in names],
            [n for _, n in names],
            [r for _, r, _ in triples],
            [p for _, _, p in triples],
        ),
    )


def missing_grants(ctx: RepairContext, conn: Any) -> list[tuple[str, str, str]]:
    """Declared (table, role, privilege) triples that the database does not grant."""
    triples = [(g.table, g.role, p) for g in ctx.config.grants for p in g.privileges]
    return [
        (r["t"], r["r"], r["p"])
        for r in _privilege_rows(conn, triples)
        if r["table_exists"] and r["role_exists"] and not r["granted"]
    ]


def _found_pairs(ctx: RepairContext) -> list[tuple[str, str]]:
    """The table/role pairs H3 judges: those the failing check named, else all of them."""
    pairs = [(t.table, r) for t in ctx.config.critical_tables for r in t.roles]
    if ctx.found is not None:
        named = set(ctx.found)
        pairs = [p for p in pairs if p in named]
    return pairs


@repair(
    RepairAction.fix_table_permissions,
    "give back what H3 found missing (SELECT, schema USAGE for a critical table's roles), as"
    " the owner; every declared grant only when a person asks (--all-declared)",
    (Category.tables,),
)
def fix_table_permissions(ctx: RepairContext) -> str:
    """Grant only what the failing check found missing: a role that must read a critical
    table and cannot gets SELECT (and USAGE on the schema) back. The rest of the declared
    drift is reported, and granted only with ``all_declared`` (a person's explicit
    request). Every GRANT runs as the object's owner (``SET LOCAL ROLE``), so no second
    grantor is left that a later REVOKE by the owner would not remove."""
    with ctx.db() as conn:
        found = _privilege_rows(conn, [(t, r, "SELECT") for t, r in _found_pairs(ctx)])
        declared = missing_grants(ctx, conn)
        # (object kind, schema-qualified name or schema, role, privilege, owner, can become)
        todo: dict[tuple[str, str, str, str], tuple[str, bool]] = {}
        for row in found:
            if not (row["table_exists"] and row["role_exists"]):
                continue  # H3 escalates a missing table or role; no grant brings it back
            if not row["schema_usage"]:
                schema = split_name(row["t"])[0]
                todo[("schema", schema, row["r"], "USAGE")] = (
                    row["schema_owner"],
                    row["can_become_schema_owner"],
                )
            if not row["granted"]:
                todo[("table", row["t"], row["r"], "SELECT")] = (row["owner"], row["can_become"])
        if ctx.all_declared and declared:
            for row in _privilege_rows(conn, declared):
                todo[("table", row["t"], row["r"], row["p"])] = (row["owner"], row["can_become"])
        left = [
            d for d in declared if ("table", d[0], d[1], d[2]) not in todo
        ]  # drift nobody asked for
        refused = _grant_as_owners(ctx, conn, todo)
        conn.commit()
    if left:
        ctx.notes.append(
            "declared but not granted (drift the check did not find broken): "
            + ", ".join(f"{p} on {t} to {r}" for t, r, p in left)
            + "; a person applies it with: westep-ops repair fix_table_permissions --all-declared"
        )
    if refused:
        raise RepairFailed(
            "cannot grant as the owner (the repair login may not SET ROLE to it), so nothing"
            " was granted as another grantor; a person must run as the owner: "
            + "; ".join(refused),
            LEVEL_MANUAL,
        )
    n = len(todo)
    if not n:
        return "nothing the checks need is missing" + (
            f" ({len(left)} declared privileges left for --all-declared)" if left else ""
        )
    verb = "would grant" if ctx.dry_run else "granted"
    return f"{verb} {n} missing privileges as the owners" + (
        f"; {len(left)} other declared privileges reported, not granted" if left else ""
    )


def _grant_as_owners(
    ctx: RepairContext, conn: Any, todo: dict[tuple[str, str, str, str], tuple[str, bool]]
) -> list[str]:
    """GRANT each privilege as its object's owner; returns those the login could not."""
    refused: list[str] = []
    for (kind, name, role, priv), (owner, can_become) in todo.items():
        target: sql.Composable
        if kind == "schema":
            target = sql.SQL("SCHEMA {}").format(sql.Identifier(name))
        else:
            target = sql.Identifier(*split_name(name))
        stmt = sql.SQL("GRANT {} ON {} TO {}").format(sql.SQL(priv), target, sql.Identifier(role))
        if not can_become:
            refused.append(f"{stmt.as_string(conn)} (owner {owner})")
            continue
        if not ctx.dry_run:
            conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(owner)))
        ctx.apply(conn, stmt)
        if not ctx.dry_run:
            conn.execute("RESET ROLE")
    owners = sorted({o for (o, ok) in todo.values() if ok})
    if owners and len(refused) < len(todo):
        verb = "would grant" if ctx.dry_run else "granted"
        ctx.notes.append(f"{verb} as the owner: {', '.join(owners)}")
    return refused


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
    "move rows breaking the rules that opted in (repair: quarantine) into quarantine;"
    " refuse when deleting them would cascade, set NULL, fail or fire a trigger or rule",
    (Category.integrity,),
)
def fix_data_integrity(ctx: RepairContext) -> str:
    rows = 0  # moved, or in a dry run the rows that would move
    refused: list[str] = []
    left: list[str] = []
    # The move reads whole tables for its fingerprints: the maintenance bound, not a
    # probe's; lock_timeout still keeps it from queueing behind other sessions.
    timeout_ms = int(ctx.config.repairs.maintenance_timeout_seconds * 1000)
    with ctx.db() as conn:
        # One snapshot per rule: the before/after fingerprints see only this move.
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        for rule in ctx.config.integrity_rules:
            conn.execute(
                sql.SQL("SET LOCAL statement_timeout = {}").format(sql.Literal(timeout_ms))
            )
            try:
                if rule.repair != "quarantine":
                    n = count_violations(conn, rule)
                    if n:
                        left.append(f"{rule.name}: {n} rows of {rule.table}")
                    conn.rollback()
                    continue
                out = move_rule_violations(ctx, conn, rule)
            except MoveRefused as e:
                conn.rollback()
                refused.append(str(e))
                continue
            except WestepError as e:
                conn.rollback()
                raise RepairFailed(f"{rule.name}: {e}", LEVEL_MANUAL) from None
            if out.refused:
                refused.append(out.refused)
                conn.rollback()
                continue
            rows += out.count if ctx.dry_run else out.moved
            if ctx.dry_run:
                conn.rollback()
            else:
                conn.commit()
    verb = "would quarantine" if ctx.dry_run else "quarantined"
    if left:
        ctx.notes.append(
            "report-only rules (repair: report), left for a person: " + "; ".join(left)
        )
    if refused:
        raise RepairFailed(
            (f"{verb} {rows} rows; " if rows else "") + " | ".join(refused), LEVEL_MANUAL
        )
    if rows:
        return f"{verb} {rows} rows"
    if left:
        return "no rule that may be cleaned has violations; report-only: " + "; ".join(left)
    return "no rows break the integrity rules"


# -- R6 ---------------------------------------------------------------------------------
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
    for row in _dicts(conn, STATS_SQL, ([p[0] for p in parts], [p[1] for p in parts])):
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
