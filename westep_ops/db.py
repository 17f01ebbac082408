"""Connections to the monitored database, pgbouncer's admin console and the ops store.

Every connection has a connect timeout and a server-side statement timeout (and, for
the probes, a lock timeout), so nothing the monitor does can hang. Pooled connections disable prepared statements (transaction
pooling shares server sessions) and pass no startup ``options`` (pgbouncer rejects or
drops them), so their timeouts are set per transaction with ``SET LOCAL`` instead.
"""

from __future__ import annotations

import itertools
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from westep_ops.redact import redact

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
    return psycopg.connect(dsn, **kwargs)  # type: ignore[arg-type]


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


def admin_show(conn: psycopg.Connection, what: str) -> list[dict[str, object]]:
    """Run ``SHOW <what>`` on pgbouncer's admin console; rows as dicts."""
    if not what.isalpha():
        raise ValueError(f"not a SHOW target: {what!r}")
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(sql.SQL("SHOW {}").format(sql.SQL(what.upper())))
        return cur.fetchall()


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
)


def refusal(exc: BaseException) -> str | None:
    """Why the server *answered* and refused us (wrong password, missing database, SSL
    required, permission denied), as one line; None for anything else.

    Apply it to the monitor's own logins and queries only: a ``permission denied`` after
    ``SET LOCAL ROLE anon`` is a finding about the target, not about the monitor.
    Connection refused, timeouts, "too many clients" and a server starting up or shutting
    down are not refusals: they stay outages.
    """
    if isinstance(exc, DeadlineExceeded) or not isinstance(exc, psycopg.Error):
        return None
    detail = _first_line(exc)
    state = exc.sqlstate or ""
    cause = _REFUSAL_SQLSTATES.get(state)
    if cause is None and (not state or state.startswith("08")):
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
