"""Diagnosis D1-D4 against the real sandbox: verdict first, the same data as JSON."""

from __future__ import annotations

import json
from pathlib import Path

from westep_ops.sandbox import faults
from westep_ops.sandbox.manager import Sandbox
from westep_ops_tests.helpers import run_cli


def diagnose() -> tuple[int, dict]:
    res = run_cli("diagnose", "--json")
    assert "Traceback" not in res.stderr, res.stderr
    return res.returncode, json.loads(res.stdout)


def test_healthy_diagnosis(sandbox: Sandbox) -> None:
    code, d = diagnose()
    assert code == 0 and d["verdict"] == "HEALTHY: no problem found" and d["problems"] == []
    for target in ("direct", "pooled"):
        v = d["d1_connection"][target]
        assert v["samples"] == 5 and v["failures"] == 0
        assert 0 < v["connect_ms"]["min"] <= v["connect_ms"]["p50"] <= v["connect_ms"]["max"]
    assert d["d2_permissions"]["declared"] == 23 and d["d2_permissions"]["missing"] == []
    assert {t["table"]: t["rls"] for t in d["d2_permissions"]["rls"]} == {
        "public.profiles": True,
        "public.steps": True,
        "public.step_logs": True,
    }
    assert [r["count"] for r in d["d3_integrity"]] == [0, 0, 0]
    assert d["d4_realtime"]["exists"] and d["d4_realtime"]["missing_tables"] == []
    assert d["d4_realtime"]["settings"]["wal_level"] == "logical"
    text = Path(d["report"]).read_text()
    lines = text.splitlines()
    assert (
        lines[0].startswith("# Diagnosis") and lines[2] == "**Verdict: HEALTHY: no problem found**"
    )
    assert (
        Path(d["report"]).name.startswith("diagnosis-report-") and Path(d["report"]).suffix == ".md"
    )
    for section in (
        "## D1 connection performance",
        "## D2 permissions",
        "## D3 data integrity",
        "## D4 realtime",
    ):
        assert section in text


def test_diagnosis_finds_and_explains_problems(sandbox: Sandbox) -> None:
    faults.inject(sandbox, "grant_revoke", True)
    faults.inject(sandbox, "orphans", True)
    with sandbox.superuser_conn() as conn:
        conn.execute("ALTER TABLE public.profiles DISABLE ROW LEVEL SECURITY")
    try:
        code, d = diagnose()
        text = Path(d["report"]).read_text()
    finally:
        with sandbox.superuser_conn() as conn:
            conn.execute("ALTER TABLE public.profiles ENABLE ROW LEVEL SECURITY")
        faults.inject(sandbox, "orphans", False)
        faults.inject(sandbox, "grant_revoke", False)
    assert code == 1 and d["verdict"].endswith("PROBLEM(S) FOUND")
    assert {
        "table": "public.steps",
        "role": "authenticated",
        "privilege": "SELECT",
        "why": "not granted",
    } in d["d2_permissions"]["missing"]
    assert (
        "RLS is off on public.profiles, which anon can read: every row is public" in d["problems"]
    )
    orphans = next(r for r in d["d3_integrity"] if r["rule"] == "step_logs_orphans")
    assert orphans["count"] == 25 and len(orphans["sample_keys"]["id"]) == 5
    assert (
        "**Verdict: " in text.splitlines()[2]
        and "MISSING SELECT on public.steps to authenticated" in text
    )
    assert "| public.profiles | OFF |" in text


def test_diagnosis_with_the_database_down_still_reports(sandbox: Sandbox) -> None:
    faults.inject(sandbox, "pg_down", True)
    try:
        code, d = diagnose()
    finally:
        faults.inject(sandbox, "pg_down", False)
    assert code == 1 and any(p.startswith("H1 connection") for p in d["problems"])
    assert d["d1_connection"]["direct"]["failures"] == 5
    assert "error" in d["d2_permissions"]
