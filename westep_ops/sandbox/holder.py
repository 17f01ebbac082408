"""Fault helper: hold database connections for a bounded time, then exit.

``sleep`` mode keeps every connection busy in ``pg_sleep`` (through pgbouncer this takes
the pool's server connections: pool exhaustion); ``idle_tx`` mode opens a transaction and
leaves it idle (sessions idle in transaction). The DSN comes from ``HOLDER_DSN`` in the
environment so no password shows in ``ps``. A ready file tells the injector that every
connection is in place.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from pathlib import Path

import psycopg


def main() -> None:
    p = argparse.ArgumentParser(description="hold connections for a westep sandbox fault")
    p.add_argument("mode", choices=["sleep", "idle_tx"])
    p.add_argument("--connections", type=int, required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--ready-file", required=True)
    p.add_argument("--name", required=True)
    args = p.parse_args()
    dsn = os.environ["HOLDER_DSN"]
    deadline = time.monotonic() + args.seconds
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    conns: list[psycopg.Connection] = []
    for _ in range(args.connections):
        conns.append(
            psycopg.connect(
                dsn, connect_timeout=5, prepare_threshold=None, application_name=args.name
            )
        )
    started = threading.Barrier(args.connections + 1)

    def hold(conn: psycopg.Connection) -> None:
        if args.mode == "sleep":
            cur = conn.cursor()
            started.wait()
            try:
                cur.execute("SELECT pg_sleep(%s)", (max(0.0, deadline - time.monotonic()),))
            except psycopg.Error:
                pass
        else:
            conn.execute("SELECT 1")  # opens the transaction (autocommit is off)
            started.wait()

    threads = [threading.Thread(target=hold, args=(c,), daemon=True) for c in conns]
    for t in threads:
        t.start()
    started.wait()
    time.sleep(0.3)  # let the queries reach the server before saying ready
    Path(args.ready_file).write_text(f"{os.getpid()}\n")
    while time.monotonic() < deadline:
        time.sleep(0.2)
    sys.exit(0)


if __name__ == "__main__":
    main()
