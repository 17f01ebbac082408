"""Benchmark the monthly SLA report on a month of 1-minute samples for every category.

    .venv/bin/python benchmarks/bench_sla.py

Generates 30 days x 1440 minutes of samples for H1-H7 and the performance monitor, plus
performance samples, a few hundred incidents and alerts, into a scratch database of the
demo sandbox's ops cluster; then builds the report (load + figures for the month and the
month before + four charts + Markdown) and prints its wall time and the process's peak
RSS. Goal: under 5 s and under 1 GiB.
"""

from __future__ import annotations

import random
import resource
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402

from westep_ops.config import load_config  # noqa: E402
from westep_ops.monitoring import sla  # noqa: E402
from westep_ops.monitoring.history import HistoryStore  # noqa: E402
from westep_ops.sandbox.manager import Sandbox  # noqa: E402
from westep_ops.sandbox.state import OPS_DB, default_base_port, sandbox_dir  # noqa: E402
from westep_ops.store import migrate  # noqa: E402

CATS = ("connection", "pool", "tables", "integrity", "realtime", "auth", "api", "performance")


def main() -> None:
    sb = Sandbox(sandbox_dir())
    sb.up(default_base_port())
    s = sb.state
    admin = s.url("westep_ops", s.ops_port, OPS_DB)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS westep_bench_sla")
        conn.execute("CREATE DATABASE westep_bench_sla")
    url = s.url("westep_ops", s.ops_port, "westep_bench_sla")
    rng = random.Random(11)
    start = datetime(2026, 10, 1, tzinfo=UTC) - timedelta(hours=9)
    t0 = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        migrate(conn)
        with conn.cursor() as cur:
            with cur.copy(
                "COPY westep_ops.samples (ts, kind, category, status, summary) FROM STDIN"
            ) as copy:
                for m in range(30 * 1440):
                    ts = start + timedelta(minutes=m)
                    for c in CATS:
                        copy.write_row(
                            (ts, "cheap", c, "critical" if rng.random() < 0.0005 else "ok", "g")
                        )
            with cur.copy(
                "COPY westep_ops.performance_samples (ts, mean_api_ms, http_requests, http_failures,"
                " status) FROM STDIN"
            ) as copy:
                for m in range(30 * 1440):
                    copy.write_row(
                        (
                            start + timedelta(minutes=m),
                            rng.uniform(50, 400),
                            2,
                            int(rng.random() < 0.003),
                            "ok",
                        )
                    )
            incidents = []
            for i in range(300):
                st = start + timedelta(minutes=rng.randrange(30 * 1440 - 60))
                incidents.append(
                    (
                        CATS[i % 7],
                        "critical",
                        st,
                        st + timedelta(seconds=rng.uniform(5, 70)),
                        st + timedelta(seconds=rng.uniform(80, 900)),
                        "auto:x",
                        "generated",
                    )
                )
            cur.executemany(
                "INSERT INTO westep_ops.incidents (category, severity, started_at, detected_at, resolved_at,"
                " closed_at, recovered_by, summary) VALUES (%s, %s, %s, %s, %s, %s + interval '1 minute', %s, %s)",
                [
                    (c, sev, st, det, res, res, by, summ)
                    for c, sev, st, det, res, by, summ in incidents
                ],
            )
            conn.execute(
                "INSERT INTO westep_ops.alerts (incident_id, ts, kind, severity, category, message)"
                " SELECT id, detected_at, 'opened', severity, category, summary FROM westep_ops.incidents"
            )
        (n,) = conn.execute(
            "SELECT (SELECT count(*) FROM westep_ops.samples)"
            " + (SELECT count(*) FROM westep_ops.performance_samples)"
        ).fetchone()
    print(f"generated {n} rows in {time.perf_counter() - t0:.1f} s")
    config = load_config(ROOT / "westep-ops.json")
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    store = HistoryStore(url)
    t0 = time.perf_counter()
    report = sla.build(store, config, "2026-10", reports_dir=Path("/tmp/westep-bench-reports"))
    took = time.perf_counter() - t0
    store.close()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("DROP DATABASE westep_bench_sla")
    f = report.figures
    print(
        f"monthly report over {n} rows: {took:.2f} s, peak RSS {rss:.0f} MB (before: {rss0:.0f} MB); "
        f"availability {f.availability:.4%}, {f.incidents} incidents, MTTR {f.mttr_mean_s:.0f} s -> {report.path}"
    )


if __name__ == "__main__":
    main()
