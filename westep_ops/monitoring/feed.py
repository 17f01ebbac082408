"""What the Dagster monitoring sensor reads: the results workers stored since its cursor.

The sensor never probes. Workers (``westep-ops monitor``) probe their leased targets and
store samples, performance samples and incidents in the ops PostgreSQL; each sensor
evaluation reads what arrived since the last one (:func:`read_since`) in one short
connection with a connect and a statement timeout, and remembers where it stopped
(:class:`FeedCursor`, kept as the sensor's cursor).

Where the cursor stands: sample ids (identity columns) for samples and performance
samples, and the database's own clock for incidents (opened = ``detected_at``, closed =
``closed_at``). A sample whose transaction commits after a later-numbered one has been
read is still in the history, but is not shown as a check evaluation (the window is a
worker's commit latency; the daily assets read the history itself, not the feed).
At most ``limit`` samples are read per evaluation; the rest come next time.

Plain module: no Dagster import.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from westep_ops.config import Category
from westep_ops.db import connect, dict_rows, one_row
from westep_ops.probes.base import CheckResult, Status

# Without a cursor (the sensor's first evaluation), this much of the past is read.
FIRST_LOOK_BACK_S = 120


@dataclass(frozen=True)
class FeedCursor:
    """Where the last read stopped. ``at`` is the ops database's clock (ISO 8601)."""

    sample_id: int = 0
    perf_id: int = 0
    at: str | None = None

    def dumps(self) -> str:
        return json.dumps({"sample_id": self.sample_id, "perf_id": self.perf_id, "at": self.at})

    @classmethod
    def loads(cls, text: str | None) -> FeedCursor:
        """The cursor in ``text``; a missing or unreadable one starts afresh."""
        try:
            raw = json.loads(text or "")
            return cls(int(raw["sample_id"]), int(raw["perf_id"]), raw.get("at"))
        except (ValueError, KeyError, TypeError):
            return cls()


@dataclass
class TargetFeed:
    """One target's new results."""

    target: str
    samples: list[dict[str, Any]] = field(default_factory=list)
    performance: int = 0
    opened: list[int] = field(default_factory=list)
    closed: list[int] = field(default_factory=list)

    @property
    def failing(self) -> list[str]:
        return sorted(
            {s["category"] for s in self.samples if s["status"] in ("warning", "critical")}
        )


@dataclass
class Feed:
    """Everything new since the cursor, per target (targets in name order)."""

    cursor: FeedCursor
    previous: FeedCursor
    targets: dict[str, TargetFeed]
    more: bool  # the limit was reached: more samples are waiting

    @property
    def samples(self) -> int:
        return sum(len(t.samples) + t.performance for t in self.targets.values())


def read_since(url: str, cursor: FeedCursor, *, limit: int = 5000, timeout_ms: int = 3000) -> Feed:
    """The samples, performance samples and incident changes stored after ``cursor``."""
    conn = connect(url, connect_timeout_ms=timeout_ms, statement_timeout_ms=timeout_ms)
    try:
        with conn.transaction():
            # One snapshot for every read, so the cursor's parts agree.
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            now = one_row(conn.execute("SELECT now()"))[0]
            since = (
                datetime.fromisoformat(cursor.at)
                if cursor.at
                else one_row(
                    conn.execute("SELECT now() - make_interval(secs => %s)", (FIRST_LOOK_BACK_S,))
                )[0]
            )
            samples = dict_rows(
                conn,
                "SELECT id, target, ts, kind, category, status, summary, findings,"
                " suspected_cause, duration_ms, value FROM westep_ops.samples"
                " WHERE id > %s AND (%s OR ts > %s) ORDER BY id LIMIT %s",
                (cursor.sample_id, cursor.at is not None, since, limit),
            )
            perf = dict_rows(
                conn,
                "SELECT target, count(*) AS n, max(id) AS last FROM westep_ops.performance_samples"
                " WHERE id > %s AND (%s OR ts > %s) GROUP BY target",
                (cursor.perf_id, cursor.at is not None, since),
            )
            incidents = dict_rows(
                conn,
                "SELECT id, target, (detected_at > %s) AS opened,"
                " (closed_at IS NOT NULL AND closed_at > %s) AS closed"
                " FROM westep_ops.incidents WHERE detected_at > %s OR closed_at > %s ORDER BY id",
                (since, since, since, since),
            )
    finally:
        conn.close()
    targets: dict[str, TargetFeed] = {}

    def of(name: str) -> TargetFeed:
        return targets.setdefault(name, TargetFeed(name))

    for s in samples:
        of(s["target"]).samples.append(s)
    for p in perf:
        of(p["target"]).performance = int(p["n"])
    for i in incidents:
        if i["opened"]:
            of(i["target"]).opened.append(int(i["id"]))
        if i["closed"]:
            of(i["target"]).closed.append(int(i["id"]))
    more = len(samples) >= limit
    new = FeedCursor(
        sample_id=max([cursor.sample_id, *(s["id"] for s in samples)]),
        perf_id=max([cursor.perf_id, *(int(p["last"]) for p in perf)]),
        # While samples are still waiting, incidents are re-read from the same point.
        at=(since if more else now).isoformat(),
    )
    return Feed(new, cursor, dict(sorted(targets.items())), more)


def sample_result(sample: dict[str, Any]) -> CheckResult | None:
    """A stored H1-H7 sample as the CheckResult it recorded (None for a performance row).

    What the sample keeps is what the check evaluation's metadata shows: status, summary,
    findings, suspected cause, duration and values (thresholds and source are not
    stored: the metadata says ``stored sample``).
    """
    try:
        category = Category(sample["category"])
    except ValueError:
        return None
    cause = sample.get("suspected_cause")
    try:
        suspected = Category(cause) if cause else None
    except ValueError:
        suspected = None
    return CheckResult(
        category,
        status=Status(sample["status"]),
        summary=sample["summary"],
        values=dict(sample.get("value") or {}),
        findings=list(sample.get("findings") or []),
        source="stored sample",
        duration_ms=float(sample.get("duration_ms") or 0.0),
        suspected_cause=suspected,
    )
