"""The local durable queue of history writes made while the ops PostgreSQL is unreachable.

A SQLite file (``WESTEP_OPS_STATE_DIR``, default the log dir: ``monitor-spool.sqlite3``)
holds every write the monitor could not make -- samples, performance samples, incidents,
alerts, deliveries, repair attempts -- in order, and a little local state that must
outlive the ops store and the process (the "monitor degraded" conditions, the last
known open incidents). Rows created while the store is down get a negative local id;
:meth:`Spool.replay` writes them to the history when it returns, maps local ids to real
ones, and records each applied entry in the same PostgreSQL transaction
(``westep_ops.spool_applied``), so a crash during replay neither loses nor doubles one.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

from westep_ops.config import DEFAULT_TARGET

SPOOL_FILE = "monitor-spool.sqlite3"


def spool_path(target: str = DEFAULT_TARGET) -> Path:
    """One target's spool file: each target of a fleet queues and replays its own writes
    (the one target ``default`` keeps the file name it had before fleets)."""
    name = SPOOL_FILE if target == DEFAULT_TARGET else f"monitor-spool.{target}.sqlite3"
    return state_dir() / name


def state_dir() -> Path:
    """Where local state lives: ``$WESTEP_OPS_STATE_DIR``, else the log dir."""
    from westep_ops.store import log_dir

    raw = os.environ.get("WESTEP_OPS_STATE_DIR")
    if not raw:
        return log_dir()
    p = Path(raw)
    p.mkdir(parents=True, exist_ok=True)
    return p


def _default(o: Any) -> Any:
    if isinstance(o, datetime):
        return {"$dt": o.isoformat()}
    if isinstance(o, (set, tuple)):
        return list(o)
    return str(o)


def _hook(d: dict[str, Any]) -> Any:
    if set(d) == {"$dt"}:
        return datetime.fromisoformat(d["$dt"])
    return d


def dumps(value: Any) -> str:
    return json.dumps(value, default=_default, sort_keys=True)


def loads(text: str) -> Any:
    return json.loads(text, object_hook=_hook)


class Spool:
    """Pending history writes and small local state, in one SQLite file (thread-safe)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or state_dir() / SPOOL_FILE
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, timeout=10, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # durable across a process crash
        with self._db:
            self._db.executescript(
                """
                CREATE TABLE IF NOT EXISTS pending (
                    seq INTEGER PRIMARY KEY AUTOINCREMENT, op TEXT NOT NULL, args TEXT NOT NULL);
                CREATE TABLE IF NOT EXISTS idmap (local INTEGER PRIMARY KEY, real INTEGER NOT NULL);
                CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                """
            )
            self._db.execute(
                "INSERT OR IGNORE INTO kv VALUES ('spool_id', ?)", (dumps(uuid.uuid4().hex),)
            )
            self._db.execute("INSERT OR IGNORE INTO kv VALUES ('next_local', '-1')")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock, self._db:
            yield self._db

    # -- pending writes -------------------------------------------------------------------
    def add(self, op: str, args: dict[str, Any], *, new_id: bool = False) -> int | None:
        """Queue one write; with ``new_id``, give the row it creates a local (negative) id."""
        with self._tx() as db:
            local = None
            if new_id:
                (raw,) = db.execute("SELECT value FROM kv WHERE key = 'next_local'").fetchone()
                local = int(loads(raw))
                db.execute("UPDATE kv SET value = ? WHERE key = 'next_local'", (dumps(local - 1),))
                args = {**args, "local_id": local}
            db.execute("INSERT INTO pending (op, args) VALUES (?, ?)", (op, dumps(args)))
            return local

    def pending(
        self, op: str | None = None, limit: int = -1
    ) -> list[tuple[int, str, dict[str, Any]]]:
        with self._tx() as db:
            rows = db.execute(
                "SELECT seq, op, args FROM pending WHERE ? IS NULL OR op = ? ORDER BY seq LIMIT ?",
                (op, op, limit),
            ).fetchall()
        return [(seq, o, loads(a)) for seq, o, a in rows]

    def count(self) -> int:
        with self._tx() as db:
            return int(db.execute("SELECT count(*) FROM pending").fetchone()[0])

    def real_id(self, value: int | None) -> int | None:
        """The history id of a row, whether ``value`` is a real or a replayed local id."""
        if value is None or value >= 0:
            return value
        with self._tx() as db:
            row = db.execute("SELECT real FROM idmap WHERE local = ?", (value,)).fetchone()
        return int(row[0]) if row else value

    # -- local state ----------------------------------------------------------------------
    def get(self, key: str, default: Any = None) -> Any:
        with self._tx() as db:
            row = db.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return loads(row[0]) if row else default

    def put(self, key: str, value: Any) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (key, dumps(value)))

    # -- replay ---------------------------------------------------------------------------
    def replay(
        self,
        conn: psycopg.Connection,
        apply: Callable[[psycopg.Connection, str, dict[str, Any]], int | None],
        *,
        limit: int = 200,
    ) -> int:
        """Write every pending entry to the history, oldest first; returns how many.

        ``apply`` performs one entry inside the open transaction and returns the real id
        of the row it created, if any. Each entry is its own transaction, marked applied
        in PostgreSQL before the local copy is dropped.
        """
        source = self.get("spool_id")
        done = 0
        for seq, op, args in self.pending(limit=limit):
            args = self.map_ids(args)
            with conn.transaction():
                # Two monitors sharing a spool replay one after the other, never the same entry.
                conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtext(%s))", (f"westep_ops.spool:{source}",)
                )
                row = conn.execute(
                    "SELECT real_id FROM westep_ops.spool_applied WHERE source = %s AND seq = %s",
                    (source, seq),
                ).fetchone()
                if row is not None:
                    real = row[0]
                else:
                    real = apply(conn, op, args)
                    conn.execute(
                        "INSERT INTO westep_ops.spool_applied (source, seq, real_id) VALUES (%s, %s, %s)",
                        (source, seq, real),
                    )
            with self._tx() as db:
                if args.get("local_id") is not None and real is not None:
                    db.execute(
                        "INSERT OR REPLACE INTO idmap VALUES (?, ?)", (args["local_id"], real)
                    )
                db.execute("DELETE FROM pending WHERE seq = ?", (seq,))
            done += 1
        return done

    def map_ids(self, args: dict[str, Any]) -> dict[str, Any]:
        """``args`` with local incident/alert ids replaced by the history ids they became."""
        out = dict(args)
        for key in ("incident_id", "alert_id"):
            if isinstance(out.get(key), int):
                out[key] = self.real_id(out[key])
        if isinstance(out.get("record"), dict) and isinstance(
            out["record"].get("incident_id"), int
        ):
            out["record"] = {
                **out["record"],
                "incident_id": self.real_id(out["record"]["incident_id"]),
            }
        return out
