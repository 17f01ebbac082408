"""The alert state machine of one category: pure, no database, no Dagster.

The engine (``monitoring/engine.py``) and the what-if replay (``lib/whatif.py``) both
decide with :func:`decide`; they differ only in where the recent samples come from (the
history, read back newest first; or the stored samples replayed in order).

- A sample is failing when its status is ``warning`` or ``critical``, passing otherwise,
  except ``error`` (the check could not run): unknown, it opens and closes nothing and
  ends a run of failing or passing samples. A warning made only of observe-only
  findings (figures under load, e.g. clients queued a moment) reads as passing.
- No incident open: a failing sample that is nobody's symptom (no ``suspected_cause``)
  opens one when it ends a run of ``failureThreshold`` failing samples, or at once when
  it is the confirming re-probe of a first failure; a first failure asks for that
  re-probe. The incident started at the oldest failing sample of the run looked at.
- An incident open: a failing sample holds it (repairs: the engine's); it closes when a
  run of ``successThreshold`` passing samples is reached, and recovered at the first
  passing sample of that closing streak.
- A held incident is re-notified at most every ``reminderMinutes`` (:func:`remind`), not
  at all while a silence covers it; the "monitor degraded" state is reminded the same way.

Which failures are another incident's symptom or tail is ``lib/grouping.py``'s, decided
before this state machine sees the sweep.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal, TypeVar

FAILING = frozenset({"warning", "critical"})
UNKNOWN = "error"  # the check could not run: neither failing nor passing
CONFIRMATION = "confirmation"  # the kind of a re-probe sample that confirms a first failure

T = TypeVar("T")
# newest first, at most ``limit`` (timestamp, status as read back) of one category
Recent = Callable[[int], Sequence[tuple[datetime, str]]]
Action = Literal["none", "confirm", "open", "hold", "close"]


@dataclass(frozen=True)
class Thresholds:
    """``monitoring.alerting``: failing samples to open, passing samples to close."""

    failure: int = 2
    success: int = 2
    confirm: bool = True  # a confirming re-probe opens at once (the engine always does)


@dataclass(frozen=True)
class Sample:
    """The sample being decided on (already part of ``recent``)."""

    ts: datetime
    status: str  # as read back: see :func:`read_status`
    symptom: bool = False  # another failure explains it (suspected_cause)
    kind: str = "sweep"  # "confirmation" for the re-probe of a first failure


@dataclass(frozen=True)
class Decision:
    action: Action
    at: datetime | None = None  # open: the incident's start; close: its recovery time


NONE = Decision("none")


def read_status(status: str, findings: Iterable[str], observe_only: Iterable[str]) -> str:
    """The status as alerting reads it: a warning made only of observe-only findings is ok."""
    found = set(findings)
    if status == "warning" and found and found <= set(observe_only):
        return "ok"
    return status


def failing(status: str) -> bool:
    """Failing (the target is unhealthy), for a status as read by :func:`read_status`."""
    return status in FAILING


def streak(recent: Iterable[tuple[T, str]], failing_run: bool, limit: int) -> list[T]:
    """The latest run of failing (or passing) samples, newest first, at most ``limit``.

    ``recent`` is newest first; an error sample says nothing either way and ends the run.
    """
    run: list[T] = []
    for ts, status in recent:
        if len(run) >= limit or status == UNKNOWN or failing(status) != failing_run:
            break
        run.append(ts)
    return run


def decide(is_open: bool, sample: Sample, recent: Recent, th: Thresholds) -> Decision:
    """What this sample does to its category's incident (``recent`` includes it).

    ``recent`` is called only when the decision needs the history (at most once).
    """
    if sample.status == UNKNOWN:
        return NONE
    if is_open:
        if failing(sample.status):
            return Decision("hold")
        passes = streak(recent(th.success), False, th.success)
        if len(passes) >= th.success:
            return Decision("close", passes[-1])
        return NONE
    if not failing(sample.status) or sample.symptom:
        return NONE
    if th.confirm and sample.kind == CONFIRMATION:
        # the re-probe counts with the first failure (and any before it) for the start
        fails = streak(recent(th.failure + 1), True, th.failure + 1)
        return Decision("open", fails[-1] if fails else sample.ts)
    fails = streak(recent(th.failure), True, th.failure)
    if len(fails) >= th.failure:
        return Decision("open", fails[-1])
    return Decision("confirm") if th.confirm else NONE


def remind(
    now: datetime, last_notified: datetime, every: timedelta, *, silenced: bool = False
) -> bool:
    """A held incident is due a reminder: ``every`` has passed since it was last notified
    (opened, reminded or unsilenced), and no silence covers it (reminders pause)."""
    return not silenced and now - last_notified >= every


@dataclass
class Incident:
    """An incident the replay opened: detected when opened, resolved when recovered,
    closed when the closing sample came (what grouping's grace counts from)."""

    category: str
    started: datetime
    detected: datetime
    resolved: datetime | None = None
    severity: str = "warning"  # of the sample that opened it, as the engine records it
    closed: datetime | None = None


@dataclass
class Replay:
    """One category's state machine driven over samples in time order.

    The replay keeps the category's samples as the history would (``feed`` appends,
    then decides), so :func:`decide` sees exactly what the engine would read back.
    Samples that only record (``decide=False``: a repair's verification probe) count
    in later runs but decide nothing themselves, as in the engine, which decides at
    its ticks.
    """

    category: str
    th: Thresholds
    history: list[tuple[datetime, str]] = field(default_factory=list)
    incidents: list[Incident] = field(default_factory=list)
    open: Incident | None = None

    def _recent(self, limit: int) -> list[tuple[datetime, str]]:
        return self.history[: -limit - 1 : -1]

    def feed(self, sample: Sample, *, decides: bool = True) -> Decision:
        self.history.append((sample.ts, sample.status))
        if len(self.history) > 4 * (self.th.failure + self.th.success + 1):
            del self.history[: len(self.history) // 2]  # only the latest run matters
        if not decides:
            return NONE
        d = decide(self.open is not None, sample, self._recent, self.th)
        if d.action == "open":
            severity = "critical" if sample.status == "critical" else "warning"
            self.open = Incident(self.category, d.at or sample.ts, sample.ts, severity=severity)
            self.incidents.append(self.open)
        elif d.action == "close" and self.open is not None:
            self.open.resolved, self.open.closed = d.at, sample.ts
            self.open = None
        return d
