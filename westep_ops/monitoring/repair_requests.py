"""Repairs asked for from an open incident's state, and followed back from the audit.

Part of :class:`~westep_ops.monitoring.engine.Monitor` (a mixin: it acts on the
monitor's history, config and alerts). Level-triggered: every tick, an open incident
whose planned repair has no attempt yet, or whose last attempt was refused by a limit
that has since freed up, yields a :class:`RepairRequest`; a failed, refused or
interrupted attempt escalates the incident (level 2/3) with an alert, once per attempt.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from westep_ops.config import RepairAction
from westep_ops.monitoring.host import MonitorHost
from westep_ops.monitoring.observation import Observation, RepairRequest
from westep_ops.repairs.recovery import MONITOR_CATEGORY, plan_repairs

if TYPE_CHECKING:
    from westep_ops.monitoring.engine import TickResult
    from westep_ops.store import OpsStore


def _manual(attempt: dict) -> bool:
    """A repair attempt a person launched (recorded with a "manual" trigger)."""
    return str(attempt.get("trigger") or "").startswith("manual")


class RepairFollowing(MonitorHost):
    """The monitor's repair requests and their follow-up (see the module docstring)."""

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

    def ops_store(self) -> OpsStore:
        """This target's repair audit and limit (the file fallback when the store is down)."""
        from westep_ops.store import OpsStore, target_state

        return OpsStore(
            self.env.storage_url,
            connect_timeout_ms=self.config.monitoring.timeouts.connect,
            unreachable=self.history.error,
            target=self.history.target,
            state=target_state(self.env, self.history.target),
        )

    def _limit_free(self, action: RepairAction) -> bool:
        # The file fallback counts while the ops store is down, as the runner will.
        with self.ops_store() as store:
            count, _source = store.attempts_last_hour(action.value)
        return count < self.config.monitoring.auto_recovery.max_attempts_per_hour

    def _reap(self, action: RepairAction) -> bool:
        """A "running" attempt whose lock is free belongs to a dead process: mark it
        interrupted (True). False while it really runs somewhere."""
        from westep_ops.store import LocalLock

        local = LocalLock(action.value, self.history.target)
        if not local.acquire():
            return False
        try:
            with self.ops_store() as store:
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
