"""The 18:00 daily summary: what the day brought, and which alerts still need a person.

Plain functions, so the Dagster op stays thin and tests can ask for any local day. The
day is the configured time zone's calendar day (midnight to midnight there, not UTC), and
every time shown is in that zone. Besides the day's critical alerts and incidents, it
lists the day's opened alerts nobody has labelled yet, with the command that labels one:
alert precision is measured only over judged alerts, and the evening summary is where
the on-call person sees what is left to judge.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
from psycopg.rows import dict_row

from westep_ops.monitoring.history import UNLABELLED
from westep_ops.monitoring.notify import UNLABELLED_COMMAND, label_command
from westep_ops.redact import redact
from westep_ops.targets import DEFAULT_TARGET

SHOWN_ALERTS = 5  # critical alerts quoted in the summary
SHOWN_UNLABELLED = 10  # unlabelled alerts listed one per line; the rest are counted


def local_day(day: date, tz: str) -> tuple[datetime, datetime]:
    """[start, end) of calendar day ``day`` in ``tz`` (23 or 25 hours on a DST change)."""
    z = ZoneInfo(tz)
    return (
        datetime.combine(day, time(0), tzinfo=z),
        datetime.combine(day + timedelta(days=1), time(0), tzinfo=z),
    )


@dataclass
class DailySummary:
    day: date
    tz: str
    target: str
    critical: list[dict[str, Any]] = field(default_factory=list)  # ts, category, kind, message
    incidents: int = 0
    still_open: int = 0
    unlabelled: list[dict[str, Any]] = field(default_factory=list)  # id, ts, category, message
    labelled: int = 0

    @property
    def any_open(self) -> bool:
        return self.still_open > 0

    def text(self) -> str:
        """The summary as people read it in Slack (several lines; the log joins them)."""
        z = ZoneInfo(self.tz)
        who = "" if self.target == DEFAULT_TARGET else f"{self.target}: "
        lines = [
            f"{who}{self.day:%Y-%m-%d} ({self.tz}): {len(self.critical)} critical alerts,"
            f" {self.incidents} incidents ({self.still_open} still open)"
        ]
        lines += [
            f"- {a['category']} {a['kind']}: {_short(a['message'])}"
            for a in self.critical[:SHOWN_ALERTS]
        ]
        opened = len(self.unlabelled) + self.labelled
        if not opened:
            lines.append("opened alerts: none")
        elif not self.unlabelled:
            lines.append(f"opened alerts: {opened}, all labelled")
        else:
            lines.append(
                f"opened alerts: {opened}, {self.labelled} labelled,"
                f" {len(self.unlabelled)} to label (real or false alarm?):"
            )
            lines += [
                f"  {a['id']}  {a['ts'].astimezone(z):%H:%M %Z}  {a['category']}:"
                f" {_short(a['message'])}"
                for a in self.unlabelled[:SHOWN_UNLABELLED]
            ]
            more = len(self.unlabelled) - SHOWN_UNLABELLED
            if more > 0:
                lines.append(f"  ... and {more} more: {UNLABELLED_COMMAND}")
            lines.append(f"label one: {label_command('ID')}")
        return "\n".join(lines)


def _short(message: str, width: int = 80) -> str:
    one = " ".join(redact(message).split())
    return one if len(one) <= width else one[: width - 3] + "..."


def daily_summary(conn: psycopg.Connection, day: date, tz: str, *, target: str) -> DailySummary:
    """What local day ``day`` (in ``tz``) brought ``target``, read from the ops store."""
    start, end = local_day(day, tz)
    out = DailySummary(day, tz, target=target)

    def rows(query: psycopg.sql.SQL | psycopg.sql.Composed) -> list[dict[str, Any]]:
        cur = conn.cursor(row_factory=dict_row)
        return cur.execute(query, {"target": target, "start": start, "end": end}).fetchall()

    out.critical = rows(
        psycopg.sql.SQL(
            "SELECT ts, category, kind, message FROM westep_ops.alerts"
            " WHERE target = %(target)s AND ts >= %(start)s AND ts < %(end)s"
            " AND severity = 'critical' ORDER BY ts, id"
        )
    )
    ((out.incidents, out.still_open),) = [
        (r["n"], r["open"])
        for r in rows(
            psycopg.sql.SQL(
                "SELECT count(*) AS n, count(*) FILTER (WHERE closed_at IS NULL) AS open"
                " FROM westep_ops.incidents WHERE target = %(target)s"
                " AND started_at >= %(start)s AND started_at < %(end)s"
            )
        )
    ]
    out.unlabelled = rows(
        psycopg.sql.SQL(
            "SELECT a.id, a.ts, a.category, a.message FROM westep_ops.alerts a"
            " WHERE a.target = %(target)s AND a.ts >= %(start)s AND a.ts < %(end)s"
            " AND {unlabelled} ORDER BY a.ts, a.id"
        ).format(unlabelled=UNLABELLED)
    )
    ((out.labelled,),) = [
        (r["n"],)
        for r in rows(
            psycopg.sql.SQL(
                "SELECT count(*) AS n FROM westep_ops.alerts a WHERE a.target = %(target)s"
                " AND a.ts >= %(start)s"
                " AND a.ts < %(end)s AND a.kind = 'opened' AND a.suppressed_by IS NULL"
                " AND a.label IS NOT NULL"
            )
        )
    ]
    return out


# -- the fleet summary (``westep-ops status``) --------------------------------------------
# A target's state, worst first: its exit-code level (0 ok, 1 warning, 2 critical).
OK, WARNING, CRITICAL, NOT_MEASURED = "ok", "warning", "critical", "not measured"
LEVEL = {OK: 0, WARNING: 1, NOT_MEASURED: 1, CRITICAL: 2}


@dataclass(frozen=True)
class StatusSpec:
    """What the fleet summary needs to know of one target (from its effective config).

    ``stale_s``: how long a sample's state holds (2x the cheap interval + the confirmation
    delay, ``monitoring/sla.stale_s``): a target whose last sample is older is "not
    measured". ``fresh_s``: how far back a category's latest sample still says its state
    (2x the full-sweep interval + the confirmation delay: the full-sweep categories are
    probed that rarely)."""

    name: str
    tz: str
    stale_s: float
    fresh_s: float
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class TargetStatus:
    """One target's line of ``westep-ops status``; a figure nothing measured is None."""

    target: str
    tags: dict[str, str]
    state: str  # ok, warning, critical, not measured
    failing: dict[str, str]  # category -> warning / critical / error (the monitor could not look)
    open_incidents: list[dict[str, Any]]  # id, category, severity, started_at
    month_start: datetime
    availability: float | None  # month to date, over the measured time
    measured_share: float  # of the month to date
    last_sample_at: datetime | None
    last_sample_age_s: float | None
    worker: str | None  # the worker holding its lease; None: no valid lease (or no leases)

    @property
    def level(self) -> int:
        """0 ok, 1 warning or not measured, 2 critical (also a target not measured now
        whose critical incident is still open: the last thing known of it)."""
        if any(i["severity"] == CRITICAL for i in self.open_incidents):
            return LEVEL[CRITICAL]
        return LEVEL[self.state]

    def as_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "tags": self.tags,
            "state": self.state,
            "failing": self.failing,
            "open_incidents": [
                {**i, "started_at": i["started_at"].isoformat()} for i in self.open_incidents
            ],
            "month_start": self.month_start.isoformat(),
            "availability": self.availability,
            "measured_share": self.measured_share,
            "last_sample_at": self.last_sample_at.isoformat() if self.last_sample_at else None,
            "last_sample_age_s": self.last_sample_age_s,
            "worker": self.worker,
        }


def month_start(now: datetime, tz: str) -> datetime:
    """Midnight of the first day of ``now``'s month in ``tz``."""
    local = now.astimezone(ZoneInfo(tz))
    return datetime.combine(local.date().replace(day=1), time(0), tzinfo=ZoneInfo(tz))


def target_state(
    failing: dict[str, str],
    open_incidents: list[dict[str, Any]],
    age_s: float | None,
    stale_s: float,
) -> str:
    """ "not measured" with no sample fresher than ``stale_s`` (never a default "ok");
    else critical when a category's latest sample is critical or an open incident is,
    warning when one is warning or could not look (error), else ok."""
    if age_s is None or age_s > stale_s:
        return NOT_MEASURED
    severities = set(failing.values()) | {i["severity"] for i in open_incidents}
    if CRITICAL in severities:
        return CRITICAL
    return WARNING if severities else OK


def _leases(conn: psycopg.Connection, names: list[str]) -> dict[str, str] | None:
    """target -> the worker holding a valid lease on it; None when the store has no
    ``westep_ops.leases`` table (no fleet worker ever ran on it)."""
    (exists,) = conn.execute("SELECT to_regclass('westep_ops.leases') IS NOT NULL").fetchone() or (
        False,
    )
    if not exists:
        return None
    # to_jsonb: read the row by its column names without tying this to the lease table's
    # other columns (it belongs to the fleet worker, monitoring/leases.py).
    rows = conn.execute(
        "SELECT l.target, coalesce(to_jsonb(l) ->> 'worker', to_jsonb(l) ->> 'worker_id'),"
        " coalesce((to_jsonb(l) ->> 'expires_at')::timestamptz > now(), false)"
        " FROM westep_ops.leases l WHERE l.target = ANY(%s)",
        (names,),
    ).fetchall()
    return {target: worker for target, worker, valid in rows if worker and valid}


def fleet_status(
    conn: psycopg.Connection, specs: list[StatusSpec], now: datetime
) -> list[TargetStatus]:
    """Each target's line of the fleet summary, in ``specs``' order, read from the ops
    store: every query filters on the targets named (a target never sees another's rows).

    Month-to-date availability is the daily assets' and the monthly report's definition
    (``lib/sla.state_intervals``: time, not slots; unknown time is not up) over the month
    so far in the target's zone, maintenance windows included."""
    import pandas as pd

    from westep_ops.lib import sla
    from westep_ops.monitoring.rollups import service_figures

    names = [s.name for s in specs]
    if not names:
        return []
    (have_history,) = conn.execute(
        "SELECT to_regclass('westep_ops.samples') IS NOT NULL"
    ).fetchone() or (False,)
    last: dict[str, datetime] = {}
    latest: dict[str, dict[str, str]] = {n: {} for n in names}
    incidents: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    frames: dict[str, pd.DataFrame] = {}
    if have_history:
        for target, ts in conn.execute(
            "SELECT target, max(ts) FROM westep_ops.samples WHERE target = ANY(%s) GROUP BY target",
            (names,),
        ):
            last[target] = ts
        for s in specs:
            cur = conn.execute(
                "SELECT DISTINCT ON (category) category, status FROM westep_ops.samples"
                " WHERE target = %s AND ts >= %s AND ts <= %s ORDER BY category, ts DESC, id DESC",
                (s.name, now - timedelta(seconds=s.fresh_s), now),
            )
            latest[s.name] = {c: st for c, st in cur if st in (WARNING, CRITICAL, "error")}
        for row in conn.cursor(row_factory=dict_row).execute(
            "SELECT target, id, category, severity, started_at FROM westep_ops.incidents"
            " WHERE target = ANY(%s) AND closed_at IS NULL ORDER BY started_at, id",
            (names,),
        ):
            incidents[row.pop("target")].append(row)
        for s in specs:
            start = month_start(now, s.tz)
            cur = conn.execute(
                # microseconds, not timestamps: half the time for a month of samples
                "SELECT (extract(epoch FROM ts) * 1000000)::bigint, kind, category, status"
                " FROM westep_ops.samples WHERE target = %s"
                " AND ts >= %s AND ts < %s AND category = ANY(%s) AND kind = ANY(%s)",
                (
                    s.name,
                    start - timedelta(seconds=s.stale_s),
                    now,
                    list(sla.SERVICE),
                    list(sla.SCHEDULED),
                ),
            )
            frames[s.name] = pd.DataFrame(
                cur.fetchall(), columns=["ts", "kind", "category", "status"]
            )
    leases = _leases(conn, names) or {}
    out = []
    for s in specs:
        start = month_start(now, s.tz)
        frame = frames.get(s.name)
        figures: dict[str, float] = {"measured_share": 0.0}
        if frame is not None and len(frame):
            frame["ts"] = pd.to_datetime(frame["ts"], unit="us", utc=True)
            figures = service_figures(sla.state_intervals(frame, s.stale_s), start, now)
        at = last.get(s.name)
        age = (now - at).total_seconds() if at else None
        state = target_state(latest[s.name], incidents[s.name], age, s.stale_s)
        out.append(
            TargetStatus(
                target=s.name,
                tags=dict(s.tags),
                state=state,
                # what the last samples said, only while they still say something
                failing={} if state == NOT_MEASURED else latest[s.name],
                open_incidents=incidents[s.name],
                month_start=start,
                availability=figures.get("availability"),
                measured_share=figures["measured_share"],
                last_sample_at=at,
                last_sample_age_s=age,
                worker=leases.get(s.name),
            )
        )
    return out
