"""Performance monitor P1-P4 (the seed's lib/performance-monitor.ts), over probe sessions.

- P1 response time: the API endpoints (from H7) and the database round trip (from H1);
- P2 error rate: failed HTTP probes over all of them, and the database's rollback ratio
  between two samples (``pg_stat_database``);
- P3 throughput: transactions per second from ``pg_stat_database`` deltas (the first
  sample falls back to pgbouncer's own ``avg_xact_count``);
- P4 memory: the monitor's own RSS and, when PostgreSQL runs on this host and its
  processes are readable, the server's proportional set size (PSS, shared memory counted
  once). Elsewhere the figure is reported as not visible rather than guessed.

It also watches dead tuples on the critical tables, the usual cause of "performance
degradation" that ``optimize_performance`` repairs.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from westep_ops.config import Category
from westep_ops.probes.base import CheckResult, Status
from westep_ops.probes.health import DB_FAILURES, admin_show, reason
from westep_ops.probes.session import ProbeSession

STATS_SQL = """
SELECT xact_commit + xact_rollback AS xacts, xact_rollback, deadlocks,
       extract(epoch FROM clock_timestamp())::float AS at,
       pg_backend_pid() AS pid,
       inet_server_addr() IS NULL OR host(inet_server_addr()) IN ('127.0.0.1', '::1') AS local,
       coalesce((SELECT json_agg(json_build_object(
                    'table', schemaname || '.' || relname, 'live', n_live_tup, 'dead', n_dead_tup,
                    'last_analyze', greatest(last_analyze, last_autoanalyze)))
                 FROM pg_stat_user_tables
                 WHERE schemaname || '.' || relname = ANY(%(tables)s)), '[]'::json) AS tables
FROM pg_stat_database WHERE datname = current_database()
"""


@dataclass
class PerformanceSample:
    at: float
    api_ms: dict[str, float] = field(default_factory=dict)
    db_round_trip_ms: float | None = None
    http_requests: int = 0
    http_failures: int = 0
    db_rollback_ratio: float | None = None
    deadlocks: int | None = None
    tps: float | None = None
    tps_source: str = ""
    monitor_rss_mb: float | None = None
    postgres_pss_mb: float | None = None
    postgres_memory_note: str = ""
    table_health: list[dict[str, Any]] = field(default_factory=list)
    status: str = "ok"
    problems: list[str] = field(default_factory=list)

    @property
    def error_rate(self) -> float | None:
        return self.http_failures / self.http_requests if self.http_requests else None

    @property
    def mean_api_ms(self) -> float | None:
        return sum(self.api_ms.values()) / len(self.api_ms) if self.api_ms else None

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["error_rate"] = self.error_rate
        d["mean_api_ms"] = self.mean_api_ms
        return d


class PerformanceMonitor:
    """Keeps recent samples (for deltas and trends); ``latest()`` and ``summary()`` as in the seed."""

    def __init__(self, history: int = 1440) -> None:
        self.samples: deque[PerformanceSample] = deque(maxlen=history)
        self._last_counters: dict[str, float] | None = None

    def latest(self) -> PerformanceSample | None:
        return self.samples[-1] if self.samples else None

    def sample(
        self, session: ProbeSession, health: list[CheckResult] | None = None
    ) -> PerformanceSample:
        """Take one sample; ``health`` reuses a sweep's H1/H7 measurements instead of re-probing."""
        s = PerformanceSample(at=time.time())
        by = {r.category: r for r in health or []}
        api = by.get(Category.api)
        if api is not None:
            for ep in api.values.get("endpoints", []):
                if ep.get("unconfigured"):
                    continue
                s.http_requests += 1
                if ep["ok"]:
                    s.api_ms[ep["name"]] = ep["ms"]
                else:
                    s.http_failures += 1
        conn = by.get(Category.connection)
        if conn is not None:
            s.db_round_trip_ms = conn.values.get("direct_ms")
        self._database(session, s)
        s.monitor_rss_mb = _rss_mb(Path("/proc/self"))
        self._judge(session, s)
        self.samples.append(s)
        return s

    def _database(self, session: ProbeSession, s: PerformanceSample) -> None:
        tables = [t.table for t in session.config.critical_tables]
        try:
            (row,) = session.run("direct", STATS_SQL, {"tables": tables}, dicts=True)
        except DB_FAILURES as e:
            s.problems.append(f"database statistics unavailable: {reason(e)}")
            s.postgres_memory_note = "database unreachable"
            return
        s.deadlocks = row["deadlocks"]
        last = self._last_counters
        if last is not None and row["at"] > last["at"]:
            dt = row["at"] - last["at"]
            dx = row["xacts"] - last["xacts"]
            s.tps = round(dx / dt, 2)
            s.tps_source = "pg_stat_database"
            s.db_rollback_ratio = (
                round((row["xact_rollback"] - last["rollback"]) / dx, 4) if dx > 0 else 0.0
            )
        elif session.configured("admin"):
            try:
                stats = admin_show(session, "stats")
                mine = next(
                    (r for r in stats if r["database"] == session.config.database_name), None
                )
                if mine is not None:
                    s.tps = float(mine["avg_xact_count"])
                    s.tps_source = "pgbouncer avg_xact_count"
            except DB_FAILURES:
                pass
        self._last_counters = {
            "at": row["at"],
            "xacts": row["xacts"],
            "rollback": row["xact_rollback"],
        }
        for t in row["tables"]:
            live, dead = t["live"], t["dead"]
            # Statistics can be unknown or empty on new tables: no ratio rather than a wrong one.
            t["dead_ratio"] = round(dead / live, 3) if live and live > 0 else None
            s.table_health.append(t)
        if row["local"]:
            s.postgres_pss_mb, s.postgres_memory_note = _postgres_pss_mb(row["pid"])
        else:
            s.postgres_memory_note = "server is remote: memory not visible from here"

    def _judge(self, session: ProbeSession, s: PerformanceSample) -> None:
        th = session.config.monitoring.thresholds
        if s.mean_api_ms is not None and s.mean_api_ms > th.response_time:
            s.problems.append(
                f"mean API response {s.mean_api_ms:.0f} ms > {th.response_time:.0f} ms"
            )
        if s.error_rate is not None and s.error_rate > th.error_rate:
            s.problems.append(f"error rate {s.error_rate:.0%} > {th.error_rate:.0%}")
        for t in s.table_health:
            if (
                t["dead_ratio"] is not None
                and t["dead_ratio"] > th.dead_tuple_ratio
                and t["dead"] >= 1000
            ):
                s.problems.append(
                    f"{t['table']}: {t['dead']} dead tuples ({t['dead_ratio']:.0%} of live)"
                )
        s.status = Status.warning.value if s.problems else Status.ok.value

    def summary(self) -> str:
        """One paragraph in plain words, like the seed's generateSummary()."""
        s = self.latest()
        if s is None:
            return "No performance samples yet."
        parts = []
        if s.mean_api_ms is not None:
            parts.append(
                f"API responses average {s.mean_api_ms:.0f} ms over {len(s.api_ms)} endpoints"
            )
        if s.db_round_trip_ms is not None:
            parts.append(f"a database round trip takes {s.db_round_trip_ms:.1f} ms")
        if s.error_rate is not None:
            parts.append(
                f"{s.http_failures} of {s.http_requests} requests failed ({s.error_rate:.0%})"
            )
        if s.tps is not None:
            parts.append(f"throughput is {s.tps:.1f} transactions/s ({s.tps_source})")
        if s.monitor_rss_mb is not None:
            mem = f"the monitor uses {s.monitor_rss_mb:.0f} MB"
            if s.postgres_pss_mb is not None:
                mem += f" and PostgreSQL {s.postgres_pss_mb:.0f} MB (PSS)"
            elif s.postgres_memory_note:
                mem += f" (PostgreSQL memory: {s.postgres_memory_note})"
            parts.append(mem)
        text = "; ".join(parts) + "." if parts else "No measurements."
        verdict = " Status: " + (
            "OK." if not s.problems else "WARNING: " + "; ".join(s.problems) + "."
        )
        return text[0].upper() + text[1:] + verdict


def _rss_mb(proc: Path) -> float | None:
    try:
        for line in (proc / "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


# The server's PSS is one figure per postmaster, whichever database a target is: a fleet
# worker's targets on one cluster share a reading this recent instead of each walking
# every server process's smaps again (at 200 targets that was 200 x ~450 reads a sweep).
PSS_REUSE_S = 10.0
_pss_read: dict[int, tuple[float, tuple[float | None, str]]] = {}
_pss_lock = threading.Lock()


def _postgres_pss_mb(backend_pid: int) -> tuple[float | None, str]:
    """Sum PSS over the postmaster and its children, found from our own backend's parent
    (read at most every :data:`PSS_REUSE_S` per postmaster in a process)."""
    try:
        stat = Path(f"/proc/{backend_pid}/stat").read_text()
        postmaster = int(stat.rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None, "server processes not visible from here"
    with _pss_lock:
        hit = _pss_read.get(postmaster)
        if hit is not None and time.monotonic() - hit[0] < PSS_REUSE_S:
            return hit[1]
        got = _read_pss(postmaster)
        _pss_read[postmaster] = (time.monotonic(), got)
        return got


def _read_pss(postmaster: int) -> tuple[float | None, str]:
    try:
        children = Path(f"/proc/{postmaster}/task/{postmaster}/children").read_text().split()
    except (OSError, ValueError, IndexError):
        return None, "server processes not visible from here"
    total_kb = 0
    for pid in [postmaster, *map(int, children)]:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total_kb += int(line.split()[1])
        except (OSError, ValueError):
            return None, "server processes not readable by this user"
    if os.getpid() == postmaster:
        return None, ""
    return round(total_kb / 1024, 1), ""
