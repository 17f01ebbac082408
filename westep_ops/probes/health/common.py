"""What every health check shares: the failures a probe reports, timings, transactions."""

from __future__ import annotations

import time

import psycopg
from psycopg import sql

from westep_ops.config import split_name
from westep_ops.db import DeadlineExceeded, describe_error, refusal
from westep_ops.probes.base import CheckResult, Status
from westep_ops.probes.session import ProbeSession, Unavailable

DB_FAILURES = (psycopg.Error, Unavailable, DeadlineExceeded)


def reason(exc: BaseException) -> str:
    """One line saying why a query or connection failed."""
    if isinstance(exc, Unavailable | DeadlineExceeded):
        return str(exc)
    return describe_error(exc)


def refusal_of(exc: BaseException) -> str | None:
    """The one-line cause when the server answered and refused the monitor, else None."""
    if isinstance(exc, Unavailable):
        return exc.refusal
    return refusal(exc)


def failure(session: ProbeSession, exc: BaseException) -> str:
    """Why one item could not run, naming statement_timeout when that is what stopped it."""
    if isinstance(exc, psycopg.errors.QueryCanceled):
        return f"timed out after {session.timeouts.statement} ms (statement_timeout)"
    return reason(exc)


def is_lock_timeout(exc: BaseException) -> bool:
    return isinstance(exc, psycopg.errors.LockNotAvailable)


def ms_since(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 2)


def fmt_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def budget_ms(session: ProbeSession) -> float:
    """Time one check may spend re-running its items one by one after a batch failed."""
    return float(session.timeouts.statement)


def tx_head(session: ProbeSession) -> list[sql.Composable]:
    """A read-only transaction bounded by statement_timeout and lock_timeout (SET LOCAL:
    the only kind that survives transaction pooling)."""
    t = session.timeouts
    return [
        sql.SQL("BEGIN READ ONLY"),
        sql.SQL("SET LOCAL statement_timeout = {}").format(sql.Literal(int(t.statement))),
        sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(int(t.lock))),
    ]


def rollback(session: ProbeSession, target: str = "direct") -> None:
    try:
        session.run(target, "ROLLBACK")
    except DB_FAILURES:
        pass


def names_params(tables: list[str]) -> tuple[list[str], list[str]]:
    """(schemas, names) of ``tables`` as two arrays for ``unnest``."""
    parts = [split_name(t) for t in tables]
    return [p[0] for p in parts], [p[1] for p in parts]


def not_configured(res: CheckResult, why: str) -> CheckResult:
    res.status = Status.not_configured
    res.summary = f"not configured ({why})"
    return res
