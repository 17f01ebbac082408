"""The ops store: westep-ops' own memory in the ops PostgreSQL (``WESTEP_OPS_STORAGE_URL``).

Schema ``westep_ops`` (created and migrated by ``store_schema.py``), never in the
monitored database: when the target is down its outage must still be recorded. It holds
the audit of every repair attempt, which is also what the per-action hourly rate limit
counts, across processes and restarts, and the silences. An attempt is recorded when it
starts (``running``) and completed when it ends, so a killed process leaves a record
that counts and is later marked ``interrupted``. Every attempt is also appended to
``logs/repair-attempts.jsonl`` (the audit) and to ``repair-budget.jsonl`` in the
per-user state dir (:func:`state_home`, not the log dir: one budget per user, whatever
the log dir), with a local copy of the store's attempts of the last hour: while the ops
database is unreachable the limit counts both, and when it returns the attempts made
meanwhile are written to it exactly once (by ``attempt_uid``). Every query has a
client-side deadline: a frozen ops server cannot hold a repair.

:func:`refuse_monitored_store` refuses an ops store that is the monitored database.

One module over 400 lines on purpose: the rate limit's budget is the store and the local
budget files together, with their locks, and ``OpsStore`` keeps them consistent in one
place (the schema lives in ``store_schema.py``).
"""

from __future__ import annotations

import json
import os
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from westep_ops.config import DEFAULT_TARGET
from westep_ops.db import DeadlineExceeded, connect, deadline, describe_error, store_connection
from westep_ops.errors import WestepError
from westep_ops.store_schema import migrate

_UNAVAILABLE = (psycopg.OperationalError, psycopg.InterfaceError, DeadlineExceeded)

# Outcomes that ran nothing: not counted by the hourly limit.
NOT_COUNTED = ("refused", "skipped", "done_by_other")
RUNNING = "running"  # recorded when an attempt starts; completed when it ends
INTERRUPTED = "interrupted"  # a running attempt whose process died (kill -9, power loss)
BUDGET_FILE = "repair-budget.jsonl"  # attempts made here, for the limit while the store is down
STORE_COPY_FILE = "repair-budget-store.json"  # the store's attempts of the last hour


def log_dir() -> Path:
    """Where reports and logs go: ``$WESTEP_OPS_LOG_DIR`` or ``./logs``."""
    p = Path(os.environ.get("WESTEP_OPS_LOG_DIR") or "logs")
    p.mkdir(parents=True, exist_ok=True)
    return p


def target_state(env: Any = None, target: str = DEFAULT_TARGET) -> Path:
    """The per-user state of one monitored target (its repair budget, its silences).

    Keyed by the target's host:port/database (``env``'s repair URL, else its direct URL;
    without ``env``, ``WESTEP_OPS_REPAIR_URL`` else ``DIRECT_URL`` of the process; no
    credentials), so a second deployment on the same machine, or another target of the
    same fleet, never counts, replays or applies this one's attempts or silences (their
    incident ids would even collide in the other's store). A fleet target's name is part
    of the key too: two targets on one database keep their budgets and silences apart.
    """
    import hashlib
    from urllib.parse import urlsplit

    if env is not None:
        url = env.repair_url or env.direct_url or ""
    else:
        url = os.environ.get("WESTEP_OPS_REPAIR_URL") or os.environ.get("DIRECT_URL") or ""
    try:
        p = urlsplit(url)
        ident = f"{p.hostname}:{p.port or 5432}{p.path}" if url else "none"
    except ValueError:
        ident = "unparsable"
    if target != DEFAULT_TARGET:  # the default target keeps the key it had before fleets
        ident = f"{target}@{ident}"
    d = state_home() / f"target-{hashlib.sha256(ident.encode()).hexdigest()[:12]}"
    d.mkdir(exist_ok=True)
    return d


def state_home() -> Path:
    """Per-user state that must not depend on the log dir (the repair budget, silences).

    ``$WESTEP_OPS_STATE_DIR`` when set, else ``$XDG_STATE_HOME/westep-ops``, else
    ``~/.local/state/westep-ops``: two log directories must not give two budgets.
    """
    raw = os.environ.get("WESTEP_OPS_STATE_DIR")
    if raw:
        p = Path(raw)
    else:
        xdg = os.environ.get("XDG_STATE_HOME")
        p = (Path(xdg) if xdg else Path.home() / ".local" / "state") / "westep-ops"
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
        self,
        url: str | None,
        *,
        connect_timeout_ms: int = 3000,
        unreachable: str | None = None,
        target: str = DEFAULT_TARGET,
        state: Path | None = None,
        database: str | None = None,
    ) -> None:
        self.url = url
        self.target = target  # the fleet target whose attempts this counts and records
        # host:port/db it repairs (repairs.base.target_id): the limit also counts attempts
        # on that database under another target's name, and the lock is the database's, so
        # two targets naming one database (an alias, a rename) share one budget and lock
        self.database = database
        self._state = state  # its local state dir (target_state(env)); None: the process's
        self.connect_timeout_ms = connect_timeout_ms
        self.audit_file = log_dir() / "repair-attempts.jsonl"
        self._db: psycopg.Connection | None = None
        self._held = ExitStack()  # the pooled connection, while this object uses it
        self.status = StoreStatus(False, "WESTEP_OPS_STORAGE_URL is not set") if not url else None
        if url and unreachable:  # the caller already knows: do not wait for it again
            self.status = StoreStatus(False, f"ops store unreachable: {unreachable}")

    @property
    def lock_scope(self) -> str:
        """What one repair of an action at a time is counted over: the database when
        known, else the target."""
        return lock_scope(self.target, self.database)

    def _conn(self) -> psycopg.Connection | None:
        if self._db is not None and not self._db.closed and not self._db.broken:
            return self._db
        if not self.url or (self.status is not None and not self.status.ok):
            return None
        try:
            # From the process's ops-store pool (opened directly and migrated the first
            # time): a recovery, a sensor tick, the engine's limit checks reuse it.
            self._db = self._held.enter_context(
                store_connection(
                    self.url,
                    connect_timeout_ms=self.connect_timeout_ms,
                    statement_timeout_ms=self.STATEMENT_MS,
                    prepare=migrate,
                )
            )
        except (psycopg.Error, DeadlineExceeded) as e:
            self._fail(e)
            return None
        self.status = StoreStatus(True, "ops PostgreSQL")
        return self._db

    def _fail(self, e: BaseException) -> None:
        if self._db is not None:
            self._db.close()  # cut or dead: never back into the pool
        self._held.close()
        self._db = None
        self.status = StoreStatus(False, f"ops store unreachable: {describe_error(e)}")

    def _query(self, query: str, params: tuple[Any, ...]) -> tuple[Any, ...] | None:
        """One statement on the store under a deadline; None (and the file from now on) on failure."""
        conn = self._conn()
        if conn is None:
            return None
        try:
            with deadline(conn, self.STATEMENT_MS + 1000):
                return conn.execute(query, params).fetchone() or ()
        except _UNAVAILABLE as e:
            self._fail(e)
            return None

    def close(self) -> None:
        """Give the connection back (its session advisory locks are released on the way)."""
        self._held.close()
        self._db = None

    def __enter__(self) -> OpsStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the hourly limit ------------------------------------------------------------------
    @property
    def state(self) -> Path:
        return self._state or target_state(None, self.target)

    @property
    def budget_file(self) -> Path:
        return self.state / BUDGET_FILE

    def _budget_lines(self) -> list[dict[str, Any]]:
        try:
            lines = self.budget_file.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in lines:
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # a torn line from a crash must not stop the rate limit
            if isinstance(rec, dict) and isinstance(rec.get("attempt_uid"), str):
                out.append(rec)
        return out

    def _local_attempts(self) -> dict[str, dict[str, Any]]:
        """Attempts made on this machine, by uid; the latest line of each wins."""
        out: dict[str, dict[str, Any]] = {}
        for rec in self._budget_lines():
            out[rec["attempt_uid"]] = {**out.get(rec["attempt_uid"], {}), **rec}
        return out

    def _append_budget(self, record: dict[str, Any]) -> None:
        keep = {k: record.get(k) for k in (*ATTEMPT_COLUMNS, "attempt_uid")}
        with open(self.budget_file, "a", encoding="utf-8") as f:
            f.write(json.dumps(keep, default=str, sort_keys=True) + "\n")
        self._prune_budget()

    def _prune_budget(self) -> None:
        """Keep the budget file to the last two hours (it is a limit, not the audit)."""
        lines = self._budget_lines()
        if len(lines) < 200:
            return
        since = now_utc() - timedelta(hours=2)
        keep = [r for r in lines if (_when(r.get("started_at")) or since) >= since]
        tmp = self.budget_file.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in keep), "utf-8")
        tmp.replace(self.budget_file)

    def _replay_budget(self, conn: psycopg.Connection) -> None:
        """Write attempts made while the store was down into it, once each (by uid)."""
        since = now_utc() - timedelta(hours=2)
        for rec in self._local_attempts().values():
            started = _when(rec.get("started_at"))
            if started is None or started < since or rec.get("dry_run"):
                continue
            iid = rec.get("incident_id") or 0
            if iid < 0:
                rec = {**rec, "incident_id": None}  # its incident is still in a spool
            elif (
                iid
                and not conn.execute(
                    "SELECT 1 FROM westep_ops.incidents"
                    " WHERE id = %s AND target = %s AND started_at <= %s",
                    (iid, self.target, started),
                ).fetchone()
            ):
                # Not this store's incident (the file outlived a store: a new sandbox on
                # the same ports): linking it would credit a repair that never ran here.
                rec = {**rec, "incident_id": None}
            insert_attempt(conn, {"target": self.target, **rec})

    def attempts_last_hour(self, action: str, now: datetime | None = None) -> tuple[int, str]:
        """Attempts of ``action`` that ran in the last hour (dry runs, refusals and skips
        excluded; running and interrupted ones included), and where they were counted.

        With the store up, attempts this machine made while it was down are written to
        it first (exactly once), and the store's answer is copied locally; with it down,
        that copy and this machine's own attempts are counted together.
        """
        now = now or datetime.now(UTC)
        since = now - timedelta(hours=1)
        conn = self._conn()
        if conn is not None:
            try:
                with deadline(conn, self.STATEMENT_MS + 1000), conn.transaction():
                    self._replay_budget(conn)
                    rows = conn.execute(
                        "SELECT attempt_uid, action, started_at, outcome FROM"
                        " westep_ops.repair_attempts WHERE (target = %s OR database = %s)"
                        " AND started_at > %s AND NOT dry_run AND outcome <> ALL(%s)",
                        (self.target, self.database, now - timedelta(hours=2), list(NOT_COUNTED)),
                    ).fetchall()
                copy = [
                    {
                        "attempt_uid": u or f"db-{i}",
                        "action": a,
                        "started_at": t.isoformat(),
                        "outcome": o,
                    }
                    for i, (u, a, t, o) in enumerate(rows)
                ]
                _write_json(self.state / STORE_COPY_FILE, copy)
                count = sum(1 for r in rows if r[1] == action and r[2] > since)
                return count, "ops PostgreSQL"
            except _UNAVAILABLE as e:
                self._fail(e)
        seen: dict[str, dict[str, Any]] = {}
        try:
            copy = json.loads((self.state / STORE_COPY_FILE).read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            copy = []
        for rec in [*(copy if isinstance(copy, list) else []), *self._local_attempts().values()]:
            if isinstance(rec, dict) and isinstance(rec.get("attempt_uid"), str):
                seen[rec["attempt_uid"]] = rec
        count = 0
        for rec in seen.values():
            started = _when(rec.get("started_at"))
            if (
                started is not None
                and started > since
                and rec.get("action") == action
                and not rec.get("dry_run")
                and rec.get("outcome") not in NOT_COUNTED
            ):
                count += 1
        detail = self.status.detail if self.status else ""
        return count, f"local audit file {BUDGET_FILE} + the store's last answer ({detail})"

    def start(self, attempt: dict[str, Any]) -> None:
        """Record an attempt as running before it changes anything (a kill -9 leaves it)."""
        rec = {**attempt, "outcome": RUNNING, "finished_at": None}
        self._append_budget(rec)
        conn = self._conn()
        if conn is None or (rec.get("incident_id") or 0) < 0:
            return  # the budget file has it; it reaches the store when that returns
        try:
            with deadline(conn, self.STATEMENT_MS + 1000):
                insert_attempt(conn, rec)
        except _UNAVAILABLE as e:
            self._fail(e)

    def reap_interrupted(self, action: str, own_uid: str | None = None) -> list[dict[str, Any]]:
        """Mark ``action``'s running attempts interrupted; call only while holding its lock.

        Whoever holds the lock is the only one running ``action``, so any other attempt
        still "running" belongs to a process that died. Returns those attempts.
        """
        out: list[dict[str, Any]] = []
        conn = self._conn()
        if conn is not None:
            try:
                with deadline(conn, self.STATEMENT_MS + 1000):
                    cur = conn.execute(
                        "UPDATE westep_ops.repair_attempts SET outcome = %s, finished_at = now(),"
                        " summary = 'interrupted: the process running it stopped before it'"
                        " || ' finished (killed?); what it did is unknown: ' || summary"
                        " WHERE target = %s AND action = %s AND outcome = %s"
                        " AND attempt_uid IS DISTINCT FROM %s RETURNING id, started_at, incident_id",
                        (INTERRUPTED, self.target, action, RUNNING, own_uid),
                    )
                    out = [
                        {"id": i, "started_at": t, "incident_id": inc}
                        for i, t, inc in cur.fetchall()
                    ]
            except _UNAVAILABLE as e:
                self._fail(e)
        for rec in self._local_attempts().values():
            if (
                rec.get("action") == action
                and rec.get("outcome") == RUNNING
                and rec.get("attempt_uid") != own_uid
            ):
                self._append_budget({**rec, "outcome": INTERRUPTED})
                if conn is None:
                    out.append(rec)
        return out

    def record(self, attempt: dict[str, Any]) -> None:
        """Complete one attempt: the audit file, the budget file, and the ops database
        (or the spool, which the monitor replays into the history when the store returns)."""
        from westep_ops.spool import Spool, spool_path

        attempt = {**attempt, "target": attempt.get("target") or self.target}
        line = json.dumps(attempt, default=str, sort_keys=True)
        with open(self.audit_file, "a", encoding="utf-8") as f:
            f.write(line + "\n")
        if not attempt.get("dry_run"):
            self._append_budget(attempt)
        conn = self._conn()
        if conn is not None:
            mapped = attempt
            if (attempt.get("incident_id") or 0) < 0:  # an incident opened while the store was down
                spool = Spool(spool_path(self.target))
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
            spool = Spool(spool_path(self.target))
            try:
                spool.add("repair_attempt", {"record": attempt})
            finally:
                spool.close()

    def try_lock(self, action: str) -> bool | None:
        """Take the advisory lock on ``action`` so two processes never run it at once.

        True when taken (release with :meth:`unlock`), False when another process holds
        it, None when the ops store is unreachable (nothing to lock with).
        """
        row = self._query(
            "SELECT pg_try_advisory_lock(hashtext(%s))", (_lock_key(self.lock_scope, action),)
        )
        if row is None:
            return None
        return bool(row and row[0])

    def unlock(self, action: str) -> None:
        if self._db is not None and not self._db.closed and not self._db.broken:
            self._query(
                "SELECT pg_advisory_unlock(hashtext(%s))", (_lock_key(self.lock_scope, action),)
            )


def _when(value: Any) -> datetime | None:
    try:
        t = datetime.fromisoformat(value) if isinstance(value, str) else value
    except ValueError:
        return None
    if not isinstance(t, datetime):
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _write_json(path: Path, value: Any) -> None:
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(value, default=str, sort_keys=True), encoding="utf-8")
    tmp.replace(path)  # atomic: a crash never leaves half a file


class LocalLock:
    """A per-user, per-database, per-action file lock (``flock``): holds on this machine
    while the ops store is down, and the kernel drops it when its process dies (kill -9
    included)."""

    def __init__(self, action: str, scope: str = f"target:{DEFAULT_TARGET}") -> None:
        import hashlib

        d = state_home() / "locks"
        d.mkdir(exist_ok=True)
        # Per scope (lock_scope: the database, else the target): two databases are
        # repaired side by side, one never twice at once.
        digest = hashlib.sha256(scope.encode()).hexdigest()[:12]
        self.path = d / f"{action}.{digest}.lock"
        self._f: Any = None

    def acquire(self) -> bool:
        import fcntl

        f = open(self.path, "a")  # held until release()
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            return False
        self._f = f
        return True

    def release(self) -> None:
        if self._f is not None:
            self._f.close()  # closing the file drops the flock
            self._f = None


ATTEMPT_COLUMNS = (
    "action",
    "trigger",
    "target",  # the fleet target's name
    "database",  # host:port/db that was repaired (no credentials)
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
    "attempt_uid",
)


def insert_attempt(conn: psycopg.Connection, attempt: dict[str, Any]) -> None:
    """Insert one repair attempt record (a dict of :data:`ATTEMPT_COLUMNS`)."""
    attempt = _upgraded(attempt)
    values = [
        Jsonb(attempt.get(c)) if c in ("changes", "before", "after") else attempt.get(c)
        for c in ATTEMPT_COLUMNS
    ]
    # Upsert by uid: the start record, the final one, the budget file's replay and the
    # spool's replay all describe the same attempt, which is one row. A final outcome
    # replaces "running"; nothing replaces a final outcome; an incident id, once known
    # (the spool maps a local one), is filled in whichever copy arrives first.
    row = sql.Identifier("westep_ops", "repair_attempts")
    sets = [
        sql.SQL(
            "{c} = CASE WHEN {t}.outcome = 'running' THEN EXCLUDED.{c} ELSE {t}.{c} END"
        ).format(c=sql.Identifier(c), t=row)
        for c in ATTEMPT_COLUMNS
        if c not in ("attempt_uid", "incident_id")
    ]
    sets.append(sql.SQL("incident_id = coalesce({}.incident_id, EXCLUDED.incident_id)").format(row))
    conn.execute(
        sql.SQL(
            "INSERT INTO westep_ops.repair_attempts ({}) VALUES ({})"
            " ON CONFLICT (attempt_uid) DO UPDATE SET {}"
        ).format(
            sql.SQL(", ").join(map(sql.Identifier, ATTEMPT_COLUMNS)),
            sql.SQL(", ").join(sql.Placeholder() * len(ATTEMPT_COLUMNS)),
            sql.SQL(", ").join(sets),
        ),
        values,
    )


def _upgraded(attempt: dict[str, Any]) -> dict[str, Any]:
    """An attempt recorded before fleets (budget file, spool) named its host:port/db
    ``target`` and had no target name: it was the one target ``default``'s."""
    if attempt.get("database"):
        return attempt
    return {**attempt, "database": attempt.get("target") or "unknown", "target": DEFAULT_TARGET}


def lock_scope(target: str, database: str | None) -> str:
    """One repair of an action at a time per database (two targets naming the same one
    share it), else per target; two targets on different databases repair side by side."""
    return f"db:{database}" if database else f"target:{target}"


def _lock_key(scope: str, action: str) -> str:
    return f"westep_ops.repair:{scope}:{action}"


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
