"""Detection in the default configuration, against the real sandbox with an injected clock.

The cheap sweep (every ``intervals.performance``, 60 s) carries the catalog-level checks
H3, H5 and H6, so a revoked grant or a dropped publication is alerted within 60 s and the
confirmation re-probe, not at the next 5-minute full sweep; only heavy work (H4's counts,
H5's LISTEN/NOTIFY round trip) waits for the full sweep.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from westep_ops.config import load_config
from westep_ops.environment import Environment
from westep_ops.monitoring.engine import CHEAP, PERFORMANCE, Monitor
from westep_ops.monitoring.history import HistoryStore
from westep_ops.monitoring.notify import Notifier
from westep_ops.probes.health import NOTIFY_NOT_RUN
from westep_ops.sandbox import faults
from westep_ops.sandbox.manager import Sandbox
from westep_ops_tests.helpers import write_config
from westep_ops_tests.integration.conftest import clear_history

MINUTE = timedelta(seconds=60)


class Clock:
    """The monitor's clock; its confirmation delay advances it instead of sleeping."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@pytest.fixture
def default_cfg(tmp_path: Path, sandbox: Sandbox) -> Path:
    """The shipped configuration unchanged (60 s cheap, 300 s full, 5 s confirmation)."""
    clear_history()
    return write_config(tmp_path / "default.json")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def mon(default_cfg: Path, clock: Clock) -> Iterator[Monitor]:
    env = Environment.from_env()
    config = load_config(default_cfg)
    assert config.monitoring.intervals.performance == 60_000
    assert config.monitoring.intervals.health == 300_000
    m = Monitor(
        env,
        config,
        HistoryStore(env.storage_url),
        Notifier(env, config.timezone),
        sleep=clock.sleep,
        clock=clock,
    )
    try:
        yield m
    finally:
        m.close()


@pytest.fixture
def listener(sandbox: Sandbox, default_cfg: Path) -> Iterator[psycopg.Connection]:
    """A connection LISTENing on the monitor's probe channel: it receives every NOTIFY
    the monitor sends, so it tells whether a sweep ran the round trip."""
    channel = load_config(default_cfg).realtime.notify_channel
    with sandbox.superuser_conn() as conn:
        conn.execute(psycopg.sql.SQL("LISTEN {}").format(psycopg.sql.Identifier(channel)))
        yield conn


def notifications(conn: psycopg.Connection) -> int:
    """NOTIFYs the listener received since the last call."""
    return sum(1 for _ in conn.notifies(timeout=0.5))


def samples(category: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(os.environ["WESTEP_OPS_STORAGE_URL"]) as conn:
        return conn.execute(
            "SELECT ts, kind, status FROM westep_ops.samples WHERE category = %s ORDER BY id",
            (category,),
        ).fetchall()


@pytest.mark.parametrize(
    ("fault", "category", "finding"),
    [
        ("grant_revoke", "tables", "grant_missing"),
        ("publication_drop", "realtime", "publication_missing"),
    ],
)
def test_catalog_fault_after_a_full_sweep_is_alerted_by_the_next_cheap_sweep(
    sandbox: Sandbox, mon: Monitor, clock: Clock, fault: str, category: str, finding: str
) -> None:
    first = mon.tick()
    assert first.ran == "full" and first.opened == [] and first.alerts == []
    faults.inject(sandbox, fault, True)  # right after the full sweep: the worst moment
    try:
        clock.advance(MINUTE)
        r = mon.tick()
    finally:
        faults.inject(sandbox, fault, False)
    assert r.ran == "cheap"
    assert [(a.kind, a.category, a.severity) for a in r.alerts] == [
        ("opened", category, "critical")
    ], r.alerts
    (o,) = [x for x in r.observations if x.category == category]
    assert o.result is not None and finding in o.result.findings, o.result
    assert len(r.opened) == 1
    # The cheap sweep saw it and the confirmation re-probe (of that check) confirmed it.
    kinds = [(k, s) for _ts, k, s in samples(category)]
    assert kinds == [("full", "ok"), ("cheap", "critical"), ("confirmation", "critical")]
    last_pass = samples(category)[0][0]
    alert_at = r.alerts[0].ts
    delay = mon.config.monitoring.alerting.confirm_delay_seconds
    assert alert_at - last_pass <= MINUTE + timedelta(seconds=delay)


def test_a_cheap_sweep_leaves_out_h4_and_the_notify_round_trip(
    mon: Monitor, clock: Clock, listener: psycopg.Connection
) -> None:
    notifications(listener)
    full = mon.tick()
    assert full.ran == "full"
    assert notifications(listener) == 1  # the full sweep's LISTEN/NOTIFY round trip
    by = {o.category: o for o in full.observations}
    assert "integrity" in by
    h5 = by["realtime"].result
    assert h5 is not None and h5.values["notify"] == "delivered" and h5.values["notify_ms"] > 0

    clock.advance(MINUTE)
    cheap = mon.tick()
    assert cheap.ran == "cheap" and cheap.opened == []
    assert notifications(listener) == 0  # no NOTIFY sent
    by = {o.category: o for o in cheap.observations}
    assert set(by) == {c.value for c in CHEAP} | {PERFORMANCE}
    assert "integrity" not in by  # H4 (counts on big tables) waits for the full sweep
    h5 = by["realtime"].result
    # Its sample does not claim NOTIFY was checked.
    assert h5 is not None and h5.status.value == "ok"
    assert h5.values["notify"] == NOTIFY_NOT_RUN and "notify_ms" not in h5.values
    assert "NOTIFY not run this sweep" in h5.summary
    assert [k for _ts, k, _s in samples("integrity")] == ["full"]

    clock.advance(4 * MINUTE)  # 300 s after the first: the full sweep is due again
    again = mon.tick()
    assert again.ran == "full" and notifications(listener) == 1
    assert [k for _ts, k, _s in samples("integrity")] == ["full", "full"]


def test_an_open_h5_incident_is_closed_only_by_samples_that_ran_notify(
    sandbox: Sandbox, mon: Monitor, clock: Clock, listener: psycopg.Connection
) -> None:
    """While H5 has an open incident, cheap sweeps run its NOTIFY round trip too, so the
    passing samples that close it looked at everything that could have opened it."""
    mon.tick()
    faults.inject(sandbox, "publication_drop", True)
    try:
        clock.advance(MINUTE)
        opened = mon.tick()
        assert opened.ran == "cheap" and len(opened.opened) == 1
    finally:
        faults.inject(sandbox, "publication_drop", False)
    notifications(listener)
    clock.advance(MINUTE)
    first_pass = mon.tick()
    assert first_pass.ran == "cheap" and first_pass.closed == []
    assert notifications(listener) == 1  # the open incident's category runs in full
    (h5,) = [o.result for o in first_pass.observations if o.category == "realtime"]
    assert h5 is not None and h5.values["notify"] == "delivered"
    clock.advance(MINUTE)
    closed = mon.tick()  # successThreshold (2) passing samples
    assert closed.closed == opened.opened
    assert [a.kind for a in closed.alerts] == ["resolved"]
    # Closed: the next cheap sweep is light again.
    notifications(listener)
    clock.advance(MINUTE)
    assert mon.tick().ran == "cheap" and notifications(listener) == 0


def test_an_h4_incident_is_closed_by_full_sweeps_not_by_cheap_ones(
    sandbox: Sandbox, mon: Monitor, clock: Clock
) -> None:
    """H4 is sampled only by full sweeps (and repairs' verification): cheap sweeps in
    between neither close its incident nor break the run of passing samples."""
    faults.inject(sandbox, "orphans", True)
    try:
        r = mon.tick()
        assert r.ran == "full" and [a.category for a in r.alerts if a.kind == "opened"] == [
            "integrity"
        ]
    finally:
        faults.inject(sandbox, "orphans", False)
    for minute in range(1, 11):
        clock.advance(MINUTE)
        r = mon.tick()
        assert r.ran == ("full" if minute % 5 == 0 else "cheap")
        assert r.opened == []
        if minute < 10:
            assert r.closed == [], minute  # one passing full sample so far (at 5 min)
    assert len(r.closed) == 1 and [a.kind for a in r.alerts] == ["resolved"]
    assert [k for _ts, k, _s in samples("integrity")] == ["full", "confirmation", "full", "full"]
