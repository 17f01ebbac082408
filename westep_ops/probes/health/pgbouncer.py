"""pgbouncer's admin console as H1 and H2 (and the performance monitor) read it."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from westep_ops.probes.health.common import DB_FAILURES
from westep_ops.probes.session import ProbeSession


def admin_show(session: ProbeSession, what: str) -> list[dict[str, Any]]:
    """``SHOW <what>`` on the admin console, once per sweep."""
    return session.admin_show(what)


def pool_database(session: ProbeSession) -> dict[str, Any] | None:
    """The watched database's SHOW DATABASES row; None if there is no usable console."""
    if not session.configured("admin"):
        return None
    try:
        rows = admin_show(session, "databases")
    except DB_FAILURES:
        return None
    return next((d for d in rows if d.get("name") == session.config.database_name), None)


def monitor_pool(session: ProbeSession) -> str:
    """The pgbouncer pool the monitor's own pooled connection rides: (database, login)."""
    try:
        info = conninfo_to_dict(session.env.database_url or "")
    except psycopg.ProgrammingError:
        return "unknown"
    return f"{info.get('dbname', session.config.database_name)}/{info.get('user', '?')}"
