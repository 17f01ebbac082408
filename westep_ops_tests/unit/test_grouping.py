"""Grouping and reminders alone (lib/grouping.py, lib/alerting.py): constructed sweeps and
sample sequences, no sandbox.

The engine groups each sweep with :func:`group` from the incidents it reads back, the
what-if replay with the incidents it replays; both remind with :func:`remind`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd

from westep_ops.lib.alerting import remind
from westep_ops.lib.grouping import QUEUED_THROUGH_RESTART, Observed, group
from westep_ops.lib.whatif import Setting, replay

T0 = datetime(2026, 12, 1, tzinfo=UTC)
PERF = pd.DataFrame(columns=["ts", "mean_api_ms"])


def seen(category: str, status: str = "ok", *findings: str, **values: float) -> Observed:
    """A category in a sweep: failing when warning or critical (no observe-only here)."""
    return Observed.of(category, status, status in ("warning", "critical"), findings, values)


H1_OK = seen("connection", "ok", direct_ms=1.0)  # PostgreSQL answers the direct login
H1_DOWN = seen("connection", "critical", "direct_connection_failed", direct_error=1)


# -- the pg_down tail ----------------------------------------------------------------------
def test_a_waiter_that_queued_through_the_restart_is_the_outages_tail() -> None:
    through = seen("pool", "critical", "pool_wait", max_wait_s=40, **{QUEUED_THROUGH_RESTART: 3})
    after = seen("pool", "critical", "pool_wait", max_wait_s=40)
    # the critical connection incident closed within the grace
    assert group([H1_OK, through], {}, {"connection"}) == {"pool": "connection"}
    # a client that queued after PostgreSQL was back: the pool's own fault
    assert group([H1_OK, after], {}, {"connection"}) == {}
    # ...and once the grace is over, even the one that queued through is news
    assert group([H1_OK, through], {}, set()) == {}
    # while the connection incident is still open (critical), the same
    assert group([H1_OK, through], {"connection": "critical"}, set()) == {"pool": "connection"}
    assert group([H1_OK, after], {"connection": "critical"}, set()) == {}


def test_the_replay_groups_the_tail_as_the_engine_does() -> None:
    def row(m: float, cat: str, status: str, *findings: str, **value: float) -> dict[str, Any]:
        return {
            "ts": T0 + timedelta(minutes=m),
            "kind": "cheap",
            "category": cat,
            "status": status,
            "findings": list(findings),
            "value": value,
        }

    def outage_then(pool: dict[str, float], grace_s: float = 600) -> list[str]:
        down = [row(m, "connection", "critical", "direct_connection_failed") for m in (0, 1)]
        up = [row(m, "connection", "ok", direct_ms=1) for m in (2, 3, 4, 5)]
        waits = [row(m, "pool", "critical", "pool_wait", **pool) for m in (4, 5)]
        setting = Setting("x", confirm=False, group_grace_s=grace_s)
        got = replay(pd.DataFrame(down + up + waits), PERF, setting)
        return list(got["category"])

    # the connection incident opens at 1 and closes at 3; the pool fails at 4 and 5
    assert outage_then({"max_wait_s": 40, QUEUED_THROUGH_RESTART: 3}) == ["connection"]
    assert outage_then({"max_wait_s": 40}) == ["connection", "pool"]
    assert outage_then({"max_wait_s": 40, QUEUED_THROUGH_RESTART: 3}, grace_s=0) == [
        "connection",
        "pool",
    ]


def test_faults_of_their_own_are_never_grouped() -> None:
    pgbouncer = seen("pool", "critical", "pgbouncer_down")
    assert group([H1_DOWN, pgbouncer], {"connection": "critical"}, {"connection"}) == {}
    # nor a failure that already names its cause, nor one with its own incident open
    named = Observed.of("api", "critical", True, ["endpoint_down"], cause="pool")
    assert group([H1_DOWN, named], {"connection": "critical"}, set()) == {}
    api = seen("api", "critical", "endpoint_down")
    assert group([H1_DOWN, api], {"connection": "critical", "api": "critical"}, set()) == {}


# -- what explains -------------------------------------------------------------------------
def test_a_warning_explains_nothing() -> None:
    api = seen("api", "critical", "endpoint_down")
    # a pool incident opened as a warning (idle in transaction) hides no endpoint failure
    lingering = seen("pool", "warning", "idle_in_transaction")
    assert group([H1_OK, lingering, api], {"pool": "warning"}, set()) == {}
    # a critical pool incident that only warns in this sweep explains nothing either
    assert group([H1_OK, lingering, api], {"pool": "critical"}, set()) == {}
    # ...while a pool that cannot serve in this sweep explains the endpoint failure
    cannot = seen("pool", "critical", "pool_wait")
    assert group([H1_OK, cannot, api], {"pool": "critical"}, set()) == {"api": "pool"}
    # a warning incident just closed is no tail
    assert group([H1_OK, api], {}, set()) == {}


def test_a_symptom_more_severe_than_its_cause_is_not_grouped() -> None:
    api = seen("api", "critical", "endpoint_down")
    slow_api = seen("api", "warning", "endpoint_slow")
    # the connection incident opened as a warning (slow connect): the API down is news,
    # even while H1 now fails critically with it
    assert group([H1_DOWN, api], {"connection": "warning"}, set()) == {}
    # under a critical incident failing critically now, both are its symptoms
    assert group([H1_DOWN, api], {"connection": "critical"}, set()) == {"api": "connection"}
    assert group([H1_DOWN, slow_api], {"connection": "critical"}, set()) == {"api": "connection"}


def test_a_pool_that_cannot_serve_while_postgresql_answers_is_its_own_fault() -> None:
    pooled_only = seen("connection", "critical", "pooled_connection_failed", direct_ms=1.0)
    exhausted = seen("pool", "critical", "pool_exhausted")
    assert group([pooled_only, exhausted], {"connection": "critical"}, set()) == {}
    # with PostgreSQL down as well, it is the outage's symptom
    assert group([H1_DOWN, exhausted], {"connection": "critical"}, set()) == {"pool": "connection"}


def test_the_tail_is_asked_for_only_when_something_could_be_grouped() -> None:
    asked: list[int] = []

    def tail() -> set[str]:
        asked.append(1)
        return {"connection"}

    assert group([H1_OK, seen("pool")], {}, tail) == {} and asked == []
    assert group([H1_OK, seen("api", "critical", "endpoint_down")], {}, tail) == {
        "api": "connection"
    }
    assert asked == [1]


def test_the_replay_without_findings_groups_nothing_new() -> None:
    """Samples stored before findings were kept: only their stored cause speaks."""

    def row(m: float, cat: str, status: str, findings: list[str] | None) -> dict[str, Any]:
        return {
            "ts": T0 + timedelta(minutes=m),
            "kind": "cheap",
            "category": cat,
            "status": status,
            "findings": findings,
        }

    def incidents(with_findings: bool) -> list[str]:
        rows = []
        for m in range(6):  # PostgreSQL down from 0; the API fails from 3
            h1 = ["direct_connection_failed"] if with_findings else None
            rows += [row(m, "connection", "critical", h1)]
            if m >= 3:
                rows += [row(m, "api", "critical", ["endpoint_down"] if with_findings else None)]
        got = replay(pd.DataFrame(rows), PERF, Setting("x", confirm=False))
        return sorted(got["category"])

    # the connection incident opened at 1 and fails with direct_connection_failed: the
    # API failure is its symptom; without the findings the replay cannot tell
    assert incidents(True) == ["connection"]
    assert incidents(False) == ["api", "connection"]


# -- reminders -----------------------------------------------------------------------------
def test_reminders_come_every_reminder_minutes_and_pause_while_silenced() -> None:
    every = timedelta(minutes=10)
    last = T0  # opened (and notified) at T0
    sent = []
    for minute in range(1, 46):  # one tick a minute while the incident is held
        now = T0 + timedelta(minutes=minute)
        if remind(now, last, every, silenced=12 <= minute < 33):
            sent.append(minute)
            last = now
    # at 10; silenced 12-32 (20 and 30 would be due); due at once when the silence ends
    # (the engine's "still failing after the silence ended" alert), then every 10
    assert sent == [10, 33, 43]
    assert remind(T0 + every, T0, every) and not remind(T0 + every / 2, T0, every)
