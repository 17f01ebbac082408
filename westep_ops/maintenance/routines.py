"""The routines' work, callable from a Dagster op or a test alike.

``send_daily_summary``: the 18:00 summary of the local day (``monitoring/summary.py``
decides what it says) sent to the log and Slack. ``analyze_tables``: the seed's
optimize-database-schema, ANALYZE of every configured table under the repair role,
bounded by the maintenance timeout and ``lock_timeout`` (a table someone holds a
conflicting lock on is skipped, not waited for).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

import psycopg
from psycopg import sql

from westep_ops.config import Config, split_name
from westep_ops.environment import Environment
from westep_ops.monitoring import summary
from westep_ops.monitoring.history import HistoryStore
from westep_ops.monitoring.notify import Alert, Notifier
from westep_ops.repairs.base import RepairContext


def send_daily_summary(
    env: Environment, cfg: Config, storage_url: str | None, now: datetime, *, target: str
) -> str:
    """Summarise ``target``'s local day of ``now`` from the ops store, alert it (critical
    when an incident is still open, info otherwise) and return the text."""
    store = HistoryStore(storage_url, target=target)
    try:
        with store.tx() as conn:
            s = summary.daily_summary(
                conn, now.astimezone(ZoneInfo(cfg.timezone)).date(), cfg.timezone, target=target
            )
    finally:
        store.close()
    text = s.text()
    Notifier(env, cfg.timezone, target=target).alert(
        Alert(now, "summary", "critical" if s.any_open else "info", "daily", text)
    )
    return text


def statistics_tables(cfg: Config) -> list[str]:
    """The tables whose statistics matter: every critical table and integrity rule's table."""
    return sorted({t.table for t in cfg.critical_tables} | {r.table for r in cfg.integrity_rules})


@dataclass
class AnalyzeResult:
    analyzed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # lock_timeout: someone held a lock


def analyze_tables(env: Environment, cfg: Config, *, trigger: str) -> AnalyzeResult:
    """ANALYZE every table of ``statistics_tables`` with the repair role's safety settings."""
    ctx = RepairContext(env, cfg, trigger=trigger)
    out = AnalyzeResult()
    with ctx.db(autocommit=True) as conn:  # ctx.db sets lock_timeout
        conn.execute(
            sql.SQL("SET statement_timeout = {}").format(
                sql.Literal(int(cfg.repairs.maintenance_timeout_seconds * 1000))
            )
        )
        for t in statistics_tables(cfg):
            try:
                conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(*split_name(t))))
            except psycopg.errors.LockNotAvailable:
                out.skipped.append(t)  # a conflicting lock: not worth waiting on
            else:
                out.analyzed.append(t)
    return out
