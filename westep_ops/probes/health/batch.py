"""The runner: declared queries to round trips, and back to answers the checks judge.

One round trip per target carries every query given to :func:`run_queries` (bound
client-side by psycopg); on a hosted database 20-50 ms away, round trips are the sweep
time. If the batch fails, the same :class:`Query` objects run one by one (each check
bounded by statement_timeout in total, locked tables skipped), which also finds out
exactly which item failed: that item's answer is its exception, the others stand.
"""

from __future__ import annotations

import time
from typing import Any

from psycopg import sql

from westep_ops.config import Category
from westep_ops.probes.health.common import (
    DB_FAILURES,
    budget_ms,
    is_lock_timeout,
    rollback,
    tx_head,
)
from westep_ops.probes.health.locks import LockLedger
from westep_ops.probes.health.query import Locked, NotRun, Outcome, Query
from westep_ops.probes.session import ProbeSession


class Answers:
    """What came back for each query of one sweep, and the sweep's lock ledger."""

    def __init__(self, locks: LockLedger) -> None:
        self.locks = locks
        self.broken: BaseException | None = None  # the batch broke off (not a database error)
        self._got: dict[Query, Outcome] = {}

    def set(self, query: Query, outcome: Outcome) -> None:
        self._got[query] = outcome

    def outcome(self, query: Query) -> Outcome:
        """Rows, a scalar, a start time, or why there is none (exception, Locked, NotRun)."""
        if query in self._got:
            return self._got[query]
        return self.broken or LookupError(f"{query.name}: not run")

    def rows(self, query: Query) -> Any:
        """The query's answer; raises the exception that stopped it."""
        got = self.outcome(query)
        if isinstance(got, BaseException):
            raise got
        return got


def run_queries(session: ProbeSession, queries: list[Query], answers: Answers) -> None:
    """Run ``queries``: one round trip per target; if that fails, each alone (bounded)."""
    by_target: dict[str, list[Query]] = {}
    for q in queries:
        by_target.setdefault(q.target, []).append(q)
    for target, group in by_target.items():
        try:
            for q, got in _round_trip(session, target, group).items():
                answers.set(q, got)
        except DB_FAILURES as e:
            _clean_up(session, target, group)
            # every table the sweep watches, so later batches skip them too
            read = list(
                dict.fromkeys([*(t for q in group for t in q.reads), *answers.locks.checked])
            )
            if is_lock_timeout(e) and read:
                answers.locks.refresh(session, read)
            _one_by_one(session, group, answers)


def _one_by_one(session: ProbeSession, group: list[Query], answers: Answers) -> None:
    stop: dict[Category | None, float] = {}
    for q in group:
        locked = answers.locks.blocking(q.reads)
        if locked is not None:
            answers.set(q, Locked(locked))
            continue
        end = stop.setdefault(q.check, time.perf_counter() + budget_ms(session) / 1000)
        if time.perf_counter() > end:
            answers.set(q, NotRun(budget_ms(session)))
            continue
        try:
            answers.set(q, _round_trip(session, q.target, [q])[q])
        except DB_FAILURES as e:
            _clean_up(session, q.target, [q])
            if is_lock_timeout(e) and q.reads:
                answers.set(q, Locked(answers.locks.note(session, q.reads)))
            else:
                answers.set(q, e)


def _clean_up(session: ProbeSession, target: str, group: list[Query]) -> None:
    if any(q.in_transaction for q in group):
        rollback(session, target)  # the failed transaction must not hold the connection


def _round_trip(session: ProbeSession, target: str, group: list[Query]) -> dict[Query, Outcome]:
    """``group`` in one multi-statement round trip: its read-only transaction first (the
    folded scalars, then each read as a role), then the other statements in order."""
    scalars = [q for q in group if q.scalar and q.as_role is None]
    as_role = [q for q in group if q.as_role is not None]
    plain = [q for q in group if not q.in_transaction]
    stmts: list[sql.Composable] = []
    if scalars or as_role:
        stmts += tx_head(session)
        if scalars:
            stmts.append(
                sql.SQL("SELECT ")
                + sql.SQL(", ").join(
                    sql.SQL("({}) AS {}").format(_sql(q.sql), sql.Identifier(f"q{i}"))
                    for i, q in enumerate(scalars)
                )
            )
        for q in as_role:
            # SET LOCAL ROLE may go straight from one API role to the next: membership is
            # checked against the session user (the role-probe login).
            role = q.as_role or ""  # as_role is set on every query of this list
            stmts += [sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)), _sql(q.sql)]
        stmts.append(sql.SQL("ROLLBACK"))
    for q in plain:
        stmts.append(_sql(q.sql if q.params is None else session.bind(target, q.sql, q.params)))
    t0 = time.perf_counter()
    sets = iter(session.run(target, sql.SQL(";\n").join(stmts), all_results=True, dicts=True))
    out: dict[Query, Outcome] = {}
    if scalars:
        (row,) = next(sets)
        out.update({q: row[f"q{i}"] for i, q in enumerate(scalars)})
    for q in as_role:
        (row,) = next(sets)
        out[q] = next(iter(row.values()))
    for q in plain:
        out[q] = next(sets) if q.rows else t0
    return out


def _sql(q: str | sql.Composable) -> sql.Composable:
    return sql.SQL(q) if isinstance(q, str) else q
