"""A drill that can fail: quiet windows, false positives by category, quarantined rows apart."""

from __future__ import annotations

import json
import os
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from westep_ops.environment import Environment
from westep_ops.sandbox import drill, faults
from westep_ops.sandbox.manager import Sandbox
from westep_ops_tests.helpers import run_cli, write_config
from westep_ops_tests.integration.conftest import clear_history


def test_noisy_setting_is_caught_as_false_positives(sandbox: Sandbox, tmp_path: Path) -> None:
    """responseTime 1 ms: every API answer is "slow", so alerts open with no fault on."""
    clear_history()
    cfg = write_config(tmp_path / "noisy.json", monitoring__thresholds__responseTime=1)
    res = run_cli(
        "--config",
        str(cfg),
        "drill",
        "--faults",
        "grant_revoke",
        "--interval",
        "2",
        "--quiet",
        "4",
        "--json",
        timeout=300,
    )
    assert "Traceback" not in res.stderr, res.stderr
    out = json.loads(res.stdout)
    assert res.returncode == 1  # the drill fails: alerts matched no fault
    (r,) = out["results"]
    assert r["detected"] and r["category"] == "tables" and r["rows_lost"] == 0
    quiet = out["quiet"]
    assert out["false_positives"] == quiet["false_positives"] > 0
    assert quiet["quiet_alerts"] > 0 and quiet["per_quiet_hour"] > 0
    assert (
        quiet["attributed"] == 1 and quiet["alerts"] == quiet["attributed"] + out["false_positives"]
    )
    assert faults.active(sandbox) == []
    # Human output says so too (progress in --json mode went to stderr).
    assert "quiet: " in res.stderr and "grant_revoke: injected" in res.stderr


def _store() -> psycopg.Connection:
    return psycopg.connect(os.environ["WESTEP_OPS_STORAGE_URL"], autocommit=True)


def test_false_alerts_attributes_by_category_and_window(sandbox: Sandbox) -> None:
    """Constructed ground truth with known answers, in the real ops store."""
    clear_history()
    drill.HistoryStore(os.environ["WESTEP_OPS_STORAGE_URL"]).close()  # migrated
    t = datetime(2026, 11, 3, 1, 0, tzinfo=UTC)

    def at(s: float) -> datetime:
        return t + timedelta(seconds=s)

    with _store() as conn:
        rows = [
            ("quiet", at(0), at(600), []),
            ("grant_revoke", at(600), at(700), ["tables"]),
            ("quiet", at(800), at(1400), []),
        ]
        for fault, start, end, cats in rows:
            conn.execute(
                "INSERT INTO westep_ops.drill_faults (target, drill, fault, injected_at,"
                " removed_at, categories) VALUES ('default', 'd1', %s, %s, %s, %s)",
                (fault, start, end, cats),
            )
        # Another drill's fault at the same time judges nothing of d1's.
        conn.execute(
            "INSERT INTO westep_ops.drill_faults (target, drill, fault, injected_at, removed_at,"
            " categories) VALUES ('default', 'd0', 'api_down', %s, %s, '{api}')",
            (at(0), at(1400)),
        )
        for s, cat in (
            (-10, "api"),  # before the drill: not counted
            (100, "api"),  # quiet window: false positive, quiet
            (650, "tables"),  # the fault, its category: attributed
            (660, "api"),  # during the fault, another category: false positive
            (740, "tables"),  # within the grace after removal: attributed
            (780, "pool"),  # between windows: false positive, not quiet
            (1000, "tables"),  # quiet window, long after the fault: false positive, quiet
            (1500, "api"),  # after the drill: not counted
        ):
            conn.execute(
                "INSERT INTO westep_ops.alerts (target, ts, kind, severity, category, message)"
                " VALUES ('default', %s, 'opened', 'critical', %s, 'test')",
                (at(s), cat),
            )
        conn.execute(
            "INSERT INTO westep_ops.alerts (target, ts, kind, severity, category, message)"
            " VALUES ('default', %s, 'reminder', 'critical', 'api', 'not an opened alert')",
            (at(200),),
        )
        # Another target's alerts in the drill's windows are not this drill's.
        conn.execute(
            "INSERT INTO westep_ops.alerts (target, ts, kind, severity, category, message)"
            " VALUES ('beta', %s, 'opened', 'critical', 'api', 'other target'),"
            " ('beta', %s, 'opened', 'critical', 'tables', 'other target')",
            (at(100), at(650)),
        )
    tally = drill.false_alerts(Environment.from_env(), "d1", target="default")
    assert (tally.alerts, tally.attributed, tally.false_positives) == (6, 2, 4)
    assert (tally.quiet_windows, tally.quiet_s, tally.quiet_alerts) == (2, 1200.0, 2)
    assert tally.per_quiet_hour == pytest.approx(6.0)
    merged = tally + tally
    assert merged.quiet_alerts == 4 and merged.per_quiet_hour == pytest.approx(6.0)
    clear_history()


def test_quarantined_rows_are_counted_apart_not_lost(sandbox: Sandbox) -> None:
    """A real row moved to the quarantine is "quarantined 1", not a row lost."""
    from westep_ops.repairs.quarantine import ensure_table
    from westep_ops.sandbox.drill import _lost, _quarantined, _rows

    qschema = "westep_quarantine"
    since = datetime.now(UTC)
    before = _rows(sandbox)
    repair_url = os.environ["WESTEP_OPS_REPAIR_URL"]  # as the repair does: its role owns it
    with psycopg.connect(repair_url) as conn:
        qtable = ensure_table(conn, qschema, "public.step_logs")
        (rid,) = conn.execute("SELECT min(id) FROM public.step_logs").fetchone()
        cols = sql.SQL(", ").join(
            sql.Identifier(c)
            for (c,) in conn.execute(
                "SELECT attname::text FROM pg_attribute WHERE attrelid = 'public.step_logs'::regclass"
                " AND attnum > 0 AND NOT attisdropped ORDER BY attnum"
            )
        )
        conn.execute(
            sql.SQL(
                "WITH moved AS (DELETE FROM public.step_logs WHERE id = %s RETURNING *)"
                " INSERT INTO {q} ({cols}, rule, reason, trigger)"
                " SELECT {cols}, 'test', 'test', 'test' FROM moved"
            ).format(q=qtable, cols=cols),
            (rid,),
        )
        conn.commit()
    try:
        after = _rows(sandbox)
        moved = _quarantined(sandbox, qschema, since)
        assert sum(moved.values()) == 1
        assert _lost(before, after) == 1  # by fingerprints alone: missing
        assert _lost(before, after, moved) == 0  # but kept in the quarantine
        assert _quarantined(sandbox, qschema, datetime.now(UTC)) == Counter()
    finally:
        from westep_ops.repairs.quarantine import restore

        with psycopg.connect(repair_url) as conn:
            restore(conn, qschema, "public.step_logs", rule="test")
            conn.commit()
    assert _lost(before, _rows(sandbox)) == 0
