"""The monitoring history in the ops PostgreSQL: samples, incidents, alerts.

It is what daily assets and backfills read, so a past day recomputes to the same answer.
Samples are append-only; an incident row is updated only to close or escalate it.

:class:`HistoryStore` raises :class:`HistoryUnavailable` when the ops PostgreSQL does not
answer in time (every transaction runs under a client-side deadline as well as
``statement_timeout``: a frozen server accepts TCP and then never answers). The monitor
uses :class:`ResilientHistory`, which never raises for that: writes it cannot make go to
the local :class:`~westep_ops.spool.Spool` and are replayed when the store returns, and
reads fall back to what the spool and the last answers of the store know.

One module over 400 lines on purpose: :class:`ResilientHistory` is :class:`HistoryStore`
plus its fallback, and both apply the same spool entries (:func:`apply_entry`); apart,
every write would have to be kept in step across two files.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from westep_ops.config import DEFAULT_TARGET
from westep_ops.db import DeadlineExceeded, deadline, describe_error, store_connection
from westep_ops.probes.performance import PerformanceSample
from westep_ops.redact import redact, redact_tree
from westep_ops.spool import Spool, spool_path
from westep_ops.store_schema import migrate

# What a dead, frozen or unreachable ops store raises; anything else is a bug and propagates.
_UNAVAILABLE = (psycopg.OperationalError, psycopg.InterfaceError, DeadlineExceeded)


class HistoryUnavailable(Exception):
    pass


def _why(e: BaseException) -> str:
    if isinstance(e, DeadlineExceeded):
        return f"no answer within {e.ms:.0f} ms: server stopped, frozen or overloaded"
    return describe_error(e) or type(e).__name__


class HistoryStore:
    """One target's history in the ops database, one transaction at a time.

    Every row it writes carries :attr:`target` and every question it asks is about that
    target's rows only (a fleet's targets share one store; ids are global).

    Each transaction takes a connection from the process's ops-store pool
    (:func:`westep_ops.db.store_connection`: opened directly and migrated the first time,
    reused afterwards) and has ``statement_timeout`` on the server and a client-side
    deadline a little longer (``db.deadline``), so a stopped server costs at most that long.
    """

    def __init__(
        self,
        url: str | None,
        *,
        target: str = DEFAULT_TARGET,
        connect_timeout_ms: int = 3000,
        statement_timeout_ms: int = 30_000,
    ) -> None:
        self.url = url
        self.target = target  # every read and write is this target's
        self.connect_timeout_ms = connect_timeout_ms
        self.statement_timeout_ms = statement_timeout_ms
        self.deadline_ms = statement_timeout_ms + 1000
        self.error: str | None = None  # set by ResilientHistory; a plain store raises instead

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection]:
        """A store connection for the block; HistoryUnavailable when the store is not there."""
        if not self.url:
            raise HistoryUnavailable("WESTEP_OPS_STORAGE_URL is not set")
        try:
            with store_connection(
                self.url,
                connect_timeout_ms=self.connect_timeout_ms,
                statement_timeout_ms=self.statement_timeout_ms,
                autocommit=False,
                prepare=migrate,
            ) as conn:
                yield conn
        except _UNAVAILABLE as e:
            raise HistoryUnavailable(_why(e)) from None

    @contextmanager
    def tx(self) -> Iterator[psycopg.Connection]:
        with self._connection() as conn:
            try:
                with deadline(conn, self.deadline_ms), conn.transaction():
                    yield conn
            except _UNAVAILABLE:
                conn.close()  # cut or dead: never back into the pool
                raise

    def close(self) -> None:
        """Nothing of its own to close: connections go back to the pool after each use."""

    # -- writes ---------------------------------------------------------------------------
    def _write(self, op: str, args: dict[str, Any]) -> int | None:
        with self.tx() as conn:
            return apply_entry(conn, op, {**args, "target": self.target})

    def add_samples(self, ts: datetime, kind: str, rows: list[dict[str, Any]]) -> None:
        """Rows with category, status, summary, findings, suspected_cause, duration_ms, value."""
        if rows:
            self._write("samples", {"ts": ts, "kind": kind, "rows": redact_tree(rows)})

    def add_performance(self, p: PerformanceSample, ts: datetime) -> None:
        self._write("performance", {"ts": ts, "p": _perf_row(p)})

    def open_incident(
        self,
        category: str,
        severity: str,
        started: datetime,
        detected: datetime,
        summary: str,
        silenced_by: str | None = None,
    ) -> int:
        iid = self._write(
            "open_incident",
            {
                "category": category,
                "severity": severity,
                "started": started,
                "detected": detected,
                "summary": redact(summary),
                "silenced_by": silenced_by,
            },
        )
        assert iid is not None
        return iid

    def close_incident(
        self, incident_id: int, resolved: datetime, closed: datetime, recovered_by: str | None
    ) -> None:
        self._write(
            "close_incident",
            {
                "incident_id": incident_id,
                "resolved": resolved,
                "closed": closed,
                "recovered_by": recovered_by,
            },
        )

    def update_incident(self, incident_id: int, **fields: Any) -> None:
        assert set(fields) <= _INCIDENT_FIELDS, fields
        self._write("update_incident", {"incident_id": incident_id, "fields": fields})

    def add_alert(
        self,
        incident_id: int | None,
        ts: datetime,
        kind: str,
        severity: str,
        category: str,
        message: str,
        channels: list[str],
        suppressed_by: str | None = None,
    ) -> int:
        """Record an alert; with ``suppressed_by`` (a silence) it is recorded but never sent."""
        aid = self._write(
            "add_alert",
            {
                "incident_id": incident_id,
                "ts": ts,
                "kind": kind,
                "severity": severity,
                "category": category,
                "message": redact(message),
                "channels": channels,
                "suppressed_by": suppressed_by,
            },
        )
        assert aid is not None
        return aid

    def set_alert_channels(self, alert_id: int, channels: list[str]) -> None:
        self._write("set_alert_channels", {"alert_id": alert_id, "channels": channels})

    def mark_delivered(self, alert_id: int, channel: str) -> None:
        """Add ``channel`` to the channels that took alert ``alert_id`` (idempotent)."""
        self._write("mark_delivered", {"alert_id": alert_id, "channel": channel})

    # -- reads ----------------------------------------------------------------------------
    def open_incidents(self) -> dict[str, dict[str, Any]]:
        with self.tx() as conn:
            cur = conn.cursor(row_factory=dict_row).execute(
                "SELECT * FROM westep_ops.incidents WHERE target = %s AND closed_at IS NULL",
                (self.target,),
            )
            return {r["category"]: r for r in cur.fetchall()}

    def recently_closed(
        self, since: datetime, *, critical_only: bool = False
    ) -> dict[str, datetime]:
        """Categories whose incident closed after ``since``: category -> latest close."""
        with self.tx() as conn:
            rows = conn.execute(
                "SELECT category, max(closed_at) FROM westep_ops.incidents WHERE target = %s"
                " AND closed_at > %s AND (NOT %s OR severity = 'critical') GROUP BY category",
                (self.target, since, critical_only),
            ).fetchall()
        return {r[0]: r[1] for r in rows}

    def recent_statuses(
        self, category: str, limit: int, *, observe_only: frozenset[str] = frozenset()
    ) -> list[tuple[datetime, str]]:
        """The latest samples of ``category``, newest first: (ts, status). A warning made
        only of ``observe_only`` findings (figures, not faults) reads as ok."""
        with self.tx() as conn:
            return conn.execute(
                "SELECT ts, CASE WHEN status = 'warning' AND cardinality(findings) > 0"
                " AND findings <@ %s::text[] THEN 'ok' ELSE status END"
                " FROM westep_ops.samples WHERE target = %s AND category = %s"
                " ORDER BY ts DESC, id DESC LIMIT %s",
                (sorted(observe_only), self.target, category, limit),
            ).fetchall()

    def last_sample_at(self, kinds: tuple[str, ...]) -> datetime | None:
        with self.tx() as conn:
            row = conn.execute(
                "SELECT max(ts) FROM westep_ops.samples WHERE target = %s AND kind = ANY(%s)",
                (self.target, list(kinds)),
            ).fetchone()
        return row[0] if row else None

    def undelivered(self, channel: str, since: datetime, limit: int) -> list[dict[str, Any]]:
        """Alerts since ``since`` that ``channel`` has not taken yet, oldest first."""
        with self.tx() as conn:
            cur = conn.cursor(row_factory=dict_row).execute(
                "SELECT id, incident_id, ts, kind, severity, category, message FROM westep_ops.alerts"
                " WHERE target = %s AND ts >= %s AND NOT %s = ANY(channels)"
                " AND suppressed_by IS NULL ORDER BY id LIMIT %s",
                (self.target, since, channel, limit),
            )
            return cur.fetchall()

    def repair_outcomes(self, incident_id: int) -> list[dict[str, Any]]:
        with self.tx() as conn:
            cur = conn.cursor(row_factory=dict_row).execute(
                "SELECT action, outcome, summary, escalation, trigger FROM westep_ops.repair_attempts"
                " WHERE incident_id = %s AND NOT dry_run ORDER BY id",
                (incident_id,),
            )
            return cur.fetchall()

    def alerts(
        self, *, open_only: bool = False, unlabelled: bool = False, limit: int = 50
    ) -> list[dict[str, Any]]:
        """The latest alerts, newest first. ``unlabelled``: only opened alerts that were
        sent (not suppressed by a silence) and nobody has labelled yet: what the alert
        precision would count if a person judged them."""
        with self.tx() as conn:
            cur = conn.cursor(row_factory=dict_row).execute(
                # An alert without an incident ("monitor degraded") belongs to no open one.
                psycopg.sql.SQL(
                    "SELECT a.*, (i.id IS NOT NULL AND i.closed_at IS NULL) AS incident_open"
                    " FROM westep_ops.alerts a"
                    " LEFT JOIN westep_ops.incidents i ON i.id = a.incident_id"
                    " WHERE a.target = %s AND (NOT %s OR (i.id IS NOT NULL AND i.closed_at IS NULL))"
                    " AND (NOT %s OR ({unlabelled})) ORDER BY a.id DESC LIMIT %s"
                ).format(unlabelled=UNLABELLED),
                (self.target, open_only, unlabelled, limit),
            )
            return cur.fetchall()

    def acknowledge(self, alert_id: int, by: str, ts: datetime) -> bool:
        with self.tx() as conn:
            return (
                conn.execute(
                    "UPDATE westep_ops.alerts SET acknowledged_at = %s, acknowledged_by = %s"
                    " WHERE id = %s AND target = %s",
                    (ts, by, alert_id, self.target),
                ).rowcount
                == 1
            )

    def label(self, alert_id: int, real: bool, ts: datetime) -> dict[str, Any] | None:
        """Say alert ``alert_id`` was real or a false alarm (a new label replaces the old).

        Returns the alert's ``kind``, ``incident_id``, its ``previous`` label and the id of
        its incident's opened alert (``opened_id``: the one alert precision counts); None
        when there is no such alert.
        """
        with self.tx() as conn:
            cur = conn.cursor(row_factory=dict_row).execute(
                "WITH old AS (SELECT id, label FROM westep_ops.alerts"
                " WHERE id = %s AND target = %s FOR UPDATE)"
                " UPDATE westep_ops.alerts a SET label = %s, labeled_at = %s FROM old"
                " WHERE a.id = old.id RETURNING a.kind, a.incident_id, old.label AS previous,"
                " (SELECT min(o.id) FROM westep_ops.alerts o WHERE o.incident_id = a.incident_id"
                "  AND o.kind = 'opened') AS opened_id",
                (alert_id, self.target, real, ts),
            )
            return cur.fetchone()


# The alerts a person should judge: opened, sent (a silenced one was never sent and is not
# counted in alert precision), no label yet. A constant condition on the alias ``a``.
UNLABELLED = psycopg.sql.SQL("a.kind = 'opened' AND a.label IS NULL AND a.suppressed_by IS NULL")


_INCIDENT_FIELDS = {
    "escalation",
    "last_notified_at",
    "recovered_by",
    "severity",
    "summary",
    "silenced_by",
    "unsilenced_at",
}


def _perf_row(p: PerformanceSample) -> dict[str, Any]:
    return {
        "mean_api_ms": p.mean_api_ms,
        "db_round_trip_ms": p.db_round_trip_ms,
        "http_requests": p.http_requests,
        "http_failures": p.http_failures,
        "tps": p.tps,
        "rollback_ratio": p.db_rollback_ratio,
        "monitor_rss_mb": p.monitor_rss_mb,
        "postgres_pss_mb": p.postgres_pss_mb,
        "status": p.status,
        "problems": list(p.problems),
    }


def apply_entry(conn: psycopg.Connection, op: str, args: dict[str, Any]) -> int | None:
    """Perform one history write in ``conn``'s open transaction; the new row's id, if any.

    Shared by the live path and the spool's replay, so both write exactly the same rows.
    ``args["target"]`` is the target the row belongs to (an entry spooled before fleets
    has none: it was the one target ``default``'s); an update by id touches only that
    target's row.
    """
    target = args.get("target") or DEFAULT_TARGET
    if op == "samples":
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO westep_ops.samples (target, ts, kind, category, status, summary,"
                " findings, suspected_cause, duration_ms, value)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                [
                    (
                        target,
                        args["ts"],
                        args["kind"],
                        r["category"],
                        r["status"],
                        redact(r["summary"]),
                        r.get("findings") or [],
                        r.get("suspected_cause"),
                        r.get("duration_ms"),
                        Jsonb(r.get("value") or {}),
                    )
                    for r in args["rows"]
                ],
            )
        return None
    if op == "performance":
        p = args["p"]
        cols = list(p)
        conn.execute(
            psycopg.sql.SQL(
                "INSERT INTO westep_ops.performance_samples (target, ts, {}) VALUES (%s, %s, {})"
            ).format(
                psycopg.sql.SQL(", ").join(map(psycopg.sql.Identifier, cols)),
                psycopg.sql.SQL(", ").join(psycopg.sql.Placeholder() * len(cols)),
            ),
            [target, args["ts"], *p.values()],
        )
        return None
    if op == "open_incident":
        try:
            with conn.transaction():  # a savepoint: the conflict below must not end the tx
                row = conn.execute(
                    "INSERT INTO westep_ops.incidents (target, category, severity, started_at,"
                    " detected_at, summary, last_notified_at, silenced_by)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
                    (
                        target,
                        args["category"],
                        args["severity"],
                        args["started"],
                        args["detected"],
                        args["summary"],
                        args["detected"],
                        args.get("silenced_by"),
                    ),
                ).fetchone()
        except psycopg.errors.UniqueViolation:
            # Replayed while another process had opened one for the category: it is the same
            # outage, so what was spooled about it joins that incident.
            row = conn.execute(
                "SELECT id FROM westep_ops.incidents"
                " WHERE target = %s AND category = %s AND closed_at IS NULL",
                (target, args["category"]),
            ).fetchone()
        assert row is not None
        return int(row[0])
    if op == "close_incident":
        conn.execute(
            "UPDATE westep_ops.incidents SET resolved_at = %s, closed_at = %s,"
            " recovered_by = coalesce(recovered_by, %s)"
            " WHERE id = %s AND target = %s AND closed_at IS NULL",
            (args["resolved"], args["closed"], args["recovered_by"], args["incident_id"], target),
        )
        return None
    if op == "update_incident":
        for k, v in args["fields"].items():
            assert k in _INCIDENT_FIELDS, k
            conn.execute(
                psycopg.sql.SQL(
                    "UPDATE westep_ops.incidents SET {} = %s WHERE id = %s AND target = %s"
                ).format(psycopg.sql.Identifier(k)),
                (v, args["incident_id"], target),
            )
        return None
    if op == "add_alert":
        row = conn.execute(
            "INSERT INTO westep_ops.alerts (target, incident_id, ts, kind, severity, category,"
            " message, channels, suppressed_by) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " RETURNING id",
            (
                target,
                args["incident_id"] if (args["incident_id"] or 0) >= 0 else None,
                args["ts"],
                args["kind"],
                args["severity"],
                args["category"],
                args["message"],
                args["channels"],
                args.get("suppressed_by"),
            ),
        ).fetchone()
        assert row is not None
        return int(row[0])
    if op == "set_alert_channels":
        conn.execute(
            "UPDATE westep_ops.alerts SET channels = %s WHERE id = %s AND target = %s",
            (args["channels"], args["alert_id"], target),
        )
        return None
    if op == "mark_delivered":
        conn.execute(
            "UPDATE westep_ops.alerts SET channels = array_append(channels, %s)"
            " WHERE id = %s AND target = %s AND NOT %s = ANY(channels)",
            (args["channel"], args["alert_id"], target, args["channel"]),
        )
        return None
    if op == "repair_attempt":
        from westep_ops.store import insert_attempt

        insert_attempt(conn, {"target": target, **args["record"]})
        return None
    raise ValueError(f"unknown history write {op!r}")


# Last answers of the store per (url, target, question), kept for the process's lifetime so that
# a sensor evaluation (a new object each tick) still knows them while the store is down.
_LAST_ANSWERS: dict[tuple[str, str, str], Any] = {}


class ResilientHistory(HistoryStore):
    """The monitor's history: never raises because the ops store is down, frozen or slow.

    Writes that cannot be made go to the spool (rows they create get local ids). When
    the store answers again the spool is replayed, in order, within a time budget
    (``replay_budget_s`` per ``retry_seconds``) so a long backlog never makes one tick
    long; until it is empty new writes queue behind it, keeping their order. Reads are
    the store's answer (or, while it is down, its last answer) merged with what the
    spool still holds. After a failure the store is tried again only every
    ``retry_seconds``, so a dead store costs one connect timeout per retry, not one per
    write. :attr:`error` says why the store is unusable (None when it works).
    """

    def __init__(
        self,
        url: str | None,
        *,
        target: str = DEFAULT_TARGET,
        spool: Spool | None = None,
        connect_timeout_ms: int = 2000,
        statement_timeout_ms: int = 2000,
        retry_seconds: float = 10.0,
        replay_budget_s: float = 2.0,
    ) -> None:
        super().__init__(
            url,
            target=target,
            connect_timeout_ms=connect_timeout_ms,
            statement_timeout_ms=statement_timeout_ms,
        )
        self.spool = spool or Spool(spool_path(target))
        self.retry_seconds = retry_seconds
        self.replay_budget_s = replay_budget_s
        self.error: str | None = None
        self.replayed = 0
        self._retry_at = 0.0
        self._window = (0.0, 0.0)  # (start, seconds spent replaying in it)

    def close(self) -> None:
        super().close()
        self.spool.close()

    def _answers(self, key: str) -> Any:
        return _LAST_ANSWERS.get((self.url or "", self.target, key))

    def _remember(self, key: str, value: Any) -> Any:
        _LAST_ANSWERS[(self.url or "", self.target, key)] = value
        return value

    def _try(self, fn: Any) -> Any:
        if self.error is not None and time.monotonic() < self._retry_at:
            raise HistoryUnavailable(self.error)
        try:
            self._flush()
            out = fn()
        except HistoryUnavailable as e:
            self.error = str(e) or "ops store unavailable"
            self._retry_at = time.monotonic() + self.retry_seconds
            raise
        self.error = None
        return out

    def _flush(self) -> None:
        """Replay the spool into the store, in batches under a deadline, within the budget."""
        start, spent = self._window
        if time.monotonic() - start > self.retry_seconds:
            start, spent = time.monotonic(), 0.0
        try:
            while spent < self.replay_budget_s and self.spool.count():
                t0 = time.monotonic()
                try:
                    with self._connection() as conn:
                        try:
                            with deadline(conn, self.deadline_ms + 5000):
                                n = self.spool.replay(conn, apply_entry, limit=100)
                        except _UNAVAILABLE:
                            conn.close()
                            raise
                finally:
                    spent += time.monotonic() - t0
                self.replayed += n
                if not n:
                    break
        finally:
            self._window = (start, spent)

    # -- writes ---------------------------------------------------------------------------
    def _write(self, op: str, args: dict[str, Any]) -> int | None:
        queue = object()
        args = {**args, "target": self.target}  # spooled entries keep their target

        def write() -> Any:
            if self.spool.count():
                return queue  # still catching up: behind the backlog, in order
            return super(ResilientHistory, self)._write(op, self.spool.map_ids(args))

        try:
            out = self._try(write)
            if out is not queue:
                return out
        except HistoryUnavailable:
            pass
        return self.spool.add(op, args, new_id=op in ("open_incident", "add_alert"))

    # -- reads: the store's (or its last) answer, plus what is still spooled ---------------
    def _pending(self, op: str) -> list[dict[str, Any]]:
        return [self.spool.map_ids(a) for _seq, _op, a in self.spool.pending(op)]

    def open_incidents(self) -> dict[str, dict[str, Any]]:
        try:
            known = self._try(lambda: HistoryStore.open_incidents(self))
            self.spool.put("open_incidents", known)
        except HistoryUnavailable:
            known = self.spool.get("open_incidents") or {}
        out = {c: dict(i) for c, i in known.items()}
        for _seq, op, a in self.spool.pending():
            a = self.spool.map_ids(a)
            if op == "open_incident":
                out[a["category"]] = {
                    "id": a["local_id"],
                    "category": a["category"],
                    "severity": a["severity"],
                    "started_at": a["started"],
                    "detected_at": a["detected"],
                    "resolved_at": None,
                    "closed_at": None,
                    "recovered_by": None,
                    "escalation": None,
                    "summary": a["summary"],
                    "last_notified_at": a["detected"],
                    "silenced_by": a.get("silenced_by"),
                    "unsilenced_at": None,
                }
            elif op == "close_incident":
                out = {c: i for c, i in out.items() if i["id"] != a["incident_id"]}
            elif op == "update_incident":
                for i in out.values():
                    if i["id"] == a["incident_id"]:
                        i.update(a["fields"])
        return out

    def _base(self, key: str, fn: Any) -> Any:
        try:
            return self._remember(key, self._try(fn))
        except HistoryUnavailable:
            return self._answers(key)

    def recently_closed(
        self, since: datetime, *, critical_only: bool = False
    ) -> dict[str, datetime]:
        known = dict(
            self._base(
                f"closed:{critical_only}",
                lambda: HistoryStore.recently_closed(self, since, critical_only=critical_only),
            )
            or {}
        )
        pending = self._pending("open_incident")
        spooled = (self.spool.get("open_incidents") or {}).values()
        if critical_only:
            pending = [a for a in pending if a["severity"] == "critical"]
            spooled = [i for i in spooled if i.get("severity") == "critical"]
        incidents = {a["local_id"]: a["category"] for a in pending}
        for i in spooled:
            incidents.setdefault(i["id"], i["category"])
        for a in self._pending("close_incident"):
            category, closed = incidents.get(a["incident_id"]), a.get("closed")
            if category and closed and closed > since:
                known[category] = max(closed, known.get(category, closed))
        return {c: t for c, t in known.items() if t > since}

    def recent_statuses(
        self, category: str, limit: int, *, observe_only: frozenset[str] = frozenset()
    ) -> list[tuple[datetime, str]]:
        known = self._base(
            f"recent:{category}",
            lambda: HistoryStore.recent_statuses(self, category, limit, observe_only=observe_only),
        )

        def status(r: dict[str, Any]) -> str:
            f = set(r.get("findings") or [])
            return "ok" if r["status"] == "warning" and f and f <= observe_only else r["status"]

        spooled = [
            (a["ts"], status(r))
            for a in reversed(self._pending("samples"))
            for r in a["rows"]
            if r["category"] == category
        ]
        return (spooled + list(known or []))[:limit]

    def last_sample_at(self, kinds: tuple[str, ...]) -> datetime | None:
        known = self._base(
            "last:" + ",".join(kinds), lambda: HistoryStore.last_sample_at(self, kinds)
        )
        times = [a["ts"] for a in self._pending("samples") if a["kind"] in kinds]
        return max([*times, *([known] if known else [])], default=None)

    def repair_outcomes(self, incident_id: int) -> list[dict[str, Any]]:
        known = self._base(
            f"repairs:{incident_id}", lambda: HistoryStore.repair_outcomes(self, incident_id)
        )
        spooled = [
            {
                k: a["record"].get(k)
                for k in ("action", "outcome", "summary", "escalation", "trigger")
            }
            for a in self._pending("repair_attempt")
            if a["record"].get("incident_id") == incident_id and not a["record"].get("dry_run")
        ]
        return list(known or []) + spooled

    def undelivered(self, channel: str, since: datetime, limit: int) -> list[dict[str, Any]]:
        try:
            return self._try(lambda: HistoryStore.undelivered(self, channel, since, limit))
        except HistoryUnavailable:
            return []  # alerts raised meanwhile are still queued in this process


class PreviewHistory(ResilientHistory):
    """The history as a preview sees it: the store's answers, and no write at all.

    Dagster's "Preview tick result" runs the sensor for real; with this history (and a
    :class:`~westep_ops.monitoring.notify.PreviewNotifier`) the engine decides exactly
    what a tick would, while samples, incidents and alerts are dropped and its local
    state lives in a throw-away in-memory spool. Rows it would create get made-up ids.
    """

    def __init__(self, url: str | None, **kwargs: Any) -> None:
        from pathlib import Path

        super().__init__(url, spool=Spool(Path(":memory:")), **kwargs)
        self._made_up = -1_000_000_000  # far from the spool's own local ids

    def _write(self, op: str, args: dict[str, Any]) -> int | None:
        if op in ("open_incident", "add_alert"):
            self._made_up -= 1
            return self._made_up
        return None
