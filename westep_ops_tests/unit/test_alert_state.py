"""The alert state machine alone (lib/alerting.py): constructed sample sequences, no sandbox.

The engine and the what-if replay decide with the same functions; these tests drive the
replay, whose history is the samples fed, exactly what the engine reads back.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from westep_ops.lib.alerting import (
    CONFIRMATION,
    Decision,
    Replay,
    Sample,
    Thresholds,
    decide,
    failing,
    read_status,
    streak,
)

T0 = datetime(2026, 12, 1, tzinfo=UTC)
DEFAULT = Thresholds()  # failureThreshold 2, successThreshold 2, confirmation on


def t(minute: float) -> datetime:
    return T0 + timedelta(minutes=minute)


def run(statuses: str, th: Thresholds = DEFAULT, symptoms: str = "") -> Replay:
    """Feed one sample a minute: o ok, w warning, c critical, e error, C a failing
    confirmation re-probe, k a passing one; a position marked "s" in ``symptoms`` is a
    symptom of another category's failure."""
    r = Replay("pool", th)
    for i, ch in enumerate(statuses):
        status = {"o": "ok", "w": "warning", "c": "critical", "e": "error"}.get(ch)
        kind = CONFIRMATION if ch in "Ck" else "sweep"
        status = status or ("critical" if ch == "C" else "ok")
        symptom = i < len(symptoms) and symptoms[i] == "s"
        r.feed(Sample(t(i), status, symptom, kind))
    return r


def spans(r: Replay) -> list[tuple[float, float, float | None]]:
    """(started, detected, resolved) in minutes from T0."""

    def m(x: datetime | None) -> float | None:
        return None if x is None else (x - T0).total_seconds() / 60

    return [(m(i.started), m(i.detected), m(i.resolved)) for i in r.incidents]  # type: ignore[misc]


def test_a_run_of_failure_threshold_failing_samples_opens() -> None:
    assert spans(run("oocco", Thresholds(2, 2, confirm=False))) == [(2, 3, None)]
    assert spans(run("ooccco", Thresholds(3, 2, confirm=False))) == [(2, 4, None)]
    assert spans(run("oocoo", Thresholds(3, 2, confirm=False))) == []


def test_a_blip_opens_nothing_and_a_first_failure_asks_for_confirmation() -> None:
    assert spans(run("oocoooo")) == []  # no re-probe on record: the next sample passed
    assert spans(run("oockooo")) == []  # the re-probe passed: a blip
    th = Thresholds()
    assert decide(False, Sample(t(0), "critical"), lambda n: [(t(0), "critical")], th) == Decision(
        "confirm"
    )
    no_confirm = Thresholds(confirm=False)
    assert decide(False, Sample(t(0), "critical"), lambda n: [], no_confirm) == Decision("none")


def test_a_confirming_re_probe_opens_at_once_from_the_first_failure() -> None:
    # N=5: the confirmation opens at once; started at the first failure
    assert spans(run("ocCoo", Thresholds(5, 2))) == [(1, 2, 3)]
    assert spans(run("oocC", Thresholds(5, 2))) == [(2, 3, None)]
    # without confirmation the same samples (re-probes dropped by the replay) need N
    assert spans(run("oocC", Thresholds(5, 2, confirm=False))) == []


def test_an_error_sample_ends_a_run_and_decides_nothing() -> None:
    no = Thresholds(2, 2, confirm=False)
    assert spans(run("ocecoo", no)) == []  # c e c is not two failures in a row
    assert spans(run("occeoeoo", no)) == [(1, 2, 6)]  # o e o is not a closing streak of 2
    assert decide(True, Sample(t(0), "error"), lambda n: [], no) == Decision("none")
    assert decide(False, Sample(t(0), "error"), lambda n: [], no) == Decision("none")


def test_closing_needs_success_threshold_passes_and_recovers_at_the_first() -> None:
    th = Thresholds(2, 3, confirm=False)
    assert spans(run("occooo", th)) == [(1, 2, 3)]  # recovered at the first of three passes
    assert spans(run("occoocoo", th)) == [(1, 2, None)]  # a failure restarts the streak
    assert spans(run("occoocooocc", th)) == [(1, 2, 6), (9, 10, None)]  # and again


def test_symptoms_open_nothing_but_hold_an_open_incident() -> None:
    no = Thresholds(2, 2, confirm=False)
    assert spans(run("occcoo", no, symptoms=".sss")) == []
    # a symptom that becomes its own failure: the run it ends counts the symptoms before it
    assert spans(run("occcoo", no, symptoms=".ss")) == [(2, 3, 4)]
    assert spans(run("occccoo", no, symptoms="...ss")) == [(1, 2, 5)]


def test_warnings_fail_and_observe_only_findings_pass() -> None:
    assert failing("warning") and failing("critical") and not failing("ok")
    assert not failing("error")
    observe = {"pool_queue", "pool_unwatched"}
    assert read_status("warning", ["pool_queue"], observe) == "ok"
    assert read_status("warning", ["pool_queue", "pool_wait"], observe) == "warning"
    assert read_status("warning", [], observe) == "warning"  # no findings: still a warning
    assert read_status("critical", ["pool_queue"], observe) == "critical"
    assert spans(run("owwoo", Thresholds(2, 2, confirm=False))) == [(1, 2, 3)]


def test_streak_reads_newest_first_up_to_its_limit() -> None:
    recent = [(5, "ok"), (4, "ok"), (3, "warning"), (2, "ok")]
    assert streak(recent, False, 5) == [5, 4]
    assert streak(recent, False, 1) == [5]
    assert streak(recent, True, 5) == []
    assert streak([(3, "error"), (2, "ok")], False, 5) == []


def test_the_history_is_read_only_when_the_decision_needs_it() -> None:
    calls: list[int] = []

    def recent(n: int) -> list[tuple[datetime, str]]:
        calls.append(n)
        return [(t(1), "ok"), (t(0), "ok")]

    th = Thresholds(3, 2)
    assert decide(True, Sample(t(1), "critical"), recent, th) == Decision("hold")
    assert decide(False, Sample(t(1), "ok"), recent, th) == Decision("none")
    assert calls == []
    assert decide(True, Sample(t(1), "ok"), recent, th) == Decision("close", t(0))
    assert calls == [2]
