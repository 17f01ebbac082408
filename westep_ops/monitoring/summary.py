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
