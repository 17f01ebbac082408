"""H1: can a client connect and run ``SELECT 1``, directly and through pgbouncer?

H1 declares no batched query: its measurement is the connection and the round trip
themselves, on each target's own connection (the pooled one in a lane of its own).
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import psycopg
from psycopg.conninfo import conninfo_to_dict

from westep_ops.config import Category
from westep_ops.probes.base import MONITOR_MISCONFIGURED, CheckResult, Status, timed_result
from westep_ops.probes.health.common import DB_FAILURES, ms_since, reason, refusal_of
from westep_ops.probes.health.pgbouncer import monitor_pool, pool_database
from westep_ops.probes.session import ProbeSession

PAUSED_HTTP_STATUS = 540  # what the Supabase platform answers for a paused project

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
        values[f"{target}_error"] = reason(e)
        refused = refusal_of(e)
        if refused:
            # The server answered and refused the monitor: the monitor is misconfigured,
            # the target is up. An error (monitor degraded), never an outage.
            return values, [(Status.error, f"{target}: {refused}", MONITOR_MISCONFIGURED)]
        return values, [(Status.critical, f"{target}: {reason(e)}", f"{target}_connection_failed")]
    total = session.connect_ms.get(target, 0.0) + ms_since(t0)
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
            paused = supabase_paused(session)
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


def supabase_paused(session: ProbeSession) -> str | None:
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
