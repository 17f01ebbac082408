"""The monitoring cycle (M1-M4), shared by ``westep-ops monitor`` and the Dagster sensor.

One :meth:`Monitor.tick` decides what is due from ``monitoring.intervals`` (cheap probes
-- :data:`CHEAP`, all but the heavy work, and the performance sample -- every
``performance`` interval, the full H1-H7 sweep every ``health`` interval), probes, stores
the samples, and acts on the decisions of the pure alert state machine, which the
what-if review replays over stored samples with the same functions. This module only
gathers the inputs (the sweep, the open and recently closed incidents, the recent
samples read back from the history) and acts (incidents, alerts, repair requests):

- ``lib/grouping.py``: which failures are an open or just-closed incident's symptom or
  tail (clients that queued through an outage, requests that failed meanwhile); those
  open nothing of their own;
- ``lib/alerting.py``: an incident opens after ``failureThreshold`` failing samples in a
  row, or at once when an immediate re-probe ``confirmDelaySeconds`` later confirms a
  first failure (so detection does not wait for the next interval and a single blip
  opens nothing); it closes after ``successThreshold`` passing samples, recovered at the
  first of them; while held it is re-notified at most every ``reminderMinutes``, not
  while silenced (:func:`~westep_ops.lib.alerting.remind`);
- ``monitoring/repair_requests.py``: repairs requested from the state every tick and
  followed back from the repair audit (a failed or refused repair escalates, level 2/3);
- ``monitoring/degraded.py``: a check that could not run (``Status.error``: the
  monitor's own problem) or a history that cannot be written is neither failing nor
  passing: one "monitor degraded" alert, reminded like an incident;
- ``monitoring/observation.py``: what a sweep saw, as a sample row and as the state
  machine reads it.

Its size (~460 lines) is the tick, the cadence, silences, confirmation and verification
re-probes, alert delivery, and opening/closing incidents: the acting half of one cycle.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from westep_ops.config import Category, Config
from westep_ops.environment import Environment
from westep_ops.lib import alerting, grouping
from westep_ops.monitoring.degraded import DegradedState
from westep_ops.monitoring.history import HistoryStore
from westep_ops.monitoring.notify import Alert, Notifier
from westep_ops.monitoring.observation import (
    CHEAP,
    MONITOR,
    PERFORMANCE,
    UNKNOWN,
    Observation,
    RepairRequest,
    observations,
)
from westep_ops.monitoring.repair_requests import RepairFollowing
from westep_ops.probes.base import CheckResult
from westep_ops.probes.health import run_health_check
from westep_ops.probes.performance import PerformanceMonitor
from westep_ops.probes.session import ProbeSession
from westep_ops.redact import redact
from westep_ops.repairs.recovery import OBSERVE_ONLY

__all__ = [
    "CHEAP",
    "MONITOR",
    "PERFORMANCE",
    "UNKNOWN",
    "Monitor",
    "Observation",
    "RepairRequest",
    "TickResult",
    "observations",
]

RESEND_WINDOW = timedelta(hours=1)  # undelivered alerts older than this are not resent
RESEND_EVERY_S = 10.0


@dataclass
class TickResult:
    ran: str | None = None
    observations: list[Observation] = field(default_factory=list)
    opened: list[int] = field(default_factory=list)
    closed: list[int] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    repairs: list[RepairRequest] = field(default_factory=list)
    duration_ms: float = 0.0
    history_error: str | None = None
    spooled: int = 0  # history writes waiting in the local spool after this tick
    suppressed: list[Alert] = field(default_factory=list)  # recorded, not sent: silenced
    # The re-probes of first failures (and of checks that could not run), as stored with
    # kind "confirmation": they decide whether an incident opens, so they are reported too.
    confirmations: list[Observation] = field(default_factory=list)


class Monitor(RepairFollowing, DegradedState):
    def __init__(
        self,
        env: Environment,
        config: Config,
        history: HistoryStore,
        notifier: Notifier,
        *,
        recovery: bool = True,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.env, self.config = env, config
        self.history, self.notifier = history, notifier
        self.recovery = recovery and config.monitoring.auto_recovery.enabled
        self.sleep, self.clock = sleep, clock
        self.session = ProbeSession(env, config, keep_open=True)
        self.performance = PerformanceMonitor()
        self._last: dict[str, datetime] = {}
        self._local: dict[str, Any] = {}  # local state when the history has no spool
        self._refused: list[CheckResult] = []  # this sweep's H1, when its login is refused
        self._resent_at = 0.0
        self.resend_every_s = RESEND_EVERY_S
        self.silenced: Any = None  # silences.Matcher of the current tick
        self._confirmations: list[Observation] = []  # this tick's re-probes
        self._open_at_sweep: dict[str, dict[str, Any]] | None = None  # a cheap sweep's read

    @property
    def target(self) -> str:
        """The fleet target this monitor watches (its history's)."""
        return self.history.target

    def close(self, wait_s: float = 2.0) -> None:
        """Give queued Slack sends up to ``wait_s`` (the rest is resent later), then close."""
        try:
            self.notifier.flush(wait_s)
            self._record_deliveries()
        finally:
            self.session.close()
            self.history.close()

    # -- local state (outlives the ops store) ---------------------------------------------
    def _state(self, key: str) -> Any:
        spool = getattr(self.history, "spool", None)
        return spool.get(key) if spool is not None else self._local.get(key)

    def _set_state(self, key: str, value: Any) -> None:
        spool = getattr(self.history, "spool", None)
        if spool is not None:
            spool.put(key, value)
        else:
            self._local[key] = value

    # -- silences and maintenance windows ----------------------------------------------------
    def _silences(self, now: datetime) -> None:
        from westep_ops.silences import current
        from westep_ops.store import target_state

        self.silenced = current(
            self.config,
            self.env.storage_url,
            now=now,
            unreachable=self.history.error,
            target=self.target,
            state=target_state(self.env, self.target),
        )

    def silenced_by(self, category: str) -> str | None:
        """The silence or maintenance window covering ``category`` this tick, described."""
        if self.silenced is None or category == MONITOR:
            return None  # the monitor's own blindness is never silenced
        return self.silenced.describe(category)

    def _judge_silence(
        self, now: datetime, o: Observation, incident: dict, out: TickResult
    ) -> None:
        """Mark an open incident silenced while a silence covers it; judge it afresh after.

        An incident that is still failing when its silence ends is alerted then (its
        repairs are requested by the usual level-triggered path); one that passes by then
        closes quietly, as nobody was told it was open.
        """
        by = self.silenced_by(o.category)
        held = incident.get("silenced_by") and not incident.get("unsilenced_at")
        if by and not held:
            self.history.update_incident(incident["id"], silenced_by=by, unsilenced_at=None)
            incident.update(silenced_by=by, unsilenced_at=None)
        elif not by and held and o.failing:
            self.history.update_incident(incident["id"], unsilenced_at=now, last_notified_at=now)
            incident.update(unsilenced_at=now, last_notified_at=now)
            self._alert(
                out,
                now,
                "opened",
                o.severity,
                o.category,
                f"still failing after the silence ended ({incident['silenced_by']}): {o.summary}",
                incident["id"],
            )

    # -- cadence --------------------------------------------------------------------------
    def due(self, now: datetime) -> str | None:
        iv = self.config.monitoring.intervals
        if "full" not in self._last:
            self._last["full"] = self.history.last_sample_at(("full",)) or datetime.min.replace(
                tzinfo=UTC
            )
            self._last["cheap"] = self.history.last_sample_at(
                ("cheap", "full")
            ) or datetime.min.replace(tzinfo=UTC)
        slack = timedelta(seconds=1)  # a tick that comes a moment early still counts
        if now - self._last["full"] >= timedelta(milliseconds=iv.health) - slack:
            return "full"
        if now - self._last["cheap"] >= timedelta(milliseconds=iv.performance) - slack:
            return "cheap"
        return None

    def next_due_in(self, now: datetime) -> float:
        """Seconds until the next sweep (cheap or full) is due; 0 when one is due now."""
        self.due(now)  # reads the last sweeps from the history the first time
        iv = self.config.monitoring.intervals
        nxt = min(
            self._last["cheap"] + timedelta(milliseconds=iv.performance),
            self._last["full"] + timedelta(milliseconds=iv.health),
        )
        return max(0.0, (nxt - now).total_seconds())

    def sweep(self, kind: str) -> tuple[tuple[Category, ...] | None, tuple[Category, ...] | None]:
        """What a sweep of ``kind`` probes: (categories, those whose heavy part runs);
        None is all of them. A cheap sweep runs the heavy part of a category only while
        it has an open incident (its closing must rest on the same check that opened it)."""
        if kind == "full":
            return None, None
        open_ = self._open_at_sweep = self.history.open_incidents()
        return CHEAP, tuple(c for c in CHEAP if c.value in open_)

    def probe(
        self,
        categories: tuple[Category, ...] | None,
        *,
        with_performance: bool,
        heavy: tuple[Category, ...] | None = None,
    ) -> list[Observation]:
        try:
            results = run_health_check(self.session, categories, heavy=heavy)
            perf = self.performance.sample(self.session, results) if with_performance else None
        finally:
            self.session.end_sweep()
        return observations(results, perf)

    # -- the cycle -------------------------------------------------------------------------
    def tick(self, force: str | None = None) -> TickResult:
        """Run what is due (or ``force`` = "full"/"cheap") and update incidents and alerts."""
        t0 = time.perf_counter()
        now = self.clock()
        out = TickResult()
        self._confirmations = out.confirmations
        self._deliveries(now)
        kind = force or self.due(now)
        if kind is None:
            return out
        out.ran = kind
        self._open_at_sweep = None
        categories, heavy = self.sweep(kind)
        obs = self.probe(categories, heavy=heavy, with_performance=True)
        out.observations = obs
        self._last["cheap"] = now
        if kind == "full":
            self._last["full"] = now
        self._store(now, kind, obs)
        # After the store: a store the history just found down or frozen is not waited on
        # again (the local copy of the silences is used instead).
        self._silences(now)
        # The open incidents a cheap sweep read to choose its heavy parts are still the
        # open ones: nothing between the probe and here opens or closes any.
        self._evaluate(now, obs, out, self._open_at_sweep)
        self._degraded(now, obs, out)
        out.history_error = self.history.error
        spool = getattr(self.history, "spool", None)
        out.spooled = spool.count() if spool is not None else 0
        out.duration_ms = round((time.perf_counter() - t0) * 1000, 1)
        return out

    # -- alert delivery ---------------------------------------------------------------------
    def _record_deliveries(self) -> None:
        for alert_id, channel in self.notifier.delivered():
            self.history.mark_delivered(alert_id, channel)

    def _deliveries(self, now: datetime) -> None:
        """Record what Slack took in the background; queue again what it has not taken."""
        self._record_deliveries()
        if not (self.env.webhook_url and self.notifier.background):
            return
        if time.monotonic() - self._resent_at < self.resend_every_s:
            return
        self._resent_at = time.monotonic()
        self.notifier.retry_failed()
        # Alerts of earlier processes (a sensor evaluation, a monitor that was killed).
        for r in self.history.undelivered("slack", now - RESEND_WINDOW, 20):
            if not self.notifier.in_flight(r["id"]):
                self.notifier.send(
                    Alert(
                        r["ts"],
                        r["kind"],
                        r["severity"],
                        r["category"],
                        r["message"],
                        r["incident_id"],
                        r["id"],
                        self.target,
                    )
                )

    def _store(self, ts: datetime, kind: str, obs: list[Observation]) -> None:
        self.history.add_samples(ts, kind, [o.row() for o in obs])
        for o in obs:
            if o.performance is not None:
                self.history.add_performance(o.performance, ts)

    def _recent(self, category: str) -> alerting.Recent:
        """The category's latest samples as the history reads them back, newest first."""
        return lambda limit: self.history.recent_statuses(
            category, limit, observe_only=frozenset(OBSERVE_ONLY)
        )

    def _decide(self, o: Observation, is_open: bool, kind: str = "sweep") -> alerting.Decision:
        """The alert state machine (``lib/alerting.py``) on this observation."""
        a = self.config.monitoring.alerting
        th = alerting.Thresholds(a.failure_threshold, a.success_threshold)
        return alerting.decide(is_open, o.sample(self.clock(), kind), self._recent(o.category), th)

    def _evaluate(
        self,
        now: datetime,
        obs: list[Observation],
        out: TickResult,
        open_: dict[str, dict] | None = None,
    ) -> None:
        a = self.config.monitoring.alerting
        # The sweep's H1 result goes with every plan: while it says the monitor's direct
        # login is refused, the planner repairs nothing (recover's guard, here too).
        self._refused = [o.result for o in obs if o.monitor_refused and o.result is not None]
        if open_ is None:
            open_ = self.history.open_incidents()
        self._group_with_recent(now, obs, open_)
        to_confirm: list[Observation] = []
        for o in obs:
            if o.status == UNKNOWN:
                continue  # the check could not run: see _degraded
            incident = open_.get(o.category)
            d = self._decide(o, incident is not None)
            if incident is not None:
                self._judge_silence(now, o, incident, out)
                self._follow_repairs(incident, out)
                if d.action == "hold":
                    self._request_repairs(incident, o, out)
                    if alerting.remind(
                        now,
                        incident["last_notified_at"],
                        timedelta(minutes=a.reminder_minutes),
                        silenced=bool(self.silenced_by(o.category)),
                    ):
                        self._alert(
                            out,
                            now,
                            "reminder",
                            o.severity,
                            o.category,
                            f"still failing: {o.summary}",
                            incident["id"],
                        )
                        self.history.update_incident(incident["id"], last_notified_at=now)
                    continue
                if d.action == "close" and d.at is not None:
                    self.history.close_incident(incident["id"], d.at, now, None)
                    took = (d.at - incident["detected_at"]).total_seconds()
                    quiet = (
                        incident["silenced_by"]
                        if incident.get("silenced_by") and not incident.get("unsilenced_at")
                        else None
                    )  # nobody was told it opened: its end is recorded, not sent
                    self._alert(
                        out,
                        now,
                        "resolved",
                        "info",
                        o.category,
                        f"recovered ({took:.0f} s after the alert): {o.summary}",
                        incident["id"],
                        suppressed_by=quiet,
                    )
                    out.closed.append(incident["id"])
                continue
            # healthy or a symptom of another category's incident: nothing; else open, or
            # a first failure to confirm
            if d.action == "open":
                self._open(o, d.at, out)
            elif d.action == "confirm":
                to_confirm.append(o)
        if to_confirm:
            # One delay and one re-probe for every first failure of this tick (the sensor
            # has a minute per evaluation, however many things broke at once).
            for o in self._confirm(to_confirm):
                d = self._decide(o, False, alerting.CONFIRMATION)
                if d.action == "open":
                    self._open(o, d.at, out)

    def _group_with_recent(
        self, now: datetime, obs: list[Observation], open_: dict[str, dict]
    ) -> None:
        """Mark failures that follow an open or just-closed incident explaining them (the
        outage's tail, its symptoms): ``lib/grouping.py`` decides, from this sweep, the
        open incidents and the critical ones closed within ``alerting.groupGraceIntervals``
        cheap-probe intervals."""
        a = self.config.monitoring.alerting
        grace = timedelta(
            milliseconds=self.config.monitoring.intervals.performance * a.group_grace_intervals
        )

        def tail() -> set[str]:
            if not grace:
                return set()
            return set(self.history.recently_closed(now - grace, critical_only=True))

        severities = {c: str(i.get("severity") or "") for c, i in open_.items()}
        grouped = grouping.group([o.observed() for o in obs], severities, tail)
        for o in obs:
            if o.category in grouped:
                o.suspected_cause = grouped[o.category]

    def _open(self, o: Observation, started: datetime | None, out: TickResult) -> None:
        detected = self.clock()
        started = started or detected
        iid = self.history.open_incident(
            o.category,
            o.severity,
            started,
            detected,
            o.summary,
            silenced_by=self.silenced_by(o.category),
        )
        out.opened.append(iid)
        self._alert(out, detected, "opened", o.severity, o.category, o.summary, iid)
        self._plan(iid, o, out, detected)

    def verify(self, category: str) -> Observation | None:
        """Re-probe ``category`` right after a repair; the sample counts toward closing."""
        if category == PERFORMANCE:
            fresh = [
                x
                for x in self.probe(CHEAP, heavy=(), with_performance=True)
                if x.category == PERFORMANCE
            ]
        else:  # with its heavy part: the sample counts toward closing
            fresh = self.probe((Category(category),), with_performance=False)
        self.history.add_samples(self.clock(), "verification", [x.row() for x in fresh])
        return fresh[0] if fresh else None

    def _confirm(
        self, candidates: list[Observation], still: Callable[[Observation], bool] | None = None
    ) -> list[Observation]:
        """Re-probe first failures after a short delay; those still failing are confirmed.

        Each failing category is re-probed in full (with its heavy part), whichever sweep
        saw it: a first H3 failure of a cheap sweep is confirmed by H3 itself."""
        self.sleep(self.config.monitoring.alerting.confirm_delay_seconds)
        wanted = {o.category for o in candidates}
        checks = tuple(Category(c) for c in wanted if c != PERFORMANCE)
        if PERFORMANCE in wanted:
            fresh = self.probe(
                tuple(dict.fromkeys((*CHEAP, *checks))), heavy=checks, with_performance=True
            )
        else:
            fresh = self.probe(checks, heavy=checks, with_performance=False)
        fresh = [x for x in fresh if x.category in wanted]
        self.history.add_samples(self.clock(), "confirmation", [x.row() for x in fresh])
        self._confirmations.extend(fresh)
        if still is not None:
            return [x for x in fresh if still(x)]
        return [x for x in fresh if x.failing and x.suspected_cause is None]

    def _alert(
        self,
        out: TickResult,
        ts: datetime,
        kind: str,
        severity: str,
        category: str,
        message: str,
        incident_id: int | None,
        suppressed_by: str | None = None,
    ) -> None:
        """Record an alert and send it, unless a silence covers its category: then it is
        recorded with the silence that suppressed it and sent nowhere."""
        a = Alert(ts, kind, severity, category, redact(message), incident_id, target=self.target)
        quiet = suppressed_by or self.silenced_by(category)
        a.alert_id = self.history.add_alert(
            incident_id, ts, kind, severity, category, a.message, [], suppressed_by=quiet
        )
        if quiet:
            out.suppressed.append(a)
            return
        self.history.set_alert_channels(a.alert_id, self.notifier.alert(a))
        out.alerts.append(a)
