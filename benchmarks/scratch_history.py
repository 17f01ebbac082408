"""A month of generated monitoring history in a scratch database (for the benchmarks).

The database lives in the demo sandbox's ops cluster, next to the real history, and is
dropped afterwards: benchmarks never touch the history the demo and tests use.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg import sql

from westep_ops.db import close_store_pools
from westep_ops.sandbox.manager import Sandbox
from westep_ops.sandbox.state import OPS_DB
from westep_ops.store_schema import migrate

CATEGORIES = ("connection", "pool", "tables", "integrity", "realtime", "auth", "api", "performance")
START = datetime(2026, 10, 1, tzinfo=UTC) - timedelta(hours=9)  # 2026-10-01 00:00 in Tokyo
MINUTES = 30 * 1440


@contextmanager
def scratch_history(sb: Sandbox, name: str, *, seed: int, critical_share: float) -> Iterator[str]:
    """Create database ``name`` with 30 days of 1-minute samples; yield its URL; drop it."""
    s = sb.state
    admin = s.url("westep_ops", s.ops_port, OPS_DB)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = s.url("westep_ops", s.ops_port, name)
    rng = random.Random(seed)
    with psycopg.connect(url, autocommit=True) as conn:
        migrate(conn)
        with conn.cursor() as cur:
            with cur.copy(
                "COPY westep_ops.samples (ts, kind, category, status, summary) FROM STDIN"
            ) as copy:
                for m in range(MINUTES):
                    ts = START + timedelta(minutes=m)
                    for cat in CATEGORIES:
                        status = "critical" if rng.random() < critical_share else "ok"
                        copy.write_row((ts, "cheap", cat, status, "generated"))
            with cur.copy(
                "COPY westep_ops.performance_samples (ts, mean_api_ms, http_requests, http_failures,"
                " tps, status) FROM STDIN"
            ) as copy:
                for m in range(MINUTES):
                    copy.write_row(
                        (
                            START + timedelta(minutes=m),
                            rng.uniform(50, 400),
                            2,
                            int(rng.random() < 0.005),
                            rng.uniform(5, 50),
                            "ok",
                        )
                    )
    try:
        yield url
    finally:
        # The ops-store pool keeps this process's connections to the scratch store open;
        # FORCE also ends any other session still on it (a Dagster run's, say).
        close_store_pools()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def add_incidents(url: str, count: int, *, seed: int) -> None:
    """Closed incidents spread over the month, each with its opened alert."""
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        st = START + timedelta(minutes=rng.randrange(MINUTES - 60))
        resolved = st + timedelta(seconds=rng.uniform(80, 900))
        rows.append((CATEGORIES[i % 7], st, st + timedelta(seconds=rng.uniform(5, 70)), resolved))
    with psycopg.connect(url, autocommit=True) as conn:
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO westep_ops.incidents (category, severity, started_at, detected_at, resolved_at,"
                " closed_at, recovered_by, summary)"
                " VALUES (%s, 'critical', %s, %s, %s, %s + interval '1 minute', 'auto:generated', 'generated')",
                [(c, st, det, res, res) for c, st, det, res in rows],
            )
        conn.execute(
            "INSERT INTO westep_ops.alerts (incident_id, ts, kind, severity, category, message)"
            " SELECT id, detected_at, 'opened', severity, category, summary FROM westep_ops.incidents"
        )


def count_rows(url: str) -> int:
    with psycopg.connect(url) as conn:
        (n,) = conn.execute(
            "SELECT (SELECT count(*) FROM westep_ops.samples)"
            " + (SELECT count(*) FROM westep_ops.performance_samples)"
        ).fetchone()
    return int(n)
