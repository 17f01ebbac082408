"""One sweep's connections, opened lazily, bounded in time, and closed afterwards.

A sweep uses at most one direct connection, one pooled connection and the pgbouncer
admin console (plus one HTTP client, and one direct connection of the optional role-probe
login when it is configured), whatever the number of probes: the monitor must
never be what exhausts a pool. A target that failed to connect is not retried within
the sweep; later probes get the recorded reason at once instead of waiting again.

For a long-running monitor the session can be kept across sweeps (``keep_open``): the
direct and admin connections stay open, while the pooled connection is made afresh each
sweep, because "can a client get in through the pool right now" is part of what H1 checks.

Direct connections carry ``statement_timeout`` and ``lock_timeout`` from the start
(``monitoring.timeouts``); the probes' transactions set both again with ``SET LOCAL``,
which is what survives transaction pooling. A read behind an ``ACCESS EXCLUSIVE`` lock
thus fails after ``lock_timeout`` with ``lock_not_available`` instead of waiting the
statement timeout.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
from psycopg import sql

from westep_ops.config import Config
from westep_ops.db import DeadlineExceeded, connect, deadline, describe_error, refusal
from westep_ops.environment import Environment
from westep_ops.redact import redact

# The environment variable behind each target, for "not configured" messages.
TARGET_VARS = {
    "direct": "DIRECT_URL",
    "pooled": "DATABASE_URL",
    "admin": "PGBOUNCER_ADMIN_URL",
    "roleprobe": "WESTEP_OPS_ROLE_PROBE_URL",
}


class Unavailable(Exception):
    """A target could not be reached in this sweep; ``str()`` is the one-line reason.

    ``refusal`` is set when the server answered and refused the login (see
    :func:`westep_ops.db.refusal`): the monitor is misconfigured, the target is up.
    """

    def __init__(self, reason: str, refusal: str | None = None) -> None:
        super().__init__(reason)
        self.refusal = refusal


@dataclass
class QueryLog:
    target: str
    text: str
    ms: float
    error: str = ""


class ProbeSession:
    """Connections and HTTP client shared by the probes of one sweep."""

    def __init__(self, env: Environment, config: Config, *, keep_open: bool = False) -> None:
        self.env = env
        self.config = config
        self.keep_open = keep_open
        self.debug = env.debug
        self.timeouts = config.monitoring.timeouts
        self.queries: list[QueryLog] = []
        self.connect_ms: dict[str, float] = {}
        self._conns: dict[str, psycopg.Connection] = {}
        self._failed: dict[str, str] = {}
        self._refused: dict[str, str | None] = {}
        self._http: httpx.Client | None = None
        self._shown: dict[str, list[dict[str, Any]]] = {}  # admin console SHOWs
        self._lock = threading.Lock()
        self.stats: dict[str, float] = {}  # this sweep's shared costs: prefetch_ms (the batches)

    # -- connections ----------------------------------------------------------------------
    def _open(self, target: str) -> psycopg.Connection:
        conn = self._conns.get(target)
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        if target in self._failed:
            raise Unavailable(self._failed[target], self._refused.get(target))
        dsn = self._dsn(target)
        if not dsn:
            raise Unavailable(f"not configured ({TARGET_VARS[target]} is not set)")
        t0 = time.perf_counter()
        try:
            conn = connect(
                dsn,
                connect_timeout_ms=self.timeouts.connect,
                statement_timeout_ms=self.timeouts.statement,
                lock_timeout_ms=self.timeouts.lock,
                pooled=target == "pooled",
                admin_console=target == "admin",
                application_name="westep-ops-monitor",
            )
        except psycopg.Error as e:
            reason = describe_error(e)
            self._failed[target] = reason
            self._refused[target] = refusal(e)
            self._log(target, "<connect>", (time.perf_counter() - t0) * 1000, reason)
            raise Unavailable(reason, self._refused[target]) from None
        self.connect_ms[target] = round((time.perf_counter() - t0) * 1000, 2)
        self._log(target, "<connect>", self.connect_ms[target])
        self._conns[target] = conn
        return conn

    def bind(self, target: str, query: Any, params: Any) -> str:
        """``query`` with ``params`` bound client-side by psycopg (quoting done by the driver),
        so several parameterised statements can travel in one multi-statement round trip."""
        return psycopg.ClientCursor(self._open(target)).mogrify(query, params)

    def connection(self, target: str) -> psycopg.Connection:
        """The sweep's connection to ``target`` (opened now if needed); raises Unavailable."""
        return self._open(target)

    def _dsn(self, target: str) -> str | None:
        return {
            "direct": self.env.direct_url,
            "pooled": self.env.database_url,
            "admin": self.env.pgbouncer_admin_url,
            # H3's optional role-probe login: a member of the API roles, used only in
            # read-only transactions that SET LOCAL ROLE, SELECT ... LIMIT 1 and roll back.
            "roleprobe": self.env.role_probe_url,
        }[target]

    def configured(self, target: str) -> bool:
        return bool(self._dsn(target))

    def failure(self, target: str) -> str | None:
        """Why ``target`` could not be reached in this sweep (None if it was, or untried)."""
        return self._failed.get(target)

    def run(
        self,
        target: str,
        query: Any,
        params: Any = None,
        *,
        deadline_ms: float | None = None,
        all_results: bool = False,
        dicts: bool = False,
    ) -> Any:
        """Execute on ``target`` within a client-side deadline; rows as tuples (or dicts).

        With ``all_results`` (multi-statement text, no parameters) return the rows of
        every statement that produced rows, in order.
        """
        conn = self._open(target)
        limit = deadline_ms or (self.timeouts.statement + self.timeouts.connect)
        t0 = time.perf_counter()
        error = ""
        try:
            with deadline(conn, limit):
                cur = (
                    conn.execute(query, params, prepare=False)
                    if params is not None
                    else conn.execute(query)
                )
                if not all_results:
                    return _rows(cur, dicts)
                out = []
                while True:
                    if cur.description:
                        out.append(_rows(cur, dicts))
                    if not cur.nextset():
                        return out
        except DeadlineExceeded as e:
            error = self._failed[target] = str(e)  # the connection was cut: not again this sweep
            conn.close()
            raise
        except psycopg.Error as e:
            error = describe_error(e)
            if conn.broken:
                self._failed[target] = error
            raise
        finally:
            if self.debug or error:
                self._log(target, _text(query, conn), (time.perf_counter() - t0) * 1000, error)

    def _log(self, target: str, text: str, ms: float, error: str = "") -> None:
        entry = QueryLog(target, redact(text), round(ms, 2), error)
        self.queries.append(entry)
        if self.debug:
            print(
                f"[debug] {target:<6} {entry.ms:8.2f} ms  {entry.text}"
                + (f"  !! {error}" if error else ""),
                file=sys.stderr,
            )

    # -- HTTP -------------------------------------------------------------------------
    def http(self) -> httpx.Client:
        with self._lock:  # the sweep's lanes may ask at the same moment
            if self._http is None:
                self._http = httpx.Client(
                    timeout=self.timeouts.http / 1000, follow_redirects=False, trust_env=False
                )
            return self._http

    # -- pgbouncer's admin console, asked once per sweep (H1, H2 and P1-P4 share it) -----
    def admin_show(self, what: str) -> list[dict[str, Any]]:
        """``SHOW <what>`` on the admin console, once per sweep (a failure is not cached)."""
        if what not in self._shown:
            self._shown[what] = self.run(
                "admin", sql.SQL("SHOW {}").format(sql.SQL(what.upper())), dicts=True
            )
        return self._shown[what]

    def admin_shown(self, what: str) -> list[dict[str, Any]] | None:
        """What ``SHOW <what>`` answered in this sweep, without asking; None if not asked."""
        return self._shown.get(what)

    # -- life cycle -------------------------------------------------------------------
    def end_sweep(self) -> None:
        """Forget this sweep's failures and admin answers; close what must not be kept."""
        self._failed.clear()
        self._refused.clear()
        self._shown.clear()
        self.connect_ms.clear()
        self.stats.clear()
        for target in list(self._conns):
            if not self.keep_open or target == "pooled" or self._conns[target].broken:
                self._conns.pop(target).close()
        if not self.keep_open and self._http is not None:
            self._http.close()
            self._http = None

    def close(self) -> None:
        self.keep_open = False
        self.end_sweep()

    def __enter__(self) -> ProbeSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _rows(cur: psycopg.Cursor, dicts: bool) -> list[Any]:
    if not cur.description:
        return []
    rows = cur.fetchall()
    if not dicts:
        return rows
    cols = [d.name for d in cur.description]
    return [dict(zip(cols, r, strict=True)) for r in rows]


def _text(query: Any, conn: psycopg.Connection) -> str:
    if isinstance(query, str):
        text = query
    elif hasattr(query, "as_string"):
        try:
            text = query.as_string(conn)
        except psycopg.Error:
            text = repr(query)
    else:
        text = str(query)
    return " ".join(text.split())[:300]
