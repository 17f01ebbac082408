"""``westep-ops test-connection``: can we reach every part, and how fast?

Checks the direct connection, the pooled connection through pgbouncer, pgbouncer's admin
console and the ops storage, each with a connect + round-trip latency or one clear reason.
Each target gets one short-lived connection, opened with our timeouts and closed at once.
The admin console is optional (hosted Supabase has none and the README says to leave
``PGBOUNCER_ADMIN_URL`` unset): unset, it is reported as skipped, never as a failure.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import psycopg

from westep_ops.config import Config
from westep_ops.db import (
    DeadlineExceeded,
    admin_show,
    connect,
    deadline,
    describe_error,
    refusal,
    set_local_timeouts,
)
from westep_ops.environment import Environment
from westep_ops.redact import safe_url


@dataclass
class ConnectionResult:
    target: str
    env_var: str
    ok: bool
    where: str = ""
    connect_ms: float | None = None
    query_ms: float | None = None
    detail: str = ""
    skipped: bool = False  # optional target left unset on purpose: neither ok nor failed

    @property
    def passed(self) -> bool:
        """What the exit code counts: answered, or optional and not configured."""
        return self.ok or self.skipped

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _probe(
    target: str,
    env_var: str,
    dsn: str | None,
    opener: Callable[[str], psycopg.Connection],
    query: Callable[[psycopg.Connection], str],
    query_timeout_ms: float,
    optional_because: str | None = None,
) -> ConnectionResult:
    if not dsn:
        if optional_because:
            return ConnectionResult(
                target,
                env_var,
                False,
                detail=f"not configured ({env_var} unset): {optional_because}",
                skipped=True,
            )
        return ConnectionResult(target, env_var, False, detail=f"not configured: set {env_var}")
    res = ConnectionResult(target, env_var, False, where=safe_url(dsn))
    t0 = time.perf_counter()
    try:
        conn = opener(dsn)
    except psycopg.Error as e:
        refused = refusal(e)  # the server answered and refused: name the cause, not an outage
        res.detail = f"misconfigured: {describe_error(e)}" if refused else describe_error(e)
        return res
    try:
        t1 = time.perf_counter()
        res.connect_ms = round((t1 - t0) * 1000, 2)
        with deadline(conn, query_timeout_ms):
            res.detail = query(conn)
        res.query_ms = round((time.perf_counter() - t1) * 1000, 2)
        res.ok = True
    except (psycopg.Error, DeadlineExceeded) as e:
        res.detail = describe_error(e)
    finally:
        conn.close()
    return res


def test_connections(env: Environment, config: Config) -> list[ConnectionResult]:
    """Direct, pooled, admin console (optional), ops storage: one result each."""
    t = config.monitoring.timeouts

    def direct(dsn: str) -> psycopg.Connection:
        return connect(dsn, connect_timeout_ms=t.connect, statement_timeout_ms=t.statement)

    def pooled(dsn: str) -> psycopg.Connection:
        return connect(dsn, connect_timeout_ms=t.connect, pooled=True, autocommit=False)

    def console(dsn: str) -> psycopg.Connection:
        return connect(dsn, connect_timeout_ms=t.connect, admin_console=True)

    def version(conn: psycopg.Connection) -> str:
        row = conn.execute(
            "SELECT current_setting('server_version'), pg_is_in_recovery()"
        ).fetchone()
        assert row is not None
        return f"PostgreSQL {row[0]}" + (" (in recovery)" if row[1] else "")

    def pooled_query(conn: psycopg.Connection) -> str:
        with conn.cursor() as cur:
            set_local_timeouts(cur, t.statement)
            cur.execute("SELECT 1")
        conn.rollback()
        return "SELECT 1 through the pool"

    def console_query(conn: psycopg.Connection) -> str:
        rows = admin_show(conn, "databases")
        db = next((r for r in rows if r.get("name") == config.database_name), None)
        if db is None:
            return f"admin console answers; database {config.database_name!r} not in SHOW DATABASES"
        paused = " (PAUSED)" if db.get("paused") else ""
        return f"database {config.database_name!r} pool_size={db.get('pool_size')}{paused}"

    # A queued pooled query never reaches statement_timeout: the client-side deadline
    # (the connect budget) is what keeps this command from waiting on a broken pool.
    limit = t.connect
    return [
        _probe("direct", "DIRECT_URL", env.direct_url, direct, version, limit),
        _probe("pooled", "DATABASE_URL", env.database_url, pooled, pooled_query, limit),
        _probe(
            "pgbouncer admin",
            "PGBOUNCER_ADMIN_URL",
            env.pgbouncer_admin_url,
            console,
            console_query,
            limit,
            optional_because="skipped; H2 reads the pool from the metrics endpoint and "
            "pg_stat_activity (hosted Supabase has no admin console)",
        ),
        _probe("ops storage", "WESTEP_OPS_STORAGE_URL", env.storage_url, direct, version, limit),
    ]
