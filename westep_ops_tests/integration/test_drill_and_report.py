"""A real short fault drill on the sandbox, and the monthly report built from its history."""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
import pytest

from westep_ops.sandbox import faults
from westep_ops.sandbox.manager import Sandbox
from westep_ops_tests.helpers import run_cli
from westep_ops_tests.integration.conftest import clear_history
from westep_ops_tests.integration.dagster_idioms import materialize_month


@pytest.fixture(scope="module")
def drill(sandbox: Sandbox) -> dict:
    """One drill for the module: pool_pause, grant_revoke, orphans, pg_down at 2 s probes,
    with 4 s quiet windows before, between and after them."""
    clear_history()
    res = run_cli(
        "drill",
        "--faults",
        "pool_pause,grant_revoke,orphans,pg_down",
        "--interval",
        "2",
        "--quiet",
        "4",
        "--json",
        timeout=500,
    )
    assert "Traceback" not in res.stderr and res.stdout, res.stderr
    assert faults.active(sandbox) == []
    return {"code": res.returncode, **json.loads(res.stdout)}


def test_drill_detects_repairs_escalates_and_loses_nothing(drill: dict) -> None:
    by = {r["fault"]: r for r in drill["results"]}
    assert drill["code"] == 0 and set(by) == {"pool_pause", "grant_revoke", "orphans", "pg_down"}
    assert all(r["detected"] and r["rows_lost"] == 0 for r in by.values())
    for fault, category in (
        ("pool_pause", "pool"),
        ("grant_revoke", "tables"),
        ("orphans", "integrity"),
    ):
        assert (
            by[fault]["category"] == category and by[fault]["outcome"] == "repaired automatically"
        )
        assert by[fault]["recover_s"] is not None and by[fault]["recover_s"] < 30
    assert (
        by["pg_down"]["category"] == "connection"
        and by["pg_down"]["outcome"] == "escalated (level 2)"
    )
    # Detection from the injection: within one probe interval + the confirmation, plus the
    # probes' own timeouts; the first failing sample comes before the alert.
    assert all(r["detect_s"] < 2 + 1 + 12 for r in by.values())
    assert all(0 <= r["first_fail_s"] <= r["detect_s"] for r in by.values())
    # The repair moved the 25 injected orphans to the quarantine: counted apart, not lost.
    assert by["orphans"]["rows_quarantined"] == faults.ORPHAN_ROWS
    assert all(r["rows_quarantined"] == 0 for f, r in by.items() if f != "orphans")
    # Quiet windows at the same cadence, before, between and after: no alert in them.
    quiet = drill["quiet"]
    assert quiet["quiet_windows"] == 5 and quiet["quiet_s"] >= 5 * 4
    assert quiet["quiet_alerts"] == 0 and quiet["per_quiet_hour"] == 0
    assert drill["false_positives"] == 0 and quiet["attributed"] == quiet["alerts"] >= 4
    assert [(s["fault"], s["n"], s["detected"]) for s in drill["summary"]] == [
        (f, 1, 1) for f in ("pool_pause", "grant_revoke", "orphans", "pg_down")
    ]
    with psycopg.connect(os.environ["WESTEP_OPS_STORAGE_URL"]) as conn:
        truth = conn.execute(
            "SELECT fault, categories, rows_lost, injected_at, removed_at"
            " FROM westep_ops.drill_faults ORDER BY injected_at"
        ).fetchall()
    assert [t[0] for t in truth] == [
        "quiet",
        "pool_pause",
        "quiet",
        "grant_revoke",
        "quiet",
        "orphans",
        "quiet",
        "pg_down",
        "quiet",
    ]
    assert all(t[2] == 0 for t in truth if t[0] != "quiet")
    cats = {t[0]: t[1] for t in truth}
    assert cats["quiet"] == [] and cats["grant_revoke"] == ["tables"]
    assert cats["pool_pause"][0] == "pool" and cats["pg_down"][0] == "connection"
    # The windows follow each other and never overlap.
    assert all(a[4] <= b[3] for a, b in zip(truth, truth[1:], strict=False))


def test_monthly_report_of_this_month_shows_the_drill(
    sandbox: Sandbox, drill: dict, tmp_path: Path
) -> None:
    from dagster import DagsterInstance

    month = datetime.now(ZoneInfo("Asia/Tokyo")).strftime("%Y-%m")
    with DagsterInstance.ephemeral() as instance:
        result = materialize_month(instance, month, tmp_path)
    assert result.success
    (mat,) = [
        e.event_specific_data.materialization for e in result.get_asset_materialization_events()
    ]
    meta = mat.metadata
    assert meta["incidents"].value == 4 and meta["alerts"].value == 4
    assert meta["alert_precision"].value == 1.0  # judged against the drill's ground truth
    assert meta["auto_recovery_success"].value == 1.0  # pg_down had no repair to attempt
    assert "data:image/png;base64," in meta["availability_chart"].value
    report = (tmp_path / month / "sla-report.md").read_text()
    assert report.startswith(f"# SLA report {month} (Asia/Tokyo)") and "**Verdict: " in report
    assert "| alert accuracy | 100.0% | >= 95.0% | PASS |" in report
    assert "drill 4" in report  # how the alerts were judged
    for png in ("availability", "response", "incidents", "alerts"):
        assert (tmp_path / month / f"{png}.png").stat().st_size > 1000
        assert f"![{png}]({png}.png)" in report


def test_trends_in_japanese_with_a_what_if(sandbox: Sandbox, drill: dict, tmp_path: Path) -> None:
    month = datetime.now(ZoneInfo("Asia/Tokyo")).strftime("%Y-%m")
    settings = tmp_path / "th.json"
    settings.write_text(
        json.dumps(
            {
                "settings": [
                    {"name": "N=50, no confirmation", "failureThreshold": 50, "confirm": False}
                ]
            }
        )
    )
    res = run_cli(
        "trends", "--month", month, "--lang", "ja", "--thresholds", str(settings), "--json"
    )
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    current, lax = data["whatif"]
    # judged by the drill's fault windows and their categories, not by recorded incidents
    assert {k: current[k] for k in ("alerts", "judged_true", "false_positives", "missed")} == {
        "alerts": 4,
        "judged_true": 4,
        "false_positives": 0,
        "missed": 0,
    }
    assert lax["alerts"] == 0 and lax["missed"] == 4  # such settings would have missed every fault
    assert data["report"].endswith(f"{month}/sla-report.ja.md")  # beside the English one
    text = Path(data["report"]).read_text()
    assert text.startswith(f"# SLAレポート {month}") and "判定:" in text and "アラート精度" in text
    assert "閾値の見直し（what-if）" in text


def test_trends_bad_input_is_one_line(sandbox: Sandbox, tmp_path: Path) -> None:
    res = run_cli("trends", "--month", "November")
    assert (
        res.returncode == 2
        and res.stderr.strip()
        == "error: --month must be YYYY-MM between 1970-01 and 2999-12 (got 'November')"
    )
    res = run_cli("trends", "--month", "2999-01", "--reports-dir", str(tmp_path))
    assert res.returncode == 2 and res.stderr.startswith("error: month 2999-01 has not begun")
    assert not (tmp_path / "2999-01").exists()
    url = os.environ["WESTEP_OPS_STORAGE_URL"]
    closed = url.replace(f":{url.rsplit(':', 1)[1].split('/')[0]}/", ":1/")  # nothing listens
    res = run_cli("trends", "--month", "2026-11", env={"WESTEP_OPS_STORAGE_URL": closed})
    assert res.returncode == 3 and res.stderr.startswith("error: ops store unavailable")
    assert "Traceback" not in res.stderr
    bad = tmp_path / "bad.json"
    bad.write_text('{"settings": []}')
    res = run_cli("trends", "--month", "2026-11", "--thresholds", str(bad))
    assert res.returncode == 2 and "settings: List should have at least 1 item" in res.stderr


def test_drill_refuses_anything_but_the_sandbox(sandbox: Sandbox) -> None:
    res = run_cli(
        "drill",
        "--faults",
        "orphans",
        env={"DIRECT_URL": "postgresql://u:p@db.example.com:5432/postgres"},
    )
    assert res.returncode == 2 and "refusing to inject a fault" in res.stderr
    res = run_cli("drill", "--faults", "meteor")
    assert res.returncode == 2 and "unknown fault(s): meteor" in res.stderr


def test_drill_counts_a_changed_or_missing_row_as_lost(sandbox: Sandbox) -> None:
    """Row fingerprints, not counts: a row changed in place is a row lost."""
    from westep_ops.sandbox.drill import _lost, _rows

    before = _rows(sandbox)
    with sandbox.superuser_conn() as conn:
        (rid, note) = conn.execute(
            "SELECT id, note FROM public.step_logs ORDER BY id LIMIT 1"
        ).fetchone()
        conn.execute(
            "UPDATE public.step_logs SET note = 'changed by the test' WHERE id = %s", (rid,)
        )
    try:
        assert _lost(before, _rows(sandbox)) == 1
    finally:
        with sandbox.superuser_conn() as conn:
            conn.execute("UPDATE public.step_logs SET note = %s WHERE id = %s", (note, rid))
    assert _lost(before, _rows(sandbox)) == 0
