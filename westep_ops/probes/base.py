"""What every probe returns: a typed, JSON-friendly result with status and evidence."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from westep_ops.config import Category

# H-numbers of the seed, for display and Dagster check names.
H_NUMBER = {
    Category.connection: "H1",
    Category.pool: "H2",
    Category.tables: "H3",
    Category.integrity: "H4",
    Category.realtime: "H5",
    Category.auth: "H6",
    Category.api: "H7",
}


class Status(StrEnum):
    """``error`` means the probe itself could not run (not that the system is broken):
    the monitor is degraded, which is never an outage and never triggers a repair.
    ``not_configured`` means the check does not apply to this target (no endpoints, no
    auth schema): never ok, never failing, and unknown (not up) in the SLA.
    """

    not_configured = "not_configured"
    ok = "ok"
    warning = "warning"
    error = "error"
    critical = "critical"

    @property
    def rank(self) -> int:
        return _RANK[self]


# not_configured ranks below ok: a category with one configured item that passes is ok.
_RANK = {
    Status.not_configured: -1,
    Status.ok: 0,
    Status.warning: 1,
    Status.error: 2,
    Status.critical: 3,
}

# The finding of a check that could not run because the server answered and refused the
# monitor (wrong password, missing database, SSL required, permission denied): the
# monitor's own misconfiguration, not an outage of the target.
MONITOR_MISCONFIGURED = "monitor_misconfigured"


def worst(statuses: Iterable[Status]) -> Status:
    return max(statuses, key=lambda s: s.rank, default=Status.ok)


def exit_code(statuses: Iterable[Status]) -> int:
    """0 healthy, 1 warning, 2 critical, 3 a probe could not run (and nothing critical).

    ``not_configured`` checks do not change the code.
    """
    found = set(statuses)
    if Status.critical in found:
        return 2
    if Status.error in found:
        return 3
    if Status.warning in found:
        return 1
    return 0


@dataclass
class CheckResult:
    """One category's verdict with the evidence behind it."""

    category: Category
    status: Status = Status.ok
    summary: str = ""
    values: dict[str, Any] = field(default_factory=dict)
    thresholds: dict[str, Any] = field(default_factory=dict)
    findings: list[str] = field(default_factory=list)
    source: str = ""
    duration_ms: float = 0.0
    suspected_cause: Category | None = None
    problems: list[tuple[Status, str]] = field(default_factory=list, repr=False)

    @property
    def name(self) -> str:
        return f"{H_NUMBER[self.category]} {self.category.value}"

    def problem(self, status: Status, text: str, finding: str | None = None) -> None:
        """Record one problem; the result's status and summary follow the worst one."""
        self.problems.append((status, text))
        if finding and finding not in self.findings:
            self.findings.append(finding)

    def finish(self, ok_summary: str) -> CheckResult:
        if self.problems:
            self.status = worst(s for s, _ in self.problems)
            ordered = sorted(self.problems, key=lambda p: -p[0].rank)
            self.summary = "; ".join(t for _, t in ordered)
        else:
            self.status = Status.ok
            self.summary = ok_summary
        return self

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("problems")
        d["category"] = self.category.value
        d["check"] = self.name
        d["status"] = self.status.value
        d["suspected_cause"] = self.suspected_cause.value if self.suspected_cause else None
        return d


@contextmanager
def timed_result(result: CheckResult) -> Iterator[CheckResult]:
    start = time.perf_counter()
    try:
        yield result
    finally:
        result.duration_ms = round((time.perf_counter() - start) * 1000, 2)
