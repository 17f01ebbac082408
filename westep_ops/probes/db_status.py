"""``westep-ops db-status`` (the seed's check-database-status.ts): the server at a glance.

Version, uptime, connections, database size, recovery state; and when the database
cannot be reached but a Supabase URL is configured, whether the project is paused.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from westep_ops.probes.health import DB_FAILURES, reason, supabase_paused
from westep_ops.probes.session import ProbeSession

STATUS_SQL = """
SELECT current_setting('server_version') AS version,
       extract(epoch FROM now() - pg_postmaster_start_time())::bigint AS uptime_s,
       (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend') AS connections,
       current_setting('max_connections')::int AS max_connections,
       current_database() AS database,
       pg_database_size(current_database()) AS size_bytes,
       pg_is_in_recovery() AS in_recovery,
       current_setting('default_transaction_read_only') = 'on' AS read_only_login
"""


@dataclass
class DbStatus:
    reachable: bool
    version: str | None = None
    uptime_s: int | None = None
    connections: int | None = None
    max_connections: int | None = None
    database: str | None = None
    size_bytes: int | None = None
    in_recovery: bool | None = None
    paused: str | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[tuple[str, str]]:
        if not self.reachable:
            out = [("database", f"UNREACHABLE: {self.error}")]
            if self.paused:
                out.append(("supabase", self.paused))
            return out
        days, rem = divmod(self.uptime_s or 0, 86400)
        return [
            ("server", f"PostgreSQL {self.version}"),
            ("uptime", f"{days} d {rem // 3600} h {rem % 3600 // 60} min"),
            ("connections", f"{self.connections} / {self.max_connections}"),
            ("database", f"{self.database}, {(self.size_bytes or 0) / 1e6:.1f} MB"),
            ("role", "standby (in recovery)" if self.in_recovery else "primary"),
        ]


def db_status(session: ProbeSession) -> DbStatus:
    try:
        (row,) = session.run("direct", STATUS_SQL, dicts=True)
    except DB_FAILURES as e:
        st = DbStatus(reachable=False, error=reason(e))
        if session.env.supabase_url:
            st.paused = supabase_paused(session)
        return st
    row.pop("read_only_login")
    return DbStatus(reachable=True, **row)
