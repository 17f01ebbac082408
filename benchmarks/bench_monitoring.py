"""Benchmark continuous monitoring and print its figures.

    .venv/bin/python benchmarks/bench_monitoring.py [--ticks 30] [--skip-ticks] [--skip-backfill]
        [--faults pool_pause,grant_revoke,orphans,publication_drop,pg_down]
        [--trials 6] [--parallel 3] [--interval S] [--quiet S] [--skip-drill]

Prints:
- one monitoring tick (full sweep + storing + alert evaluation): p50/p95 wall time, and
  the server connections the monitor role holds meanwhile (demo sandbox, .westep/sandbox);
- a month (30 days) of 1-minute samples for every category, generated into a scratch
  database, backfilled over 30 daily partitions in ONE run: wall time and peak RSS;
- the fault drill (``westep-ops drill``) at the REAL cadence of the shipped config
  (westep-ops.json: cheap probes every 60 s, full sweep every 300 s; nothing forced),
  each fault ``--trials`` times, with quiet windows before, between and after the faults:
  per fault n, median and worst detection (from the injection; the first failing sample
  beside it) and recovery (after the alert), rows lost and rows quarantined; alerts in
  the quiet windows (per quiet hour) and alerts that matched no fault (false positives).

A trial at the real cadence takes minutes per fault (a quiet window of 3 intervals, the
wait for the probe, an incident that closes only after passing samples), and the time is
spent waiting, not computing: the trials are spread over ``--parallel`` independent
sandboxes (``.westep/bench/drill-K``, base ports ``--base-port`` + 10*K, each with its
own ops store), each running ``westep-ops drill --json``; their results are merged.
``--interval 3`` gives a quick run (every probe every 3 s).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402

from benchmarks.scratch_history import count_rows, scratch_history  # noqa: E402
from westep_ops.config import load_config  # noqa: E402
from westep_ops.environment import Environment  # noqa: E402
from westep_ops.monitoring.engine import Monitor  # noqa: E402
from westep_ops.monitoring.history import HistoryStore  # noqa: E402
from westep_ops.monitoring.notify import Notifier  # noqa: E402
from westep_ops.sandbox import drill, faults  # noqa: E402
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


def _secs(v: float | None) -> str:
    return f"{v:.1f} s" if v is not None else "-"


def _drill_worker(
    k: int, units: list[str], args: argparse.Namespace, out: dict[int, dict], lock: threading.Lock
) -> None:
    """One sandbox of its own: up, ``westep-ops drill --json`` over ``units`` (faults, a
    fault named again being another trial of it), down."""
    root = Path(args.dir).resolve() / f"drill-{k}"
    port = args.base_port + 10 * k
    scratch = Path(tempfile.mkdtemp(prefix=f"westep-bench-drill-{k}-"))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "WESTEP_OPS_SANDBOX_DIR": str(root),
        "WESTEP_OPS_CONFIG": str(ROOT / "westep-ops.json"),
        "WESTEP_OPS_LOG_DIR": str(scratch / "logs"),
        "XDG_STATE_HOME": str(scratch / "state"),
    }

    def say(line: str) -> None:
        with lock:
            print(f"  [sandbox {k}] {line}", flush=True)

    def cli(*a: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "westep_ops.cli", *a], text=True, cwd=ROOT, **kw
        )

    up = cli("sandbox", "up", "--base-port", str(port), env=env, capture_output=True)
    if up.returncode:
        say(f"sandbox up failed: {up.stderr.strip()}")
        out[k] = {"error": up.stderr.strip()}
        return
    try:
        env.update(Sandbox(root).state.env())
        cmd = ["drill", "--faults", ",".join(units), "--json"]
        if args.interval is not None:
            cmd += ["--interval", str(args.interval)]
        if args.quiet is not None:
            cmd += ["--quiet", str(args.quiet)]
        say(f"base port {port}: westep-ops {' '.join(cmd)}")
        proc = subprocess.Popen(
            [sys.executable, "-m", "westep_ops.cli", *cmd],
            text=True,
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        err: list[str] = []

        def pump() -> None:
            assert proc.stderr is not None
            for line in proc.stderr:
                err.append(line.rstrip())
                say(line.strip())

        t = threading.Thread(target=pump, daemon=True)
        t.start()
        stdout = proc.stdout.read() if proc.stdout else ""
        proc.wait()
        t.join()
        try:
            out[k] = json.loads(stdout)
        except ValueError:
            out[k] = {"error": err[-1] if err else f"exit code {proc.returncode}"}
    finally:
        cli("sandbox", "down", env=env, capture_output=True)


def bench_drill(args: argparse.Namespace) -> None:
    faults_list = [f for f in args.faults.split(",") if f]
    # Every (trial, fault) is a unit of work, dealt round-robin to the sandboxes.
    units = [f for _ in range(args.trials) for f in faults_list]
    k = max(1, min(args.parallel, len(units)))
    shares = [units[i::k] for i in range(k)]
    cfg = load_config(str(ROOT / "westep-ops.json"))
    cadence = (
        f"every probe every {args.interval:g} s"
        if args.interval is not None
        else drill.cadence(cfg)
    )
    quiet = (
        args.quiet
        if args.quiet is not None
        else (
            args.interval * drill.QUIET_INTERVALS
            if args.interval is not None
            else drill.default_quiet_s(cfg)
        )
    )
    print(
        f"[drill] {', '.join(faults_list)}: {args.trials} trial(s) each over {k} sandbox(es) "
        f"in parallel; {cadence}; quiet windows of {quiet:g} s (+ a random part of an interval "
        "before each fault)",
        flush=True,
    )
    t0 = time.monotonic()
    out: dict[int, dict] = {}
    lock = threading.Lock()
    workers = [
        threading.Thread(target=_drill_worker, args=(i, n, args, out, lock))
        for i, n in enumerate(shares)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    took = time.monotonic() - t0
    failed = {i: o["error"] for i, o in out.items() if "error" in o}
    results = [
        drill.DrillResult(**r) for o in out.values() if "error" not in o for r in o["results"]
    ]
    tally = sum(
        (
            drill.AlertTally(**{f: o["quiet"][f] for f in drill.AlertTally.__dataclass_fields__})
            for o in out.values()
            if "error" not in o
        ),
        drill.AlertTally(),
    )
    rows = []
    for s in drill.summarize(results):
        outcomes = ", ".join(f"{n}x {o}" for o, n in s["outcomes"].items())
        rows.append(
            f"  {s['fault']:<17} n={s['n']} detected {s['detected']}/{s['n']}; "
            f"alert after injection median {_secs(s['detect_s']['median'])}, "
            f"worst {_secs(s['detect_s']['worst'])} (first failing sample median "
            f"{_secs(s['first_fail_s']['median'])}, worst {_secs(s['first_fail_s']['worst'])}); "
            f"recovered after the alert median {_secs(s['recover_s']['median'])}, "
            f"worst {_secs(s['recover_s']['worst'])}; {outcomes}; rows lost {s['rows_lost']}, "
            f"quarantined {s['rows_quarantined']}"
        )
    print("\n".join(rows))
    per_hour = tally.per_quiet_hour
    print(
        f"  quiet windows: {tally.quiet_windows}, {tally.quiet_s / 3600:.2f} h with no fault on, "
        f"alerts in them {tally.quiet_alerts}"
        + (f" ({per_hour:.2f} per quiet hour)" if per_hour is not None else " (not measured)")
        + f"; alerts during the drills {tally.alerts}, matching a fault on {tally.attributed}, "
        f"false positives {tally.false_positives}"
    )
    for i, e in sorted(failed.items()):
        print(f"  sandbox {i} FAILED: {e}")
    print(f"  wall time {took / 60:.1f} min", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--ticks", type=int, default=30)
    ap.add_argument("--skip-ticks", action="store_true")
    ap.add_argument("--skip-backfill", action="store_true")
    ap.add_argument("--skip-drill", action="store_true")
    ap.add_argument("--faults", default=",".join(drill.DEFAULT_FAULTS))
    ap.add_argument("--trials", type=int, default=6, help="trials per fault (default 6)")
    ap.add_argument(
        "--parallel", type=int, default=3, help="independent sandboxes at once (default 3)"
    )
    ap.add_argument(
        "--interval",
        type=float,
        default=None,
        help="probe everything every S seconds (default: the shipped config's intervals)",
    )
    ap.add_argument("--quiet", type=float, default=None, help="quiet window seconds")
    ap.add_argument(
        "--base-port",
        type=int,
        default=default_base_port() + 100,
        help="drill sandbox K uses base port + 10*K (default: the demo's + 100)",
    )
    ap.add_argument("--dir", default=str(ROOT / ".westep" / "bench"))
    args = ap.parse_args()
    if args.trials < 1 or args.parallel < 1:
        ap.error("--trials and --parallel must be at least 1")
    unknown = [f for f in args.faults.split(",") if f and f not in faults.FAULTS]
    if unknown:
        ap.error(f"unknown fault(s): {', '.join(unknown)}")
    print(
        f"westep-ops monitoring benchmark on {os.uname().nodename} ({os.cpu_count()} cores), "
        f"{time.strftime('%Y-%m-%d %H:%M')}",
        flush=True,
    )
    if not (args.skip_ticks and args.skip_backfill):
        sb = Sandbox(sandbox_dir())
        sb.up(default_base_port())
        saved = dict(os.environ)
        os.environ.update(sb.state.env())
        os.environ["WESTEP_OPS_CONFIG"] = str(ROOT / "westep-ops.json")
        os.environ.setdefault("WESTEP_OPS_LOG_DIR", "/tmp/westep-bench-logs")
        try:
            env, config = Environment.from_env(), load_config()
            if not args.skip_ticks:
                bench_ticks(env, config, sb, args.ticks)
            if not args.skip_backfill:
                bench_backfill(sb)
        finally:
            os.environ.clear()
            os.environ.update(saved)
    if not args.skip_drill:
        bench_drill(args)


if __name__ == "__main__":
    main()
