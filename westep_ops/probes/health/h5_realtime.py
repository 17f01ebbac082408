"""H5: logical replication set-up, the publication's tables, slots, LISTEN/NOTIFY.

Declares one catalog query for round trip 1 and, in heavy sweeps when realtime applies,
a LISTEN/NOTIFY with a fresh token for round trip 2; the verdict waits for that
notification on the direct connection (LISTEN does not survive transaction pooling).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from psycopg import sql

from westep_ops.config import Category, Realtime
from westep_ops.probes.base import CheckResult, Status, timed_result
from westep_ops.probes.health.batch import Answers
from westep_ops.probes.health.common import (
    DB_FAILURES,
    fmt_bytes,
    ms_since,
    not_configured,
    reason,
)
from westep_ops.probes.health.query import Query
from westep_ops.probes.session import ProbeSession

NOTIFY_NOT_RUN = "not run this sweep (the LISTEN/NOTIFY round trip runs in full sweeps)"

REALTIME_SQL = """
SELECT current_setting('wal_level') AS wal_level,
       EXISTS (SELECT 1 FROM pg_publication WHERE pubname = %(pub)s) AS publication,
       ARRAY(SELECT schemaname || '.' || tablename FROM pg_publication_tables
             WHERE pubname = %(pub)s ORDER BY 1) AS tables,
       coalesce((SELECT json_agg(json_build_object(
                    'name', slot_name, 'type', slot_type, 'active', active,
                    'lag_bytes', CASE WHEN pg_is_in_recovery() THEN NULL
                                 ELSE pg_wal_lsn_diff(pg_current_wal_lsn(),
                                      coalesce(confirmed_flush_lsn, restart_lsn)) END))
                 FROM pg_replication_slots), '[]'::json) AS slots
"""


def notify_statement(channel: str, token: str) -> sql.Composable:
    return sql.SQL("LISTEN {ch}; NOTIFY {ch}, {tok}").format(
        ch=sql.Identifier(channel), tok=sql.Literal(token)
    )


def realtime_applies(rt: Realtime, rows: list[dict[str, Any]]) -> bool:
    """H5 applies when the config asks for realtime, or the default publication exists."""
    return rt.required or bool(rows and rows[0]["publication"])


@dataclass
class Needs:
    """H5's queries this sweep: the catalog (round trip 1), then, when ``heavy`` and
    realtime applies, the LISTEN/NOTIFY round trip (round trip 2)."""

    realtime: Realtime
    heavy: bool
    catalog: Query
    notify: Query | None = None
    token: str = ""

    def first(self) -> list[Query]:
        return [self.catalog]

    def second(self, answers: Answers) -> list[Query]:
        try:
            rows = answers.rows(self.catalog)
        except DB_FAILURES:
            return []  # judged as the catalog's failure
        if not self.heavy or not realtime_applies(self.realtime, rows):
            return []
        self.token = secrets.token_hex(8)
        statement = notify_statement(self.realtime.notify_channel, self.token)
        self.notify = Query(Category.realtime, "notify", statement, rows=False)
        return [self.notify]


def needs(session: ProbeSession, heavy: bool = True) -> Needs:
    rt = session.config.realtime
    catalog = Query(Category.realtime, "realtime catalog", REALTIME_SQL, {"pub": rt.publication})
    return Needs(rt, heavy, catalog)


def check_realtime(session: ProbeSession, need: Needs, answers: Answers) -> CheckResult:
    """H5's verdict. Without ``heavy`` the LISTEN/NOTIFY round trip is left out (the
    monitor runs it in full sweeps only): ``values["notify"]`` then says it was not run,
    and the verdict is about the catalog alone.
    """
    cfg = session.config
    rt = cfg.realtime
    th = cfg.monitoring.thresholds
    res = CheckResult(
        Category.realtime, thresholds={"replicationLagBytes": th.replication_lag_bytes}
    )
    with timed_result(res):
        try:
            (row,) = answers.rows(need.catalog)
        except DB_FAILURES as e:
            res.problem(Status.error, f"could not check: {reason(e)}")
            return res.finish("")
        if not realtime_applies(rt, [row]):
            return not_configured(
                res,
                f"no realtime section in the config and no publication {rt.publication} "
                "on the target",
            )
        res.values.update(
            wal_level=row["wal_level"],
            publication=row["publication"],
            publication_tables=row["tables"],
            slots=row["slots"],
        )
        if row["wal_level"] != "logical":
            res.problem(
                Status.critical,
                f"wal_level is {row['wal_level']}, realtime needs logical",
                "wal_level",
            )
        if not row["publication"]:
            res.problem(
                Status.critical,
                f"publication {rt.publication} does not exist",
                "publication_missing",
            )
        else:
            missing = sorted(set(rt.tables) - set(row["tables"]))
            if missing:
                res.problem(
                    Status.warning,
                    f"not in {rt.publication}: {', '.join(missing)}",
                    "publication_tables_missing",
                )
        for slot in row["slots"]:
            lag = slot.get("lag_bytes") or 0
            if lag >= th.replication_lag_bytes:
                state = "active" if slot["active"] else "inactive"
                res.problem(
                    Status.warning,
                    f"slot {slot['name']} ({state}) is {fmt_bytes(lag)} behind",
                    "replication_lag",
                )
        if need.heavy:
            _await_notify(session, res, need, answers)
            said = f"NOTIFY {res.values.get('notify_ms', '-')} ms"
        else:
            res.values["notify"] = NOTIFY_NOT_RUN
            said = "NOTIFY not run this sweep"
        res.finish(
            f"{rt.publication}: {len(row['tables'])} tables, {len(row['slots'])} slots, {said}"
        )
    return res


def _await_notify(session: ProbeSession, res: CheckResult, need: Needs, answers: Answers) -> None:
    """Wait for round trip 2's NOTIFY on the direct connection, where it was LISTENed."""
    wait_s = session.config.monitoring.timeouts.statement / 1000
    sent = answers.outcome(need.notify) if need.notify is not None else None
    if not isinstance(sent, float):
        why = reason(sent) if isinstance(sent, BaseException) else "not sent"
        res.values["notify"] = "could not run"
        res.problem(Status.error, f"LISTEN/NOTIFY could not run: {why}")
        return
    channel = session.config.realtime.notify_channel
    got = False
    try:
        conn = session.connection("direct")  # notifications arrive on this connection
        for n in conn.notifies(timeout=wait_s):
            if n.channel == channel and n.payload == need.token:
                got = True
                break
    except DB_FAILURES as e:
        res.values["notify"] = "could not run"
        res.problem(Status.error, f"LISTEN/NOTIFY could not run: {reason(e)}")
        return
    if not got:
        res.values["notify"] = "lost"
        res.problem(Status.critical, f"NOTIFY not delivered within {wait_s:.0f} s", "notify_lost")
    else:
        res.values.update(notify="delivered", notify_ms=ms_since(sent))
