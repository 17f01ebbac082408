"""Benchmark the H1-H7 sweep against the sandbox and print n, p50/p95 and worst figures.

    .venv/bin/python benchmarks/bench_health.py [--sweeps 200] [--idle-sweeps 10]

Starts (or reuses) the demo sandbox in .westep/sandbox. Prints, for each mode, n, p50/p95
and the worst of the whole sweep and p50/p95 of each category, and the peak number of
server connections the monitor role held (sampled every millisecond from
pg_stat_activity; it counts the server connection pgbouncer opens for the monitor's
pooled check too):

The direct-connection probes share two batched round trips ("direct batches"); each
category's own row is what it spends beyond them (H7 runs in parallel on its own lane).

- kept:   a long-running monitor, direct + admin connections kept, pooled made afresh
          (the full sweep the monitor runs every ``intervals.health``)
- cheap:  the same session, the monitor's cheap sweep (``engine.CHEAP`` without the heavy
          work: no H4, no H5 NOTIFY round trip; every ``intervals.performance``)
- idle:   the same with a 1.5 s gap before each sweep (these VMs pay a wake-up delay)
- fresh:  a new session per sweep, every connection made afresh (what one CLI run does)
- cli:    the whole `westep-ops health-check` process, wall time
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from westep_ops.config import Category, load_config  # noqa: E402
from westep_ops.environment import Environment  # noqa: E402
from westep_ops.monitoring.engine import CHEAP  # noqa: E402
from westep_ops.probes.health import run_health_check  # noqa: E402
from westep_ops.probes.session import ProbeSession  # noqa: E402
from westep_ops.sandbox.manager import Sandbox  # noqa: E402
from westep_ops.sandbox.state import default_base_port, sandbox_dir  # noqa: E402


def pct(values: list[float], p: float) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(p) - 1]


class PeakConnections:
    def __init__(self, sb: Sandbox) -> None:
        self.sb, self.peak, self._stop = sb, 0, threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with self.sb.superuser_conn() as conn:
            while not self._stop.is_set():
                (n,) = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE usename = 'westep_monitor'"
                ).fetchone()
                self.peak = max(self.peak, n)
                time.sleep(0.001)

    def __enter__(self) -> PeakConnections:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()


def sweeps_of(env: Environment, cfg, sweeps: int, *, keep: bool, gap: float, cheap: bool):
    session = ProbeSession(env, cfg, keep_open=True) if keep else None
    try:
        for _ in range(sweeps):
            if gap:
                time.sleep(gap)
            s = session or ProbeSession(env, cfg)
            t0 = time.perf_counter()
            results = run_health_check(s, CHEAP, heavy=()) if cheap else run_health_check(s)
            yield (time.perf_counter() - t0) * 1000, results, s.stats.get("prefetch_ms", 0.0)
            if session:
                session.end_sweep()
            else:
                s.close()
    finally:
        if session:
            session.close()


def run_mode(
    name: str,
    sb: Sandbox,
    env: Environment,
    cfg,
    sweeps: int,
    *,
    keep: bool,
    gap: float,
    cheap: bool = False,
) -> None:
    totals: list[float] = []
    per: dict[Category, list[float]] = {c: [] for c in Category}
    statuses: set[str] = set()
    # One warm-up sweep so first-connection costs of the stand-ins do not count.
    with ProbeSession(env, cfg) as warm:
        run_health_check(warm)
    batches: list[float] = []
    for ms, results, prefetch_ms in sweeps_of(env, cfg, sweeps, keep=keep, gap=gap, cheap=cheap):
        totals.append(ms)
        batches.append(prefetch_ms)
        for r in results:
            per[r.category].append(r.duration_ms)
            statuses.add(r.status.value)
    # The connection count is sampled in a second pass: the sampler's own queries would
    # otherwise compete with the sweeps for these two cores and skew the timings.
    with PeakConnections(sb) as peak:
        for _ in sweeps_of(env, cfg, min(sweeps, 20), keep=keep, gap=gap and 0.2, cheap=cheap):
            pass
    cats = ", ".join(c.value for c in per if per[c])
    print(f"\n[{name}] n={sweeps} sweeps of {cats}; statuses seen: {sorted(statuses)}")
    print(
        f"  whole sweep    p50 {pct(totals, 50):7.2f} ms   p95 {pct(totals, 95):7.2f} ms"
        f"   worst {max(totals):7.2f} ms"
    )
    print(
        f"  direct batches p50 {pct(batches, 50):7.2f} ms   p95 {pct(batches, 95):7.2f} ms"
        "   (shared by H2-H6; the rows below are each category's own part)"
    )
    for c, v in per.items():
        if not v:
            continue
        print(f"  {c.value:<13}  p50 {pct(v, 50):7.2f} ms   p95 {pct(v, 95):7.2f} ms")
    print(f"  peak server connections of the monitor role: {peak.peak}")


def run_cli(runs: int) -> None:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(
            [str(ROOT / ".venv/bin/westep-ops"), "health-check"],
            capture_output=True,
            env=os.environ.copy(),
        )
        times.append((time.perf_counter() - t0) * 1000)
    print(f"\n[cli] `westep-ops health-check` as a whole process, {runs} runs")
    print(f"  wall time      p50 {pct(times, 50):7.1f} ms   p95 {pct(times, 95):7.1f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sweeps", type=int, default=200)
    ap.add_argument("--idle-sweeps", type=int, default=10)
    ap.add_argument("--cli-runs", type=int, default=10)
    args = ap.parse_args()
    sb = Sandbox(sandbox_dir())
    sb.up(default_base_port())
    os.environ.update(sb.state.env())
    os.environ.setdefault("WESTEP_OPS_CONFIG", str(ROOT / "westep-ops.json"))
    env, cfg = Environment.from_env(), load_config()
    print(
        f"westep-ops health sweep benchmark on {os.uname().nodename} ({os.cpu_count()} cores), "
        f"{time.strftime('%Y-%m-%d %H:%M')}"
    )
    run_mode("kept", sb, env, cfg, args.sweeps, keep=True, gap=0)
    run_mode("cheap", sb, env, cfg, args.sweeps, keep=True, gap=0, cheap=True)
    run_mode("idle", sb, env, cfg, args.idle_sweeps, keep=True, gap=1.5)
    run_mode("fresh", sb, env, cfg, max(10, args.sweeps // 4), keep=False, gap=0)
    if args.cli_runs:
        run_cli(args.cli_runs)


if __name__ == "__main__":
    main()
