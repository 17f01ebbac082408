"""ACCESS EXCLUSIVE locks on the tables H3 and H4 read: who holds them, for how long.

ACCESS EXCLUSIVE is the only lock mode a plain SELECT waits for. The sweep asks the
catalog in its first round trip, so a locked table costs the sweep nothing; a lock taken
between that look and the read still costs at most lock_timeout, once per batch
(the runner then looks again, bounded, and the one-by-one retry skips locked tables).
Every look goes through :func:`record_locks`, once per sweep per table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from westep_ops.config import qualified_name
from westep_ops.probes.base import Status
from westep_ops.probes.health.common import DB_FAILURES, budget_ms, names_params, reason
from westep_ops.probes.health.query import Outcome, Query
from westep_ops.probes.session import ProbeSession

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


def lock_query(tables: list[str]) -> Query:
    """Round trip 1's look at the locks on ``tables`` (those of H3 and H4 in this sweep)."""
    return Query(None, "locks", LOCKS_SQL, names_params(tables))


@dataclass
class LockLedger:
    """One sweep's knowledge of locked tables (in the config's spelling of each table)."""

    stuck_query_s: float
    held: dict[str, str] = field(default_factory=dict)  # table -> who blocks it
    ages: dict[str, float] = field(default_factory=dict)  # table -> holder's query age
    checked: set[str] = field(default_factory=set)
    error: str | None = None  # the look-up itself failed

    def status(self, table: str) -> Status:
        """A lock on ``table``: a warning, critical once its holder's query is older than
        ``repairs.stuckQuerySeconds`` (a migration holding a critical table blocks every
        read of the app). Never repaired automatically: a person decides."""
        age = self.ages.get(table)
        return Status.critical if age is not None and age >= self.stuck_query_s else Status.warning

    def blocking(self, tables: tuple[str, ...] | list[str]) -> str | None:
        """The first of ``tables`` known to be locked, or None."""
        return next((t for t in tables if t in self.held), None)

    def take(self, tables: list[str], outcome: Outcome) -> None:
        """Round trip 1's answer to :func:`lock_query` (rows, or why it failed)."""
        if isinstance(outcome, BaseException):
            self.error = reason(outcome)
        else:
            record_locks(self, tables, outcome)

    def refresh(self, session: ProbeSession, tables: list[str]) -> None:
        """A batch hit lock_timeout: look again (one bounded query) so the retry skips the
        locked tables instead of waiting lock_timeout once more per item."""
        rows = _look(session, tables)
        if rows is not None:
            record_locks(self, tables, rows)

    def note(self, session: ProbeSession, tables: tuple[str, ...]) -> str:
        """A read of ``tables`` hit lock_timeout: find which is locked and by whom
        (bounded), remember it, and return that table."""
        rows = _look(session, list(tables)) or []
        if rows:
            record_locks(self, [], rows)
        table = lock_key(rows[0]) if rows else tables[0]
        self.held.setdefault(
            table,
            blocker_text([r for r in rows if lock_key(r) == table] or rows)
            if rows
            else f"blocked by a lock (waited lock_timeout {session.timeouts.lock} ms; holder gone)",
        )
        return table


def _look(session: ProbeSession, tables: list[str]) -> list[dict[str, Any]] | None:
    try:
        return session.run(
            "direct", LOCKS_SQL, names_params(tables), dicts=True, deadline_ms=budget_ms(session)
        )
    except DB_FAILURES:
        return None


def record_locks(ledger: LockLedger, tables: list[str], rows: list[dict[str, Any]]) -> None:
    """Remember LOCKS_SQL ``rows`` for this sweep; ``tables`` count as looked at."""
    for t, rs in _group(rows).items():
        ledger.held.setdefault(t, blocker_text(rs))
        held = [r["query_age_s"] for r in rs if r["granted"] and r["query_age_s"] is not None]
        if held:
            ledger.ages[t] = max(held + [ledger.ages.get(t, 0.0)])
    ledger.checked.update(tables)


def lock_key(r: dict[str, Any]) -> str:
    """A LOCKS_SQL row's table in the config's spelling (public."step-logs" keeps quotes)."""
    return qualified_name(r["schema_name"], r["table_name"])


def _group(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    by: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by.setdefault(lock_key(r), []).append(r)
    return by


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
