"""Drill summaries and the fault catalogue, computed without a sandbox."""

from __future__ import annotations

from westep_ops.sandbox import drill, faults


def test_every_fault_says_what_it_breaks() -> None:
    assert set(faults.CATEGORIES) == set(faults.FAULTS)
    known = {"connection", "pool", "tables", "integrity", "realtime", "auth", "api", "performance"}
    for name, cats in faults.CATEGORIES.items():
        assert cats and set(cats) <= known and len(set(cats)) == len(cats), name
    assert faults.CATEGORIES["grant_revoke"] == ("tables",)  # anon still reads via REST
    assert faults.CATEGORIES["publication_drop"] == ("realtime",)
    assert set(faults.CATEGORIES["pg_down"]) == known  # everything reads the database


def test_summary_gives_n_median_and_worst_per_fault() -> None:
    def r(fault: str, trial: int, detect: float | None, recover: float | None) -> drill.DrillResult:
        return drill.DrillResult(
            fault,
            trial,
            ["tables"],
            detect is not None,
            "tables" if detect is not None else None,
            detect,
            None if detect is None else detect - 5,
            recover,
            "repaired automatically" if detect is not None else "not detected",
            0,
            0,
            1,
        )

    results = [
        r("grant_revoke", 1, 20.0, 0.4),
        r("orphans", 1, 100.0, 0.3),
        r("grant_revoke", 2, 62.0, 0.2),
        r("grant_revoke", 3, 30.0, None),
        r("orphans", 2, None, None),
    ]
    gr, orph = drill.summarize(results)
    assert gr["fault"] == "grant_revoke" and gr["n"] == 3 and gr["detected"] == 3
    assert gr["detect_s"] == {"median": 30.0, "worst": 62.0}
    assert gr["first_fail_s"] == {"median": 25.0, "worst": 57.0}
    assert gr["recover_s"] == {"median": 0.3, "worst": 0.4}  # the escalated one has none
    assert orph["n"] == 2 and orph["detected"] == 1
    assert orph["detect_s"] == {"median": 100.0, "worst": 100.0}
    assert orph["outcomes"] == {"repaired automatically": 1, "not detected": 1}
    report = drill.DrillReport("d", "x", results)
    assert report.failed  # a fault went undetected
