"""The monitoring part of ``make demo``: watch the standalone monitor catch and fix a fault.

Sandbox only. Starts ``westep-ops monitor`` in the background with short intervals (5 s
probes, 10 s full sweeps), injects a fault, waits for the alert, the automatic repair and
the resolution, stops the monitor, and prints the alert log and where the reports are.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg

from westep_ops.db import one_row
from westep_ops.repairs.quarantine import restore
from westep_ops.sandbox import faults
from westep_ops.sandbox.manager import Sandbox
from westep_ops.sandbox.state import sandbox_dir
from westep_ops.store import log_dir
from westep_ops.targets import DEFAULT_TARGET

FAULT = "orphans"


def main() -> int:
    sb = Sandbox(sandbox_dir())
    env = {**os.environ, **sb.state.env()}
    cfg = json.loads(Path("westep-ops.json").read_text())
    cfg["monitoring"]["intervals"] = {"health": 10_000, "performance": 5_000}
    cfg["monitoring"]["alerting"] = {"confirmDelaySeconds": 2}
    cfg["monitoring"]["autoRecovery"]["maxAttemptsPerHour"] = 60
    path = Path(".westep/demo-monitor.json")
    path.write_text(json.dumps(cfg, indent=2))
    env["WESTEP_OPS_CONFIG"] = str(path)
    with psycopg.connect(sb.state.env()["WESTEP_OPS_STORAGE_URL"]) as conn:
        known = conn.execute("SELECT to_regclass('westep_ops.incidents') IS NOT NULL").fetchone()
        last = (
            conn.execute("SELECT coalesce(max(id), 0) FROM westep_ops.incidents").fetchone()
            if known and known[0]
            else (0,)
        )
    since = last[0] if last else 0
    out = open(log_dir() / "demo-monitor.out", "w")
    monitor = subprocess.Popen(
        [sys.executable, "-m", "westep_ops.cli", "monitor"],
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    try:
        time.sleep(6)
        print(faults.inject(sb, FAULT, True))
        t0 = time.monotonic()
        state = ""
        while time.monotonic() - t0 < 90:
            with psycopg.connect(sb.state.env()["WESTEP_OPS_STORAGE_URL"]) as conn:
                row = conn.execute(
                    "SELECT id, detected_at, resolved_at, recovered_by FROM westep_ops.incidents"
                    " WHERE target = %s AND id > %s ORDER BY id LIMIT 1",
                    (DEFAULT_TARGET, since),
                ).fetchone()
            if row and row[2] is None and state != "open":
                state = "open"
                print(f"  {time.monotonic() - t0:4.1f} s: incident #{row[0]} opened (alert sent)")
            if row and row[2] is not None:
                print(
                    f"  {time.monotonic() - t0:4.1f} s: incident #{row[0]} resolved, by {row[3] or 'itself'}"
                )
                break
            time.sleep(0.5)
        else:
            print("  the incident did not resolve within 90 s: see logs/demo-monitor.out")
            return 1
    finally:
        monitor.send_signal(signal.SIGTERM)
        monitor.wait(timeout=30)
        # Put the cleaned rows back, then remove them as the fault's 'off' does: the
        # sandbox ends exactly as it started, quarantine included.
        with psycopg.connect(sb.state.env()["WESTEP_OPS_REPAIR_URL"]) as conn:
            if one_row(conn.execute("SELECT to_regclass('westep_quarantine.public__step_logs')"))[
                0
            ]:
                restore(conn, "westep_quarantine", "public.step_logs", rule="step_logs_orphans")
                conn.commit()
        faults.inject(sb, FAULT, False)
    alerts = sorted(log_dir().glob("monitoring-alerts-*.log"))
    if alerts:
        print("  alert log (last lines):")
        for line in alerts[-1].read_text().splitlines()[-3:]:
            print("   ", line)
    print(
        f"  events: {sorted(log_dir().glob('monitoring-events-*.json'))[-1]}  (jq-friendly JSON Lines)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
