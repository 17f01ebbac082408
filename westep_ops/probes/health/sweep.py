"""The sweep: the wanted checks' declared queries in as few round trips as possible,
three lanes, and the causes behind the failures.

Round trip 1 carries the catalog queries of H2 (backends), H3 (privileges), H4 (what
each rule needs), the ACCESS EXCLUSIVE locks on H3/H4's tables, H5 and H6; round trip
2 the counts of H4 and the NOTIFY of H5 (in heavy sweeps), declared given round trip
1's answers, so the items it already judged (missing, not granted, locked) are left out
and a predictable failure never fails the batch. A sweep without H4 and without H5's
NOTIFY has no round trip 2. (H3's reads as each role, with the optional role-probe
login, take one round trip of their own on that login's connection.) A failing batch
runs the same queries one by one (:mod:`.batch`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from westep_ops.config import Category
from westep_ops.db import describe_error
from westep_ops.probes.base import MONITOR_MISCONFIGURED, CheckResult, Status
from westep_ops.probes.health import (
    h1_connection,
    h2_pool,
    h3_tables,
    h4_integrity,
    h5_realtime,
    h6_auth,
    h7_api,
)
from westep_ops.probes.health.batch import Answers, run_queries
from westep_ops.probes.health.common import ms_since
from westep_ops.probes.health.locks import LockLedger, lock_query
from westep_ops.probes.health.pgbouncer import pool_database
from westep_ops.probes.health.query import Needs
from westep_ops.probes.session import ProbeSession

_N = TypeVar("_N")

ORDER = list(Category)  # H1..H7


@dataclass
class Declared:
    """What the wanted direct-connection checks declared this sweep (None: not wanted)."""

    pool: h2_pool.Needs | None = None
    tables: h3_tables.Needs | None = None
    integrity: h4_integrity.Needs | None = None
    realtime: h5_realtime.Needs | None = None
    auth: h6_auth.Needs | None = None

    def all(self) -> list[Needs]:
        return [
            n
            for n in (self.pool, self.tables, self.integrity, self.realtime, self.auth)
            if n is not None
        ]


@dataclass
class Collected:
    """What the checks of one sweep declared, and what came back."""

    declared: Declared
    answers: Answers


def declare(session: ProbeSession, wanted: set[Category], heavy: set[Category]) -> Declared:
    """Each wanted check's declared queries (``heavy``: the categories whose heavy part runs)."""

    def want(cat: Category, needs: Callable[[ProbeSession, bool], _N]) -> _N | None:
        return needs(session, cat in heavy) if cat in wanted else None

    return Declared(
        pool=want(Category.pool, h2_pool.needs),
        tables=want(Category.tables, h3_tables.needs),
        integrity=want(Category.integrity, h4_integrity.needs),
        realtime=want(Category.realtime, h5_realtime.needs),
        auth=want(Category.auth, h6_auth.needs),
    )


def collect(
    session: ProbeSession, wanted: set[Category], heavy: set[Category] | None = None
) -> Collected:
    """Declare the wanted checks' queries and run them in (at most) two round trips.

    ``heavy`` names the categories whose heavy part runs (all of ``wanted`` by default).
    """
    declared = declare(session, wanted, wanted if heavy is None else heavy)
    answers = Answers(LockLedger(session.config.repairs.stuck_query_seconds))
    t0 = time.perf_counter()
    try:
        lock_tables = _lock_tables(session, wanted)
        locks = lock_query(lock_tables) if lock_tables else None
        first = [q for n in declared.all() for q in n.first()] + ([locks] if locks else [])
        run_queries(session, first, answers)
        if locks is not None:
            answers.locks.take(lock_tables, answers.outcome(locks))
        run_queries(session, [q for n in declared.all() for q in n.second(answers)], answers)
    except Exception as e:  # noqa: BLE001 - a broken batch must not take the sweep down
        # Whatever was not answered reports this; each check then says it could not run.
        answers.broken = e
    finally:
        if session.configured("direct"):
            session.stats["prefetch_ms"] = ms_since(t0)
    return Collected(declared, answers)


def _lock_tables(session: ProbeSession, wanted: set[Category]) -> list[str]:
    tables: list[str] = []
    if Category.tables in wanted:
        tables += h3_tables.tables_read(session)
    if Category.integrity in wanted:
        tables += h4_integrity.tables_read(session)
    return list(dict.fromkeys(tables))


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
    wanted = set(categories or ORDER)
    heavy_parts = wanted if heavy is None else wanted & set(heavy)
    results: list[CheckResult] = []
    with ThreadPoolExecutor(max_workers=3, thread_name_prefix="westep-probe") as lanes:
        api = lanes.submit(h7_api.check_api, session) if Category.api in wanted else None
        auth_ep = lanes.submit(h6_auth.auth_endpoint, session) if Category.auth in wanted else None
        got = collect(session, wanted, heavy_parts)
        d, answers = got.declared, got.answers
        if d.pool is not None:
            results.append(_safe(Category.pool, h2_pool.check_pool, session, d.pool, answers))
        if Category.connection in wanted:
            pool_database(session)  # asked once per sweep: the pooled lane reads it at once
            pooled = lanes.submit(h1_connection.connection_outcome, session, "pooled")
            results.append(
                _safe(
                    Category.connection,
                    lambda: h1_connection.check_connection(session, pooled.result()),
                )
            )
        if d.tables is not None:
            results.append(
                _safe(Category.tables, h3_tables.check_tables, session, d.tables, answers)
            )
        if d.integrity is not None:
            results.append(
                _safe(
                    Category.integrity, h4_integrity.check_integrity, session, d.integrity, answers
                )
            )
        if d.realtime is not None:
            results.append(
                _safe(Category.realtime, h5_realtime.check_realtime, session, d.realtime, answers)
            )
        if d.auth is not None and auth_ep is not None:
            auth, endpoint = d.auth, auth_ep
            results.append(
                _safe(
                    Category.auth,
                    lambda: h6_auth.check_auth(session, auth, answers, endpoint.result()),
                )
            )
        if api is not None:
            results.append(_safe(Category.api, api.result))
    ordered = sorted(results, key=lambda r: ORDER.index(r.category))
    attribute_causes(ordered)
    return ordered


def _safe(cat: Category, fn: Callable[..., CheckResult], *args: Any) -> CheckResult:
    try:
        return fn(*args)
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
