"""Silences and maintenance windows: times when an operator says "I know, leave it".

Alertmanager-style silences (``westep-ops silence add --category pool --for 2h``) and
recurring maintenance windows from the config (``maintenanceWindows``: cron + duration +
categories, in the configured time zone). While one matches a category the monitor
records what it sees (the incident is kept, marked silenced; its alerts are recorded as
suppressed) but sends nothing and repairs nothing for it; when it ends the state is
judged afresh. Repairs that would undo an operator's deliberate action
(``restore_connection_pool`` RESUMEs a paused database, ``restore_realtime_publication``)
also skip while their category is silenced, unless forced.

Silences live in the ops PostgreSQL (``westep_ops.silences``). When it is down they are
kept in a local file in the per-user state dir (:func:`westep_ops.store.state_home`) so a
silence added during an outage still holds, and is written to the store, exactly once
(by its ``uid``), when it returns; the store's active silences are copied there each time
they are read, so they also hold while it is down.
"""

from __future__ import annotations

import builtins
import json
import os
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, LiteralString
from zoneinfo import ZoneInfo

import psycopg
from croniter import croniter
from psycopg.rows import class_row

from westep_ops.config import DEFAULT_TARGET, Category, Config, MaintenanceWindow
from westep_ops.db import DeadlineExceeded, deadline, describe_error, store_connection
from westep_ops.errors import WestepError

PERFORMANCE = "performance"
CATEGORIES = tuple(c.value for c in Category) + (PERFORMANCE,)
MAX_SILENCE = timedelta(days=30)  # longer than a month is not a silence, it is a removal
MIN_SILENCE = timedelta(minutes=1)
LOCAL_FILE = "silences.json"
_DURATION = re.compile(r"^([1-9][0-9]{0,5})([mhd])\Z")
_UNAVAILABLE = (psycopg.OperationalError, psycopg.InterfaceError, DeadlineExceeded)


def parse_id(text: str) -> int:
    """``12`` or ``L3`` (a silence kept locally) -> the stored id (local ones negative)."""
    t = text.strip()
    if re.fullmatch(r"[1-9][0-9]{0,17}", t):
        return int(t)
    if re.fullmatch(r"[Ll][1-9][0-9]{0,8}", t):
        return -int(t[1:])
    raise WestepError(f"silence id {text!r}: give a number, or L<n> for a local one")


def parse_duration(text: str) -> timedelta:
    """``30m``, ``2h``, ``1d`` -> timedelta, within 1 minute .. 30 days; WestepError otherwise."""
    m = _DURATION.match(text.strip())
    if not m:
        raise WestepError(f"--for {text!r}: give a duration like 30m, 2h or 1d")
    n, unit = int(m.group(1)), m.group(2)
    d = {"m": timedelta(minutes=n), "h": timedelta(hours=n), "d": timedelta(days=n)}[unit]
    if not MIN_SILENCE <= d <= MAX_SILENCE:
        raise WestepError(f"--for {text!r}: a silence lasts from 1 minute to 30 days")
    return d


@dataclass
class Silence:
    """One silence, or one occurrence of a maintenance window (``window`` set, id 0)."""

    id: int
    categories: list[str]
    starts_at: datetime
    ends_at: datetime
    reason: str
    created_by: str
    created_at: datetime
    expired_at: datetime | None = None
    uid: str = ""
    window: str | None = None
    local: bool = False  # added while the store was down, not written to it yet

    def active(self, now: datetime) -> bool:
        return self.expired_at is None and self.starts_at <= now < self.ends_at

    def matches(self, category: str, now: datetime) -> bool:
        return category in self.categories and self.active(now)

    def describe(self, tz: str = "UTC") -> str:
        """``#3 (migration, until 2026-12-02 14:00 JST)`` or the window's name."""
        until = self.ends_at.astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M %Z")
        if self.window:
            return f"maintenance window {self.window!r} ({self.reason}, until {until})"
        return f"#{self.label} ({self.reason}, until {until})"

    @property
    def label(self) -> str:
        """The id a person types: a number, or ``L<n>`` for one kept locally (store down)."""
        return f"L{-self.id}" if self.id < 0 else str(self.id)

    def as_dict(self) -> dict[str, Any]:
        d = self.__dict__.copy()
        for k in ("starts_at", "ends_at", "created_at", "expired_at"):
            d[k] = d[k].isoformat() if d[k] else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Silence:
        d = dict(d)
        for k in ("starts_at", "ends_at", "created_at", "expired_at"):
            d[k] = datetime.fromisoformat(d[k]) if d.get(k) else None
        return cls(**d)


# -- maintenance windows -------------------------------------------------------------------
def window_occurrence(w: MaintenanceWindow, now: datetime, tz: str) -> Silence | None:
    """The occurrence of window ``w`` covering ``now`` (cron evaluated in ``tz``), if any."""
    local_now = now.astimezone(ZoneInfo(tz))
    # get_prev from one second later, so a window starting exactly now counts.
    start = croniter(w.cron, local_now + timedelta(seconds=1)).get_prev(datetime)
    end = start + timedelta(minutes=w.duration_minutes)
    if not start <= local_now < end:
        return None
    return Silence(
        0,
        [str(c) for c in w.categories],
        start.astimezone(UTC),
        end.astimezone(UTC),
        f"{w.cron}, {w.duration_minutes} min",
        "config",
        start.astimezone(UTC),
        window=w.name,
    )


def window_intervals(
    w: MaintenanceWindow, start: datetime, end: datetime, tz: str
) -> list[tuple[datetime, datetime]]:
    """Every occurrence of ``w`` overlapping [start, end), clipped to it (UTC)."""
    out: list[tuple[datetime, datetime]] = []
    it = croniter(w.cron, start.astimezone(ZoneInfo(tz)) - timedelta(minutes=w.duration_minutes))
    while True:
        s = it.get_next(datetime).astimezone(UTC)
        if s >= end:
            return out
        e = s + timedelta(minutes=w.duration_minutes)
        if e > start:
            out.append((max(s, start), min(e, end)))


# -- storage ---------------------------------------------------------------------------------
def local_path(state: Path | None = None) -> Path:
    """The local fallback of a target's silences: ``state`` (its store.target_state(env)),
    else the process's target's."""
    from westep_ops.store import target_state

    return (state or target_state()) / LOCAL_FILE


class SilenceStore:
    """One target's silences in the ops PostgreSQL, with the local file (in the target's
    state dir) as fallback and cache. A silence silences its own target only."""

    def __init__(
        self,
        url: str | None,
        *,
        target: str = DEFAULT_TARGET,
        state: Path | None = None,
        connect_timeout_ms: int = 3000,
        unreachable: str | None = None,
    ) -> None:
        self.url = url
        self.target = target
        self.connect_timeout_ms = connect_timeout_ms
        self.error: str | None = unreachable or (
            None if url else "WESTEP_OPS_STORAGE_URL is not set"
        )
        from westep_ops.store import target_state

        self.path = local_path(state or target_state(None, target))

    # local file: {"pending": [silences not in the store yet], "expire": [ids/uids to expire],
    #              "cache": [the store's silences at the last read]}
    def _load(self) -> dict[str, list[Any]]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            data = {}
        return {k: list(data.get(k, [])) for k in ("pending", "expire", "cache")}

    def _save(self, data: dict[str, list[Any]]) -> None:
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, sort_keys=True), encoding="utf-8")
        tmp.replace(self.path)  # atomic: a crash never leaves half a file

    def _with_db(self, fn: Any) -> Any:
        """Run ``fn(conn)`` on the store after syncing the local file; None if unreachable."""
        if self.error is not None:
            return None
        from westep_ops.store_schema import migrate

        # From the process's ops-store pool (the engine asks on every tick).
        try:
            with store_connection(
                self.url or "",
                connect_timeout_ms=self.connect_timeout_ms,
                statement_timeout_ms=2000,
                prepare=migrate,
            ) as conn:
                try:
                    with deadline(conn, 3000):
                        self._sync(conn)
                        with conn.transaction():
                            out = fn(conn)
                        cache = _silences(
                            conn,
                            "SELECT {} FROM westep_ops.silences"
                            " WHERE target = %s AND expired_at IS NULL AND ends_at > now()",
                            (self.target,),
                        )
                        data = self._load()
                        data["cache"] = [s.as_dict() for s in cache]
                        self._save(data)
                        conn.commit()
                        return out
                except _UNAVAILABLE:
                    conn.close()  # cut or dead: never back into the pool
                    raise
        except _UNAVAILABLE as e:
            self.error = describe_error(e)
            return None

    def _sync(self, conn: psycopg.Connection) -> None:
        """Write silences added (and expirations made) while the store was down, once."""
        data = self._load()
        if not data["pending"] and not data["expire"]:
            return
        with conn.transaction():
            for d in data["pending"]:
                self._insert(conn, Silence.from_dict(d), " ON CONFLICT (uid) DO NOTHING")
            for e in data["expire"]:
                conn.execute(
                    "UPDATE westep_ops.silences SET expired_at = %s"
                    " WHERE target = %s AND (uid = %s OR id = %s) AND expired_at IS NULL",
                    (datetime.fromisoformat(e["at"]), self.target, e["uid"], e["id"]),
                )
        data["pending"], data["expire"] = [], []
        self._save(data)

    def _insert(
        self, conn: psycopg.Connection, s: Silence, tail: LiteralString
    ) -> psycopg.Cursor[Any]:
        """Insert silence ``s`` of this target; ``tail`` ends the statement (a constant)."""
        return conn.execute(
            psycopg.sql.SQL(
                "INSERT INTO westep_ops.silences (target, categories, starts_at, ends_at, reason,"
                " created_by, created_at, uid) VALUES (%s, %s, %s, %s, %s, %s, %s, %s){}"
            ).format(psycopg.sql.SQL(tail)),
            (
                self.target,
                s.categories,
                s.starts_at,
                s.ends_at,
                s.reason,
                s.created_by,
                s.created_at,
                s.uid,
            ),
        )

    # -- operations ------------------------------------------------------------------------
    def add(
        self, categories: list[str], duration: timedelta, reason: str, by: str, now: datetime
    ) -> Silence:
        s = Silence(0, categories, now, now + duration, reason, by, now, uid=uuid.uuid4().hex)

        def insert(conn: psycopg.Connection) -> int:
            row = self._insert(conn, s, " RETURNING id").fetchone()
            return int(row[0]) if row else 0

        sid = self._with_db(insert)
        if sid is not None:
            s.id = sid
            return s
        data = self._load()
        s.local, s.id = True, -(len(data["pending"]) + 1)
        data["pending"].append(s.as_dict())
        self._save(data)
        return s

    def list(self, *, include_ended: bool = False, now: datetime) -> list[Silence]:
        def read(conn: psycopg.Connection) -> list[Silence]:
            return _silences(
                conn,
                "SELECT {} FROM westep_ops.silences WHERE target = %s"
                " AND (%s OR (expired_at IS NULL AND ends_at > %s)) ORDER BY id",
                (self.target, include_ended, now),
            )

        got = self._with_db(read)
        if got is not None:
            return got
        data = self._load()
        expired = {e["uid"] for e in data["expire"]} | {e["id"] for e in data["expire"]}
        out = [Silence.from_dict(d) for d in data["cache"] + data["pending"]]
        for s in out:
            if s.uid in expired or s.id in expired:
                s.expired_at = s.expired_at or now
        return [s for s in out if include_ended or s.active(now)]

    def expire(self, silence_id: int, now: datetime) -> Silence | None:
        def upd(conn: psycopg.Connection) -> Silence | None:
            got = _silences(
                conn,
                "UPDATE westep_ops.silences SET expired_at = %s WHERE id = %s AND target = %s"
                " AND expired_at IS NULL RETURNING {}",
                (now, silence_id, self.target),
            )
            return got[0] if got else None

        if silence_id > 0:
            got = self._with_db(upd)
            if self.error is None:
                return got
        data = self._load()
        gone = {e["uid"] for e in data["expire"]}
        for s in (Silence.from_dict(d) for d in data["cache"] + data["pending"]):
            if s.id == silence_id and s.expired_at is None and s.uid not in gone and s.active(now):
                data["expire"].append({"id": s.id, "uid": s.uid, "at": now.isoformat()})
                self._save(data)
                s.expired_at = now
                return s
        return None

    # builtins.list: in this class, ``list`` is the method above
    def active(self, now: datetime) -> builtins.list[Silence]:
        return [s for s in self.list(now=now) if s.active(now)]


# The stored columns, named as Silence's fields, so psycopg builds each Silence itself
# (class_row); a silence stored before uids existed has none.
_COLUMNS = psycopg.sql.SQL(
    "id, categories, starts_at, ends_at, reason, created_by, created_at, expired_at,"
    " coalesce(uid, '') AS uid"
)


def _silences(conn: psycopg.Connection, query: LiteralString, params: Any = None) -> list[Silence]:
    """Run ``query`` (its ``{}`` is the column list) and return its rows as silences."""
    cur = conn.cursor(row_factory=class_row(Silence))
    return cur.execute(psycopg.sql.SQL(query).format(_COLUMNS), params).fetchall()


@dataclass
class Matcher:
    """What is silenced right now, looked up once (per tick, per repair)."""

    now: datetime
    silences: list[Silence] = field(default_factory=list)
    tz: str = "UTC"
    error: str | None = None  # the store was unreachable: the local copy was used

    def match(self, category: str) -> Silence | None:
        """The silence or window occurrence covering ``category`` now (latest end first)."""
        hits = [s for s in self.silences if s.matches(category, self.now)]
        return max(hits, key=lambda s: s.ends_at) if hits else None

    def describe(self, category: str) -> str | None:
        s = self.match(category)
        return s.describe(self.tz) if s else None


def current(
    config: Config,
    storage_url: str | None,
    *,
    now: datetime | None = None,
    unreachable: str | None = None,
    target: str = DEFAULT_TARGET,
    state: Path | None = None,
) -> Matcher:
    """Active silences of ``target`` (store, or its local copy in ``state``) and the
    maintenance windows of its ``config`` covering now."""
    now = now or datetime.now(UTC)
    store = SilenceStore(
        storage_url,
        target=target,
        state=state,
        connect_timeout_ms=config.monitoring.timeouts.connect,
        unreachable=unreachable,
    )
    found = store.active(now)
    for w in config.maintenance_windows:
        occ = window_occurrence(w, now, config.timezone)
        if occ is not None:
            found.append(occ)
    return Matcher(now, found, config.timezone, store.error)
