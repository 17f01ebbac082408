"""Stand-ins for the HTTP services the monitor probes, as two separate sites.

On Supabase the app (Next.js, using ``DATABASE_URL`` through the pooler) and the platform
services (GoTrue for auth, PostgREST for REST, both connected to PostgreSQL directly) are
different processes on different hosts; so are these, so that ``api_down`` stops the app
and nothing else. They really query the database and fail the way the real services fail:
503 when the database or the pool is broken (after at most ``REQUEST_TIMEOUT`` seconds),
401/403 with PostgREST's error body when a grant is missing.

- site ``app``:      ``GET /api/health`` -- ``SELECT 1`` through pgbouncer
- site ``supabase``: ``GET /auth/v1/health`` -- GoTrue-style, reads ``auth.users`` as the
  auth service role; ``GET /rest/v1/steps`` -- PostgREST-style read as the role the keys
  say, as Supabase maps them: the JWT in ``Authorization: Bearer`` (else the ``apikey``)
  is the anon key -> ``anon``, the service role key -> ``service_role``, any other bearer
  token -> ``authenticated``; an ``apikey`` that is neither key -> 401 "Invalid API key";
  no key at all -> ``anon`` (lenient, for quick manual tries)
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

REQUEST_TIMEOUT = 5.0
_pool = ThreadPoolExecutor(max_workers=32)


def _log(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {text}", flush=True)


class DbError(Exception):
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(body.get("message", ""))
        self.status, self.body = status, body


_idle: dict[str, queue.SimpleQueue[psycopg.Connection]] = {}


def _connect(dsn: str) -> psycopg.Connection:
    return psycopg.connect(dsn, connect_timeout=3, prepare_threshold=None, autocommit=False)


def _with_db(dsn: str, fn: Callable[[psycopg.Connection], Any]) -> Any:
    """Run ``fn`` in a transaction on a reused client connection, like an app's pg pool."""

    def work() -> Any:
        idle = _idle.setdefault(dsn, queue.SimpleQueue())
        try:
            conn, reused = idle.get_nowait(), True
        except queue.Empty:
            conn, reused = _connect(dsn), False
        try:
            try:
                with conn.transaction():
                    result = fn(conn)
            except psycopg.OperationalError:
                if not reused:
                    raise
                # A kept connection that went stale (server restarted): retry once on a
                # fresh one, as real pools do.
                conn.close()
                conn = _connect(dsn)
                with conn.transaction():
                    result = fn(conn)
        except BaseException:
            conn.close()  # never reuse a connection in an unknown state
            raise
        idle.put(conn)
        return result

    future = _pool.submit(work)
    try:
        return future.result(timeout=REQUEST_TIMEOUT)
    except FutureTimeout:
        raise DbError(503, {"message": "database request timed out"}) from None
    except psycopg.errors.InsufficientPrivilege as e:
        raise DbError(403, {"code": "42501", "message": str(e).splitlines()[0]}) from None
    except psycopg.Error as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "password" in first.lower():
            first = "database authentication failed"
        raise DbError(
            503, {"message": f"database error: {first.rsplit('FATAL:', 1)[-1].strip()}"}
        ) from None


class Handler(BaseHTTPRequestHandler):
    server_version = "westep-standin/1"
    protocol_version = "HTTP/1.1"  # keep-alive, as real app servers do
    # One segment per response, sent at once: without these, keep-alive meets Nagle's
    # algorithm and the client's delayed ACK, and every response waits 40 ms.
    wbufsize = 64 * 1024
    disable_nagle_algorithm = True
    site = "app"
    db_url = ""
    auth_db_url = ""
    service_key = ""
    anon_key = ""

    def log_message(self, fmt: str, *args: Any) -> None:  # one line per request
        _log(f"{self.address_string()} {fmt % args}")

    def _send(self, status: int, body: Any) -> None:
        data = json.dumps(body, default=str).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if self.site == "supabase" and self._role() is None:
            self._send(
                401,
                {
                    "message": "Invalid API key",
                    "hint": "Double check your Supabase `anon` or `service_role` API key.",
                },
            )
            return
        try:
            if self.site == "app" and url.path == "/api/health":
                self._send(200, self._api_health())
            elif self.site == "supabase" and url.path == "/auth/v1/health":
                self._send(200, self._auth_health())
            elif self.site == "supabase" and url.path == "/rest/v1/steps":
                self._send(200, self._steps(parse_qs(url.query)))
            else:
                self._send(404, {"message": "not found"})
        except DbError as e:
            status = e.status
            if status == 403 and self._role() == "anon":
                status = 401  # PostgREST answers anonymous permission errors with 401
            body = dict(e.body)
            if url.path == "/api/health":
                body = {"status": "error", "database": "error", "error": e.body.get("message")}
            self._send(status, body)

    def _api_health(self) -> dict[str, Any]:
        start = time.perf_counter()
        _with_db(self.db_url, lambda c: c.execute("SELECT 1").fetchone())
        ms = (time.perf_counter() - start) * 1000
        return {
            "status": "ok",
            "database": "ok",
            "latency_ms": round(ms, 1),
            "timestamp": time.time(),
        }

    def _auth_health(self) -> dict[str, Any]:
        _with_db(
            self.auth_db_url, lambda c: c.execute("SELECT count(*) FROM auth.users").fetchone()
        )
        return {
            "version": "sandbox",
            "name": "GoTrue",
            "description": "westep sandbox auth stand-in",
        }

    def _role(self) -> str | None:
        """The database role the request's keys map to; None for an unknown ``apikey``."""
        keys = {
            k: role
            for k, role in ((self.anon_key, "anon"), (self.service_key, "service_role"))
            if k
        }
        apikey = self.headers.get("apikey")
        if apikey and apikey not in keys:
            return None
        auth = self.headers.get("Authorization") or ""
        bearer = auth[len("Bearer ") :] if auth.startswith("Bearer ") else None
        if bearer is not None:
            return keys.get(bearer, "authenticated")  # a user's JWT: authenticated
        return keys.get(apikey or "", "anon")

    def _steps(self, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        try:
            limit = max(1, min(100, int(query.get("limit", ["10"])[0])))
        except ValueError:
            raise DbError(400, {"message": "limit must be an integer"}) from None
        role = self._role() or "anon"

        def read(conn: psycopg.Connection) -> list[dict[str, Any]]:
            with conn.cursor(row_factory=dict_row) as cur:
                cur.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)))
                cur.execute(
                    "SELECT id, user_id, title, is_public, created_at FROM public.steps ORDER BY id LIMIT %s",
                    (limit,),
                )
                return cur.fetchall()

        return _with_db(self.db_url, read)


def main() -> None:
    parser = argparse.ArgumentParser(description="westep sandbox service stand-in")
    parser.add_argument("--site", choices=["app", "supabase"], required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--state-dir", help="sandbox directory (identifies the process)")
    args = parser.parse_args()
    Handler.site = args.site
    Handler.db_url = os.environ["APP_DATABASE_URL"]
    Handler.auth_db_url = os.environ.get("APP_AUTH_DATABASE_URL", "")
    Handler.service_key = os.environ.get("APP_SERVICE_ROLE_KEY", "")
    Handler.anon_key = os.environ.get("APP_ANON_KEY", "")
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True

    def stop(signum: int, _frame: Any) -> None:
        _log(f"stopping on signal {signum}")
        threading.Thread(target=server.shutdown).start()

    signal.signal(signal.SIGTERM, stop)
    _log(f"{args.site} stand-in (pid {os.getpid()}) listening on 127.0.0.1:{args.port}")
    server.serve_forever()
    server.server_close()
    # Do not wait for requests stuck on a broken database: exit now, port released.
    _pool.shutdown(wait=False, cancel_futures=True)
    _log("stopped")
    os._exit(0)


if __name__ == "__main__":
    main()
