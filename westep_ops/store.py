"""The ops store: westep-ops' own memory in the ops PostgreSQL (``WESTEP_OPS_STORAGE_URL``).

Schema ``westep_ops``, created and migrated here, never in the monitored database: when
the target is down its outage must still be recorded. Today it holds the audit of every
repair attempt, which is also what the per-action hourly rate limit counts, across
processes and restarts. Every attempt is appended to ``logs/repair-attempts.jsonl`` as
well, so that when the ops database itself is unreachable repairs are still audited and
still rate-limited (from that file, and the report says so); such an attempt is also
queued in the monitor's spool and reaches the history when the store returns. Every
query has a client-side deadline: a frozen ops server cannot hold a repair.

:func:`refuse_monitored_store` refuses an ops store that is the monitored database.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from westep_ops.db import DeadlineExceeded, connect, deadline, describe_error
from westep_ops.errors import WestepError

_UNAVAILABLE = (psycopg.OperationalError, psycopg.InterfaceError, DeadlineExceeded)

SCHEMA = "westep_ops"
MIGRATIONS: list[str] = [
    # 1: repair attempts (append-only audit; the rate limit counts these)
    """
    CREATE TABLE IF NOT EXISTS westep_ops.repair_attempts (
        id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        action      text NOT NULL,
        trigger     text NOT NULL,
        target      text NOT NULL,
        started_at  timestamptz NOT NULL,
        finished_at timestamptz NOT NULL,
        dry_run     boolean NOT NULL,
        forced      boolean NOT NULL DEFAULT false,
        outcome     text NOT NULL,
        summary     text NOT NULL,
        changes     jsonb NOT NULL DEFAULT '[]',
        before      jsonb,
        after       jsonb,
        escalation  smallint
    );
    CREATE INDEX IF NOT EXISTS repair_attempts_action_time
        ON westep_ops.repair_attempts (action, started_at);
    """,
    # 2: monitoring history: samples, performance samples, incidents, alerts
    """
    CREATE TABLE westep_ops.samples (
        id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        ts          timestamptz NOT NULL,
        kind        text NOT NULL,          -- cheap | full | confirmation | verification
        category    text NOT NULL,
        status      text NOT NULL,
        summary     text NOT NULL,
        findings    text[] NOT NULL DEFAULT '{}',
        suspected_cause text,
        duration_ms real,
        value       jsonb
    );
    CREATE INDEX samples_ts ON westep_ops.samples (ts);
    CREATE INDEX samples_category_ts ON westep_ops.samples (category, ts);
    CREATE TABLE westep_ops.performance_samples (
        id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        ts               timestamptz NOT NULL,
        mean_api_ms      real,
        db_round_trip_ms real,
        http_requests    int NOT NULL,
        http_failures    int NOT NULL,
        tps              real,
        rollback_ratio   real,
        monitor_rss_mb   real,
        postgres_pss_mb  real,
        status           text NOT NULL,
        problems         text[] NOT NULL DEFAULT '{}'
    );
    CREATE INDEX performance_samples_ts ON westep_ops.performance_samples (ts);
    CREATE TABLE westep_ops.incidents (
        id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        category      text NOT NULL,
        severity      text NOT NULL,
        started_at    timestamptz NOT NULL,  -- first failing sample
        detected_at   timestamptz NOT NULL,  -- confirmed: the alert went out
        resolved_at   timestamptz,           -- first sample of the passing streak that closed it
        closed_at     timestamptz,           -- when the streak was long enough
        recovered_by  text,                  -- auto:<action> | null (recovered by itself or by a person)
        escalation    smallint,
        summary       text NOT NULL,
        last_notified_at timestamptz
    );
    CREATE UNIQUE INDEX incidents_one_open ON westep_ops.incidents (category) WHERE closed_at IS NULL;
    CREATE INDEX incidents_started ON westep_ops.incidents (started_at);
    CREATE TABLE westep_ops.alerts (
        id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        incident_id     bigint REFERENCES westep_ops.incidents (id),
        ts              timestamptz NOT NULL,
        kind            text NOT NULL,       -- opened | reminder | escalated | resolved | summary
        severity        text NOT NULL,
        category        text NOT NULL,
        message         text NOT NULL,
        channels        text[] NOT NULL DEFAULT '{}',
        acknowledged_at timestamptz,
        acknowledged_by text,
        label           boolean,             -- true: a real problem; false: a false alarm
        labeled_at      timestamptz
    );
    CREATE INDEX alerts_ts ON westep_ops.alerts (ts);
    ALTER TABLE westep_ops.repair_attempts ADD COLUMN incident_id bigint;
    """,
    # 3: daily rollups written by the daily-partitioned assets (recomputed by backfills)
    """
    CREATE TABLE westep_ops.daily_health (
        day date NOT NULL, category text NOT NULL, samples int NOT NULL, ok int NOT NULL,
        warning int NOT NULL, critical int NOT NULL, error int NOT NULL, availability real,
        PRIMARY KEY (day, category)
    );
    CREATE TABLE westep_ops.hourly_performance (
        hour timestamptz PRIMARY KEY, samples int NOT NULL, mean_api_ms real, p95_api_ms real,
        error_rate real, mean_tps real, max_monitor_rss_mb real, max_postgres_pss_mb real
    );
    """,
    # 4: fault drill ground truth
    """
    CREATE TABLE westep_ops.drill_faults (
        id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        drill        text NOT NULL,
        fault        text NOT NULL,
        injected_at  timestamptz NOT NULL,
        removed_at   timestamptz,
        detected_at  timestamptz,
        recovered_at timestamptz,
        incident_id  bigint,
        outcome      text,
        rows_lost    bigint
    );
    """,
    # 5: history writes replayed from a monitor's local spool (exactly once per entry)
    """
    CREATE TABLE westep_ops.spool_applied (
        source     text NOT NULL,
        seq        bigint NOT NULL,
        real_id    bigint,
        applied_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (source, seq)
    );
    """,
]


def log_dir() -> Path:
    """Where reports and logs go: ``$WESTEP_OPS_LOG_DIR`` or ``./logs``."""
    p = Path(os.environ.get("WESTEP_OPS_LOG_DIR") or "logs")
    p.mkdir(parents=True, exist_ok=True)
    return p


@dataclass
class StoreStatus:
    ok: bool
    detail: str


class OpsStore:
    """Repair audit and rate limit; PostgreSQL when reachable, the JSONL file otherwise.

    One kept connection serves the count, the advisory lock and the record of every
    repair it is used for (a recovery runs several): close it with :meth:`close`. Once
    the database fails (down, frozen, timed out) this object uses the file for the rest
    of its life, so one repair never waits on a dead store twice.
    """

    STATEMENT_MS = 5000

    def __init__(
        self, url: str | None, *, connect_timeout_ms: int = 3000, unreachable: str | None = None
    ) -> None:
        self.url = url
        self.connect_timeout_ms = connect_timeout_ms
        self.audit_file = log_dir() / "repair-attempts.jsonl"
        self._db: psycopg.Connection | None = None
        self.status = StoreStatus(False, "WESTEP_OPS_STORAGE_URL is not set") if not url else None
        if url and unreachable:  # the caller already knows: do not wait for it again
            self.status = StoreStatus(False, f"ops store unreachable: {unreachable}")

    def _conn(self) -> psycopg.Connection | None:
        if self._db is not None and not self._db.closed and not self._db.broken:
            return self._db
        if not self.url or (self.status is not None and not self.status.ok):
            return None
        try:
            self._db = connect(
                self.url,
                connect_timeout_ms=self.connect_timeout_ms,
                statement_timeout_ms=self.STATEMENT_MS,
            )
            with deadline(self._db, self.STATEMENT_MS + 1000):
                migrate(self._db)
        except (psycopg.Error, DeadlineExceeded) as e:
            self._fail(e)
            return None
        self.status = StoreStatus(True, "ops PostgreSQL")
        return self._db

    def _fail(self, e: BaseException) -> None:
        if self._db is not None:
            self._db.close()
        self._db = None
        self.status = StoreStatus(False, f"ops store unreachable: {describe_error(e)}")

    def _query(self, query: str, params: tuple[Any, ...]) -> tuple[Any, ...] | None:
        """One statement on the store under a deadline; None (and the file from now on) on failure."""
        conn = self._conn()
        if conn is None:
            return None
        try:
            with deadline(conn, self.STATEMENT_MS + 1000):
                return conn.execute(query, params).fetchone() or ()  # type: ignore[arg-type]
        except _UNAVAILABLE as e:
            self._fail(e)
            return None

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self) -> OpsStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def attempts_last_hour(self, action: str, now: datetime | None = None) -> tuple[int, str]:
        """Non-dry-run, non-refused attempts of ``action`` in the last hour, and the source."""
        now = now or datetime.now(UTC)
        since = now - timedelta(hours=1)
        row = self._query(
            "SELECT count(*) FROM westep_ops.repair_attempts WHERE action = %s"
            " AND started_at > %s AND NOT dry_run AND outcome <> 'refused'",
            (action, since),
        )
        if row is not None:
            return (row[0] if row else 0), "ops PostgreSQL"
        count = 0
        for rec in self._read_file():
            try:
                started = datetime.fromisoformat(rec["started_at"])
            except (KeyError, TypeError, ValueError):
                continue  # a damaged record must not switch the limit off for everyone
            if (
                rec.get("action") == action
                and not rec.get("dry_run")
                and rec.get("outcome") != "refused"
                and started > since
            ):
                count += 1
        return count, f"local audit file ({self.status.detail if self.status else ''})"

    def record(self, attempt: dict[str, Any]) -> None:
        """Append one attempt to the audit file and to the ops database, or to the spool."""
        from westep_ops.spool import Spool

        line = json.dumps(attempt, default=str, sort_keys=True)
        with open(self.audit_file, "a", encoding="utf-8") as f:
            f.write(line + "\n")
        conn = self._conn()
        if conn is not None:
            mapped = attempt
            if (attempt.get("incident_id") or 0) < 0:  # an incident opened while the store was down
                spool = Spool()
                try:
                    mapped = spool.map_ids({"record": attempt})["record"]
                finally:
                    spool.close()
            if (mapped.get("incident_id") or 0) < 0:
                conn = None  # its incident is still in the spool: queue behind it, in order
        if conn is not None:
            try:
                with deadline(conn, self.STATEMENT_MS + 1000):
                    insert_attempt(conn, mapped)
                return
            except _UNAVAILABLE as e:
                self._fail(e)
        if self.url:  # replayed into the history by the monitor when the store returns
            spool = Spool()
            try:
                spool.add("repair_attempt", {"record": attempt})
            finally:
                spool.close()

    def try_lock(self, action: str) -> bool | None:
        """Take the advisory lock on ``action`` so two processes never run it at once.

        True when taken (release with :meth:`unlock`), False when another process holds
        it, None when the ops store is unreachable (nothing to lock with).
        """
        row = self._query("SELECT pg_try_advisory_lock(hashtext(%s))", (_lock_key(action),))
        if row is None:
            return None
        return bool(row and row[0])

    def unlock(self, action: str) -> None:
        if self._db is not None and not self._db.closed and not self._db.broken:
            self._query("SELECT pg_advisory_unlock(hashtext(%s))", (_lock_key(action),))

    def _read_file(self) -> list[dict[str, Any]]:
        try:
            lines = self.audit_file.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in lines:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue  # a torn line from a crash must not stop the rate limit
        return out


ATTEMPT_COLUMNS = (
    "action",
    "trigger",
    "target",
    "started_at",
    "finished_at",
    "dry_run",
    "forced",
    "outcome",
    "summary",
    "changes",
    "before",
    "after",
    "escalation",
    "incident_id",
)


def insert_attempt(conn: psycopg.Connection, attempt: dict[str, Any]) -> None:
    """Insert one repair attempt record (a dict of :data:`ATTEMPT_COLUMNS`)."""
    values = [
        Jsonb(attempt.get(c)) if c in ("changes", "before", "after") else attempt.get(c)
        for c in ATTEMPT_COLUMNS
    ]
    conn.execute(
        sql.SQL("INSERT INTO westep_ops.repair_attempts ({}) VALUES ({})").format(
            sql.SQL(", ").join(map(sql.Identifier, ATTEMPT_COLUMNS)),
            sql.SQL(", ").join(sql.Placeholder() * len(ATTEMPT_COLUMNS)),
        ),
        values,
    )


def _lock_key(action: str) -> str:
    return f"westep_ops.repair:{action}"


def migrate(conn: psycopg.Connection) -> None:
    """Create or upgrade the ``westep_ops`` schema (idempotent; one lock across processes)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('westep_ops.migrate'))")
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(SCHEMA)))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS westep_ops.schema_version (version int PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r[0] for r in conn.execute("SELECT version FROM westep_ops.schema_version")}
        for version, ddl in enumerate(MIGRATIONS, start=1):
            if version not in done:
                conn.execute(ddl)  # our own fixed DDL
                conn.execute(
                    "INSERT INTO westep_ops.schema_version (version) VALUES (%s)", (version,)
                )


def now_utc() -> datetime:
    return datetime.now(UTC)


_SEPARATE: set[tuple[str, str]] = set()  # (store, target) pairs already found distinct


def _identity(url: str, timeout_ms: int) -> tuple[str | None, str | None, int | None, str] | None:
    """(system identifier or None, server address, port, database), or None if unreachable."""
    try:
        conn = connect(url, connect_timeout_ms=timeout_ms, statement_timeout_ms=timeout_ms)
    except psycopg.Error:
        return None
    try:
        with deadline(conn, timeout_ms + 1000):
            db, addr, port = conn.execute(
                "SELECT current_database(), host(inet_server_addr()), inet_server_port()"
            ).fetchone() or (None, None, None)
            try:
                row = conn.execute("SELECT system_identifier::text FROM pg_control_system()")
                sysid = (row.fetchone() or (None,))[0]
            except psycopg.errors.InsufficientPrivilege:
                sysid = None  # pg_monitor or superuser reads it; compare addresses instead
        return sysid, addr, port, db
    except (psycopg.Error, DeadlineExceeded):
        return None
    finally:
        conn.close()


def refuse_monitored_store(
    storage_url: str | None, targets: dict[str, str | None], *, timeout_ms: int = 3000
) -> None:
    """Raise :class:`WestepError` (exit 2) when the ops store is one of the monitored databases.

    ``targets`` maps an environment name (``DIRECT_URL``, ``WESTEP_OPS_REPAIR_URL``) to its
    URL. Same server (``pg_control_system().system_identifier``; the server's address and
    port when the login may not read it) and same database means the same database. A
    server that does not answer cannot be compared and is not refused: the monitor must
    start while the target is down.
    """
    if not storage_url:
        return
    store: tuple[str | None, str | None, int | None, str] | None = None
    for name, url in targets.items():
        if not url or (storage_url, url) in _SEPARATE:
            continue
        if store is None:
            store = _identity(storage_url, timeout_ms)
            if store is None:
                return  # the store is down: nothing to compare with (the monitor spools)
        other = _identity(url, timeout_ms)
        if other is None:
            continue
        same_server = (
            store[0] == other[0]
            if store[0] and other[0]
            else (store[1], store[2]) == (other[1], other[2])
        )
        if same_server and store[3] == other[3]:
            raise WestepError(
                f"WESTEP_OPS_STORAGE_URL is the monitored database ({name}: same server and "
                f"database {other[3]!r}): the ops store must be a separate PostgreSQL, or an "
                "outage of the target would take its own history with it"
            )
        _SEPARATE.add((storage_url, url))
