"""Benchmark a fleet worker on 50, 100 and 200 sandbox targets and print its figures.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_fleet.py [--targets 50,100,200]
        [--sweeps 5] [--concurrency 16] [--dir .westep/bench-fleet] [--base-port P]
        [--skip-takeover]

For each fleet size N (the sandbox is grown to at least N target databases behind one
pgbouncer, ``sandbox up --targets N``, and its first N are used; a config of N targets, each with its own secrets file and
pgbouncer pool, the shipped config's checks, a 60 s cheap cadence):

- one worker in this process (``fleet.Worker``: leases taken, fenced histories, the
  bounded thread pool) runs ``--sweeps`` FULL sweeps of the whole fleet BACK TO BACK
  (forced: nothing waits 60 s between ticks), each after renewing every lease in one
  statement, as the worker does before a tick; after one warm-up sweep (first
  connections). Printed: the wall time of a fleet sweep (p50/p95), CPU seconds per
  target per sweep (process CPU, all threads), the worker's RSS (now and peak), the
  ops-database rows written per sweep (samples, performance samples, incidents, alerts
  inserted; the lease rows renewed are N more updates), and the server connections the
  monitor login holds on the target cluster after the sweeps;
- unless ``--skip-takeover``: two ``westep-ops monitor`` workers (subprocesses, real
  60 s cadence) share the N targets; once the leases are split, one is killed with
  SIGKILL and the time until the other holds every lease is measured (the takeover; the
  goal is under two cheap intervals, 120 s), then the longest gap in a moved target's
  sweeps in the history (its last sweep before the kill to its first after: the cadence
  goes on from the history, so about one interval), and the survivor's RSS once it has
  swept every target. ``--skip-sweeps`` runs only this part.

Goals (issue 14): a sweep of 200 targets < 10 s, worker RSS < 500 MB, takeover < 2
intervals. The machine's cores and the date are printed with the figures.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
import psycopg.sql  # noqa: E402

from westep_ops.config import load_config  # noqa: E402
from westep_ops.monitoring.fleet import Worker  # noqa: E402
from westep_ops.monitoring.leases import owner  # noqa: E402
from westep_ops.sandbox.manager import Sandbox  # noqa: E402
from westep_ops.sandbox.state import default_base_port, target_db  # noqa: E402
from westep_ops.targets import resolve_targets  # noqa: E402
from westep_ops_tests.integration.test_fleet_workers import fleet_config  # noqa: E402

CLI = [sys.executable, "-m", "westep_ops.cli"]
WRITTEN = ("samples", "performance_samples", "incidents", "alerts")


def pct(v: list[float], p: int) -> float:
    s = sorted(v)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def rss_mb(pid: int | str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def written(url: str) -> int:
    with psycopg.connect(url, connect_timeout=5) as c:
        q = psycopg.sql.SQL(" + ").join(
            psycopg.sql.SQL("(SELECT count(*) FROM westep_ops.{})").format(
                psycopg.sql.Identifier(t)
            )
            for t in WRITTEN
        )
        row = c.execute(psycopg.sql.SQL("SELECT {}").format(q)).fetchone()
        return int(row[0]) if row else 0


def clear(url: str) -> None:
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as c:
        if c.execute("SELECT to_regclass('westep_ops.leases')").fetchone() != (None,):
            c.execute(
                "TRUNCATE westep_ops.samples, westep_ops.performance_samples,"
                " westep_ops.alerts, westep_ops.incidents, westep_ops.leases, westep_ops.workers"
            )


def monitor_connections(sb: Sandbox, n: int) -> tuple[int, int]:
    """The monitor login's server connections to the first ``n`` target databases:
    (total, most on one database). pgbouncer's idle servers count (they are the pooled
    connections' server side)."""
    dbs = [target_db(t) for t in range(1, n + 1)]
    with sb.superuser_conn() as c:
        per_db = [
            int(k)
            for (k,) in c.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = 'westep_monitor'"
                " AND datname = ANY(%s) GROUP BY datname",
                (dbs,),
            )
        ]
    return sum(per_db), max(per_db, default=0)


def in_process(sb: Sandbox, cfg: Path, n: int, sweeps: int, concurrency: int) -> dict[str, Any]:
    url = sb.state.env(1)["WESTEP_OPS_STORAGE_URL"]
    config = load_config(str(cfg))
    targets = resolve_targets(config, {"WESTEP_OPS_STORAGE_URL": url}, cfg.parent)
    worker = Worker(
        targets,
        storage_url=url,
        worker_id="bench-in-process",
        recovery=False,
        concurrency=concurrency,
        echo=lambda _s: None,
    )
    worker.rebalance()  # takes every lease
    worker.apply()  # builds the N monitors
    assert len(worker.slots) == n, f"{len(worker.slots)} leases of {n}"
    # Lease rounds go on beside the sweeps, as in a worker (a slow sweep must not let
    # its leases lapse: the fence would then refuse its writes).
    stop = threading.Event()

    def rounds() -> None:
        while not stop.wait(worker.timing.renew_s):
            worker.rebalance()

    threading.Thread(target=rounds, daemon=True).start()
    monitors = [s.monitor for s in worker.slots.values()]
    pool = ThreadPoolExecutor(concurrency, thread_name_prefix="westep-target")
    walls: list[float] = []
    cpu = 0.0
    rows_before = 0
    spooled = 0  # ticks whose history writes went to the spool (the store did not answer)
    try:
        for i in range(sweeps + 1):  # the first one connects: a warm-up
            if i == 1:
                rows_before = written(url)
            c0, t0 = time.process_time(), time.perf_counter()
            ok, lost = worker.leases.renew(list(worker.slots))
            assert not lost and len(ok) == n, lost
            results = list(pool.map(lambda m: m.tick(force="full"), monitors))
            wall = time.perf_counter() - t0
            assert all(r.ran == "full" for r in results)
            spooled += sum(1 for r in results if r.history_error)
            if i:
                walls.append(wall)
                cpu += time.process_time() - c0
            confirmed = sum(1 for r in results if r.confirmations)
            failing = sum(1 for r in results for o in r.observations if o.status != "ok")
            print(
                f"  sweep {i}{' (warm-up)' if not i else ''}: {wall:.2f} s; targets that"
                f" re-probed a first failure (confirmDelaySeconds in their slot): {confirmed};"
                f" results not ok: {failing}",
                flush=True,
            )
        rows = (written(url) - rows_before) / sweeps
        conns = monitor_connections(sb, n)
        rss = rss_mb()
    finally:
        stop.set()
        pool.shutdown()
        worker.apply()
        assert len(worker.slots) == n, "a lease was lost during the sweeps"
        worker.leases.release_all()
        for m in monitors:
            m.close()
        worker.leases.close()
    return {
        "p50": statistics.median(walls),
        "p95": pct(walls, 95),
        "cpu_per_target": cpu / sweeps / n,
        "rss": rss,
        "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rows": rows,
        "connections": conns,
        "spooled": spooled,
    }


def holders(url: str) -> dict[str, str | None]:
    with psycopg.connect(url, connect_timeout=5) as c:
        return dict(
            c.execute(
                "SELECT target, CASE WHEN expires_at > clock_timestamp() THEN worker END"
                " FROM westep_ops.leases"
            ).fetchall()
        )


def takeover(sb: Sandbox, cfg: Path, n: int, scratch: Path) -> dict[str, Any]:
    url = sb.state.env(1)["WESTEP_OPS_STORAGE_URL"]
    env = {**os.environ, "WESTEP_OPS_STORAGE_URL": url}
    for name in ("XDG_STATE_HOME", "WESTEP_OPS_LOG_DIR", "WESTEP_OPS_REPORTS_DIR"):
        env[name] = str(scratch / name)
    procs = {}
    for wid in ("bench-a", "bench-b"):
        out = (scratch / f"{wid}.log").open("w")
        procs[wid] = subprocess.Popen(
            [*CLI, "--config", str(cfg), "monitor", "--no-recovery", "--worker-id", wid],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        want = {f"t{t}": owner(f"t{t}", ["bench-a", "bench-b"]) for t in range(1, n + 1)}
        end = time.monotonic() + 600
        while time.monotonic() < end:
            if holders(url) == want:  # settled on the rendezvous owners
                break
            time.sleep(1)
        else:
            raise SystemExit("the two workers never settled on the rendezvous owners")
        moved = sorted(t for t, w in want.items() if w == "bench-a")
        a_had = len(moved)
        os.killpg(procs["bench-a"].pid, signal.SIGKILL)
        killed = time.monotonic()
        killed_at = datetime.now(UTC)
        while set(holders(url).values()) != {"bench-b"}:
            if time.monotonic() - killed > 300:
                raise SystemExit("no takeover within 300 s")
            time.sleep(0.5)
        took = time.monotonic() - killed
        # The history across the takeover: each moved target's last sweep before the kill
        # and its first after (the survivor keeps the cadence from the history).
        gap = 0.0
        while time.monotonic() - killed < 300:
            spans = sweep_gaps(url, moved, killed_at)
            if len(spans) == len(moved):
                gap = max(spans)
                break
            time.sleep(2)
        else:
            raise SystemExit("the moved targets were not swept within 300 s of the kill")
        rss_b = rss_mb(procs["bench-b"].pid)
    finally:
        for p in procs.values():
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
    return {"took": took, "moved": a_had, "rss_b": rss_b, "gap": gap}


def sweep_gaps(url: str, targets: list[str], at: datetime) -> list[float]:
    """Per target of ``targets`` swept again since ``at``: seconds from its last sweep
    before ``at`` to its first after."""
    with psycopg.connect(url, connect_timeout=5) as c:
        rows = c.execute(
            "SELECT target, max(ts) FILTER (WHERE ts < %s), min(ts) FILTER (WHERE ts >= %s)"
            " FROM westep_ops.samples WHERE kind IN ('cheap', 'full') AND target = ANY(%s)"
            " GROUP BY target",
            (at, at, targets),
        ).fetchall()
    return [(b - a).total_seconds() for _t, a, b in rows if a is not None and b is not None]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--targets", default="50,100,200", help="fleet sizes, comma-separated")
    ap.add_argument("--sweeps", type=int, default=5, help="timed full sweeps per size")
    ap.add_argument("--concurrency", type=int, default=16, help="the worker's pool size")
    ap.add_argument("--dir", default=str(ROOT / ".westep" / "bench-fleet"), help="sandbox dir")
    ap.add_argument("--base-port", type=int, default=None, help="sandbox base port")
    ap.add_argument("--skip-takeover", action="store_true", help="no two-worker takeover run")
    ap.add_argument("--skip-sweeps", action="store_true", help="only the takeover run")
    args = ap.parse_args()
    sizes = [int(x) for x in args.targets.split(",") if x.strip()]
    sb_dir = Path(args.dir)
    print(
        f"bench_fleet {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.node()}"
        f" ({os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()})"
    )
    print(
        "Full sweeps are FORCED back to back (no 60 s wait between ticks); the takeover"
        " runs at the real 60 s cadence."
    )
    for n in sizes:
        have = Sandbox(sb_dir).state.targets if Sandbox(sb_dir).exists else 0
        up = subprocess.run(
            [*CLI, "sandbox", "up", "--dir", str(sb_dir), "--targets", str(max(n, have))]
            + ["--base-port", str(args.base_port or default_base_port())],
            capture_output=True,
            text=True,
            timeout=1800,
        )
        if up.returncode:
            raise SystemExit(f"sandbox up --targets {n} failed: {up.stderr.strip()}")
        sb = Sandbox(sb_dir)
        url = sb.state.env(1)["WESTEP_OPS_STORAGE_URL"]
        with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
            scratch = Path(tmp)
            os.environ["XDG_STATE_HOME"] = str(scratch / "state")
            os.environ["WESTEP_OPS_LOG_DIR"] = str(scratch / "logs")
            cfg = fleet_config(sb, scratch / "cfg", n, 60.0)
            clear(url)
            print(f"\n{n} targets, {args.concurrency} slots:", flush=True)
            if not args.skip_sweeps:
                r = in_process(sb, cfg, n, args.sweeps, args.concurrency)
                print(
                    f"  fleet sweep wall time p50 {r['p50']:.2f} s, p95 {r['p95']:.2f} s"
                    f" (goal for 200: < 10 s); CPU {r['cpu_per_target'] * 1000:.0f} ms per target"
                    f" per sweep; worker RSS {r['rss']:.0f} MB (peak {r['peak_rss']:.0f} MB;"
                    f" goal < 500); ops rows written per sweep {r['rows']:.0f} (+ {n} lease"
                    f" renewals); monitor server connections {r['connections'][0]}, at most"
                    f" {r['connections'][1]} on one target (goal <= 2);"
                    f" ticks that spooled (ops store did not answer in time): {r['spooled']}",
                    flush=True,
                )
            if not args.skip_takeover:
                clear(url)
                t = takeover(sb, cfg, n, scratch)
                print(
                    f"  takeover after kill -9 of one of 2 workers: {t['took']:.1f} s for"
                    f" {t['moved']} targets (goal < 120 s: two 60 s intervals); longest"
                    f" gap in a moved target's sweeps {t['gap']:.1f} s (one interval is 60 s);"
                    f" survivor RSS {t['rss_b']:.0f} MB once it swept them all",
                    flush=True,
                )


if __name__ == "__main__":
    main()
