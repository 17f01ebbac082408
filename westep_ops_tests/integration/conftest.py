"""One real sandbox for the whole test session, on its own ports and directory.

Tests talk to real PostgreSQL and pgbouncer processes; nothing is mocked. The session
sandbox lives in ``.westep/test-sandbox`` (base port ``WESTEP_OPS_TEST_BASE_PORT``,
default 25530) so it never collides with a demo sandbox, and it is stopped at the end.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import psycopg
import pytest

from westep_ops.db import admin_show
from westep_ops.sandbox import faults
from westep_ops.sandbox.manager import Sandbox
from westep_ops_tests.helpers import ROOT

TEST_DIR = ROOT / ".westep" / "test-sandbox"
BASE_PORT = int(os.environ.get("WESTEP_OPS_TEST_BASE_PORT", "25530"))


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    sb = Sandbox(TEST_DIR)
    sb.up(BASE_PORT)
    saved = dict(os.environ)
    os.environ.update(sb.state.env())
    os.environ["WESTEP_OPS_SANDBOX_DIR"] = str(TEST_DIR)
    os.environ["WESTEP_OPS_CONFIG"] = str(ROOT / "westep-ops.json")
    # Reports and audit files of the tests go to a scratch folder, not the repo's logs/.
    os.environ["WESTEP_OPS_LOG_DIR"] = str(tmp_path_factory.mktemp("logs"))
    os.environ["WESTEP_OPS_REPORTS_DIR"] = str(tmp_path_factory.mktemp("reports"))
    # The per-user state (repair budget, local silences) too, never ~/.local/state.
    os.environ["XDG_STATE_HOME"] = str(tmp_path_factory.mktemp("state"))
    for name in faults.active(sb):  # left on by an interrupted earlier run
        faults.inject(sb, name, False)
    try:
        yield sb
    finally:
        os.environ.clear()
        os.environ.update(saved)
        sb.down()


@pytest.fixture(scope="session")
def secrets(sandbox: Sandbox) -> list[str]:
    """Every secret the sandbox has: none may appear in output other than `sandbox env`."""
    s = sandbox.state
    return [*s.passwords.values(), s.ops_password, s.service_role_key, s.anon_key]


def app_get(sb: Sandbox, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
    """GET from the stand-in that serves ``path``: the app, or the Supabase services."""
    port = sb.state.app_port if path.startswith("/api/") else sb.state.supabase_port
    return httpx.get(f"http://127.0.0.1:{port}{path}", headers=headers, timeout=15)


def admin_rows(sb: Sandbox, what: str) -> list[dict[str, object]]:
    s = sb.state
    with psycopg.connect(
        s.url("pgbouncer_admin", s.bouncer_port, "pgbouncer"),
        autocommit=True,
        prepare_threshold=None,
    ) as conn:
        return admin_show(conn, what)


def clear_repair_audit() -> None:
    """Start a test with no repair attempts on record (the hourly limit counts them)."""
    with psycopg.connect(os.environ["WESTEP_OPS_STORAGE_URL"], autocommit=True) as conn:
        if conn.execute("SELECT to_regclass('westep_ops.repair_attempts')").fetchone()[0]:
            conn.execute("TRUNCATE westep_ops.repair_attempts")
    audit = Path(os.environ["WESTEP_OPS_LOG_DIR"]) / "repair-attempts.jsonl"
    audit.unlink(missing_ok=True)
    from westep_ops.store import BUDGET_FILE, STORE_COPY_FILE, state_home

    for name in (BUDGET_FILE, STORE_COPY_FILE):
        for path in state_home().glob(f"target-*/{name}"):  # every ops store's budget
            path.unlink(missing_ok=True)


HISTORY_TABLES = (
    "alerts",
    "incidents",
    "samples",
    "performance_samples",
    "daily_health",
    "hourly_performance",
    "drill_faults",
    "repair_requests",
    "leases",  # a killed worker's lease must not hold the next test's monitor back
    "workers",
)


def clear_history() -> None:
    """Start a test with an empty monitoring history (and no repair attempts on record)."""
    clear_repair_audit()
    with psycopg.connect(os.environ["WESTEP_OPS_STORAGE_URL"], autocommit=True) as conn:
        if conn.execute("SELECT to_regclass('westep_ops.samples')").fetchone()[0]:
            conn.execute(
                "TRUNCATE " + ", ".join(f"westep_ops.{t}" for t in HISTORY_TABLES)
            )  # constants


class Webhook:
    """A local webhook receiver (the Slack stand-in tests send alerts to).

    It answers ``status``; while ``mute`` is set it accepts connections and never
    answers (a webhook that hangs). Its URL carries a secret-looking path that must never
    be printed.
    """

    def __init__(self, status: int = 200, *, muted: bool = False) -> None:
        self.payloads: list[dict] = []
        self.status = status
        self.mute = threading.Event()
        if muted:
            self.mute.set()
        hook = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a: object) -> None:
                pass

            def do_POST(self) -> None:
                if hook.mute.is_set():
                    # Hold the connection, read nothing, answer nothing; drop it later.
                    while hook.mute.is_set():
                        time.sleep(0.05)
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.payloads.append(json.loads(body))
                self.send_response(hook.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        self.url = (
            f"http://127.0.0.1:{self.httpd.server_address[1]}/services/T000/B000/secret-token-xyz"
        )
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.mute.clear()
        self.httpd.shutdown()
