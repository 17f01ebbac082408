"""What the repairs share: the silence check, which sessions R1/R2 may terminate and the
one re-checking statement that terminates them, and rows as dicts.

Each repair module takes a :class:`RepairContext`, records what it changes (or would
change, in a dry run) with ``ctx.change`` and returns a one-line summary; the runner in
``repairs/base.py`` applies the rate limit, timeouts, verification and audit. SQL is
composed with ``psycopg.sql`` from validated config names.
"""

from __future__ import annotations

import time
from typing import Any

from psycopg import sql

from westep_ops.config import Category
from westep_ops.repairs.base import RepairContext, RepairSkipped


def unless_silenced(ctx: RepairContext, category: Category) -> None:
    """Skip when a silence or maintenance window covers ``category`` (unless --force):
    what looks broken then may be an operator's deliberate work (a PAUSE, a migration)."""
    if ctx.force:
        return
    from westep_ops.silences import current
    from westep_ops.store import target_state

    s = current(
        ctx.config, ctx.env.storage_url, target=ctx.target, state=target_state(ctx.env, ctx.target)
    ).match(category.value)
    if s is not None:
        raise RepairSkipped(f"skipped: silenced by {s.describe(ctx.config.timezone)}")


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
SESSION_COLS = sql.SQL("""
       pid, backend_start, state, state_change, xact_start, usename::text AS usename,
       application_name,
       extract(epoch FROM now() - state_change)::int AS state_age_s,
       extract(epoch FROM now() - xact_start)::int AS xact_age_s""")

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
