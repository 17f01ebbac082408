"""Benchmark continuous monitoring and print its figures.

    .venv/bin/python benchmarks/bench_monitoring.py [--ticks 30] [--faults pool_pause,grant_revoke]

Uses the demo sandbox (.westep/sandbox). Prints:
- one monitoring tick (full sweep + storing + alert evaluation): p50/p95 wall time, and
  the server connections the monitor role holds meanwhile;
- a month (30 days) of 1-minute samples for every category, generated into a scratch
  database, backfilled over 30 daily partitions in ONE run: wall time and peak RSS;
- per fault: time from injection to the alert (detection) and from the alert to the
  verified recovery, with the default 60 s cheap-probe interval simulated by starting
  the fault at a random point of the interval (the standalone driver's loop).
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402

from benchmarks.scratch_history import count_rows, scratch_history  # noqa: E402
from westep_ops.config import load_config  # noqa: E402
from westep_ops.environment import Environment  # noqa: E402
from westep_ops.monitoring import driver  # noqa: E402
from westep_ops.monitoring.engine import Monitor  # noqa: E402
from westep_ops.monitoring.history import HistoryStore  # noqa: E402
from westep_ops.monitoring.notify import Notifier  # noqa: E402
from westep_ops.sandbox import faults  # noqa: E402
from westep_ops.sandbox.manager import Sandbox  # noqa: E402
from westep_ops.sandbox.state import default_base_port, sandbox_dir  # noqa: E402

CATEGORIES = ("connection", "pool", "tables", "integrity", "realtime", "auth", "api", "performance")


def pct(v: list[float], p: int) -> float:
    return v[0] if len(v) == 1 else statistics.quantiles(v, n=100, method="inclusive")[p - 1]


def bench_ticks(env: Environment, config, sb: Sandbox, ticks: int) -> None:
    m = Monitor(env, config, HistoryStore(env.storage_url), Notifier(env, config.timezone))
    times, peak, stop = [], 0, threading.Event()

    def watch() -> None:
        nonlocal peak
        with sb.superuser_conn() as conn:
            while not stop.is_set():
                (n,) = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE usename = 'westep_monitor'"
                ).fetchone()
                peak = max(peak, n)
                time.sleep(0.005)

    try:
        m.tick(force="full")  # warm up
        for _ in range(ticks):
            t0 = time.perf_counter()
            m.tick(force="full")
            times.append((time.perf_counter() - t0) * 1000)
        t = threading.Thread(target=watch, daemon=True)
        t.start()
        for _ in range(5):
            m.tick(force="full")
        stop.set()
        t.join()
    finally:
        m.close()
    print(
        f"[tick] {ticks} full monitoring ticks (sweep + store + alerting): "
        f"p50 {pct(times, 50):.1f} ms, p95 {pct(times, 95):.1f} ms; "
        f"monitor-role server connections at peak: {peak}"
    )


def bench_backfill(sb: Sandbox) -> None:
    from dagster import DagsterInstance, materialize

    from westep_ops.defs.monitoring.assets import (
        diagnosis_report,
        health_samples,
        incidents,
        performance_metrics,
    )
    from westep_ops.resources import default_resources

    t0 = time.perf_counter()
    with scratch_history(sb, "westep_bench", seed=7, critical_share=0.001) as url:
        n = count_rows(url)
        gen_s = time.perf_counter() - t0
        saved = os.environ.get("WESTEP_OPS_STORAGE_URL")
        os.environ["WESTEP_OPS_STORAGE_URL"] = url
        os.environ["WESTEP_OPS_LOG_DIR"] = "/tmp/westep-bench-logs"
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        t0 = time.perf_counter()
        with DagsterInstance.ephemeral() as instance:
            result = materialize(
                [health_samples, performance_metrics, incidents, diagnosis_report],
                resources=default_resources(),
                instance=instance,
                tags={
                    "dagster/asset_partition_range_start": "2026-10-01",
                    "dagster/asset_partition_range_end": "2026-10-30",
                },
            )
        took = time.perf_counter() - t0
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        if saved:
            os.environ["WESTEP_OPS_STORAGE_URL"] = saved
        with psycopg.connect(url) as conn:
            (days,) = conn.execute(
                "SELECT count(DISTINCT day) FROM westep_ops.daily_health"
            ).fetchone()
        print(
            f"[backfill] {n} sample rows over 30 days (generated in {gen_s:.1f} s); one run over 30 daily partitions: "
            f"{took:.1f} s, success={result.success}, days rolled up={days}, peak RSS {rss:.0f} MB "
            f"(process before the run: {rss0:.0f} MB)"
        )


def bench_faults(env: Environment, config, sb: Sandbox, names: list[str]) -> None:
    interval = config.monitoring.intervals.performance / 1000
    for name in names:
        m = Monitor(env, config, HistoryStore(env.storage_url), Notifier(env, config.timezone))
        try:
            m.tick(force="full")
            # The fault lands at a random moment of the cheap-probe interval.
            wait = random.uniform(0, interval)
            faults.inject(sb, name, True, 120)
            t_fault = time.monotonic()
            time.sleep(wait)
            r = m.tick(force="full")
            t_alert = time.monotonic()
            if not r.opened:
                print(f"[fault] {name}: NOT detected")
                continue
            driver.run_repairs(m, r)
            closed = m.tick(force="cheap" if name.startswith("pool") else "full")
            t_closed = time.monotonic()
            print(
                f"[fault] {name}: detected after {t_alert - t_fault:.1f} s (of which {wait:.1f} s waiting for "
                f"the next {interval:.0f} s tick), recovered and verified {t_closed - t_alert:.1f} s after the "
                f"alert, incident closed: {bool(closed.closed)}"
            )
        finally:
            m.close()
            faults.inject(sb, name, False)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--ticks", type=int, default=30)
    ap.add_argument("--faults", default="pool_pause,grant_revoke,orphans,publication_drop")
    ap.add_argument("--skip-faults", action="store_true")
    args = ap.parse_args()
    sb = Sandbox(sandbox_dir())
    sb.up(default_base_port())
    os.environ.update(sb.state.env())
    os.environ["WESTEP_OPS_CONFIG"] = str(ROOT / "westep-ops.json")
    os.environ.setdefault("WESTEP_OPS_LOG_DIR", "/tmp/westep-bench-logs")
    env, config = Environment.from_env(), load_config()
    config = config.model_copy(
        update={
            "monitoring": config.monitoring.model_copy(
                update={
                    "auto_recovery": config.monitoring.auto_recovery.model_copy(
                        update={"max_attempts_per_hour": 1000}
                    )
                }
            )
        }
    )
    print(
        f"westep-ops monitoring benchmark on {os.uname().nodename} ({os.cpu_count()} cores), "
        f"{time.strftime('%Y-%m-%d %H:%M')}"
    )
    bench_ticks(env, config, sb, args.ticks)
    bench_backfill(sb)
    if not args.skip_faults:
        bench_faults(env, config, sb, args.faults.split(","))


if __name__ == "__main__":
    main()
