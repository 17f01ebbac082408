"""What a sweep saw, per category, as the engine keeps it (H1-H7 results and the
performance sample), and the repairs it asks for: no database, no Dagster.

An :class:`Observation` is written to the history as a sample row and read by the alert
state machine (``lib/alerting.py``) and grouping (``lib/grouping.py``) exactly as the
stored sample is read back, so the what-if replay over stored samples decides the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from westep_ops.config import Category, RepairAction
from westep_ops.lib import alerting, grouping
from westep_ops.probes.base import CheckResult, Status
from westep_ops.probes.performance import PerformanceSample
from westep_ops.repairs.base import monitor_refused
from westep_ops.repairs.recovery import OBSERVE_ONLY

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
