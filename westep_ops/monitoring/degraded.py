"""The "monitor degraded" state: the monitor's own blindness, alerted apart from outages.

Part of :class:`~westep_ops.monitoring.engine.Monitor` (a mixin). A check that could
not run (``Status.error``: e.g. the monitor's login is refused) and is nobody's symptom,
or a history that cannot be written (``ResilientHistory`` spools meanwhile), raises one
alert per cause (category ``monitor``, kind ``degraded``) once confirmed, reminded like
an incident (``lib/alerting.remind``) and resolved when it ends. That state is local
(the spool), as it must outlive the ops store.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from westep_ops.config import Category
from westep_ops.lib import alerting
from westep_ops.monitoring.host import MonitorHost
from westep_ops.monitoring.observation import MONITOR, UNKNOWN, Observation

if TYPE_CHECKING:
    from westep_ops.monitoring.engine import TickResult


class DegradedState(MonitorHost):
    """The monitor's "monitor degraded" alerts (see the module docstring)."""

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
