"""Health checks H1-H7: plain functions over a :class:`ProbeSession`, no Dagster.

Each probe measures, compares with the configured thresholds and returns a
:class:`CheckResult`. Queries are batched (one round trip per probe where possible) and
every one runs under a client-side deadline. :func:`run_health_check` runs a sweep, with
the HTTP probes in a worker thread so they overlap the database probes, then marks
failures that another failing category explains (``suspected_cause``): when pgbouncer is
paused the API fails too, but the pool is what to fix.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from westep_ops.config import (
    Auth,
    Category,
    Endpoint,
    IntegrityRule,
    Realtime,
    qualified_name,
    split_name,
)
from westep_ops.db import DeadlineExceeded, describe_error, refusal
from westep_ops.integrity import count_sql
from westep_ops.probes.base import MONITOR_MISCONFIGURED, CheckResult, Status, timed_result
from westep_ops.probes.metrics import PoolMetrics, fetch_pool_metrics
from westep_ops.probes.session import ProbeSession, Unavailable
from westep_ops.redact import redact

DB_FAILURES = (psycopg.Error, Unavailable, DeadlineExceeded)
PAUSED_HTTP_STATUS = 540  # what the Supabase platform answers for a paused project


def _reason(exc: BaseException) -> str:
    if isinstance(exc, Unavailable | DeadlineExceeded):
        return str(exc)
    return describe_error(exc)


def _refusal(exc: BaseException) -> str | None:
    """The one-line cause when the server answered and refused the monitor, else None."""
    if isinstance(exc, Unavailable):
        return exc.refusal
    return refusal(exc)


def _bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 2)


# -- pgbouncer state shared by H1 and H2 ----------------------------------------------------
def admin_show(session: ProbeSession, what: str) -> list[dict[str, Any]]:
    """``SHOW <what>`` on the admin console, once per sweep."""
    return session.memo(
        f"admin:{what}",
        lambda: session.run("admin", sql.SQL("SHOW {}").format(sql.SQL(what.upper())), dicts=True),
    )


def pool_database(session: ProbeSession) -> dict[str, Any] | None:
    """The watched database's SHOW DATABASES row; None if there is no usable console."""
    if not session.configured("admin"):
        return None
    try:
        rows = admin_show(session, "databases")
    except DB_FAILURES:
        return None
    return next((d for d in rows if d.get("name") == session.config.database_name), None)


# -- H1 ---------------------------------------------------------------------------------
Outcome = tuple[dict[str, Any], list[tuple[Status, str, str | None]]]


def connection_outcome(session: ProbeSession, target: str) -> Outcome:
    """Connect to ``target`` ("direct" or "pooled") and ``SELECT 1``: values and problems.

    The pooled check first asks pgbouncer's admin console whether the database is paused:
    a paused pool would hold the query until the deadline, and the console already knows.
    """
    cfg = session.config
    values: dict[str, Any] = {}
    if not session.configured(target):
        return values, [(Status.error, f"{target}: not configured", None)]
    if target == "pooled":
        db = pool_database(session)
        if db is not None and db.get("paused"):
            values["pooled_error"] = "pool paused"
            return values, [
                (
                    Status.critical,
                    "pooled: pgbouncer has the database paused",
                    "pooled_connection_failed",
                )
            ]
    t0 = time.perf_counter()
    try:
        if target == "direct":
            session.run("direct", "SELECT 1", deadline_ms=cfg.monitoring.timeouts.connect)
        else:
            st = int(cfg.monitoring.timeouts.statement)
            session.run(
                "pooled",
                f"BEGIN; SET LOCAL statement_timeout = {st}; SELECT 1; ROLLBACK",
                deadline_ms=cfg.monitoring.timeouts.connect,
            )
    except DB_FAILURES as e:
        values[f"{target}_error"] = _reason(e)
        refused = _refusal(e)
        if refused:
            # The server answered and refused the monitor: the monitor is misconfigured,
            # the target is up. An error (monitor degraded), never an outage.
            return values, [(Status.error, f"{target}: {refused}", MONITOR_MISCONFIGURED)]
        return values, [(Status.critical, f"{target}: {_reason(e)}", f"{target}_connection_failed")]
    total = session.connect_ms.get(target, 0.0) + _ms(t0)
    values[f"{target}_connect_ms"] = session.connect_ms.get(target)
    values[f"{target}_ms"] = round(total, 2)
    budget = cfg.monitoring.thresholds.response_time
    if total > budget:
        return values, [
            (Status.warning, f"{target}: {total:.0f} ms > {budget:.0f} ms", "slow_connection")
        ]
    return values, []


def check_connection(session: ProbeSession, pooled: Outcome | None = None) -> CheckResult:
    """H1: connect and ``SELECT 1``, directly and through pgbouncer.

    ``pooled`` is the pooled outcome when the sweep already measured it in parallel.
    """
    cfg = session.config
    res = CheckResult(
        Category.connection, thresholds={"responseTime_ms": cfg.monitoring.thresholds.response_time}
    )
    with timed_result(res):
        failed = []
        direct = connection_outcome(session, "direct")
        pooled = pooled if pooled is not None else connection_outcome(session, "pooled")
        pooled = _pooled_symptom(direct, pooled)
        pooled = _pooler_refuses_good_login(session, direct, pooled)
        for target, outcome in (("direct", direct), ("pooled", pooled)):
            values, problems = outcome
            res.values.update(values)
            for status, text, finding in problems:
                res.problem(status, text, finding)
            if any(s is Status.critical for s, _, _ in problems):
                failed.append(target)
        if failed and session.env.supabase_url:
            paused = _supabase_paused(session)
            if paused:
                res.values["project_paused"] = True
                res.problem(Status.critical, paused, "project_paused")
        res.source = "direct+pooled"
        # Pools are per (database, user): this SELECT 1 says nothing about the app's pool.
        res.values["pooled_pool"] = (
            f"{monitor_pool(session)} (the monitor's own pool, not the app's)"
        )
        res.finish(
            f"direct {res.values.get('direct_ms', '-')} ms, pooled {res.values.get('pooled_ms', '-')} ms"
        )
        if res.status is Status.error and MONITOR_MISCONFIGURED in res.findings:
            causes = [t for st, t in res.problems if st is Status.error]
            res.summary = "monitoring is misconfigured: " + "; ".join(causes)
    return res


# Pooled failures that say pgbouncer itself is unreachable or paused: outages whatever
# the direct connection says.
_POOLER_DOWN = ("connection refused", "connect timeout", "unknown host", "pool paused")


def _pooled_symptom(direct: Outcome, pooled: Outcome) -> Outcome:
    """When PostgreSQL refused the monitor's direct login, a pooled failure behind a
    pgbouncer that answered is the same refusal: pgbouncer logs in to PostgreSQL as the
    same login (the monitor's own pool), and its clients then queue until a timeout.
    Report it as such instead of as an outage that would override the real cause."""
    if not any(f == MONITOR_MISCONFIGURED for _, _, f in direct[1]):
        return pooled
    values, problems = pooled
    reason = str(values.get("pooled_error", ""))
    if not reason or reason.startswith(_POOLER_DOWN):
        return pooled
    if not any(s is Status.critical for s, _, _ in problems):
        return pooled
    return values, [
        (
            Status.error,
            f"pooled: fails too, as pgbouncer logs in with the same refused login ({reason})",
            MONITOR_MISCONFIGURED,
        )
    ]


def _same_login(session: ProbeSession) -> bool:
    """DIRECT_URL and DATABASE_URL carry the same user and password."""
    try:
        d = conninfo_to_dict(session.env.direct_url or "")
        p = conninfo_to_dict(session.env.database_url or "")
    except psycopg.ProgrammingError:
        return False
    return bool(d.get("user")) and all(d.get(k) == p.get(k) for k in ("user", "password"))


def _pooler_refuses_good_login(session: ProbeSession, direct: Outcome, pooled: Outcome) -> Outcome:
    """pgbouncer refusing the login PostgreSQL just accepted, with the same user and
    password, is pgbouncer's auth setup (auth_file/auth_query) failing: every app client
    is refused too. That is an outage, not the monitor's misconfiguration."""
    values, problems = pooled
    if "direct_ms" not in direct[0] or not any(f == MONITOR_MISCONFIGURED for _, _, f in problems):
        return pooled
    if not _same_login(session):
        return pooled
    reason = values.get("pooled_error", "refused")
    return values, [
        (
            Status.critical,
            "pooled: pgbouncer refuses a login PostgreSQL accepts: check auth_file/auth_query"
            f" ({reason})",
            "pooled_connection_failed",
        )
    ]


def _supabase_paused(session: ProbeSession) -> str | None:
    """A paused Supabase project answers HTTP with a platform error instead of the app."""
    url = (session.env.supabase_url or "").rstrip("/") + "/rest/v1/"
    headers = {"apikey": session.env.service_role_key} if session.env.service_role_key else {}
    try:
        r = session.http().get(url, headers=headers)
    except httpx.HTTPError:
        return None
    body = r.text[:2000].lower()
    if r.status_code == PAUSED_HTTP_STATUS or "paused" in body:
        return (
            f"the Supabase project is paused (HTTP {r.status_code} from the platform): "
            "resume it from the dashboard (escalation level 3)"
        )
    return None


# -- H2 ---------------------------------------------------------------------------------
POOL_UNWATCHED = "pool_unwatched"  # observe-only: no repair, no incident (see recovery)


def check_pool(session: ProbeSession) -> CheckResult:
    """H2: is the app's pool serving? Busy is not exhausted.

    Exhausted means clients wait too long (the oldest client *now* waiting, pgbouncer's
    ``maxwait``), the pool is paused/disabled, or every server of a pool has been busy
    longer than ``poolMaxWaitSeconds`` (no server freed: it cannot serve). All servers
    busy with short waits is load: utilisation, waiting and longest wait are figures.
    Sources: the admin console, else the metrics endpoint, and always the pooler's server
    sessions in ``pg_stat_activity`` (the only source on hosted Supabase without metrics).
    """
    th = session.config.monitoring.thresholds
    res = CheckResult(
        Category.pool,
        thresholds={
            "poolWaitingClients": th.pool_waiting_clients,
            "poolMaxWaitSeconds": th.pool_max_wait_seconds,
            "connectionUsage": th.connection_usage,
            "idleInTransactionSeconds": th.idle_in_transaction_seconds,
        },
    )
    with timed_result(res):
        row = _backends(session, res)
        res.values["monitor_pool"] = monitor_pool(session)
        pools: dict[str, int] | None = None  # pgbouncer's sv_active per pool login
        size = session.config.pool.size
        if session.configured("admin"):
            res.source = "pgbouncer-admin"
            pools = _pool_from_admin(session, res, row)
            size = res.values.get("pool_size") or size
        elif session.env.metrics_url:
            res.source = "metrics-endpoint"
            _pool_from_metrics(session, res)
            size = _int(res.values.get("metrics_pool_size")) or size  # the pooler's own figure
        else:
            res.source = "pg_stat_activity"
        logins = list(pools) if pools is not None else list(session.config.pool.app_users)
        if row is not None and logins:
            _pool_servers(session, res, row, logins, size, pools)
        if res.source == "pg_stat_activity" and not logins:
            # Not ok and not a page: without a source the app's pool is a blind spot, and
            # the monitor's own pooled SELECT 1 cannot vouch for it (pools are per user).
            res.problem(
                Status.warning,
                "app pool not watched: set PGBOUNCER_ADMIN_URL, WESTEP_OPS_METRICS_URL or"
                " pool.appUsers (the monitor's pooled check rides its own pool"
                f" {res.values['monitor_pool']})",
                POOL_UNWATCHED,
            )
        res.finish(_pool_summary(res))
    return res


def _int(v: Any) -> int | None:
    return int(v) if v else None


def monitor_pool(session: ProbeSession) -> str:
    """The pgbouncer pool the monitor's own pooled connection rides: (database, login)."""
    try:
        info = conninfo_to_dict(session.env.database_url or "")
    except psycopg.ProgrammingError:
        return "unknown"
    return f"{info.get('dbname', session.config.database_name)}/{info.get('user', '?')}"


def _pool_from_admin(
    session: ProbeSession, res: CheckResult, backends: dict[str, Any] | None
) -> dict[str, int] | None:
    """SHOW DATABASES/POOLS: paused, disabled, waits. Returns sv_active per pool login."""
    th = session.config.monitoring.thresholds
    name = session.config.database_name
    try:
        databases = admin_show(session, "databases")
        pools = [p for p in admin_show(session, "pools") if p["database"] == name]
    except Unavailable as e:
        reason = str(e)
        if e.refusal:
            res.problem(
                Status.error,
                f"monitoring is misconfigured: pgbouncer admin console: {e.refusal}",
                MONITOR_MISCONFIGURED,
            )
        elif "authentication failed" in reason or "not configured" in reason:
            res.problem(Status.error, f"pgbouncer admin console: {reason}")
        else:
            res.problem(Status.critical, f"pgbouncer not answering: {reason}", "pgbouncer_down")
        return None
    except DB_FAILURES as e:
        res.problem(Status.error, f"pgbouncer admin console: {_reason(e)}")
        return None
    db = next((d for d in databases if d.get("name") == name), None)
    if db is None:
        res.problem(Status.critical, f"pgbouncer has no database {name!r}", "pool_missing")
        return None
    pool_size = int(db.get("pool_size") or 0)
    keys = ("user", "cl_active", "cl_waiting", "sv_active", "sv_idle", "sv_used", "maxwait")
    res.values.update(
        pool_size=pool_size,
        paused=bool(db.get("paused")),
        disabled=bool(db.get("disabled")),
        pools=[{k: p[k] for k in keys} for p in pools],
    )
    if db.get("paused"):
        res.problem(Status.critical, f"database {name!r} is PAUSED in pgbouncer", "pool_paused")
    if db.get("disabled"):
        res.problem(Status.critical, f"database {name!r} is DISABLED in pgbouncer", "pool_disabled")
    waiting = sum(p["cl_waiting"] for p in pools)
    # maxwait is how long the oldest client *now* in the queue has waited; it says nothing
    # of clients already served. A client queued since before PostgreSQL (re)started has
    # waited through an outage that H1 reports: only the time since the start counts here.
    maxwait = max((p["maxwait"] + p.get("maxwait_us", 0) / 1e6 for p in pools), default=0.0)
    since_start = backends.get("server_up_s") if backends else None
    judged = min(maxwait, since_start) if since_start is not None else maxwait
    busiest = max(pools, key=lambda p: p["sv_active"], default=None)
    res.values.update(
        cl_waiting=waiting,
        max_wait_s=round(maxwait, 3),
        sv_active=sum(p["sv_active"] for p in pools),
        utilisation=round(busiest["sv_active"] / pool_size, 3) if busiest and pool_size else None,
        busiest_pool=busiest["user"] if busiest else None,
    )
    if judged < maxwait:
        res.values["max_wait_since_server_start_s"] = round(judged, 3)
    if judged >= th.pool_max_wait_seconds:
        res.problem(
            Status.critical,
            f"the oldest client now waiting has waited {judged:.1f} s for a server",
            "pool_wait",
        )
    elif waiting >= th.pool_waiting_clients:
        res.problem(Status.warning, f"{waiting} clients queued for a server", "pool_queue")
    return {p["user"]: int(p["sv_active"]) for p in pools}


def _pool_from_metrics(session: ProbeSession, res: CheckResult) -> None:
    th = session.config.monitoring.thresholds
    try:
        m: PoolMetrics = fetch_pool_metrics(
            session.http(),
            session.env.metrics_url or "",
            session.env.service_role_key,
            session.config.database_name,
        )
    except ValueError as e:
        res.problem(Status.error, f"metrics endpoint: {e}")
        return
    res.source = f"metrics-endpoint ({m.flavour})"
    res.values.update(m.as_values())
    if m.pool_size and m.server_active is not None:
        res.values["utilisation"] = round(m.server_active / m.pool_size, 3)
    if m.paused:
        res.problem(Status.critical, "pooler reports the database paused", "pool_paused")
    if m.max_wait_s is not None and m.max_wait_s >= th.pool_max_wait_seconds:
        res.problem(
            Status.critical,
            f"the oldest client now waiting has waited {m.max_wait_s:.1f} s for a server",
            "pool_wait",
        )
    elif m.client_waiting is not None and m.client_waiting >= th.pool_waiting_clients:
        res.problem(
            Status.warning, f"{m.client_waiting:.0f} clients queued for a server", "pool_queue"
        )
    if m.join_failures:
        res.problem(
            Status.warning, f"{m.join_failures:.0f} failed client joins reported by the pooler"
        )


def _pool_servers(
    session: ProbeSession,
    res: CheckResult,
    row: dict[str, Any],
    logins: list[str],
    size: int | None,
    sv_active: dict[str, int] | None,
) -> None:
    """Judge each pool login on its server sessions in pg_stat_activity.

    A pool cannot serve when at least ``size`` of its server sessions have each been busy
    (in a transaction) longer than ``poolMaxWaitSeconds``: no server was freed for that
    long, so every new client waits. Under heavy but normal load servers turn over in
    milliseconds and none stays busy that long.
    """
    limit = session.config.monitoring.thresholds.pool_max_wait_seconds
    names = set(session.config.pool.application_names)
    per_login: list[dict[str, Any]] = []
    for login in logins:
        groups = [
            g
            for g in row.get("sessions_by_login") or []
            if g["user"] == login and (not names or g["app"] in names)
        ]
        ages = sorted((a for g in groups for a in g["busy_ages"] or []), reverse=True)
        stuck = [a for a in ages if a >= limit]
        item = {
            "user": login,
            "size": size,
            "sessions": sum(g["sessions"] for g in groups),
            "busy": len(ages),
            "busy_over_limit": len(stuck),
            "longest_busy_s": round(ages[0], 1) if ages else 0.0,
            "lock_waiting": sum(g["lock_waiting"] for g in groups),
            "hidden": sum(g["hidden"] for g in groups),
        }
        per_login.append(item)
        if not size:
            continue
        # With the admin console, pgbouncer must agree that all its servers are active
        # (other sessions of the same login, e.g. PostgREST's, are not the pool's).
        pooler_full = sv_active is None or sv_active.get(login, 0) >= size
        if pooler_full and len(stuck) >= size:
            res.problem(
                Status.critical,
                f"pool {login} cannot serve: all {size} servers busy for over {limit:g} s "
                f"(longest {ages[0]:.0f} s, pg_stat_activity)",
                "pool_exhausted",
            )
    res.values["pool_servers"] = per_login
    app = [p for p in per_login if sv_active is None or p["user"] in session.config.pool.app_users]
    blind = [p for p in app if p["sessions"] and p["hidden"] == p["sessions"]]
    if blind and len(blind) == len([p for p in app if p["sessions"]]):
        # NULL state for every app session: none can count as busy, so "0 busy" would lie.
        res.problem(
            Status.error,
            "monitoring is misconfigured: cannot see the app's sessions"
            f" ({', '.join(p['user'] for p in blind)}): grant pg_monitor / pg_read_all_stats"
            " to the monitoring login",
            MONITOR_MISCONFIGURED,
        )
    if sv_active is None and app and size:
        # the pooler's own figure, when there is one, stands
        res.values.setdefault("utilisation", round(max(p["busy"] for p in app) / size, 3))
    res.values["servers_busy_over_limit"] = max(
        (p["busy_over_limit"] for p in per_login), default=0
    )


# Without pg_read_all_stats, another login's session shows NULL state and NULL
# backend_type: such a row with a login name is counted as a hidden client session.
BACKENDS_SQL = """
WITH activity AS (
  SELECT *, backend_type IS NULL AND state IS NULL AND usename IS NOT NULL AS hidden_client
  FROM pg_stat_activity)
SELECT count(*) FILTER (WHERE backend_type = 'client backend' OR hidden_client) AS backends,
       current_setting('max_connections')::int AS max_connections,
       current_setting('superuser_reserved_connections')::int AS reserved,
       count(*) FILTER (WHERE state = 'idle in transaction') AS idle_in_tx,
       coalesce(extract(epoch FROM max(now() - state_change)
                FILTER (WHERE state = 'idle in transaction')), 0)::float AS idle_in_tx_max_s,
       count(*) FILTER (WHERE hidden_client) AS hidden,
       pg_has_role(current_user, 'pg_read_all_stats', 'USAGE') AS full_view,
       extract(epoch FROM clock_timestamp() - pg_postmaster_start_time())::float AS server_up_s,
       (SELECT coalesce(json_agg(s), '[]'::json) FROM (
          SELECT usename AS "user", application_name AS app, count(*) AS sessions,
                 count(*) FILTER (WHERE state IS NULL) AS hidden,
                 count(*) FILTER (WHERE wait_event_type = 'Lock') AS lock_waiting,
                 array_agg(round(extract(epoch FROM clock_timestamp()
                                 - coalesce(xact_start, query_start, backend_start))::numeric, 3))
                   FILTER (WHERE state <> 'idle') AS busy_ages
          FROM activity
          WHERE (backend_type = 'client backend' OR hidden_client) AND usename IS NOT NULL
            AND pid <> pg_backend_pid()
          GROUP BY usename, application_name) AS s) AS sessions_by_login
FROM activity
"""


def _backends(session: ProbeSession, res: CheckResult) -> dict[str, Any] | None:
    """PostgreSQL's side: backends vs max_connections, idle in transaction; the row."""
    th = session.config.monitoring.thresholds
    try:
        (row,) = session.memo("q:backends", lambda: session.run("direct", BACKENDS_SQL, dicts=True))
    except DB_FAILURES as e:
        res.values["backends_error"] = _reason(e)
        return None  # H1 reports the database itself; the pool figures still stand
    usable = max(1, row["max_connections"] - row["reserved"])
    usage = row["backends"] / usable
    res.values.update(
        backends=row["backends"],
        max_connections=row["max_connections"],
        connection_usage=round(usage, 3),
        idle_in_transaction=row["idle_in_tx"],
        idle_in_transaction_max_s=round(row["idle_in_tx_max_s"], 1),
    )
    if not row["full_view"]:
        res.values["partial"] = (
            f"{row['hidden']} sessions hidden: the monitor role lacks pg_read_all_stats/pg_monitor"
        )
    if usage >= 0.95:
        res.problem(
            Status.critical, f"{row['backends']}/{usable} connections in use", "connections_full"
        )
    elif usage >= th.connection_usage:
        res.problem(
            Status.warning, f"{row['backends']}/{usable} connections in use", "connections_high"
        )
    if row["idle_in_tx"] and row["idle_in_tx_max_s"] >= th.idle_in_transaction_seconds:
        res.problem(
            Status.warning,
            f"{row['idle_in_tx']} sessions idle in transaction (oldest {row['idle_in_tx_max_s']:.0f} s)",
            "idle_in_transaction",
        )
    return row


def _pool_summary(res: CheckResult) -> str:
    v = res.values
    parts = []
    if "pool_size" in v:
        parts.append(
            f"{v.get('sv_active', 0)} servers active (pool size {v['pool_size']}, busiest "
            f"{v.get('busiest_pool') or '-'} {(v.get('utilisation') or 0):.0%}), "
            f"{v.get('cl_waiting', 0)} waiting, oldest wait {v.get('max_wait_s', 0):.3f} s"
        )
    elif "metrics_server_active" in v or "metrics_client_active" in v:
        parts.append(
            f"{v.get('metrics_server_active', '-')} servers active, "
            f"{v.get('metrics_client_waiting', '-')} waiting"
        )
    servers = v.get("pool_servers")
    if servers and "pool_size" not in v:
        parts += [
            f"app pool {p['user']}: {p['busy']}/{p['size'] or '?'} servers busy, "
            f"longest {p['longest_busy_s']:.1f} s"
            + (f" ({p['hidden']} sessions hidden: partial)" if p["hidden"] else "")
            for p in servers
        ]
    elif not servers and res.source == "pg_stat_activity":
        parts.append(
            "app pool not watched (no admin console, no metrics endpoint, no pool.appUsers); "
            f"the monitor's pooled check rides its own pool {v.get('monitor_pool')}"
        )
    if "backends" in v:
        parts.append(f"{v['backends']}/{v['max_connections']} backends")
    return ", ".join(parts) + f" ({res.source})"


# -- locks shared by H3 and H4 -------------------------------------------------------------
# ACCESS EXCLUSIVE is the only lock mode a plain SELECT waits for. Asked of the catalog in
# the first round trip, so a locked table costs the sweep nothing; a lock taken between
# that look and the read still costs at most lock_timeout, once per table.
LOCKS_SQL = """
SELECT x.s AS schema_name, x.t AS table_name, l.pid, l.granted, a.usename::text AS usename, a.state,
       extract(epoch FROM clock_timestamp() - a.query_start)::float AS query_age_s,
       CASE WHEN NOT l.granted THEN pg_blocking_pids(l.pid) END AS behind
FROM unnest(%s::text[], %s::text[]) AS x(s, t)
JOIN pg_namespace n ON n.nspname = x.s
JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = x.t
JOIN pg_locks l ON l.locktype = 'relation' AND l.relation = c.oid
     AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
     AND l.mode = 'AccessExclusiveLock'
LEFT JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.pid IS DISTINCT FROM pg_backend_pid()
ORDER BY l.granted DESC, a.query_start NULLS LAST
"""


def _locked_tables_wanted(session: ProbeSession, wanted: set[Category]) -> list[str]:
    cfg = session.config
    tables: list[str] = []
    if Category.tables in wanted:
        tables += [t.table for t in cfg.critical_tables]
    if Category.integrity in wanted:
        for r in cfg.integrity_rules:
            tables += [r.table] + ([r.references] if r.references else [])
    return list(dict.fromkeys(tables))


def _names_params(tables: list[str]) -> tuple[list[str], list[str]]:
    parts = [split_name(t) for t in tables]
    return [p[0] for p in parts], [p[1] for p in parts]


def blocker_text(rows: list[dict[str, Any]]) -> str:
    """``blocked by a lock held by pid N (user, query age)`` from LOCKS_SQL rows of one table."""
    held = [r for r in rows if r["granted"]]
    r = (held or rows)[0]
    who = f"pid {r['pid']}" if r["pid"] is not None else "a prepared transaction"
    facts = [f"user {r['usename']}" if r["usename"] else "user not visible"]
    if r["query_age_s"] is not None:
        facts.append(f"query age {r['query_age_s']:.0f} s")
    else:
        facts.append("query age not visible: the monitor lacks pg_read_all_stats")
    if r["state"]:
        facts.append(str(r["state"]))
    if held:
        return f"blocked by a lock held by {who} ({', '.join(facts)})"
    # Lock requests queue in order: a waiting ACCESS EXCLUSIVE (a migration) blocks new
    # readers too. Name it and the sessions it waits for.
    behind = ", ".join(str(p) for p in r["behind"] or []) or "?"
    return (
        f"blocked behind {who} ({', '.join(facts)}), which is queued for an ACCESS EXCLUSIVE "
        f"lock and waits for pid {behind}"
    )


def _lock_key(r: dict[str, Any]) -> str:
    """A LOCKS_SQL row's table in the config's spelling (public."step-logs" keeps quotes)."""
    return qualified_name(r["schema_name"], r["table_name"])


def _group_locks(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    by: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by.setdefault(_lock_key(r), []).append(r)
    return by


def lock_status(session: ProbeSession, table: str) -> Status:
    """A lock on ``table``: a warning, critical once its holder's query is older than
    ``repairs.stuckQuerySeconds`` (a migration holding a critical table blocks every
    read of the app). Never repaired automatically: a person decides."""
    age = session.memo("lock_ages", dict).get(table)
    limit = session.config.repairs.stuck_query_seconds
    return Status.critical if age is not None and age >= limit else Status.warning


def table_locks(session: ProbeSession, tables: list[str]) -> dict[str, str]:
    """Configured tables a SELECT would wait on right now -> who holds the lock.

    Looked up once per table per sweep (the prefetch asks for every table of H3 and H4 in
    its first round trip); tables found locked later, when a read hit lock_timeout, are
    added by :func:`_note_lock`.
    """
    locks: dict[str, str] = session.memo("locks", dict)
    checked: set[str] = session.memo("locks_checked", set)
    todo = [t for t in dict.fromkeys(tables) if t not in checked]
    if todo:
        record_locks(
            session, todo, session.run("direct", LOCKS_SQL, _names_params(todo), dicts=True)
        )
    return locks


def _refresh_locks(session: ProbeSession, tables: list[str]) -> None:
    """A batch hit lock_timeout: look again (one bounded query) so the retry skips the
    locked tables instead of waiting lock_timeout once more per item."""
    try:
        rows = session.run(
            "direct", LOCKS_SQL, _names_params(tables), dicts=True, deadline_ms=_budget(session)
        )
    except DB_FAILURES:
        return
    record_locks(session, tables, rows)


def record_locks(session: ProbeSession, tables: list[str], rows: list[dict[str, Any]]) -> None:
    """Remember LOCKS_SQL ``rows`` for this sweep; ``tables`` count as looked at."""
    locks: dict[str, str] = session.memo("locks", dict)
    ages: dict[str, float] = session.memo("lock_ages", dict)
    for t, rs in _group_locks(rows).items():
        locks.setdefault(t, blocker_text(rs))
        held = [r["query_age_s"] for r in rs if r["granted"] and r["query_age_s"] is not None]
        if held:
            ages[t] = max(held + [ages.get(t, 0.0)])
    session.memo("locks_checked", set).update(tables)


def _note_lock(session: ProbeSession, table: str) -> str:
    """A read of ``table`` hit lock_timeout: find who holds the lock (bounded) and remember."""
    locks: dict[str, str] = session.memo("locks", dict)
    if table not in locks:
        try:
            rows = session.run(
                "direct",
                LOCKS_SQL,
                _names_params([table]),
                dicts=True,
                deadline_ms=_budget(session),
            )
        except DB_FAILURES:
            rows = []
        if rows:
            record_locks(session, [], rows)
        locks.setdefault(
            table,
            blocker_text(rows)
            if rows
            else f"blocked by a lock (waited lock_timeout {session.timeouts.lock} ms; holder gone)",
        )
    return locks[table]


def _budget(session: ProbeSession) -> float:
    """Time one category may spend re-running its items one by one after a batch failed."""
    return float(session.timeouts.statement)


def _tx_head(session: ProbeSession) -> list[sql.Composable]:
    """A read-only transaction bounded by statement_timeout and lock_timeout (SET LOCAL:
    the only kind that survives transaction pooling)."""
    t = session.timeouts
    return [
        sql.SQL("BEGIN READ ONLY"),
        sql.SQL("SET LOCAL statement_timeout = {}").format(sql.Literal(int(t.statement))),
        sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(int(t.lock))),
    ]


def _is_lock_timeout(exc: BaseException) -> bool:
    return isinstance(exc, psycopg.errors.LockNotAvailable)


def _failure(session: ProbeSession, exc: BaseException) -> str:
    if isinstance(exc, psycopg.errors.QueryCanceled):
        return f"timed out after {session.timeouts.statement} ms (statement_timeout)"
    return _reason(exc)


# -- H3 ---------------------------------------------------------------------------------
ROLE_PROBE = "roleprobe"  # the session target of the optional role-probe login
# Readability per role comes from the catalogs, so the monitoring login needs no
# membership in the API roles (SET ROLE needs only membership, and through it the monitor
# could write). Names are matched in pg_namespace/pg_class, not with to_regclass(): that
# folds case and raises "permission denied for schema" when the monitor lacks USAGE.
# RLS: on for the role unless it is a superuser, BYPASSRLS, or owns the table without
# FORCE; rows are visible only through a permissive SELECT (or ALL) policy for the role
# (pg_policy.polroles holds 0 for PUBLIC; a policy applies to members who inherit).
PRIVS_SQL = """
SELECT x.t, x.r, c.oid IS NOT NULL AS table_exists, ro.oid IS NOT NULL AS role_exists,
       -- Column-level SELECT (Supabase's column security pattern) is readable too.
       CASE WHEN c.oid IS NOT NULL AND ro.oid IS NOT NULL
            THEN has_any_column_privilege(ro.oid, c.oid, 'SELECT') END AS can_select,
       CASE WHEN c.oid IS NOT NULL AND ro.oid IS NOT NULL
            THEN has_table_privilege(ro.oid, c.oid, 'SELECT') END AS table_select,
       CASE WHEN n.oid IS NOT NULL AND ro.oid IS NOT NULL
            THEN has_schema_privilege(ro.oid, n.oid, 'USAGE') END AS schema_usage,
       coalesce(pr.oid IS NOT NULL AND ro.oid IS NOT NULL
                AND pg_has_role(pr.oid, ro.oid, 'MEMBER'), false) AS switchable,
       session_user::text AS monitor,
       c.relrowsecurity AS rls,
       CASE WHEN c.oid IS NOT NULL AND ro.oid IS NOT NULL
            THEN c.relrowsecurity AND NOT ro.rolsuper AND NOT ro.rolbypassrls
                 AND (c.relforcerowsecurity OR NOT pg_has_role(ro.oid, c.relowner, 'USAGE'))
       END AS rls_applies,
       CASE WHEN c.oid IS NOT NULL AND ro.oid IS NOT NULL
            THEN EXISTS (SELECT 1 FROM pg_policy p
                         WHERE p.polrelid = c.oid AND p.polpermissive AND p.polcmd IN ('r', '*')
                           AND EXISTS (SELECT 1 FROM unnest(p.polroles) AS pol(role_oid)
                                       WHERE pol.role_oid = 0
                                          OR pg_has_role(ro.oid, pol.role_oid, 'USAGE')))
       END AS read_policy
FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[]) WITH ORDINALITY AS x(t, s, n, r, i)
LEFT JOIN pg_namespace n ON n.nspname = x.s
LEFT JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = x.n AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
LEFT JOIN pg_roles ro ON ro.rolname = x.r
LEFT JOIN pg_roles pr ON pr.rolname = %s
ORDER BY x.i
"""


def _pairs(session: ProbeSession) -> list[tuple[str, str]]:
    return [(t.table, r) for t in session.config.critical_tables for r in t.roles]


def role_probe_login(session: ProbeSession) -> str | None:
    """The role-probe login's user name (from WESTEP_OPS_ROLE_PROBE_URL), if one is set."""
    url = session.env.role_probe_url
    if not url:
        return None
    try:
        user = conninfo_to_dict(url).get("user")
    except psycopg.ProgrammingError:
        return None
    return str(user) if user else None


def _privs_params(session: ProbeSession, pairs: list[tuple[str, str]]) -> tuple[Any, ...]:
    names = [split_name(p[0]) for p in pairs]
    return (
        [p[0] for p in pairs],
        [s for s, _ in names],
        [n for _, n in names],
        [p[1] for p in pairs],
        role_probe_login(session),
    )


def _catalog_verdict(row: dict[str, Any]) -> tuple[Status, str, str | None] | None:
    """What the catalog alone says about one pair; None when the role can read it."""
    t, r = row["t"], row["r"]
    if not row["table_exists"]:
        return Status.critical, f"table {t} does not exist", "table_missing"
    if not row["role_exists"]:
        return Status.critical, f"role {r} does not exist", "role_missing"
    if not row["can_select"]:
        return Status.critical, f"{r} has no SELECT on {t}", "grant_missing"
    if not row["schema_usage"]:
        schema = split_name(t)[0]
        return Status.critical, f"{r} has no USAGE on schema {schema}", "schema_usage_missing"
    return None


def _to_read(rows: list[dict[str, Any]], locks: dict[str, str]) -> list[tuple[str, str]]:
    """Pairs the role-probe login reads for real: granted, switchable, not behind a lock."""
    return [
        (r["t"], r["r"])
        for r in rows
        if _catalog_verdict(r) is None and r["switchable"] and r["t"] not in locks
    ]


def _select_note(row: dict[str, Any]) -> str:
    if row.get("table_select") is False:
        return "SELECT on some columns only (column grants)"
    return "SELECT granted"


def _rls_note(row: dict[str, Any]) -> str:
    if not row["rls"]:
        return "RLS off"
    if not row["rls_applies"]:
        return f"RLS on, not applied to {row['r']} (bypass or owner)"
    if row["read_policy"]:
        return f"RLS on, a SELECT policy applies to {row['r']}"
    return f"RLS on and no SELECT policy for {row['r']}: it reads 0 rows"


def _role_probe_state(session: ProbeSession) -> str | None:
    """None when the role-probe login can be used this sweep, else why not (catalog only)."""
    if not session.configured("roleprobe"):
        return "WESTEP_OPS_ROLE_PROBE_URL is not set"
    try:
        session.connection("roleprobe")
    except Unavailable as e:
        return f"the role-probe login is unavailable: {e}"
    return None


def check_tables(session: ProbeSession) -> CheckResult:
    """H3: every critical table is readable by every role that must read it.

    Judged from the catalogs (SELECT grant, schema USAGE, RLS and its policies for the
    role); with the optional role-probe login, also by a real ``SELECT ... LIMIT 1`` as
    the role. Each table/role pair gets its own verdict in ``values["items"]``; the
    category is the worst of them, so one bad pair never hides the others.
    """
    res = CheckResult(Category.tables)
    pairs = _pairs(session)
    must_see = {(t.table, r) for t in session.config.critical_tables for r in t.must_see_rows}
    with timed_result(res):
        if not pairs:
            return _not_configured(res, "no criticalTables in the config")
        try:
            rows = session.memo(
                "q:privs",
                lambda: session.run("direct", PRIVS_SQL, _privs_params(session, pairs), dicts=True),
            )
        except DB_FAILURES as e:
            res.problem(Status.error, f"could not check: {_reason(e)}")
            return res.finish("")
        try:
            locks = table_locks(session, list(dict.fromkeys(t for t, _ in pairs)))
        except DB_FAILURES as e:
            locks = {}
            res.values["locks_error"] = _reason(e)
        probe_off = _role_probe_state(session)
        probe = role_probe_login(session) or "the role-probe login"
        res.values["read_as_role"] = (
            f"catalog only ({probe_off})" if probe_off else f"SELECT as each role ({probe})"
        )
        read = {} if probe_off else _read_as_roles(session, _to_read(rows, locks))
        items: list[dict[str, Any]] = []
        locked: dict[str, list[str]] = {}  # one line per locked table, not per pair
        for row in rows:
            t, r = row["t"], row["r"]
            item: dict[str, Any] = {"table": t, "role": r, "rls": row["rls"]}
            verdict = _catalog_verdict(row)
            if verdict is None:
                item["rls_policy"] = bool(row["read_policy"]) if row["rls_applies"] else None
            no_rows = verdict is None and row["rls_applies"] and not row["read_policy"]
            if no_rows and (t, r) in must_see:
                verdict = (
                    Status.warning,
                    f"{r} reads no rows of {t}: RLS is on and no SELECT policy applies to {r}"
                    " (declared in mustSeeRows)",
                    "rls_no_policy",
                )
            elif verdict is None and (t, r) not in read and t in locks:  # a reader would wait
                verdict = (lock_status(session, t), f"{r} on {t}: {locks[t]}", "table_locked")
            elif verdict is None and (probe_off or not row["switchable"]):
                why = probe_off or f"{probe} is not a member of {r}"
                item.update(status=Status.ok, verified="catalog")
                item["detail"] = (
                    f"{_select_note(row)}, USAGE on the schema, {_rls_note(row)}"
                    f" (catalog only: {why})"
                )
            elif verdict is None:
                verdict = read.get((t, r)) or (Status.error, f"{r} on {t}: not read", None)
                if verdict[0] is Status.ok:
                    n = verdict[1]
                    item.update(status=Status.ok, verified="select", rows_visible=n)
                    item["detail"] = f"read as {r} ({_select_note(row)}), {_rls_note(row)}" + (
                        " (0 rows visible: empty, or RLS filters)" if n == 0 else ""
                    )
            if verdict is not None and verdict[0] is not Status.ok:
                status, text, finding = verdict
                item.update(status=status, detail=text)
                if finding:
                    item["finding"] = finding
                if finding == "table_locked":
                    locked.setdefault(t, []).append(r)
                else:
                    res.problem(status, text, finding)
            items.append(item)
        items += _rls_items(session, rows, res)
        all_locks: dict[str, str] = session.memo("locks", dict)
        for t, roles in locked.items():
            res.problem(
                lock_status(session, t),
                f"{t} ({', '.join(roles)}): {all_locks.get(t, 'blocked by a lock')}",
                "table_locked",
            )
        res.values.update(
            pairs=len(pairs),
            readable=sum(1 for i in items if "role" in i and i["status"] is Status.ok),
            rows_visible={
                f"{i['role']}@{i['table']}": i["rows_visible"] for i in items if "rows_visible" in i
            },
            no_rls_policy=[
                f"{i['role']}@{i['table']}" for i in items if i.get("rls_policy") is False
            ],
            items=items,
        )
        res.finish(
            f"{len(pairs)} table/role pairs readable" + (" (catalog only)" if probe_off else "")
        )
    return res


def _rls_items(
    session: ProbeSession, rows: list[dict[str, Any]], res: CheckResult
) -> list[dict[str, Any]]:
    """Row-level security as declared (``criticalTables[].rls``): off where it must be on
    exposes every row to the API roles; on where declared off makes clients see none."""
    declared = {t.table: t.rls for t in session.config.critical_tables if t.rls is not None}
    actual = {r["t"]: r["rls"] for r in rows if r["table_exists"]}
    items = []
    for table, want in declared.items():
        if table not in actual:
            continue  # a missing table is already reported
        item: dict[str, Any] = {"table": table, "kind": "rls", "rls": actual[table]}
        if actual[table] == want:
            item.update(status=Status.ok, detail=f"RLS {'on' if want else 'off'} as declared")
        elif want:
            text = f"row-level security is OFF on {table} (declared on)"
            item.update(status=Status.critical, detail=text)
            res.problem(Status.critical, text, "rls_disabled")
        else:
            text = f"row-level security is ON on {table} (declared off)"
            item.update(status=Status.warning, detail=text)
            res.problem(Status.warning, text, "rls_enabled")
        items.append(item)
    return items


def _read_as_roles(
    session: ProbeSession, pairs: list[tuple[str, str]]
) -> dict[tuple[str, str], tuple[Any, ...]]:
    """A real ``SELECT ... LIMIT 1`` as each role, on the role-probe login's connection:
    (ok, rows visible) or (status, text, finding).

    ``SET LOCAL ROLE`` (never plain ``SET ROLE``: it would leak to other clients under
    transaction pooling), all pairs in one read-only transaction and one round trip; if
    that fails, each pair runs alone (bounded in total), so one failure stays one item.
    0 visible rows is not an error: RLS filters silently.
    """
    if not pairs:
        return {}
    try:
        results = session.run(
            ROLE_PROBE, sql.SQL("; ").join(role_select_statements(session, pairs)), all_results=True
        )
        return {p: (Status.ok, rows[0][0]) for p, rows in zip(pairs, results, strict=True)}
    except DB_FAILURES as e:
        _rollback(session, ROLE_PROBE)
        if _is_lock_timeout(e):
            _refresh_locks(session, list(dict.fromkeys(t for t, _ in pairs)))
    out: dict[tuple[str, str], tuple[Any, ...]] = {}
    stop = time.perf_counter() + _budget(session) / 1000
    for table, role in pairs:
        locks: dict[str, str] = session.memo("locks", dict)
        if table in locks:
            out[(table, role)] = (
                lock_status(session, table),
                f"{role} on {table}: {locks[table]}",
                "table_locked",
            )
            continue
        if time.perf_counter() > stop:
            out[(table, role)] = (
                Status.error,
                f"{role} on {table}: not read (H3's {_budget(session):.0f} ms for re-reading "
                "pairs one by one was spent)",
                None,
            )
            continue
        try:
            rows = session.run(
                ROLE_PROBE,
                sql.SQL("; ").join(role_select_statements(session, [(table, role)])),
                all_results=True,
            )
            out[(table, role)] = (Status.ok, rows[0][0][0])
        except DB_FAILURES as e:
            _rollback(session, ROLE_PROBE)
            if _is_lock_timeout(e):
                blocker = _note_lock(session, table)
                out[(table, role)] = (
                    lock_status(session, table),
                    f"{role} on {table}: {blocker}",
                    "table_locked",
                )
            elif isinstance(e, psycopg.errors.InsufficientPrivilege):
                out[(table, role)] = (
                    Status.critical,
                    f"{role} cannot read {table}: {_reason(e)}",
                    "select_failed",
                )
            else:  # timeout, connection lost: the probe could not run, nothing is known
                out[(table, role)] = (
                    Status.error,
                    f"{role} on {table}: could not read: {_failure(session, e)}",
                    None,
                )
    return out


def role_select_statements(
    session: ProbeSession, pairs: list[tuple[str, str]]
) -> list[sql.Composable]:
    """One read-only transaction: per pair, SET LOCAL ROLE and a SELECT as that role."""
    stmts = _tx_head(session)
    for table, role in pairs:
        schema, name = split_name(table)
        # SET LOCAL ROLE may go straight from one API role to the next: membership is
        # checked against the session user (the role-probe login).
        stmts += [
            sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)),
            sql.SQL("SELECT count(*) FROM (SELECT 1 FROM {} LIMIT 1) AS s").format(
                sql.Identifier(schema, name)
            ),
        ]
    stmts.append(sql.SQL("ROLLBACK"))
    return stmts


def _rollback(session: ProbeSession, target: str = "direct") -> None:
    try:
        session.run(target, "ROLLBACK")
    except DB_FAILURES:
        pass


def _not_configured(res: CheckResult, why: str) -> CheckResult:
    res.status = Status.not_configured
    res.summary = f"not configured ({why})"
    return res


# -- H4 ---------------------------------------------------------------------------------
# What each rule needs, checked as the monitor before anything runs: a typo or a missing
# grant becomes that rule's own error instead of failing the whole batch.
RULE_CATALOG_SQL = """
SELECT x.s AS schema_name, x.t AS table_name, n.oid IS NOT NULL AS schema_exists, c.oid IS NOT NULL AS table_exists,
       CASE WHEN n.oid IS NOT NULL THEN has_schema_privilege(n.oid, 'USAGE') END AS usage,
       CASE WHEN c.oid IS NOT NULL THEN has_table_privilege(c.oid, 'SELECT') END AS can_select,
       ARRAY(SELECT a.attname::text FROM pg_attribute a
             WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped) AS columns,
       ARRAY(SELECT a.attname::text FROM pg_attribute a
             WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
               AND has_column_privilege(c.oid, a.attnum, 'SELECT')) AS readable_columns,
       session_user::text AS monitor
FROM unnest(%s::text[], %s::text[]) AS x(s, t)
LEFT JOIN pg_namespace n ON n.nspname = x.s
LEFT JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = x.t AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
"""


def integrity_rule_sql(rule: Any) -> sql.Composable:
    """A query counting the rows that break ``rule`` (the rows fix_data_integrity would move)."""
    return count_sql(rule)


def _rule_tables(rules: Iterable[IntegrityRule]) -> list[str]:
    out: list[str] = []
    for r in rules:
        out += [r.table] + ([r.references] if r.references else [])
    return list(dict.fromkeys(out))


def rule_problem(rule: IntegrityRule, catalog: dict[str, dict[str, Any]]) -> str | None:
    """Why ``rule`` cannot run as the monitor (exactly what is missing), or None."""
    needs = [(rule.table, [*rule.columns, *(rule.key or []), *(rule.order_by or [])])]
    if rule.references:
        needs.append((rule.references, rule.referenced_columns or ["id"]))
    for table, cols in needs:
        row = catalog[table]
        schema = split_name(table)[0]
        if not row["schema_exists"]:
            return f"schema {schema} does not exist (rule names {table})"
        if not row["usage"]:
            return (
                f"the monitoring login {row['monitor']} lacks USAGE on schema {schema}: "
                f"GRANT USAGE ON SCHEMA {schema} TO {row['monitor']}"
            )
        if not row["table_exists"]:
            return f"table {table} does not exist"
        missing = [c for c in dict.fromkeys(cols) if c not in row["columns"]]
        if missing:
            return f"column {', '.join(missing)} does not exist in {table}"
        # Column grants are enough, except for duplicates (they read ctid).
        unreadable = [c for c in dict.fromkeys(cols) if c not in row["readable_columns"]]
        if not row["can_select"] and (unreadable or rule.kind == "duplicates"):
            return (
                f"the monitoring login {row['monitor']} lacks SELECT on {table}: "
                f"GRANT SELECT ON {table} TO {row['monitor']}"
            )
    return None


def _rule_catalog(session: ProbeSession) -> dict[str, dict[str, Any]]:
    tables = _rule_tables(session.config.integrity_rules)
    rows = session.memo(
        "q:rulecat",
        lambda: session.run("direct", RULE_CATALOG_SQL, _names_params(tables), dicts=True),
    )
    return _by_table(rows)


def _by_table(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """RULE_CATALOG_SQL rows by the config's spelling of their table (public."step log")."""
    return {qualified_name(r["schema_name"], r["table_name"]): r for r in rows}


def _runnable(
    rules: Iterable[IntegrityRule], catalog: dict[str, dict[str, Any]], locks: dict[str, str]
) -> list[IntegrityRule]:
    return [
        r
        for r in rules
        if rule_problem(r, catalog) is None and not any(t in locks for t in _rule_tables([r]))
    ]


def check_integrity(session: ProbeSession) -> CheckResult:
    """H4: count the rows breaking each configured integrity rule.

    Each rule gets its own verdict in ``values["items"]``: a rule that cannot run (a typo,
    a missing grant, a locked table) is that rule's error or warning, and the others
    still count. Bounded by statement_timeout and lock_timeout.
    """
    cfg = session.config
    res = CheckResult(Category.integrity)
    rules = cfg.integrity_rules
    with timed_result(res):
        if not rules:
            return _not_configured(res, "no integrityRules in the config")
        try:
            catalog = _rule_catalog(session)
        except DB_FAILURES as e:
            res.problem(Status.error, f"integrity rules could not run: {_reason(e)}")
            return res.finish("")
        try:
            locks = table_locks(session, _rule_tables(rules))
        except DB_FAILURES as e:
            locks = {}
            res.values["locks_error"] = _reason(e)
        counts = _count_rules(session, _runnable(rules, catalog, locks))
        items: list[dict[str, Any]] = []
        for r in rules:
            item: dict[str, Any] = {"rule": r.name, "kind": r.kind, "table": r.table}
            problem = rule_problem(r, catalog)
            locked = next((t for t in _rule_tables([r]) if t in locks), None)
            outcome = counts.get(r.name)
            if problem is not None:
                verdict: tuple[Status, str, str | None] = (
                    Status.error,
                    f"{r.name}: cannot run: {problem}",
                    MONITOR_MISCONFIGURED,
                )
            elif isinstance(outcome, int):
                item["count"] = outcome
                verdict = (
                    (
                        Status(r.severity),
                        f"{r.name}: {outcome} rows ({r.kind} in {r.table})",
                        f"integrity:{r.name}",
                    )
                    if outcome
                    else (Status.ok, "no violations", None)
                )
            elif outcome is None and locked is not None:  # left out: locked before the count
                verdict = (
                    lock_status(session, locked),
                    f"{r.name}: {locked}: {locks[locked]}",
                    "table_locked",
                )
            else:
                verdict = outcome or (Status.error, f"{r.name}: not run", None)
            status, text, finding = verdict
            item.update(status=status, detail=text)
            if status is not Status.ok:
                res.problem(status, text, finding)
            items.append(item)
        res.values["violations"] = {i["rule"]: i["count"] for i in items if "count" in i}
        res.values["items"] = items
        res.finish(f"{len(rules)} rules, no violations")
    return res


def _count_rules(
    session: ProbeSession, rules: list[IntegrityRule]
) -> dict[str, int | tuple[Status, str, str | None]]:
    """Violation counts per rule: all rules in one SELECT; if that fails, one by one."""
    if not rules:
        return {}
    prefetched = session.memo("q:violations", lambda: None)
    if prefetched is not None and all(r.name in prefetched for r in rules):
        return {r.name: prefetched[r.name] for r in rules}
    try:
        (row,) = session.run(
            "direct", sql.SQL("; ").join(integrity_statements(session, rules)), all_results=True
        )[0]
        return {r.name: int(n) for r, n in zip(rules, row, strict=True)}
    except DB_FAILURES as e:
        _rollback(session)
        if _is_lock_timeout(e):
            _refresh_locks(session, _rule_tables(rules))
    out: dict[str, int | tuple[Status, str, str | None]] = {}
    stop = time.perf_counter() + _budget(session) / 1000
    for r in rules:
        locks: dict[str, str] = session.memo("locks", dict)
        locked = next((t for t in _rule_tables([r]) if t in locks), None)
        if locked is not None:
            out[r.name] = (
                lock_status(session, locked),
                f"{r.name}: {locked}: {locks[locked]}",
                "table_locked",
            )
            continue
        if time.perf_counter() > stop:
            out[r.name] = (
                Status.error,
                f"{r.name}: not run (H4's {_budget(session):.0f} ms for re-running rules one "
                "by one was spent)",
                None,
            )
            continue
        try:
            (row,) = session.run(
                "direct", sql.SQL("; ").join(integrity_statements(session, [r])), all_results=True
            )[0]
            out[r.name] = int(row[0])
        except DB_FAILURES as e:
            _rollback(session)
            if _is_lock_timeout(e):
                table = _lock_table_of(session, r)
                blocker = _note_lock(session, table)
                out[r.name] = (
                    lock_status(session, table),
                    f"{r.name}: {table}: {blocker}",
                    "table_locked",
                )
            else:
                out[r.name] = (
                    Status.error,
                    f"{r.name}: could not run: {_failure(session, e)}",
                    None,
                )
    return out


def _lock_table_of(session: ProbeSession, rule: IntegrityRule) -> str:
    """Which of the rule's tables is locked now (the first one if none is seen any more)."""
    tables = _rule_tables([rule])
    try:
        rows = session.run(
            "direct", LOCKS_SQL, _names_params(tables), dicts=True, deadline_ms=_budget(session)
        )
    except DB_FAILURES:
        rows = []
    if rows:
        record_locks(session, [], rows)
        return _lock_key(rows[0])
    return tables[0]


def integrity_statements(
    session: ProbeSession, rules: list[IntegrityRule] | None = None
) -> list[sql.Composable]:
    """One read-only transaction counting the given rules' violations in a single SELECT."""
    rules = session.config.integrity_rules if rules is None else rules
    select = sql.SQL("SELECT ") + sql.SQL(", ").join(
        sql.SQL("({})").format(integrity_rule_sql(r)) for r in rules
    )
    return [*_tx_head(session), select, sql.SQL("ROLLBACK")]


# -- H5 ---------------------------------------------------------------------------------
REALTIME_SQL = """
SELECT current_setting('wal_level') AS wal_level,
       EXISTS (SELECT 1 FROM pg_publication WHERE pubname = %(pub)s) AS publication,
       ARRAY(SELECT schemaname || '.' || tablename FROM pg_publication_tables
             WHERE pubname = %(pub)s ORDER BY 1) AS tables,
       coalesce((SELECT json_agg(json_build_object(
                    'name', slot_name, 'type', slot_type, 'active', active,
                    'lag_bytes', CASE WHEN pg_is_in_recovery() THEN NULL
                                 ELSE pg_wal_lsn_diff(pg_current_wal_lsn(),
                                      coalesce(confirmed_flush_lsn, restart_lsn)) END))
                 FROM pg_replication_slots), '[]'::json) AS slots
"""


def check_realtime(session: ProbeSession, *, notify: bool = True) -> CheckResult:
    """H5: logical replication set-up, the publication's tables, slots, LISTEN/NOTIFY.

    ``notify=False`` leaves out the LISTEN/NOTIFY round trip (the heavy part, which the
    monitor runs in full sweeps only): ``values["notify"]`` then says it was not run, and
    the verdict is about the catalog alone.
    """
    cfg = session.config
    rt = cfg.realtime
    th = cfg.monitoring.thresholds
    res = CheckResult(
        Category.realtime, thresholds={"replicationLagBytes": th.replication_lag_bytes}
    )
    with timed_result(res):
        try:
            (row,) = session.memo(
                "q:realtime",
                lambda: session.run("direct", REALTIME_SQL, {"pub": rt.publication}, dicts=True),
            )
        except DB_FAILURES as e:
            res.problem(Status.error, f"could not check: {_reason(e)}")
            return res.finish("")
        if not _realtime_applies(rt, [row]):
            return _not_configured(
                res,
                f"no realtime section in the config and no publication {rt.publication} "
                "on the target",
            )
        res.values.update(
            wal_level=row["wal_level"],
            publication=row["publication"],
            publication_tables=row["tables"],
            slots=row["slots"],
        )
        if row["wal_level"] != "logical":
            res.problem(
                Status.critical,
                f"wal_level is {row['wal_level']}, realtime needs logical",
                "wal_level",
            )
        if not row["publication"]:
            res.problem(
                Status.critical,
                f"publication {rt.publication} does not exist",
                "publication_missing",
            )
        else:
            missing = sorted(set(rt.tables) - set(row["tables"]))
            if missing:
                res.problem(
                    Status.warning,
                    f"not in {rt.publication}: {', '.join(missing)}",
                    "publication_tables_missing",
                )
        for slot in row["slots"]:
            lag = slot.get("lag_bytes") or 0
            if lag >= th.replication_lag_bytes:
                state = "active" if slot["active"] else "inactive"
                res.problem(
                    Status.warning,
                    f"slot {slot['name']} ({state}) is {_bytes(lag)} behind",
                    "replication_lag",
                )
        if notify:
            _notify_round_trip(session, res)
            said = f"NOTIFY {res.values.get('notify_ms', '-')} ms"
        else:
            res.values["notify"] = NOTIFY_NOT_RUN
            said = "NOTIFY not run this sweep"
        res.finish(
            f"{rt.publication}: {len(row['tables'])} tables, {len(row['slots'])} slots, {said}"
        )
    return res


NOTIFY_NOT_RUN = "not run this sweep (the LISTEN/NOTIFY round trip runs in full sweeps)"


def _realtime_applies(rt: Realtime, rows: list[dict[str, Any]]) -> bool:
    """H5 applies when the config asks for realtime, or the default publication exists."""
    return rt.required or bool(rows and rows[0]["publication"])


def _notify_round_trip(session: ProbeSession, res: CheckResult) -> None:
    """LISTEN/NOTIFY on the direct connection (LISTEN does not survive transaction pooling)."""
    channel = session.config.realtime.notify_channel
    wait_s = session.config.monitoring.timeouts.statement / 1000
    sent = session.memo("q:notify", lambda: None)  # (token, t0) when the sweep batched it
    try:
        if sent is None:
            token, t0 = secrets.token_hex(8), time.perf_counter()
            session.run("direct", notify_statement(channel, token))
        else:
            token, t0 = sent
        conn = session.connection("direct")  # notifications arrive on this connection
        got = False
        for n in conn.notifies(timeout=wait_s):
            if n.channel == channel and n.payload == token:
                got = True
                break
    except DB_FAILURES as e:
        res.values["notify"] = "could not run"
        res.problem(Status.error, f"LISTEN/NOTIFY could not run: {_reason(e)}")
        return
    if not got:
        res.values["notify"] = "lost"
        res.problem(Status.critical, f"NOTIFY not delivered within {wait_s:.0f} s", "notify_lost")
    else:
        res.values.update(notify="delivered", notify_ms=_ms(t0))


def notify_statement(channel: str, token: str) -> sql.Composable:
    return sql.SQL("LISTEN {ch}; NOTIFY {ch}, {tok}").format(
        ch=sql.Identifier(channel), tok=sql.Literal(token)
    )


# -- H6 ---------------------------------------------------------------------------------
# Tables are matched in pg_namespace/pg_class (to_regclass raises without USAGE on auth).
AUTH_SQL = """
SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = %(schema)s) AS schema_exists,
       ARRAY(SELECT x.s || '.' || x.t FROM unnest(%(tschemas)s::text[], %(tnames)s::text[]) AS x(s, t)
             WHERE NOT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                               WHERE n.nspname = x.s AND c.relname = x.t)) AS missing_tables,
       ARRAY(SELECT r FROM unnest(%(roles)s::text[]) AS r
             WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r)) AS missing_roles,
       ARRAY(SELECT r FROM unnest(%(api)s::text[]) AS r
             WHERE EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r)
               AND EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = %(schema)s)
               AND NOT has_schema_privilege(r, %(schema)s, 'USAGE')) AS no_usage,
       ARRAY(SELECT r FROM unnest(%(api)s::text[]) AS r
             WHERE EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r)
               AND EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticator')
               AND NOT pg_has_role('authenticator', r, 'MEMBER')) AS not_switchable
"""


def _auth_params(a: Auth) -> dict[str, Any]:
    schemas, names = _names_params(a.tables)
    return {
        "schema": a.schema_name,
        "tschemas": schemas,
        "tnames": names,
        "roles": a.roles,
        "api": a.api_roles,
    }


# column of AUTH_SQL -> what its non-empty list means, and the finding it raises
AUTH_PROBLEMS = (
    ("missing_tables", "missing tables", "auth_table_missing"),
    ("missing_roles", "missing roles", "auth_role_missing"),
    ("no_usage", "no USAGE on {schema}", "auth_usage_missing"),
    ("not_switchable", "authenticator cannot switch to", "auth_membership_missing"),
)


def auth_endpoint(session: ProbeSession) -> dict[str, Any] | str:
    """The auth service's health endpoint (the HTTP part of H6)."""
    if not session.env.supabase_url:
        return "not checked (NEXT_PUBLIC_SUPABASE_URL not set)"
    path = session.config.auth.health_path
    return _http_probe(session, "auth_health", _url(session, "supabase", path), 200, None)


def check_auth(session: ProbeSession, endpoint: dict[str, Any] | str | None = None) -> CheckResult:
    """H6: auth schema, tables and roles in the database; the auth service's health endpoint.

    ``endpoint`` is the endpoint's result when the sweep already probed it in parallel.
    """
    a = session.config.auth
    res = CheckResult(Category.auth)
    with timed_result(res):
        params = _auth_params(a)
        ep = endpoint if endpoint is not None else auth_endpoint(session)
        try:
            (row,) = session.memo(
                "q:auth", lambda: session.run("direct", AUTH_SQL, params, dicts=True)
            )
            if not row["schema_exists"] and not a.required:
                res.values["schema_exists"] = False
                if not (isinstance(ep, dict) and not ep["ok"]):
                    return _not_configured(
                        res,
                        f"no auth section in the config and no schema {a.schema_name} on the "
                        "target",
                    )
                row = {}  # only the endpoint (it is configured and failing) is judged below
            res.values.update(row)
            if row and not row["schema_exists"]:
                res.problem(
                    Status.critical, f"schema {a.schema_name} does not exist", "auth_schema_missing"
                )
            for key, text, finding in AUTH_PROBLEMS if row else ():
                if row[key]:
                    what = text.format(schema=a.schema_name)
                    res.problem(Status.critical, f"{what}: {', '.join(row[key])}", finding)
        except DB_FAILURES as e:
            res.problem(Status.error, f"could not check the auth schema: {_reason(e)}")
        res.values["health_endpoint"] = ep
        if isinstance(ep, dict) and not ep["ok"]:
            res.problem(
                Status.critical, f"auth health endpoint: {ep['error']}", "auth_endpoint_down"
            )
        ms = ep["ms"] if isinstance(ep, dict) else "-"
        res.finish(
            f"schema, {len(a.tables)} tables and {len(a.roles)} roles present; endpoint {ms} ms"
        )
    return res


# -- H7 ---------------------------------------------------------------------------------
def _url(session: ProbeSession, base: str, path: str) -> str | None:
    root = session.env.api_base if base == "app" else session.env.supabase_url
    return (root.rstrip("/") + path) if root else None


def _http_probe(
    session: ProbeSession,
    name: str,
    url: str | None,
    expect: int,
    budget: float | None,
    method: str = "GET",
    base: str = "supabase",
    auth: str | None = None,
) -> dict[str, Any]:
    """One HTTP request, judged by status and latency.

    ``auth`` names the Supabase key to send ("anon", "service_role" or "none"); None
    (the auth health endpoint) sends the anon key, else the service key, to Supabase.
    """
    out: dict[str, Any] = {"name": name, "ok": False, "status": None, "ms": None}
    if not url:
        out["error"] = "not configured (no base URL)"
        out["unconfigured"] = True
        return out
    key, missing = _api_key(session, base, auth)
    if missing:
        out["error"] = f"not configured ({missing} is not set)"
        out["unconfigured"] = True
        return out
    # As supabase-js sends it: the gateway wants the apikey, PostgREST reads the role
    # from the bearer JWT.
    headers = {"apikey": key, "Authorization": f"Bearer {key}"} if key else {}
    out["auth"] = "none" if not key else "anon" if key == session.env.anon_key else "service_role"
    t0 = time.perf_counter()
    try:
        r = session.http().request(method, url, headers=headers)
    except httpx.TimeoutException:
        out.update(ms=_ms(t0), error=f"timed out after {session.timeouts.http} ms")
        return out
    except httpx.HTTPError as e:
        text = str(e).lower()
        reason = "connection refused" if "refused" in text else type(e).__name__
        out.update(ms=_ms(t0), error=reason)
        return out
    out.update(status=r.status_code, ms=_ms(t0))
    if r.status_code != expect:
        out["error"] = f"HTTP {r.status_code} (expected {expect})" + _message(r)
        if key and r.status_code == 401 and _key_rejected(r):
            # The gateway refused the key itself: the monitor's key is wrong, not the API.
            which = (
                "SUPABASE_ANON_KEY" if key == session.env.anon_key else "SUPABASE_SERVICE_ROLE_KEY"
            )
            out["refused"] = f"{which} is not accepted (HTTP 401 Invalid API key)"
            out["unconfigured"] = True  # not a measurement of the API: P2 leaves it out
        return out
    out["ok"] = True
    if budget is not None and out["ms"] > budget:
        out["slow"] = True
    return out


def _api_key(session: ProbeSession, base: str, auth: str | None) -> tuple[str | None, str | None]:
    """(the key to send, or None; the variable that must be set but is not, or None)."""
    env = session.env
    if auth is None:
        return (env.anon_key or env.service_role_key if base == "supabase" else None), None
    if auth == "anon":
        return env.anon_key, (None if env.anon_key else "SUPABASE_ANON_KEY")
    if auth == "service_role":
        return env.service_role_key, (None if env.service_role_key else "SUPABASE_SERVICE_ROLE_KEY")
    return None, None


def _message(r: httpx.Response) -> str:
    """': <message>' from a JSON error body (PostgREST, GoTrue), so the line says why."""
    try:
        body = r.json()
    except ValueError:
        return ""
    message = body.get("message") if isinstance(body, dict) else None
    return f": {redact(' '.join(str(message).split())[:200])}" if message else ""


def _key_rejected(r: httpx.Response) -> bool:
    """Supabase's gateway answers a wrong key with 401 "Invalid API key" (PostgREST's own
    401 for a missing grant carries an SQLSTATE code instead)."""
    try:
        body = r.json()
    except ValueError:
        return False
    message = str(body.get("message", "")).lower() if isinstance(body, dict) else ""
    return "invalid api key" in message or "no api key" in message


def check_api(session: ProbeSession) -> CheckResult:
    """H7: each configured HTTP endpoint answers with the expected status within budget."""
    cfg = session.config
    res = CheckResult(
        Category.api, thresholds={"responseTime_ms": cfg.monitoring.thresholds.response_time}
    )
    with timed_result(res):
        if not cfg.endpoints:
            return _not_configured(res, "no endpoints in the config")
        results = [_endpoint(session, ep) for ep in cfg.endpoints]
        res.values["endpoints"] = results
        for r, ep in zip(results, cfg.endpoints, strict=True):
            if r.get("refused"):
                res.problem(
                    Status.error,
                    f"monitoring is misconfigured: {ep.name}: {r['refused']}",
                    MONITOR_MISCONFIGURED,
                )
            elif r.get("unconfigured"):
                res.problem(Status.error, f"{ep.name}: {r['error']}")
            elif not r["ok"]:
                res.problem(Status.critical, f"{ep.name}: {r['error']}", "endpoint_down")
            elif r.get("slow"):
                budget = ep.latency_budget_ms or cfg.monitoring.thresholds.response_time
                res.problem(
                    Status.warning,
                    f"{ep.name}: {r['ms']:.0f} ms > {budget:.0f} ms",
                    "endpoint_slow",
                )
        res.finish(
            ", ".join(
                f"{r['name']} {r['status']} {r['ms']} ms"
                + (f" as {r['auth']}" if r.get("auth", "none") != "none" else "")
                for r in results
            )
        )
    return res


def _endpoint(session: ProbeSession, ep: Endpoint) -> dict[str, Any]:
    budget = ep.latency_budget_ms or session.config.monitoring.thresholds.response_time
    # Probe as the app's clients do: Supabase endpoints with the anon key (grants and RLS
    # apply), the service role only where configured; the app gets no Supabase key.
    auth = ep.auth or ("anon" if ep.base == "supabase" else "none")
    return _http_probe(
        session,
        ep.name,
        _url(session, ep.base, ep.path),
        ep.expect_status,
        budget,
        ep.method,
        ep.base,
        auth,
    )


# -- the sweep --------------------------------------------------------------------------
PROBES: dict[Category, Callable[[ProbeSession], CheckResult]] = {
    Category.connection: check_connection,
    Category.pool: check_pool,
    Category.tables: check_tables,
    Category.integrity: check_integrity,
    Category.realtime: check_realtime,
    Category.auth: check_auth,
    Category.api: check_api,
}


def run_health_check(
    session: ProbeSession,
    categories: Iterable[Category] | None = None,
    *,
    heavy: Iterable[Category] | None = None,
) -> list[CheckResult]:
    """Run the requested categories (all by default); results in H1..H7 order.

    ``heavy`` names the categories whose heavy part runs too (all of them by default):
    today that is H5's LISTEN/NOTIFY round trip. H4 is heavy as a whole (integrity
    counts on big tables): a caller that wants a light sweep leaves it out of
    ``categories``, as the monitor's cheap sweep does.

    Three lanes overlap, each on its own connection: the HTTP probes (H7 and H6's
    endpoint), H1's pooled check (started once the admin console has said whether the
    pool is paused), and the direct-connection probes in this thread.
    """
    wanted = set(categories or PROBES)
    heavy_parts = wanted if heavy is None else wanted & set(heavy)
    results: dict[Category, CheckResult] = {}
    with ThreadPoolExecutor(max_workers=3, thread_name_prefix="westep-probe") as lanes:
        api = lanes.submit(check_api, session) if Category.api in wanted else None
        auth_ep = lanes.submit(auth_endpoint, session) if Category.auth in wanted else None
        prefetch(session, wanted, heavy_parts)
        if Category.pool in wanted:
            results[Category.pool] = _safe(check_pool, session, Category.pool)
        if Category.connection in wanted:
            pool_database(session)  # memoised: the pooled lane reads it without a round trip
            pooled = lanes.submit(connection_outcome, session, "pooled")
            results[Category.connection] = _safe(
                lambda s: check_connection(s, pooled.result()), session, Category.connection
            )
        for cat in (Category.tables, Category.integrity):
            if cat in wanted:
                results[cat] = _safe(PROBES[cat], session, cat)
        if Category.realtime in wanted:
            notify = Category.realtime in heavy_parts
            results[Category.realtime] = _safe(
                lambda s: check_realtime(s, notify=notify), session, Category.realtime
            )
        if auth_ep is not None:
            results[Category.auth] = _safe(
                lambda s: check_auth(s, auth_ep.result()), session, Category.auth
            )
        if api is not None:
            results[Category.api] = _safe(lambda _s: api.result(), session, Category.api)
    ordered = [results[c] for c in PROBES if c in results]
    attribute_causes(ordered)
    return ordered


def prefetch(
    session: ProbeSession, wanted: set[Category], heavy: set[Category] | None = None
) -> None:
    """Fetch what the direct-connection probes need in two round trips instead of nine.

    Round trip 1 carries the catalog queries of H2 (backends), H3 (privileges), H4 (what
    each rule needs), the ACCESS EXCLUSIVE locks on H3/H4's tables, H5 and H6, bound
    client-side by psycopg; round trip 2 the counts of H4 and the NOTIFY of H5 (when H5
    is in ``heavy``, all of ``wanted`` by default), leaving out the items round trip 1
    already judged (missing, not granted, locked), so a predictable failure never fails
    the batch; a sweep without H4 and without H5's NOTIFY has no round trip 2. (H3's
    per-role SELECTs, when the optional role-probe login is set, take one round trip of
    their own on its connection.) On a hosted database 20-50 ms away, round trips are
    the sweep time. If a batch still fails, nothing is remembered and each probe re-runs
    its own items one by one (bounded), which also finds out exactly which item failed.
    """
    if not session.configured("direct"):
        return
    t_start = time.perf_counter()
    try:
        _prefetch(session, wanted, wanted if heavy is None else heavy)
    except Exception as e:  # noqa: BLE001 - a shortcut failing must not fail the sweep
        # Each probe then runs its own items (bounded) and reports what is wrong.
        session.forget(*PREFETCHED)
        session.remember("prefetch_error", f"{type(e).__name__}: {describe_error(e)}")
    finally:
        session.stats["prefetch_ms"] = _ms(t_start)


# What the prefetch leaves in the sweep's memo (forgotten when it fails half-way).
PREFETCHED = (
    "q:backends",
    "q:privs",
    "q:rulecat",
    "q:locks",
    "q:realtime",
    "q:auth",
    "q:violations",
    "q:notify",
    "locks",
    "locks_checked",
    "lock_ages",
)


def _prefetch(session: ProbeSession, wanted: set[Category], heavy: set[Category]) -> None:
    cfg = session.config
    pairs = _pairs(session) if Category.tables in wanted else []
    rules = list(cfg.integrity_rules) if Category.integrity in wanted else []
    lock_tables = _locked_tables_wanted(session, wanted)
    parts: list[tuple[str, Any, Any]] = []
    if Category.pool in wanted:
        parts.append(("q:backends", BACKENDS_SQL, None))
    if pairs:
        parts.append(("q:privs", PRIVS_SQL, _privs_params(session, pairs)))
    if rules:
        parts.append(("q:rulecat", RULE_CATALOG_SQL, _names_params(_rule_tables(rules))))
    if lock_tables:
        parts.append(("q:locks", LOCKS_SQL, _names_params(lock_tables)))
    if Category.realtime in wanted:
        parts.append(("q:realtime", REALTIME_SQL, {"pub": cfg.realtime.publication}))
    if Category.auth in wanted:
        parts.append(("q:auth", AUTH_SQL, _auth_params(cfg.auth)))
    try:
        if parts:
            text = ";\n".join(q if p is None else session.bind("direct", q, p) for _, q, p in parts)
            for (key, _, _), rows in zip(
                parts, session.run("direct", text, all_results=True, dicts=True), strict=True
            ):
                session.remember(key, rows)
    except DB_FAILURES:
        session.forget(*(k for k, _, _ in parts))
        return
    if lock_tables:
        record_locks(session, lock_tables, session.memo("q:locks", list))
    locks: dict[str, str] = session.memo("locks", dict)
    runnable = _runnable(rules, _by_table(session.memo("q:rulecat", list)), locks) if rules else []
    stmts: list[sql.Composable] = []
    if runnable:
        stmts += integrity_statements(session, runnable)
    token = secrets.token_hex(8)
    notify = Category.realtime in (wanted & heavy) and _realtime_applies(
        cfg.realtime, session.memo("q:realtime", list)
    )
    if notify:
        stmts.append(notify_statement(cfg.realtime.notify_channel, token))
    if not stmts:
        return
    t0 = time.perf_counter()
    try:
        sets = session.run("direct", sql.SQL("; ").join(stmts), all_results=True)
    except DB_FAILURES as e:
        _rollback(session)  # each probe re-runs its own items, one by one where needed
        if _is_lock_timeout(e):
            _refresh_locks(session, lock_tables)
        return
    if runnable:
        (row,) = sets[0]
        session.remember(
            "q:violations", {r.name: int(n) for r, n in zip(runnable, row, strict=True)}
        )
    if notify:
        session.remember("q:notify", (token, t0))


def _safe(
    fn: Callable[[ProbeSession], CheckResult], session: ProbeSession, cat: Category
) -> CheckResult:
    try:
        return fn(session)
    except Exception as e:  # noqa: BLE001 - one broken probe must not take the sweep down
        return CheckResult(
            cat, Status.error, f"probe failed: {type(e).__name__}: {describe_error(e)}"
        )


def _pool_from_api_latency(pool: CheckResult, api: CheckResult) -> None:
    """Without an admin console, an API timing out (or 502-504) while every server of the
    app's pool is busy is the pool failing its clients, even before a server has been pinned for
    ``poolMaxWaitSeconds``. (The admin console sees the queue itself.)"""
    if pool.status is not Status.ok or pool.source == "pgbouncer-admin":
        return
    full = [p for p in pool.values.get("pool_servers", []) if p["size"] and p["busy"] >= p["size"]]
    timed_out = [
        e["name"]
        for e in api.values.get("endpoints", [])
        if not e.get("ok")
        and (e.get("status") in (502, 503, 504) or "timed out" in str(e.get("error", "")))
    ]
    if not full or not timed_out:
        return
    p = full[0]
    pool.problem(
        Status.critical,
        f"app pool {p['user']} full ({p['busy']}/{p['size']} servers busy) while "
        f"{', '.join(timed_out)} timed out or unavailable ({pool.source})",
        "pool_exhausted",
    )
    pool.finish("")


def attribute_causes(results: list[CheckResult]) -> None:
    """Mark failures explained by another failing category, so alerts point at the cause.

    - database unreachable directly -> everything else that failed is a symptom of it;
      refusing the monitor's direct login -> every other check that could not run;
    - pgbouncer down, paused or exhausted -> pooled-connection and API failures follow.
    """
    by = {r.category: r for r in results}
    conn = by.get(Category.connection)
    pool = by.get(Category.pool)
    if pool is not None and by.get(Category.api) is not None:
        _pool_from_api_latency(pool, by[Category.api])
    db_down = conn is not None and "direct_connection_failed" in conn.findings
    # A direct login refused to the monitor blinds the direct-connection probes: their
    # errors are symptoms of H1 (what they measure independently, e.g. HTTP, stands).
    monitor_blind = (
        conn is not None
        and MONITOR_MISCONFIGURED in conn.findings
        and "direct_error" in conn.values
    )
    pool_broken = (
        pool is not None
        and pool.status is Status.critical
        and any(
            f in pool.findings
            for f in (
                "pgbouncer_down",
                "pool_paused",
                "pool_exhausted",
                "pool_wait",
                "pool_disabled",
            )
        )
    )
    for r in results:
        if r.status is Status.ok:
            continue
        if db_down and r.category is not Category.connection:
            r.suspected_cause = Category.connection
        elif monitor_blind and r.status is Status.error and r.category is not Category.connection:
            r.suspected_cause = Category.connection
        elif pool_broken and r.category in (Category.connection, Category.api):
            if r.category is Category.connection and "direct_connection_failed" in r.findings:
                continue
            r.suspected_cause = Category.pool
