"""H2: is the app's pool serving? Busy is not exhausted.

Sources: pgbouncer's admin console, else the pooler's metrics endpoint, and always the
pooler's server sessions in ``pg_stat_activity`` (one catalog query, declared below and
run in the sweep's first round trip).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from westep_ops.config import Category
from westep_ops.probes.base import MONITOR_MISCONFIGURED, CheckResult, Status, timed_result
from westep_ops.probes.health.batch import Answers
from westep_ops.probes.health.common import DB_FAILURES, reason
from westep_ops.probes.health.pgbouncer import admin_show, monitor_pool
from westep_ops.probes.health.query import Query
from westep_ops.probes.metrics import PoolMetrics, fetch_pool_metrics
from westep_ops.probes.session import ProbeSession, Unavailable

POOL_UNWATCHED = "pool_unwatched"  # observe-only: no repair, no incident (see recovery)


@dataclass
class Needs:
    """H2's query this sweep: PostgreSQL's side of the pool (round trip 1)."""

    backends: Query

    def first(self) -> list[Query]:
        return [self.backends]

    def second(self, answers: Answers) -> list[Query]:
        return []


def needs(session: ProbeSession, heavy: bool = True) -> Needs:
    return Needs(Query(Category.pool, "backends", BACKENDS_SQL))


def check_pool(session: ProbeSession, need: Needs, answers: Answers) -> CheckResult:
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
        row = _backends(session, res, answers, need.backends)
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
        # not "reason": that local name shadowed the helper, and the DB_FAILURES branch
        # below then raised UnboundLocalError instead of reporting (found by mypy)
        why = str(e)
        if e.refusal:
            res.problem(
                Status.error,
                f"monitoring is misconfigured: pgbouncer admin console: {e.refusal}",
                MONITOR_MISCONFIGURED,
            )
        elif "authentication failed" in why or "not configured" in why:
            res.problem(Status.error, f"pgbouncer admin console: {why}")
        else:
            res.problem(Status.critical, f"pgbouncer not answering: {why}", "pgbouncer_down")
        return None
    except DB_FAILURES as e:
        res.problem(Status.error, f"pgbouncer admin console: {reason(e)}")
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


def _backends(
    session: ProbeSession, res: CheckResult, answers: Answers, query: Query
) -> dict[str, Any] | None:
    """PostgreSQL's side: backends vs max_connections, idle in transaction; the row."""
    th = session.config.monitoring.thresholds
    try:
        (row,) = answers.rows(query)
    except DB_FAILURES as e:
        res.values["backends_error"] = reason(e)
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
