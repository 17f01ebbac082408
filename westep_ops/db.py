"""Connections to the monitored database, pgbouncer's admin console and the ops store.

Every connection has a connect timeout and a server-side statement timeout (and, for
the probes, a lock timeout), so nothing the monitor does can hang. Pooled connections disable prepared statements (transaction
pooling shares server sessions) and pass no startup ``options`` (pgbouncer rejects or
drops them), so their timeouts are set per transaction with ``SET LOCAL`` instead.

One module over 400 lines on purpose: every way westep-ops opens a connection (monitored
database, pgbouncer's console, the ops store's pool), with its timeouts, client-side
deadline and error description, is in one place, so "nothing can hang" is checked in one
file.
"""

from __future__ import annotations

import atexit
import itertools
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql
from psycopg.rows import Row, dict_row

from westep_ops.redact import redact

if TYPE_CHECKING:  # imported where used: the probe paths never need a pool
    from psycopg_pool import ConnectionPool

APP_NAME = "westep-ops"


def connect(
    dsn: str,
    *,
    connect_timeout_ms: int = 3000,
    statement_timeout_ms: int | None = 5000,
    lock_timeout_ms: int | None = None,
    pooled: bool = False,
    admin_console: bool = False,
    autocommit: bool = True,
    application_name: str = APP_NAME,
) -> psycopg.Connection:
    """Open one connection with our timeouts. Errors propagate as psycopg errors."""
    kwargs = _connect_kwargs(
        connect_timeout_ms=connect_timeout_ms,
        statement_timeout_ms=statement_timeout_ms,
        lock_timeout_ms=lock_timeout_ms,
        pooled=pooled,
        admin_console=admin_console,
        autocommit=autocommit,
        application_name=application_name,
    )
    return psycopg.connect(dsn, **kwargs)  # type: ignore[arg-type]


def _connect_kwargs(
    *,
    connect_timeout_ms: int,
    statement_timeout_ms: int | None,
    lock_timeout_ms: int | None,
    pooled: bool,
    admin_console: bool,
    autocommit: bool,
    application_name: str,
) -> dict[str, object]:
    kwargs: dict[str, object] = {
        "connect_timeout": max(1, round(connect_timeout_ms / 1000)),
        "autocommit": autocommit,
    }
    if admin_console:
        # The admin console speaks the simple query protocol only and takes no parameters.
        kwargs["prepare_threshold"] = None
    elif pooled:
        kwargs["prepare_threshold"] = None
        kwargs["application_name"] = application_name
    else:
        kwargs["application_name"] = application_name
        options = []
        if statement_timeout_ms is not None:
            options.append(f"-c statement_timeout={int(statement_timeout_ms)}")
        if lock_timeout_ms is not None:  # a lock wait must not cost the statement timeout
            options.append(f"-c lock_timeout={int(lock_timeout_ms)}")
        if options:
            kwargs["options"] = " ".join(options)
    return kwargs


def set_local_timeouts(
    cur: psycopg.Cursor, statement_timeout_ms: int, lock_timeout_ms: int | None = None
) -> None:
    """Per-transaction timeouts: the only kind that survives transaction pooling."""
    cur.execute(
        sql.SQL("SET LOCAL statement_timeout = {}").format(sql.Literal(int(statement_timeout_ms)))
    )
    if lock_timeout_ms is not None:
        cur.execute(
            sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(int(lock_timeout_ms)))
        )


ADMIN_VERBS = frozenset({"PAUSE", "RESUME", "RECONNECT", "KILL", "RELOAD", "DISABLE", "ENABLE"})


def admin_command(conn: psycopg.Connection, verb: str, database: str | None = None) -> None:
    """Run an admin-console command (``PAUSE postgres``, ``RELOAD``, ...).

    The console takes no bind parameters and no quoted names, so the verb comes from a
    fixed set and the database name must be a plain identifier (checked, not escaped).
    """
    from westep_ops.config import _IDENT

    verb = verb.upper()
    if verb not in ADMIN_VERBS:
        raise ValueError(f"not an admin-console command: {verb!r}")
    if database is not None and not _IDENT.match(database):
        raise ValueError(f"not a plain database name: {database!r}")
    parts = [sql.SQL(verb)] + ([sql.SQL(database)] if database else [])
    conn.execute(sql.SQL(" ").join(parts))


def admin_show(conn: psycopg.Connection, what: str) -> list[dict[str, Any]]:
    """Run ``SHOW <what>`` on pgbouncer's admin console; rows as dicts (values as pgbouncer
    types them: numbers, text, NULL)."""
    if not what.isalpha():
        raise ValueError(f"not a SHOW target: {what!r}")
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(sql.SQL("SHOW {}").format(sql.SQL(what.upper())))
        return cur.fetchall()


def dict_rows(conn: psycopg.Connection, query: Any, params: Any = None) -> list[dict[str, Any]]:
    """The rows of ``query`` as dicts (psycopg's ``dict_row``)."""
    return conn.cursor(row_factory=dict_row).execute(query, params).fetchall()


def one_row(cur: psycopg.Cursor[Row]) -> Row:
    """The row of a statement that always returns exactly one (an aggregate, a SELECT of
    expressions, INSERT ... RETURNING): ``fetchone()`` without its ``None``."""
    row = cur.fetchone()
    if row is None:
        raise psycopg.ProgrammingError("the statement returned no row")
    return row


class DeadlineExceeded(Exception):
    """The client-side deadline of :func:`deadline` fired and the connection was cut."""

    def __init__(self, ms: float) -> None:
        self.ms = ms
        super().__init__(
            f"no answer within {ms:.0f} ms (queued behind a paused or exhausted pool?)"
        )


class Watchdog:
    """One thread that cuts connections whose deadline passed (cheaper than a Timer each).

    Deadlines are seconds long, so the thread polls every 50 ms instead of being woken on
    every query: arming and disarming are a dict operation, with no thread switch.
    """

    TICK = 0.05

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._armed: dict[int, tuple[float, psycopg.Connection]] = {}
        self._fired: set[int] = set()
        self._ids = itertools.count()
        self._thread = threading.Thread(target=self._run, name="westep-watchdog", daemon=True)
        self._thread.start()

    def arm(self, conn: psycopg.Connection, ms: float) -> int:
        token = next(self._ids)
        with self._lock:
            self._armed[token] = (time.monotonic() + ms / 1000, conn)
        return token

    def disarm(self, token: int) -> bool:
        """Remove the deadline; True if it had already fired."""
        with self._lock:
            self._armed.pop(token, None)
            if token in self._fired:
                self._fired.discard(token)
                return True
            return False

    def _run(self) -> None:
        while True:
            time.sleep(self.TICK)
            now = time.monotonic()
            with self._lock:
                due = [(t, c) for t, (d, c) in self._armed.items() if d <= now]
                for t, _ in due:
                    del self._armed[t]
                    self._fired.add(t)
            for _, conn in due:
                _cut(conn)


def _cut(conn: psycopg.Connection) -> None:
    try:
        with socket.socket(fileno=os.dup(conn.pgconn.socket)) as s:
            s.shutdown(socket.SHUT_RDWR)
    except (OSError, psycopg.Error):
        pass


_watchdog: Watchdog | None = None
_watchdog_lock = threading.Lock()


def watchdog() -> Watchdog:
    global _watchdog
    with _watchdog_lock:
        if _watchdog is None:
            _watchdog = Watchdog()
        return _watchdog


@contextmanager
def deadline(conn: psycopg.Connection, ms: float) -> Iterator[None]:
    """Cut ``conn`` if the block takes longer than ``ms`` and raise :class:`DeadlineExceeded`.

    A server-side ``statement_timeout`` cannot help a query that pgbouncer is still
    holding in its queue, and pgbouncer ignores cancel requests for queued clients, so the
    watchdog shuts the socket down: libpq's blocked read then returns at once. The
    connection is unusable afterwards; callers close it.
    """
    token = watchdog().arm(conn, ms)
    try:
        yield
    except psycopg.Error as e:
        if watchdog().disarm(token):
            raise DeadlineExceeded(ms) from e
        raise
    if watchdog().disarm(token):  # fired just as the block finished: the connection is cut
        raise DeadlineExceeded(ms)


# -- the ops store's connections, reused within a process ---------------------------------
# The monitoring sensor's tick (in Dagster's long-running code server), every OpsStore (a
# repair's rate limit, lock and audit), every SilenceStore call and every HistoryStore
# transaction used to open, migrate and close a connection of their own; a process now
# reuses them through one psycopg_pool per ops store.
#
# A pool must not turn a dead store into a wait or hide why it is dead. So the first
# connection (and the first after any failure) is opened directly: a refused or unreachable
# store fails as fast and with the same reason as before, and only a success creates the
# pool. The pool has no minimum (nothing connects in the background), getconn waits at most
# the connect timeout, a reused connection is checked under a client-side deadline (a
# frozen server cannot hold the check), and any broken connection closes the pool, so the
# next caller goes the direct way again and no worker keeps knocking on a dead server.
STORE_POOL_SIZE = 8
STORE_POOL_IDLE_S = 120
_CHECK_MS = 2000
_pools: dict[tuple[int, str, int | None, bool], ConnectionPool] = {}
_pools_lock = threading.Lock()


@contextmanager
def store_connection(
    url: str,
    *,
    connect_timeout_ms: int = 3000,
    statement_timeout_ms: int | None = 5000,
    autocommit: bool = True,
    prepare: Callable[[psycopg.Connection], None] | None = None,
) -> Iterator[psycopg.Connection]:
    """A connection to the ops store for the block: reused from this process's pool, or
    opened directly (then the pool is created for the next caller).

    ``prepare`` (the schema migration) runs, under a deadline, on the direct connection
    that creates the pool; pooled connections reuse its result. Errors propagate as psycopg errors (``PoolTimeout`` is an
    ``OperationalError``) or :class:`DeadlineExceeded`. The connection goes back to the
    pool after the block; one left broken (cut by a deadline, server gone) closes the pool.
    """
    key = (os.getpid(), url, statement_timeout_ms, autocommit)
    with _pools_lock:
        pool = _pools.get(key)
    if pool is None:
        conn = connect(
            url,
            connect_timeout_ms=connect_timeout_ms,
            statement_timeout_ms=statement_timeout_ms,
            autocommit=autocommit,
        )
        try:
            if prepare is not None:
                with deadline(conn, _CHECK_MS + (statement_timeout_ms or 0)):
                    prepare(conn)
            _open_pool(key, url, connect_timeout_ms, statement_timeout_ms, autocommit)
            yield conn
        finally:
            conn.close()
        return
    try:
        conn = pool.getconn(timeout=connect_timeout_ms / 1000)
    except (psycopg.Error, DeadlineExceeded):
        _drop_pool(key, pool)
        raise
    try:
        yield conn
    finally:
        broken = conn.closed or conn.broken
        pool.putconn(conn)
        if broken:
            _drop_pool(key, pool)


def _open_pool(
    key: tuple[int, str, int | None, bool],
    url: str,
    connect_timeout_ms: int,
    statement_timeout_ms: int | None,
    autocommit: bool,
) -> None:
    # No per-connection ``prepare``: the direct connection that creates the pool has
    # already migrated the schema, and a broken connection drops the pool, so the next
    # caller goes the direct way (and migrates) again.
    from psycopg_pool import ConnectionPool

    with _pools_lock:
        if key in _pools:
            return
        _pools[key] = ConnectionPool(
            url,
            kwargs=_connect_kwargs(
                connect_timeout_ms=connect_timeout_ms,
                statement_timeout_ms=statement_timeout_ms,
                lock_timeout_ms=None,
                pooled=False,
                admin_console=False,
                autocommit=autocommit,
                application_name=APP_NAME,
            ),
            min_size=0,
            max_size=STORE_POOL_SIZE,
            max_idle=STORE_POOL_IDLE_S,
            timeout=connect_timeout_ms / 1000,
            reconnect_timeout=max(1.0, connect_timeout_ms / 1000),
            num_workers=1,
            check=_alive,
            reset=_reset,
            name="westep-ops-store",
            open=True,
        )


def _alive(conn: psycopg.Connection) -> None:
    """Before a reused connection is handed out: the server still answers."""
    from psycopg_pool import ConnectionPool

    with deadline(conn, _CHECK_MS):
        ConnectionPool.check_connection(conn)


def _reset(conn: psycopg.Connection) -> None:
    """Before a connection goes back: no session advisory lock (OpsStore.try_lock) leaks."""
    with deadline(conn, _CHECK_MS):
        conn.execute("SELECT pg_advisory_unlock_all()")
        if not conn.autocommit:
            conn.rollback()


def _drop_pool(key: tuple[int, str, int | None, bool], pool: ConnectionPool) -> None:
    with _pools_lock:
        if _pools.get(key) is pool:
            del _pools[key]
    pool.close(timeout=1.0)


def has_store_pool(url: str) -> bool:
    """Whether this process holds a pool for ``url`` (after a success, until a failure)."""
    with _pools_lock:
        return any(k[0] == os.getpid() and k[1] == url for k in _pools)


def close_store_pools() -> None:
    """Close this process's ops-store pools (at exit; tests that stop the store)."""
    with _pools_lock:
        pools = list(_pools.items())
        _pools.clear()
    for (pid, *_), pool in pools:
        if pid == os.getpid():
            pool.close(timeout=1.0)


atexit.register(close_store_pools)


def describe_error(exc: BaseException) -> str:
    """One line saying why a connection or query failed, with secrets masked."""
    if isinstance(exc, DeadlineExceeded):
        return str(exc)
    if isinstance(exc, psycopg.errors.QueryCanceled):
        return "timed out (statement_timeout)"
    if isinstance(exc, psycopg.errors.InsufficientPrivilege):
        return f"permission denied: {_first_line(exc)}"
    if isinstance(exc, psycopg.OperationalError):
        text = _first_line(exc)
        low = text.lower()
        if "password authentication failed" in low or "sasl authentication failed" in low:
            return "authentication failed (wrong user or password)"
        if "connection refused" in low:
            return "connection refused (nothing listening: server down?)"
        if "timeout expired" in low or "timed out" in low:
            return "connect timeout (host unreachable or server not answering)"
        if "could not translate host name" in low or "name or service not known" in low:
            return "unknown host"
        if "database is paused" in low or "paused" in low:
            return f"pool paused: {text}"
        return text
    return _first_line(exc) or type(exc).__name__


# SQLSTATEs with which a server that answered refuses the login or the query.
_WRONG_PASSWORD = "wrong password (or user)"
_REFUSAL_SQLSTATES = {
    "28P01": _WRONG_PASSWORD,
    "28000": "the server refuses the login",
    "3D000": "the database does not exist",
    "42501": "permission denied",
}
# The same refusals recognised by their text, for errors without a telling SQLSTATE:
# libpq does not always carry the SQLSTATE of a failed login, pgbouncer words its own
# refusals (class 08), and SSL negotiation fails client-side after the server said "no".
_REFUSAL_TEXTS = (
    (r"password authentication failed|sasl authentication failed", _WRONG_PASSWORD),
    (r"no such user", "the pooler does not know the login"),
    (r"no pg_hba\.conf entry|is not permitted to log in", "the server refuses the login"),
    (r"no such database|database \".*\" does not exist", "the database does not exist"),
    (r"role \".*\" does not exist", "the login role does not exist"),
    (r"permission denied", "permission denied"),
    (
        r"does not support ssl|ssl was required|ssl is required",
        "SSL is required but the server does not offer it",
    ),
    (
        r"certificate verify failed|root certificate file",
        "the server's SSL certificate cannot be verified",
    ),
    (
        # the login's own CONNECTION LIMIT (53300 like "too many clients", which is not
        # ours): often its server connections kept idle by pgbouncer's pool of this login
        r"too many connections for role",
        "the monitor's login has reached its own connection limit",
    ),
)


def refusal(exc: BaseException) -> str | None:
    """Why the server *answered* and refused us (wrong password, missing database, SSL
    required, permission denied), as one line; None for anything else.

    Apply it to the monitor's own logins and queries only: a ``permission denied`` after
    ``SET LOCAL ROLE anon`` is a finding about the target, not about the monitor.
    Connection refused, timeouts, "too many clients" (the server is full) and a server
    starting up or shutting down are not refusals: they stay outages. "Too many connections
    for role" is the login's own limit: a refusal.
    """
    if isinstance(exc, DeadlineExceeded) or not isinstance(exc, psycopg.Error):
        return None
    detail = _first_line(exc)
    state = exc.sqlstate or ""
    cause = _REFUSAL_SQLSTATES.get(state)
    if cause is None and (not state or state.startswith("08") or state == "53300"):
        low = detail.lower()
        cause = next((c for pattern, c in _REFUSAL_TEXTS if re.search(pattern, low)), None)
    if cause is None:
        return None
    return f"{cause} ({detail})" if detail else cause


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    # libpq prefixes 'connection failed: connection to server at "..." failed: '
    for marker in ("failed: FATAL:  ", "FATAL:  ", "failed: "):
        if marker in text:
            text = text.rsplit(marker, 1)[-1]
    return redact(text.splitlines()[0] if text else "")


def timed() -> Iterator[dict[str, float]]:
    """``with timed() as t: ...`` then ``t["ms"]``: wall time of the block in milliseconds."""
    out: dict[str, float] = {}
    start = time.perf_counter()
    try:
        yield out
    finally:
        out["ms"] = (time.perf_counter() - start) * 1000
