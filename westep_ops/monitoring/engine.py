"""The monitoring cycle (M1-M4), shared by ``westep-ops monitor`` and the Dagster sensor.

One :meth:`Monitor.tick` decides what is due from ``monitoring.intervals`` (cheap probes
-- connection, pool, API and the performance sample -- every ``performance`` interval,
the full H1-H7 sweep every ``health`` interval), probes, stores the samples, and runs the
alert state machine per category:

- an incident opens after ``failureThreshold`` failing samples in a row, or at once when
  an immediate re-probe ``confirmDelaySeconds`` later confirms a first failure, so
  detection does not wait for the next interval and a single blip opens nothing;
- symptoms explained by another failure (``suspected_cause``) open nothing of their own,
  nor do those that follow an open or just-closed incident that explains them (the tail
  of an outage: clients that queued through it, requests that failed meanwhile);
- an open incident is re-notified at most every ``reminderMinutes``;
- it closes after ``successThreshold`` passing samples; its recovery time is the first
  passing sample of that streak;
- a new incident whose checks call for a repair yields :class:`RepairRequest`s (unless
  recovery is off); how repairs then ran is read back from the repair audit, and a
  failed or refused repair escalates the incident (level 2/3) with an alert.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from westep_ops.config import Category, Config, RepairAction
from westep_ops.environment import Environment
from westep_ops.monitoring.history import HistoryStore
from westep_ops.monitoring.notify import Alert, Notifier
from westep_ops.probes.base import CheckResult, Status
from westep_ops.probes.health import run_health_check
from westep_ops.probes.performance import PerformanceMonitor, PerformanceSample
from westep_ops.probes.session import ProbeSession
from westep_ops.redact import redact
from westep_ops.repairs.recovery import plan_repairs

CHEAP = (Category.connection, Category.pool, Category.api)
PERFORMANCE = "performance"
FAILING = {Status.warning.value, Status.critical.value, Status.error.value}
# category -> the categories whose incident, open or just closed, explains its failures
EXPLAINED_BY = {
    Category.pool.value: (Category.connection.value,),
    Category.connection.value: (Category.pool.value,),
    Category.api.value: (Category.connection.value, Category.pool.value),
    PERFORMANCE: (Category.connection.value, Category.pool.value, Category.api.value),
}
# Findings that are a fault of their own whatever came before them.
OWN_FAULTS = {"direct_connection_failed", "pool_paused", "pool_disabled", "pgbouncer_down"}


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
        return self.status in FAILING

    @property
    def severity(self) -> str:
        return "critical" if self.status == Status.critical.value else "warning"


@dataclass
class RepairRequest:
    incident_id: int
    category: str
    action: RepairAction


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
        own = any("dead tuples" in p for p in perf.problems)
        cause = roots[0] if roots and not own else None
        summary = "; ".join(perf.problems) or "ok"
        out.append(Observation(PERFORMANCE, status, summary, cause, performance=perf))
    return out


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

    def close(self) -> None:
        self.session.close()
        self.history.close()

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

    def probe(
        self, categories: tuple[Category, ...] | None, *, with_performance: bool
    ) -> list[Observation]:
        try:
            results = run_health_check(self.session, categories)
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
        kind = force or self.due(now)
        if kind is None:
            return out
        out.ran = kind
        obs = self.probe(None if kind == "full" else CHEAP, with_performance=True)
        out.observations = obs
        self._last["cheap"] = now
        if kind == "full":
            self._last["full"] = now
        self._store(now, kind, obs)
        self._evaluate(now, obs, out)
        out.duration_ms = round((time.perf_counter() - t0) * 1000, 1)
        return out

    def _store(self, ts: datetime, kind: str, obs: list[Observation]) -> None:
        self.history.add_samples(ts, kind, [o.row() for o in obs])
        for o in obs:
            if o.performance is not None:
                self.history.add_performance(o.performance, ts)

    def _consecutive(self, category: str, failing: bool, limit: int) -> list[datetime]:
        """Timestamps of the latest run of samples that are (not) failing, newest first."""
        run = []
        for ts, status in self.history.recent_statuses(category, limit):
            if (status in FAILING) != failing:
                break
            run.append(ts)
        return run

    def _evaluate(self, now: datetime, obs: list[Observation], out: TickResult) -> None:
        a = self.config.monitoring.alerting
        open_ = self.history.open_incidents()
        self._group_with_recent(now, obs, open_)
        to_confirm: list[Observation] = []
        for o in obs:
            incident = open_.get(o.category)
            if incident is not None:
                self._follow_repairs(incident, out)
                if o.failing:
                    if now - incident["last_notified_at"] >= timedelta(minutes=a.reminder_minutes):
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
                passes = self._consecutive(o.category, False, a.success_threshold)
                if len(passes) >= a.success_threshold:
                    self.history.close_incident(incident["id"], passes[-1], now, None)
                    took = (passes[-1] - incident["detected_at"]).total_seconds()
                    self._alert(
                        out,
                        now,
                        "resolved",
                        "info",
                        o.category,
                        f"recovered ({took:.0f} s after the alert): {o.summary}",
                        incident["id"],
                    )
                    out.closed.append(incident["id"])
                continue
            if not o.failing or o.suspected_cause is not None:
                continue  # healthy, or a symptom of another category's incident
            fails = self._consecutive(o.category, True, a.failure_threshold)
            if len(fails) >= a.failure_threshold:
                self._open(o, fails, out)
            else:
                to_confirm.append(o)
        if to_confirm:
            # One delay and one re-probe for every first failure of this tick (the sensor
            # has a minute per evaluation, however many things broke at once).
            for o in self._confirm(to_confirm):
                self._open(o, self._consecutive(o.category, True, a.failure_threshold + 1), out)

    def _group_with_recent(
        self, now: datetime, obs: list[Observation], open_: dict[str, dict]
    ) -> None:
        """Mark failures that follow an open or just-closed incident explaining them.

        After PostgreSQL comes back, pgbouncer may still hold a client that queued through
        the outage: that is the outage's tail, not a new incident. "Just closed" is within
        ``alerting.groupGraceIntervals`` cheap-probe intervals; a failure that outlasts the
        grace opens its own incident. Faults that are their own (the database down, a
        paused pool) are never grouped.
        """
        a = self.config.monitoring.alerting
        grace = timedelta(
            milliseconds=self.config.monitoring.intervals.performance * a.group_grace_intervals
        )
        candidates = [
            o
            for o in obs
            if o.failing
            and o.suspected_cause is None
            and o.category not in open_
            and o.category in EXPLAINED_BY
            and not (o.result is not None and OWN_FAULTS & set(o.result.findings))
        ]
        if not candidates:
            return
        causes = set(open_) | (set(self.history.recently_closed(now - grace)) if grace else set())
        for o in candidates:
            o.suspected_cause = next((c for c in EXPLAINED_BY[o.category] if c in causes), None)

    def _open(self, o: Observation, fails: list[datetime], out: TickResult) -> None:
        started = fails[-1] if fails else self.clock()
        detected = self.clock()
        iid = self.history.open_incident(o.category, o.severity, started, detected, o.summary)
        out.opened.append(iid)
        self._alert(out, detected, "opened", o.severity, o.category, o.summary, iid)
        self._plan(iid, o, out, detected)

    def verify(self, category: str) -> Observation | None:
        """Re-probe ``category`` right after a repair; the sample counts toward closing."""
        if category == PERFORMANCE:
            fresh = [
                x for x in self.probe(CHEAP, with_performance=True) if x.category == PERFORMANCE
            ]
        else:
            fresh = self.probe((Category(category),), with_performance=False)
        self.history.add_samples(self.clock(), "verification", [x.row() for x in fresh])
        return fresh[0] if fresh else None

    def _confirm(self, candidates: list[Observation]) -> list[Observation]:
        """Re-probe first failures after a short delay; those still failing are confirmed."""
        self.sleep(self.config.monitoring.alerting.confirm_delay_seconds)
        wanted = {o.category for o in candidates}
        checks = tuple(Category(c) for c in wanted if c != PERFORMANCE)
        if PERFORMANCE in wanted:
            fresh = self.probe(tuple(dict.fromkeys((*CHEAP, *checks))), with_performance=True)
        else:
            fresh = self.probe(checks, with_performance=False)
        fresh = [x for x in fresh if x.category in wanted]
        self.history.add_samples(self.clock(), "confirmation", [x.row() for x in fresh])
        return [x for x in fresh if x.failing and x.suspected_cause is None]

    def _plan(self, iid: int, o: Observation, out: TickResult, now: datetime) -> None:
        if o.result is not None:
            plan, escalations = plan_repairs([o.result], None, self.config)
        else:
            plan, escalations = plan_repairs([], o.performance, self.config)
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

    def _follow_repairs(self, incident: dict, out: TickResult) -> None:
        """Read back how the incident's repairs went: record success, escalate failure."""
        if incident["escalation"] or incident["recovered_by"]:
            return
        attempts = self.history.repair_outcomes(incident["id"])
        if not attempts:
            return
        bad = [a for a in attempts if a["outcome"] not in ("repaired", "nothing_to_do")]
        now = self.clock()
        if bad:
            level = max(a["escalation"] or 2 for a in bad)
            self.history.update_incident(incident["id"], escalation=level)
            self._alert(
                out,
                now,
                "escalated",
                "critical",
                incident["category"],
                f"level {level}: automatic repair did not fix it: "
                + "; ".join(f"{a['action']} {a['outcome']}: {a['summary']}" for a in bad),
                incident["id"],
            )
        else:
            self.history.update_incident(
                incident["id"], recovered_by="auto:" + ",".join(a["action"] for a in attempts)
            )

    def _alert(
        self,
        out: TickResult,
        ts: datetime,
        kind: str,
        severity: str,
        category: str,
        message: str,
        incident_id: int | None,
    ) -> None:
        a = Alert(ts, kind, severity, category, redact(message), incident_id)
        a.alert_id = self.history.add_alert(
            incident_id, ts, kind, severity, category, a.message, []
        )
        self.history.set_alert_channels(a.alert_id, self.notifier.alert(a))
        out.alerts.append(a)
