"""Which failures are another incident's symptom or tail: pure, no database, no Dagster.

The engine (``monitoring/engine.py``) and the what-if replay (``lib/whatif.py``) both
group a sweep's failures with :func:`group` before the alert state machine
(``lib/alerting.py``) decides on them; a grouped failure is a symptom (it opens nothing,
and holds an incident already open). They differ only in where the inputs come from:
the engine reads the open incidents and the recently closed ones from the history, the
replay keeps its own.

A sweep's check already names the cause of its own failure when another check of the
same sweep explains it (``suspected_cause``, e.g. H3 cannot run while PostgreSQL is
down). Grouping adds what only the incidents know:

- after PostgreSQL comes back, pgbouncer may still hold a client that queued through
  the outage, and requests failed meanwhile: that is the outage's tail, not a new
  incident. A critical incident of a category in :data:`EXPLAINED_BY` that closed within
  the grace (``alerting.groupGraceIntervals`` cheap-probe intervals) explains them; a
  failure that outlasts the grace opens its own incident;
- an open critical incident explains them only while its category fails in this same
  sweep with a finding that explains (:data:`EXPLAINING`): a lingering warning (idle in
  transaction, a slow connect) hides nothing, and a symptom more severe than its cause
  is never grouped;
- faults that are their own (:data:`OWN_FAULTS`: the database down, a paused pool) are
  never grouped, nor is a pool that cannot serve (:data:`POOL_CANNOT_SERVE`) under a
  connection incident while the direct connection works, except when its oldest waiter
  queued before PostgreSQL (re)started during a critical connection incident that is
  open or just closed (H2's ``max_wait_since_server_start_s``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

from westep_ops.config import Category

CONNECTION, POOL, API = Category.connection.value, Category.pool.value, Category.api.value
PERFORMANCE = "performance"  # the performance monitor's samples
CRITICAL = "critical"

# category -> the categories whose incident, open or just closed, explains its failures
EXPLAINED_BY: dict[str, tuple[str, ...]] = {
    POOL: (CONNECTION,),
    CONNECTION: (POOL,),
    API: (CONNECTION, POOL),
    PERFORMANCE: (CONNECTION, POOL, API),
}
# Findings that are a fault of their own whatever came before them.
OWN_FAULTS = frozenset(
    {"direct_connection_failed", "pool_paused", "pool_disabled", "pgbouncer_down"}
)
# What a cause category must be failing with, in the same sweep, for its open incident to
# explain another category's failure (a warning such as slow_connection explains nothing).
EXPLAINING: dict[str, frozenset[str]] = {
    CONNECTION: frozenset(
        {"direct_connection_failed", "pooled_connection_failed", "project_paused"}
    ),
    POOL: frozenset(
        {
            "pgbouncer_down",
            "pool_paused",
            "pool_disabled",
            "pool_wait",
            "pool_exhausted",
            "pool_missing",
        }
    ),
    API: frozenset({"endpoint_down"}),
}
# Pool findings that H1 explains only when PostgreSQL itself is failing: with the direct
# connection ok, a pool that cannot serve is the pool's own fault.
POOL_CANNOT_SERVE = frozenset({"pool_wait", "pool_exhausted"})
# H2's value when the oldest waiter queued before PostgreSQL (re)started.
QUEUED_THROUGH_RESTART = "max_wait_since_server_start_s"
_RANK = {"warning": 1, CRITICAL: 2}


@dataclass(frozen=True)
class Observed:
    """One category in a sweep, as grouping reads it (a stored sample carries it all)."""

    category: str
    status: str  # as stored: ok, warning, critical, error
    failing: bool  # failing enough to open an incident (observe-only warnings are not)
    findings: frozenset[str] = frozenset()
    values: frozenset[str] = frozenset()  # the names of the figures the check reported
    cause: str | None = None  # the sweep's own suspected_cause

    @classmethod
    def of(
        cls,
        category: str,
        status: str,
        failing: bool,
        findings: Iterable[str] = (),
        values: Iterable[str] = (),
        cause: str | None = None,
    ) -> Observed:
        return cls(category, status, failing, frozenset(findings), frozenset(values), cause)


def _direct_ok(conn: Observed | None) -> bool:
    """H1 says PostgreSQL answers the direct connection."""
    return (
        conn is not None
        and "direct_connection_failed" not in conn.findings
        and "direct_error" not in conn.values
    )


def group(
    sweep: Sequence[Observed],
    open_: Mapping[str, str],
    tail: Collection[str] | Callable[[], Collection[str]],
) -> dict[str, str]:
    """The failures of ``sweep`` that an incident explains: category -> cause category.

    ``open_``: the open incidents, category -> severity; ``tail``: the categories of
    critical incidents closed within the grace (or how to get them: asked only when a
    failure could be grouped). Failures that already name a cause, and categories with
    an incident of their own open, are left as they are.
    """
    candidates = [
        o
        for o in sweep
        if o.failing
        and o.cause is None
        and o.category not in open_
        and o.category in EXPLAINED_BY
        and not OWN_FAULTS & o.findings
    ]
    if not candidates:
        return {}
    if callable(tail):
        tail = tail()
    by_cat = {o.category: o for o in sweep}
    # open incidents that explain now: category -> severity rank of what they explain with
    causes: dict[str, int] = {}
    for c, severity in open_.items():
        now = by_cat.get(c)
        if severity == CRITICAL and now is not None and now.status == CRITICAL:
            if EXPLAINING.get(c, frozenset()) & now.findings:
                causes[c] = _RANK[CRITICAL]
    direct_ok = _direct_ok(by_cat.get(CONNECTION))
    open_critical = {c for c, severity in open_.items() if severity == CRITICAL}
    grouped: dict[str, str] = {}
    for o in candidates:
        for c in EXPLAINED_BY[o.category]:
            if c == CONNECTION and direct_ok and o.findings & POOL_CANNOT_SERVE:
                # a pool that cannot serve while PostgreSQL answers is the pool's fault,
                # unless its waiter queued through the restart of a connection outage
                if QUEUED_THROUGH_RESTART in o.values and (c in tail or c in open_critical):
                    grouped[o.category] = c
                    break
                continue
            if c in tail and c not in causes:
                grouped[o.category] = c  # the real tail: a critical incident just closed
                break
            if c not in causes or _RANK.get(o.status, 0) > causes[c]:
                continue
            grouped[o.category] = c
            break
    return grouped
