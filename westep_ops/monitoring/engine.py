"""The monitoring cycle (M1-M4), shared by ``westep-ops monitor`` and the Dagster sensor.

One :meth:`Monitor.tick` decides what is due from ``monitoring.intervals`` (cheap probes
-- :data:`CHEAP`, all but the heavy work, and the performance sample -- every
``performance`` interval,
the full H1-H7 sweep every ``health`` interval), probes, stores the samples, and runs the
alert state machine per category (its open/confirm/close decisions are
``lib/alerting.py``'s, fed with the category's recent samples read back from the history;
the what-if review replays the same functions over stored samples):

- an incident opens after ``failureThreshold`` failing samples in a row, or at once when
  an immediate re-probe ``confirmDelaySeconds`` later confirms a first failure, so
  detection does not wait for the next interval and a single blip opens nothing;
- symptoms explained by another failure (``suspected_cause``) open nothing of their own,
  nor do those that follow an open or just-closed incident that explains them (the tail
  of an outage: clients that queued through it, requests that failed meanwhile);
- an open incident is re-notified at most every ``reminderMinutes``;
- it closes after ``successThreshold`` passing samples; its recovery time is the first
  passing sample of that streak;
- repairs are requested from the state, not only when an incident opens: every tick,
  an open incident whose planned repair has no attempt yet (left by ``--no-recovery``, a
  crash, a preview), or whose last attempt was refused by a limit that has since freed
  up, yields a :class:`RepairRequest` (unless recovery is off); how repairs then ran is
  read back from the repair audit, and a failed or refused repair escalates the incident
  (level 2/3) with an alert;
- a check that could not run (``Status.error``: the monitor's own problem, e.g. its login
  is refused) is neither failing nor passing: it opens, closes and repairs nothing, and
  raises one "monitor degraded" alert (category ``monitor``, kind ``degraded``), reminded
  like an incident and resolved when the checks run again. So does a history that cannot
  be written (``ResilientHistory`` spools meanwhile). That state is local (the spool), as
  it must outlive the ops store.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from westep_ops.config import Category, Config, RepairAction
from westep_ops.environment import Environment
from westep_ops.lib import alerting, grouping
from westep_ops.monitoring.history import HistoryStore
from westep_ops.monitoring.notify import Alert, Notifier
from westep_ops.probes.base import CheckResult, Status
from westep_ops.probes.health import run_health_check
from westep_ops.probes.performance import PerformanceMonitor, PerformanceSample
from westep_ops.probes.session import ProbeSession
from westep_ops.redact import redact
from westep_ops.repairs.base import monitor_refused
from westep_ops.repairs.recovery import MONITOR_CATEGORY, OBSERVE_ONLY, plan_repairs

# The cheap sweep: H1, H2, H7 and the catalog-level checks -- H3 privileges, H5's
# publication and replication set-up, H6's roles, schema and health endpoint -- so a
# revoked grant or a dropped publication is seen within one ``performance`` interval. Only
# heavy work waits for the full sweep: H4's integrity counts and H5's LISTEN/NOTIFY round
# trip (which a cheap sweep runs too while H5 has an open incident: see Monitor.sweep).
CHEAP = (
    Category.connection,
    Category.pool,
    Category.tables,
    Category.realtime,
    Category.auth,
    Category.api,
)
PERFORMANCE = "performance"
MONITOR = "monitor"  # the category of "monitor degraded" alerts
# An error (the check could not run) is unknown: neither failing nor passing.
UNKNOWN = alerting.UNKNOWN
RESEND_WINDOW = timedelta(hours=1)  # undelivered alerts older than this are not resent
RESEND_EVERY_S = 10.0


@dataclass
class Observation:
    """One category's state in a sample (H1-H7, or the performance monitor)."""

    category: str
    status: str
    summary: str
    suspected_cause: str | None = None
    result: CheckResult | None = None
    performance: PerformanceSample | None = None

    def row(self) -> dict:
        """This observation as a history sample row."""
        if self.result is not None:
            r = self.result
            return {
                "category": self.category,
                "status": self.status,
                "summary": self.summary,
                "findings": r.findings,
                "suspected_cause": self.suspected_cause,
                "duration_ms": r.duration_ms,
                "value": r.values,
            }
        p = self.performance
        value = (
            {}
            if p is None
            else {
                "problems": p.problems,
                "mean_api_ms": p.mean_api_ms,
                "error_rate": p.error_rate,
                "tps": p.tps,
            }
        )
        return {
            "category": self.category,
            "status": self.status,
            "summary": self.summary,
            "findings": ["performance_degraded"] if self.failing else [],
            "value": value,
        }

    @property
    def failing(self) -> bool:
        """Failing enough to open an incident: a warning made only of load figures
        (``OBSERVE_ONLY``, e.g. clients queued a moment) is shown, not paged."""
        return alerting.failing(self.read_status)

    @property
    def read_status(self) -> str:
        """The status as alerting reads it (as the history reads the stored sample back)."""
        findings = self.result.findings if self.result is not None else []
        return alerting.read_status(self.status, findings, OBSERVE_ONLY)

    def observed(self) -> grouping.Observed:
        """This observation as grouping reads it (as it reads the stored sample back)."""
        row = self.row()
        return grouping.Observed.of(
            self.category,
            self.status,
            self.failing,
            row["findings"],
            row["value"],
            self.suspected_cause,
        )

    def sample(self, ts: datetime, kind: str = "sweep") -> alerting.Sample:
        """This observation for the alert state machine."""
        return alerting.Sample(ts, self.read_status, self.suspected_cause is not None, kind)

    @property
    def monitor_refused(self) -> bool:
        """H1 says the monitor's own direct login was refused: the sweep is half blind."""
        return self.result is not None and monitor_refused(self.result)

    @property
    def severity(self) -> str:
        return "critical" if self.status == Status.critical.value else "warning"


@dataclass
class RepairRequest:
    incident_id: int
    category: str
    action: RepairAction
    attempt: int = 0  # attempts of this action already on record for the incident

    @property
    def key(self) -> str:
        """Unique per incident, action and attempt: the sensor's run key."""
        return f"incident-{self.incident_id}-{self.action.value}-{self.attempt}"


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


def observations(results: list[CheckResult], perf: PerformanceSample | None) -> list[Observation]:
    out = [
        Observation(
            r.category.value,
            r.status.value,
            r.summary,
            r.suspected_cause.value if r.suspected_cause else None,
            result=r,
        )
        for r in results
    ]
    if perf is not None:
        status = Status.warning.value if perf.problems else Status.ok.value
        # Slow or failing requests while a check is failing are that failure's symptom;
        # dead tuples are not anyone's symptom.
        roots = [o.category for o in out if o.failing and o.suspected_cause is None]
        # ...and so are they while the monitor's own direct login is refused (it is half
        # blind then); another check that could not run (a bad metrics URL, no anon key)
        # mutes nothing.
        roots += [o.category for o in out if o.monitor_refused]
        own = any("dead tuples" in p for p in perf.problems)
        cause = roots[0] if roots and not own else None
        summary = "; ".join(perf.problems) or "ok"
        out.append(Observation(PERFORMANCE, status, summary, cause, performance=perf))
    return out


def _manual(attempt: dict) -> bool:
    """A repair attempt a person launched (recorded with a "manual" trigger)."""
    return str(attempt.get("trigger") or "").startswith("manual")


class Monitor:
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

        self.silenced = current(
            self.config, self.env.storage_url, now=now, unreachable=self.history.error
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

    def sweep(self, kind: str) -> tuple[tuple[Category, ...] | None, tuple[Category, ...] | None]:
        """What a sweep of ``kind`` probes: (categories, those whose heavy part runs);
        None is all of them. A cheap sweep runs the heavy part of a category only while
        it has an open incident (its closing must rest on the same check that opened it)."""
        if kind == "full":
            return None, None
        open_ = self.history.open_incidents()
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
        self._deliveries(now)
        kind = force or self.due(now)
        if kind is None:
            return out
        out.ran = kind
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
        self._evaluate(now, obs, out)
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

    def _evaluate(self, now: datetime, obs: list[Observation], out: TickResult) -> None:
        a = self.config.monitoring.alerting
        # The sweep's H1 result goes with every plan: while it says the monitor's direct
        # login is refused, the planner repairs nothing (recover's guard, here too).
        self._refused = [o.result for o in obs if o.monitor_refused and o.result is not None]
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
        if still is not None:
            return [x for x in fresh if still(x)]
        return [x for x in fresh if x.failing and x.suspected_cause is None]

    def _plan_for(self, o: Observation) -> tuple[list[Any], list[Any]]:
        refused = [r for r in self._refused if r is not o.result]
        results = [o.result] if o.result is not None else []
        plan, escalations = plan_repairs(
            results + refused, o.performance if o.result is None else None, self.config
        )
        # the misconfiguration itself is the "monitor degraded" alert's, not this incident's
        return plan, [e for e in escalations if e.category != MONITOR_CATEGORY]

    def _plan(self, iid: int, o: Observation, out: TickResult, now: datetime) -> None:
        if self.silenced_by(o.category):
            return  # no repair and no escalation while silenced; judged afresh at its end
        plan, escalations = self._plan_for(o)
        for e in escalations:
            self.history.update_incident(iid, escalation=e.level)
            self._alert(
                out,
                now,
                "escalated",
                "critical" if e.level == 3 else o.severity,
                o.category,
                f"level {e.level}: {e.reason}",
                iid,
            )
        if not plan:
            return
        if not self.recovery:
            self._alert(
                out,
                now,
                "escalated",
                o.severity,
                o.category,
                "level 2: automatic recovery is off; would run "
                + ", ".join(p.action.value for p in plan),
                iid,
            )
            self.history.update_incident(iid, escalation=2)
            return
        out.repairs += [RepairRequest(iid, o.category, p.action) for p in plan]

    def _request_repairs(self, incident: dict, o: Observation, out: TickResult) -> None:
        """Ask again for what the open incident's plan still lacks (level-triggered).

        An action with no attempt yet is requested; one whose last attempt was refused is
        requested again once the hourly limit has room. A failed repair is not retried:
        it escalated, and a person decides.
        """
        if not self.recovery or o.suspected_cause is not None:
            return  # off, or now a symptom of another failure: that one's repair comes first
        if self.silenced_by(o.category):
            return  # silenced: no automatic repair (an operator may be at work)
        plan, _escalations = self._plan_for(o)
        if not plan:
            return
        attempts = self.history.repair_outcomes(incident["id"])
        for p in plan:
            mine = [a for a in attempts if a["action"] == p.action.value]
            if mine and mine[-1]["outcome"] == "running" and self._reap(p.action):
                mine[-1] = {**mine[-1], "outcome": "interrupted"}
            retry = mine and mine[-1]["outcome"] in ("refused", "interrupted")
            if mine and not (retry and self._limit_free(p.action)):
                continue
            out.repairs.append(RepairRequest(incident["id"], o.category, p.action, len(mine)))

    def _limit_free(self, action: RepairAction) -> bool:
        from westep_ops.store import OpsStore

        # The file fallback counts while the ops store is down, as the runner will.
        with OpsStore(
            self.env.storage_url,
            connect_timeout_ms=self.config.monitoring.timeouts.connect,
            unreachable=self.history.error,
        ) as store:
            count, _source = store.attempts_last_hour(action.value)
        return count < self.config.monitoring.auto_recovery.max_attempts_per_hour

    def _reap(self, action: RepairAction) -> bool:
        """A "running" attempt whose lock is free belongs to a dead process: mark it
        interrupted (True). False while it really runs somewhere."""
        from westep_ops.store import LocalLock, OpsStore

        local = LocalLock(action.value)
        if not local.acquire():
            return False
        try:
            with OpsStore(
                self.env.storage_url,
                connect_timeout_ms=self.config.monitoring.timeouts.connect,
                unreachable=self.history.error,
            ) as store:
                lock = store.try_lock(action.value)
                if lock is False:
                    return False
                try:
                    store.reap_interrupted(action.value)
                finally:
                    if lock:
                        store.unlock(action.value)
            return True
        finally:
            local.release()

    def _follow_repairs(self, incident: dict, out: TickResult) -> None:
        """Read back how the incident's repairs went: record success, escalate failure.

        Every attempt is followed, not only the first: each failed, refused or
        interrupted attempt not yet escalated raises one escalation, also after an
        earlier success or escalation. The incident is marked recovered by the actions
        whose latest attempt really repaired something ("nothing to do" repaired nothing).
        """
        attempts = self.history.repair_outcomes(incident["id"])
        if not attempts:
            return
        latest = list({a["action"]: a for a in attempts}.values())
        if any(a["outcome"] == "running" for a in latest):
            return  # still running (or its process died: _request_repairs finds out)
        ok = ("repaired", "nothing_to_do", "skipped", "done_by_other")
        seen = set(self._state(f"escalated:{incident['id']}") or [])
        new_bad = [
            (f"{i}:{a['action']}:{a['outcome']}", a)
            for i, a in enumerate(attempts)
            if a["outcome"] not in ok and f"{i}:{a['action']}:{a['outcome']}" not in seen
        ]
        bad = [a for a in latest if a["outcome"] not in ok]
        now = self.clock()
        if new_bad and bad:
            self._set_state(f"escalated:{incident['id']}", sorted(seen | {k for k, _a in new_bad}))
            bad = [a for _k, a in new_bad]
            level = max(a["escalation"] or 2 for a in bad)
            self.history.update_incident(incident["id"], escalation=level)
            manual = [_manual(a) for a in bad]
            who = (
                "a manual repair"
                if all(manual)
                else "repair"
                if any(manual)
                else "automatic repair"
            )
            self._alert(
                out,
                now,
                "escalated",
                "critical",
                incident["category"],
                f"level {level}: {who} did not fix it: "
                + "; ".join(
                    f"{a['action']}{' (manual)' if _manual(a) else ''} {a['outcome']}: {a['summary']}"
                    for a in bad
                ),
                incident["id"],
            )
        elif not bad:
            # A person's repair is not an automatic recovery (the SLA counts auto: ones).
            repaired = [
                a["action"] for a in latest if a["outcome"] == "repaired" and not _manual(a)
            ]
            label = "auto:" + ",".join(repaired) if repaired else None
            if repaired and incident.get("recovered_by") != label:
                self.history.update_incident(incident["id"], recovered_by=label)
                incident["recovered_by"] = label

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
        a = Alert(ts, kind, severity, category, redact(message), incident_id)
        quiet = suppressed_by or self.silenced_by(category)
        a.alert_id = self.history.add_alert(
            incident_id, ts, kind, severity, category, a.message, [], suppressed_by=quiet
        )
        if quiet:
            out.suppressed.append(a)
            return
        self.history.set_alert_channels(a.alert_id, self.notifier.alert(a))
        out.alerts.append(a)

    # -- monitor degraded ---------------------------------------------------------------------
    def _degraded(self, now: datetime, obs: list[Observation], out: TickResult) -> None:
        """One alert per cause of blindness, reminded like an incident, resolved when it ends.

        Confirmed first, as outages are: checks that could not run are re-probed once
        ``confirmDelaySeconds`` later, and the history must stay unavailable that long
        (the spool loses nothing meanwhile, so a blip needs nobody).
        """
        # A check that could not run because the database is down (suspected_cause set)
        # is the outage's symptom, not the monitor's problem: the outage is alerted.
        errors = [o for o in obs if o.status == UNKNOWN and o.suspected_cause is None]
        seen = {o.category for o in obs}
        checks = self._state("degraded:checks")
        if errors and checks is None:
            wanted = {o.category for o in errors}
            # H1 goes into the re-probe too, so an outage that began meanwhile is seen as one.
            h1 = [o for o in obs if o.category == Category.connection.value and o not in errors]
            errors = self._confirm(
                errors + h1, still=lambda x: x.status == UNKNOWN and x.suspected_cause is None
            )
            seen |= wanted
        if errors:
            cause = "; ".join(f"{o.category}: {o.summary}" for o in errors)
            cats = sorted({o.category for o in errors} | set((checks or {}).get("categories", [])))
            self._degrade(now, out, "checks", cause, cats)
        elif checks and set(checks["categories"]) <= seen:
            self._undegrade(now, out, "checks", "the checks run again")
        history = self._state("degraded:history")
        if self.history.error:
            hold = timedelta(seconds=self.config.monitoring.alerting.confirm_delay_seconds)
            since = history["since"] if history else self._state("history:failing_since")
            if since is None:
                self._set_state("history:failing_since", now)
            elif history or now - since >= hold:
                self._degrade(
                    now,
                    out,
                    "history",
                    f"history unavailable ({self.history.error}); samples, incidents and "
                    "alerts are spooled locally until the ops store returns",
                    [],
                    since=since,
                )
        else:
            self._set_state("history:failing_since", None)
            if history:
                self._undegrade(
                    now, out, "history", "history available again; spooled writes replayed"
                )

    def _degrade(
        self,
        now: datetime,
        out: TickResult,
        key: str,
        cause: str,
        categories: list[str],
        since: datetime | None = None,
    ) -> None:
        state = self._state(f"degraded:{key}")
        reminder = timedelta(minutes=self.config.monitoring.alerting.reminder_minutes)
        if state is None:
            self._alert(
                out, now, "degraded", "warning", MONITOR, f"monitor degraded: {cause}", None
            )
            state = {"since": since or now, "last_notified": now}
        elif alerting.remind(now, state["last_notified"], reminder):
            self._alert(
                out, now, "reminder", "warning", MONITOR, f"monitor still degraded: {cause}", None
            )
            state["last_notified"] = now
        self._set_state(f"degraded:{key}", {**state, "cause": cause, "categories": categories})

    def _undegrade(self, now: datetime, out: TickResult, key: str, why: str) -> None:
        state = self._state(f"degraded:{key}")
        took = (now - state["since"]).total_seconds()
        self._alert(
            out,
            now,
            "resolved",
            "info",
            MONITOR,
            f"monitor no longer degraded ({why}) after {took:.0f} s: was {state['cause']}",
            None,
        )
        self._set_state(f"degraded:{key}", None)
