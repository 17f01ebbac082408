"""The ops store's connection pool: reuse on a live store, no wait on a dead one."""

from __future__ import annotations

import os
import socket
import time

import psycopg
import pytest

from westep_ops import db
from westep_ops.sandbox.manager import Sandbox
from westep_ops.store_schema import migrate


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_dead_store_fails_at_once_with_its_reason_and_leaves_no_pool() -> None:
    url = f"postgresql://u:pw@127.0.0.1:{_free_port()}/db"
    for _ in range(2):
        start = time.monotonic()
        with pytest.raises(psycopg.OperationalError) as e, db.store_connection(url):
            pass
        assert time.monotonic() - start < 1.0  # refused: no pool timeout to sit out
        assert "connection refused" in db.describe_error(e.value)
    assert not db.has_store_pool(url)


def test_connections_are_reused_and_a_broken_one_closes_the_pool(sandbox: Sandbox) -> None:
    url = os.environ["WESTEP_OPS_STORAGE_URL"]
    db.close_store_pools()
    with db.store_connection(url, prepare=migrate) as conn:  # direct, then the pool exists
        conn.execute("SELECT 1")
    assert db.has_store_pool(url)
    with db.store_connection(url, prepare=migrate) as conn:
        pid = conn.info.backend_pid
        # a session advisory lock must not leak to the next user of the connection
        conn.execute("SELECT pg_advisory_lock(4242)")
    with db.store_connection(url, prepare=migrate) as conn:
        assert conn.info.backend_pid == pid
        held = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
        ).fetchone()
        assert held == (0,)
        conn.close()  # as a caller does after a deadline cut it
    assert not db.has_store_pool(url)
    with db.store_connection(url) as conn:  # the next caller connects directly again
        assert conn.info.backend_pid != pid
    db.close_store_pools()


def test_a_budget_attempt_of_another_stores_incident_is_replayed_unlinked(
    sandbox: Sandbox,
) -> None:
    """The per-user budget file outlives an ops store (a new sandbox on the same ports):
    its attempts are replayed, but not linked to whatever incident has the same id here,
    which would credit that incident with a repair that never ran for it."""
    from datetime import UTC, datetime

    from westep_ops.store import OpsStore
    from westep_ops_tests.integration.conftest import clear_history, clear_repair_audit

    clear_history()
    clear_repair_audit()
    url = os.environ["WESTEP_OPS_STORAGE_URL"]
    now = datetime.now(UTC)
    with OpsStore(url) as store:
        store._append_budget(  # noqa: SLF001 - what an earlier store's attempt left behind
            {
                "attempt_uid": "from-another-store",
                "action": "fix_table_permissions",
                "trigger": "incident #1",
                "target": "sandbox",
                "started_at": now.isoformat(),
                "finished_at": now.isoformat(),
                "dry_run": False,
                "forced": False,
                "outcome": "repaired",
                "summary": "granted 1",
                "incident_id": 1,
            }
        )
        store.attempts_last_hour("fix_table_permissions")  # replays the file
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT incident_id FROM westep_ops.repair_attempts WHERE attempt_uid = %s",
            ("from-another-store",),
        ).fetchone()
    assert row == (None,)
    clear_repair_audit()
