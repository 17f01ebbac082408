"""The monitoring history in the ops PostgreSQL: samples, incidents, alerts.

It is what daily assets and backfills read, so a past day recomputes to the same answer.
Samples are append-only; an incident row is updated only to close or escalate it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from westep_ops.db import connect
from westep_ops.probes.performance import PerformanceSample
from westep_ops.redact import redact
from westep_ops.store import migrate


class HistoryUnavailable(Exception):
    pass


class HistoryStore:
    """One kept connection to the ops database, reopened when it breaks."""

    def __init__(self, url: str | None, *, connect_timeout_ms: int = 3000) -> None:
        self.url = url
        self.connect_timeout_ms = connect_timeout_ms
        self._conn: psycopg.Connection | None = None

    @contextmanager
    def tx(self) -> Iterator[psycopg.Connection]:
        if not self.url:
            raise HistoryUnavailable("WESTEP_OPS_STORAGE_URL is not set")
        if self._conn is None or self._conn.closed or self._conn.broken:
            try:
                self._conn = connect(
                    self.url,
                    connect_timeout_ms=self.connect_timeout_ms,
                    statement_timeout_ms=30_000,
                    autocommit=False,
                )
                migrate(self._conn)
            except psycopg.Error as e:
                self._conn = None
                raise HistoryUnavailable(
                    str(e).splitlines()[0] if str(e) else type(e).__name__
                ) from None
        conn = self._conn
        try:
            with conn.transaction():
                yield conn
        except psycopg.OperationalError as e:
            conn.close()
            raise HistoryUnavailable(str(e).splitlines()[0]) from None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- writes ---------------------------------------------------------------------------
    def add_samples(self, ts: datetime, kind: str, rows: list[dict[str, Any]]) -> None:
        """Rows with category, status, summary, findings, suspected_cause, duration_ms, value."""
        if not rows:
            return
        with self.tx() as conn, conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO westep_ops.samples (ts, kind, category, status, summary, findings,"
                " suspected_cause, duration_ms, value) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                [
                    (
                        ts,
                        kind,
                        r["category"],
                        r["status"],
                        redact(r["summary"]),
                        r.get("findings") or [],
                        r.get("suspected_cause"),
                        r.get("duration_ms"),
                        Jsonb(_json_safe(r.get("value") or {})),
                    )
                    for r in rows
                ],
            )

    def add_performance(self, p: PerformanceSample, ts: datetime) -> None:
        with self.tx() as conn:
            conn.execute(
                "INSERT INTO westep_ops.performance_samples (ts, mean_api_ms, db_round_trip_ms,"
                " http_requests, http_failures, tps, rollback_ratio, monitor_rss_mb, postgres_pss_mb,"
                " status, problems) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    ts,
                    p.mean_api_ms,
                    p.db_round_trip_ms,
                    p.http_requests,
                    p.http_failures,
                    p.tps,
                    p.db_rollback_ratio,
                    p.monitor_rss_mb,
                    p.postgres_pss_mb,
                    p.status,
                    p.problems,
                ),
            )

    def open_incident(
        self, category: str, severity: str, started: datetime, detected: datetime, summary: str
    ) -> int:
        with self.tx() as conn:
            row = conn.execute(
                "INSERT INTO westep_ops.incidents (category, severity, started_at, detected_at, summary,"
                " last_notified_at) VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
                (category, severity, started, detected, redact(summary), detected),
            ).fetchone()
        assert row is not None
        return int(row[0])

    def close_incident(
        self, incident_id: int, resolved: datetime, closed: datetime, recovered_by: str | None
    ) -> None:
        with self.tx() as conn:
            conn.execute(
                "UPDATE westep_ops.incidents SET resolved_at = %s, closed_at = %s,"
                " recovered_by = coalesce(recovered_by, %s) WHERE id = %s",
                (resolved, closed, recovered_by, incident_id),
            )

    def update_incident(self, incident_id: int, **fields: Any) -> None:
        allowed = {"escalation", "last_notified_at", "recovered_by", "severity", "summary"}
        assert set(fields) <= allowed, fields
        with self.tx() as conn:
            for k, v in fields.items():
                conn.execute(
                    psycopg.sql.SQL("UPDATE westep_ops.incidents SET {} = %s WHERE id = %s").format(
                        psycopg.sql.Identifier(k)
                    ),
                    (v, incident_id),
                )

    def add_alert(
        self,
        incident_id: int | None,
        ts: datetime,
        kind: str,
        severity: str,
        category: str,
        message: str,
        channels: list[str],
    ) -> int:
        with self.tx() as conn:
            row = conn.execute(
                "INSERT INTO westep_ops.alerts (incident_id, ts, kind, severity, category, message, channels)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
                (incident_id, ts, kind, severity, category, redact(message), channels),
            ).fetchone()
        assert row is not None
        return int(row[0])

    def set_alert_channels(self, alert_id: int, channels: list[str]) -> None:
        with self.tx() as conn:
            conn.execute(
                "UPDATE westep_ops.alerts SET channels = %s WHERE id = %s", (channels, alert_id)
            )

    # -- reads ----------------------------------------------------------------------------
    def open_incidents(self) -> dict[str, dict[str, Any]]:
        with self.tx() as conn:
            cur = conn.execute("SELECT * FROM westep_ops.incidents WHERE closed_at IS NULL")
            cols = [d.name for d in cur.description or []]
            return {r[1]: dict(zip(cols, r, strict=True)) for r in cur.fetchall()}

    def recently_closed(self, since: datetime) -> dict[str, datetime]:
        """Categories whose incident closed after ``since``: category -> latest close."""
        with self.tx() as conn:
            rows = conn.execute(
                "SELECT category, max(closed_at) FROM westep_ops.incidents"
                " WHERE closed_at > %s GROUP BY category",
                (since,),
            ).fetchall()
        return {r[0]: r[1] for r in rows}

    def recent_statuses(self, category: str, limit: int) -> list[tuple[datetime, str]]:
        """The latest samples of ``category``, newest first: (ts, status)."""
        with self.tx() as conn:
            return conn.execute(
                "SELECT ts, status FROM westep_ops.samples WHERE category = %s ORDER BY ts DESC, id DESC LIMIT %s",
                (category, limit),
            ).fetchall()

    def last_sample_at(self, kinds: tuple[str, ...]) -> datetime | None:
        with self.tx() as conn:
            row = conn.execute(
                "SELECT max(ts) FROM westep_ops.samples WHERE kind = ANY(%s)", (list(kinds),)
            ).fetchone()
        return row[0] if row else None

    def repair_outcomes(self, incident_id: int) -> list[dict[str, Any]]:
        with self.tx() as conn:
            cur = conn.execute(
                "SELECT action, outcome, summary, escalation FROM westep_ops.repair_attempts"
                " WHERE incident_id = %s AND NOT dry_run ORDER BY id",
                (incident_id,),
            )
            cols = [d.name for d in cur.description or []]
            return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]

    def alerts(self, *, open_only: bool = False, limit: int = 50) -> list[dict[str, Any]]:
        with self.tx() as conn:
            cur = conn.execute(
                "SELECT a.*, i.closed_at IS NULL AS incident_open FROM westep_ops.alerts a"
                " LEFT JOIN westep_ops.incidents i ON i.id = a.incident_id"
                " WHERE NOT %s OR i.closed_at IS NULL ORDER BY a.id DESC LIMIT %s",
                (open_only, limit),
            )
            cols = [d.name for d in cur.description or []]
            return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]

    def acknowledge(self, alert_id: int, by: str, ts: datetime) -> bool:
        with self.tx() as conn:
            return (
                conn.execute(
                    "UPDATE westep_ops.alerts SET acknowledged_at = %s, acknowledged_by = %s WHERE id = %s",
                    (ts, by, alert_id),
                ).rowcount
                == 1
            )

    def label(self, alert_id: int, real: bool, ts: datetime) -> bool:
        with self.tx() as conn:
            return (
                conn.execute(
                    "UPDATE westep_ops.alerts SET label = %s, labeled_at = %s WHERE id = %s",
                    (real, ts, alert_id),
                ).rowcount
                == 1
            )


def _json_safe(value: Any) -> Any:
    import json

    return json.loads(redact(json.dumps(value, default=str)))
