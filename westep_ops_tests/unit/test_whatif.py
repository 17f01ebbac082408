"""The what-if review on constructed data (no database): replayed with the engine's own
state machine, judged by labels and drill ground truth, never by recorded incidents."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd

from westep_ops.lib.whatif import Setting, compare, replay

DAY = datetime(2026, 10, 1, tzinfo=UTC)
PERF = pd.DataFrame(columns=["ts", "mean_api_ms"])
NO_INCIDENTS = pd.DataFrame(
    columns=["id", "category", "started_at", "detected_at", "resolved_at", "recovered_by"]
)
NO_ALERTS = pd.DataFrame(columns=["id", "incident_id", "ts", "kind", "category", "label"])
NO_REPAIRS = pd.DataFrame(columns=["incident_id", "action", "outcome"])


def t(m: float) -> datetime:
    return DAY + timedelta(minutes=m)


def row(m: float, status: str, kind: str = "cheap", cat: str = "pool", **kw: Any) -> dict:
    return {"ts": t(m), "kind": kind, "category": cat, "status": status, **kw}


def drill(*rows: tuple[str, float, float, list[str]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"drill": 1, "fault": f, "injected_at": t(a), "removed_at": t(b), "categories": c}
            for f, a, b, c in rows
        ]
    )


def frames(samples: list[dict], **kw: pd.DataFrame) -> dict[str, pd.DataFrame]:
    return {
        "samples": pd.DataFrame(samples),
        "performance": PERF,
        "incidents": NO_INCIDENTS,
        "alerts": NO_ALERTS,
        "repairs": NO_REPAIRS,
        "drill": pd.DataFrame(columns=["drill", "fault", "injected_at", "removed_at"]),
        **kw,
    }


# a real fault (confirmed at once) at 10-13, a blip at 30 whose re-probe passed
FAULT_AND_BLIP = (
    [row(m, "ok") for m in range(0, 10)]
    + [row(10, "critical"), row(10.1, "critical", "confirmation")]
    + [row(m, "critical") for m in range(11, 14)]
    + [row(m, "ok") for m in range(14, 30)]
    + [row(30, "critical"), row(30.1, "ok", "confirmation")]
    + [row(m, "ok") for m in range(31, 40)]
)
SETTINGS = [
    Setting("current"),
    Setting("N=5, no confirmation", failure_threshold=5, confirm=False),
    Setting("N=1, no confirmation", failure_threshold=1, confirm=False),
]


def test_settings_are_judged_by_drill_truth_of_the_category() -> None:
    truth = drill(
        ("quiet", 0, 9.5, []),
        ("pool_pause", 9.5, 14, ["pool", "api"]),
        ("quiet", 14, 40, []),
    )
    current, strict, noisy = compare(frames(FAULT_AND_BLIP, drill=truth), SETTINGS, t(40))
    assert current == {
        "name": "current",
        "alerts": 1,
        "judged_true": 1,
        "false_positives": 0,
        "unjudged": 0,
        "missed": 0,
        "truth_windows": 1,
        "precision": 1.0,
    }
    assert (strict["alerts"], strict["missed"], strict["precision"]) == (0, 1, None)
    # the blip, inside a quiet window, is a false positive of the noisy setting
    assert (noisy["alerts"], noisy["judged_true"], noisy["false_positives"]) == (2, 1, 1)
    assert noisy["missed"] == 0 and noisy["precision"] == 0.5


def test_the_current_setting_can_miss_a_fault() -> None:
    """Not circular: a drill fault the recorded incidents never saw is missed by the
    current setting too (a recorded incident list would have scored it 0 misses)."""
    samples = [row(m, "ok") for m in range(0, 20)] + [row(5, "warning", cat="tables")]
    truth = drill(("grant_revoke", 4, 8, ["tables"]))
    (current,) = compare(frames(samples, drill=truth), SETTINGS[:1], t(20))
    assert current["alerts"] == 0 and current["missed"] == 1


def test_alerts_of_another_category_in_a_fault_window_are_false() -> None:
    truth = drill(("publication_drop", 9.5, 14, ["realtime"]))
    (current,) = compare(frames(FAULT_AND_BLIP, drill=truth), SETTINGS[:1], t(40))
    assert (current["alerts"], current["false_positives"], current["missed"]) == (1, 1, 1)


def test_without_labels_or_drills_alerts_are_unjudged() -> None:
    (current, _strict, noisy) = compare(frames(FAULT_AND_BLIP), SETTINGS, t(40))
    assert (current["alerts"], current["unjudged"], current["precision"]) == (1, 1, None)
    assert (noisy["alerts"], noisy["unjudged"], noisy["missed"]) == (2, 2, 0)


def test_labels_of_recorded_alerts_judge_and_make_truth() -> None:
    incidents = pd.DataFrame(
        [
            {"id": 7, "category": "pool", "started_at": t(10), "detected_at": t(10.1)}
            | {"resolved_at": t(14), "recovered_by": None},
        ]
    )
    alerts = pd.DataFrame(
        [{"id": 1, "incident_id": 7, "ts": t(10.1), "kind": "opened", "category": "pool"}]
    ).assign(label=True)
    current, strict, noisy = compare(
        frames(FAULT_AND_BLIP, incidents=incidents, alerts=alerts), SETTINGS, t(40)
    )
    assert (current["judged_true"], current["unjudged"], current["missed"]) == (1, 0, 0)
    assert (strict["alerts"], strict["missed"]) == (0, 1)  # the labelled-real alert is truth
    assert (noisy["judged_true"], noisy["unjudged"]) == (1, 1)  # the blip: nobody said
    false = alerts.assign(label=False)
    (current,) = compare(
        frames(FAULT_AND_BLIP, incidents=incidents, alerts=false), SETTINGS[:1], t(40)
    )
    assert (current["false_positives"], current["truth_windows"]) == (1, 0)


def test_a_recorded_incident_closed_after_a_real_repair_judges_true() -> None:
    incidents = pd.DataFrame(
        [
            {"id": 7, "category": "pool", "started_at": t(10), "detected_at": t(10.1)}
            | {"resolved_at": t(14), "recovered_by": "auto:restore_connection_pool"},
        ]
    )
    repairs = pd.DataFrame(
        [{"incident_id": 7, "action": "restore_connection_pool", "outcome": "repaired"}]
    )
    (current,) = compare(
        frames(FAULT_AND_BLIP, incidents=incidents, repairs=repairs), SETTINGS[:1], t(40)
    )
    assert (current["judged_true"], current["missed"], current["truth_windows"]) == (1, 0, 0)
    nothing = repairs.assign(outcome="nothing_to_do")
    (current,) = compare(
        frames(FAULT_AND_BLIP, incidents=incidents, repairs=nothing), SETTINGS[:1], t(40)
    )
    assert current["unjudged"] == 1


def test_a_fault_never_removed_lasts_to_the_end_of_the_period() -> None:
    truth = drill(("pool_pause", 9.5, 14, ["pool"]))
    truth["removed_at"] = pd.NaT
    current, strict, _noisy = compare(frames(FAULT_AND_BLIP, drill=truth), SETTINGS, t(40))
    assert (current["judged_true"], current["missed"], strict["missed"]) == (1, 0, 1)


def test_old_drill_rows_without_categories_judge_nothing() -> None:
    old = drill(("pool_pause", 9.5, 14, [])).drop(columns="categories")
    (current,) = compare(frames(FAULT_AND_BLIP, drill=old), SETTINGS[:1], t(40))
    assert (current["unjudged"], current["truth_windows"], current["missed"]) == (1, 0, 0)


def test_a_noisy_response_time_fires_in_a_quiet_window() -> None:
    perf = pd.DataFrame([{"ts": t(m), "mean_api_ms": 40.0} for m in range(20)])
    samples = [row(m, "ok", cat="performance") for m in range(20)]
    truth = drill(("quiet", 0, 20, []))
    current, noisy = compare(
        frames(samples, performance=perf, drill=truth),
        [Setting("current", response_time_ms=2000), Setting("1 ms", response_time_ms=1)],
        t(20),
    )
    assert current["alerts"] == 0
    assert (noisy["alerts"], noisy["false_positives"]) == (1, 1)


def test_replay_reads_samples_as_the_engine_does() -> None:
    def incidents(samples: list[dict]) -> list:
        got = replay(pd.DataFrame(samples), PERF, Setting("x", confirm=False), {"pool_queue"})
        return [((r.started - DAY) / timedelta(minutes=1), r.category) for r in got.itertuples()]

    queued = [row(m, "warning", findings=["pool_queue"]) for m in range(5)]
    assert incidents(queued) == []  # observe-only findings read as passing
    waiting = [row(m, "warning", findings=["pool_wait"]) for m in range(5)]
    assert incidents(waiting) == [(0.0, "pool")]
    symptoms = [row(m, "critical", suspected_cause="connection") for m in range(5)]
    assert incidents(symptoms) == []  # a symptom opens nothing
    errors = [row(m, "critical" if m % 2 else "error") for m in range(6)]
    assert incidents(errors) == []  # an error sample ends every run
    # a repair's verification probe counts toward closing but decides nothing itself
    fixed = [row(0, "critical"), row(1, "critical"), row(1.5, "ok", "verification")]
    got = replay(pd.DataFrame(fixed + [row(2, "ok")]), PERF, Setting("x", confirm=False))
    assert list(got["resolved"]) == [t(1.5)]
    got = replay(pd.DataFrame(fixed), PERF, Setting("x", confirm=False))
    assert got["resolved"].isna().all()
