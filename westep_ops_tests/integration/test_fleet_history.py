"""Two targets share one ops store and never see each other's rows (issue 14, item 3).

Against the sandbox's real ops PostgreSQL: each target's history (samples, incidents,
alerts, its spool while the store is down), its repair budget and its silences are its
own; one open incident per (target, category); a write that names no target fails.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from westep_ops.monitoring.history import HistoryStore, ResilientHistory
from westep_ops.silences import SilenceStore
from westep_ops.spool import Spool, spool_path
from westep_ops.store import OpsStore, insert_attempt
from westep_ops.store_schema import migrate
from westep_ops_tests.integration.conftest import clear_history, clear_repair_audit


def _url() -> str:
    return os.environ["WESTEP_OPS_STORAGE_URL"]


@pytest.fixture
def store(sandbox: object) -> str:
    clear_history()
    clear_repair_audit()
    with psycopg.connect(_url(), autocommit=True) as conn:
        migrate(conn)
        conn.execute("DELETE FROM westep_ops.silences WHERE target IN ('alpha', 'beta')")
    return _url()


def test_two_targets_histories_are_apart(store: str) -> None:
    a, b = HistoryStore(store, target="alpha"), HistoryStore(store, target="beta")
    now = datetime.now(UTC)
    row = {"category": "pool", "status": "critical", "summary": "paused", "findings": []}
    a.add_samples(now - timedelta(seconds=30), "cheap", [row])
    b.add_samples(now - timedelta(seconds=20), "cheap", [{**row, "status": "ok"}])
    # The same category opens on both targets at once: one open incident per target.
    ia = a.open_incident("pool", "critical", now, now, "alpha's pool paused")
    ib = b.open_incident("pool", "warning", now, now, "beta's pool slow")
    assert ia != ib
    assert set(a.open_incidents()) == {"pool"} and a.open_incidents()["pool"]["id"] == ia
    assert b.open_incidents()["pool"]["id"] == ib
    assert [s for _, s in a.recent_statuses("pool", 5)] == ["critical"]
    assert [s for _, s in b.recent_statuses("pool", 5)] == ["ok"]
    aid = a.add_alert(ia, now, "opened", "critical", "pool", "alpha down", [])
    assert [r["id"] for r in a.alerts()] == [aid]
    assert b.alerts() == []
    # An update by id cannot reach another target's incident.
    b.close_incident(ia, now, now, None)
    assert a.open_incidents()["pool"]["closed_at"] is None
    a.close_incident(ia, now, now, None)
    assert a.open_incidents() == {}
    assert "pool" in a.recently_closed(now - timedelta(hours=1))
    assert b.recently_closed(now - timedelta(hours=1)) == {}
    with psycopg.connect(store) as conn:
        got = conn.execute(
            "SELECT target, count(*) FROM westep_ops.samples GROUP BY target ORDER BY target"
        ).fetchall()
        assert got == [("alpha", 1), ("beta", 1)]
        # No default is left on the column: a write that forgets its target fails.
        with pytest.raises(psycopg.errors.NotNullViolation):
            conn.execute(
                "INSERT INTO westep_ops.samples (ts, kind, category, status, summary)"
                " VALUES (now(), 'cheap', 'pool', 'ok', 'x')"
            )


def test_spool_and_budget_are_per_target(
    store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WESTEP_OPS_STATE_DIR", str(tmp_path))
    assert spool_path("alpha") != spool_path("beta") != spool_path("default")
    # A store that does not answer: each target spools its own writes, replayed as its own.
    dead = "postgresql://nobody@127.0.0.1:1/none?connect_timeout=1"
    ha = ResilientHistory(dead, target="alpha", connect_timeout_ms=500)
    hb = ResilientHistory(dead, target="beta", connect_timeout_ms=500)
    now = datetime.now(UTC)
    ha.add_samples(now, "cheap", [{"category": "api", "status": "ok", "summary": "a"}])
    assert ha.spool.count() == 1 and hb.spool.count() == 0
    ha.close()
    hb.close()
    with psycopg.connect(store) as conn:
        from westep_ops.monitoring.history import apply_entry

        n = Spool(spool_path("alpha")).replay(conn, apply_entry, limit=10)
        conn.commit()
        assert n == 1
        assert conn.execute(
            "SELECT target FROM westep_ops.samples WHERE summary = 'a'"
        ).fetchall() == [("alpha",)]
    # The hourly repair limit counts the target's own attempts only.
    with psycopg.connect(store) as conn:
        for i in range(3):
            insert_attempt(
                conn,
                {
                    "action": "restore_connection_pool",
                    "trigger": "test",
                    "target": "alpha",
                    "database": "x:1/a",
                    "started_at": now - timedelta(minutes=i + 1),
                    "finished_at": now,
                    "dry_run": False,
                    "forced": False,
                    "outcome": "repaired",
                    "summary": "constructed",
                    "attempt_uid": f"fleet-test-{i}",
                },
            )
        conn.commit()
    with OpsStore(store, target="alpha", state=tmp_path / "a") as sa:
        (tmp_path / "a").mkdir(exist_ok=True)
        assert sa.attempts_last_hour("restore_connection_pool")[0] == 3
    (tmp_path / "b").mkdir(exist_ok=True)
    with OpsStore(store, target="beta", state=tmp_path / "b") as sb:
        assert sb.attempts_last_hour("restore_connection_pool")[0] == 0


def test_silences_are_per_target(store: str, tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    now = datetime.now(UTC)
    sa = SilenceStore(store, target="alpha", state=tmp_path / "a")
    sb = SilenceStore(store, target="beta", state=tmp_path / "b")
    s = sa.add(["pool"], timedelta(hours=1), "planned PAUSE", "ops", now)
    assert [x.id for x in sa.active(now)] == [s.id]
    assert sb.active(now) == []
    assert sb.expire(s.id, now) is None  # another target's silence cannot be expired here
    assert [x.id for x in sa.active(now)] == [s.id]
