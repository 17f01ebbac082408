"""``westep-ops sandbox fault NAME on|off``: break the sandbox the ways production breaks.

Faults act only on the sandbox they are given, through its own credentials; they refuse
to run when the environment points westep-ops at some other database, so a fault meant
for the sandbox can never land on a real project. ``off`` undoes each one exactly
(rows the fault added are marked and removed, grants and publications restored).

Just over 400 lines: each fault's on and off side by side in the :data:`FAULTS` table
with the guard that keeps them on the sandbox, so every fault visibly undoes itself.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import psycopg

from westep_ops.db import admin_command, admin_show, describe_error
from westep_ops.errors import WestepError
from westep_ops.sandbox import procs
from westep_ops.sandbox.manager import Sandbox
from westep_ops.sandbox.state import HOST, POOL_SIZE, target_db

ORPHAN_MARK = "westep-fault:orphans"
ORPHAN_ROWS = 25
HOLDER = "westep_ops.sandbox.holder"


def _marker(sb: Sandbox) -> str:
    """A holder of *this* sandbox has its faults directory in its command line."""
    return f"--ready-file {sb.layout.faults}/"


@dataclass(frozen=True)
class Fault:
    """A fault; ``on(sandbox, target, seconds)`` and ``off(sandbox, target)`` act on one
    target database (1 is today's sandbox, ``postgres``)."""

    name: str
    what: str
    on: Callable[[Sandbox, int, float], str]
    off: Callable[[Sandbox, int], str]


# Faults that stop a process every target shares: they refuse --target other than 1.
CLUSTER_WIDE = ("pg_down", "bouncer_down", "api_down")


def _faults_dir(sb: Sandbox, target: int) -> Path:
    """Where a target's fault markers and holders live: today's directory for target 1."""
    d = sb.layout.faults
    return d if target == 1 else d / f"t{target}"


def _app_name(name: str, target: int) -> str:
    return f"westep-fault-{name}" if target == 1 else f"westep-fault-{name}-t{target}"


def _admin(sb: Sandbox) -> psycopg.Connection:
    s = sb.state
    return psycopg.connect(
        s.url("pgbouncer_admin", s.bouncer_port, "pgbouncer"),
        autocommit=True,
        connect_timeout=5,
        prepare_threshold=None,
    )


def _sql(sb: Sandbox, t: int, *statements: str) -> None:
    with sb.superuser_conn(autocommit=False, target=t) as conn:
        conn.execute("SET lock_timeout = '5s'")
        for st in statements:
            conn.execute(st)  # fixed statements of this module only
        conn.commit()


# -- process-holding faults ---------------------------------------------------------------
def _holder_paths(sb: Sandbox, name: str, t: int = 1) -> tuple[Path, Path, Path]:
    d = _faults_dir(sb, t)
    return d / f"{name}.pid", d / f"{name}.ready", d / f"{name}.log"


def _start_holder(
    sb: Sandbox, t: int, name: str, mode: str, dsn: str, n: int, seconds: float
) -> str:
    pidfile, ready, log = _holder_paths(sb, name, t)
    if procs.our_pid(pidfile, _marker(sb)):
        return f"{name} already on"
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    ready.unlink(missing_ok=True)
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
        "HOLDER_DSN": dsn,
    }
    app_name = _app_name(name, t)
    pid = procs.spawn_detached(
        [
            sys.executable,
            "-m",
            HOLDER,
            mode,
            "--connections",
            str(n),
            "--seconds",
            str(seconds),
            "--ready-file",
            str(ready),
            "--name",
            app_name,
        ],
        log=log,
        env=env,
        cwd=pidfile.parent,
    )
    pidfile.write_text(f"{pid}\n")
    deadline = time.monotonic() + 20
    while not ready.exists():
        if not procs.alive(pid):
            raise WestepError(f"fault {name}: the connection holder exited early; see {log}")
        if time.monotonic() > deadline:
            procs.stop_pid(pid, _marker(sb))
            raise WestepError(f"fault {name}: connections not in place within 20 s")
        time.sleep(0.05)
    return f"{name} on: {n} connections held for up to {seconds:.0f} s (pid {pid})"


def _stop_holder(sb: Sandbox, t: int, name: str) -> bool:
    pidfile, ready, _log = _holder_paths(sb, name, t)
    pid = procs.our_pid(pidfile, _marker(sb))
    stopped = procs.stop_pid(pid, _marker(sb)) if pid else False
    pidfile.unlink(missing_ok=True)
    ready.unlink(missing_ok=True)
    # The server may still be running a query for a client that vanished: end it now.
    if procs.port_open(sb.state.target_port):
        with sb.superuser_conn() as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = %s AND datname = %s",
                (_app_name(name, t), target_db(t)),
            )
    return stopped


def stop_all_holders(sb: Sandbox) -> list[str]:
    stopped = []
    for t in range(1, sb.state.targets + 1):
        for name in ("pool_exhaust", "idle_in_tx"):
            pidfile = _holder_paths(sb, name, t)[0]
            pid = procs.our_pid(pidfile, _marker(sb))
            if pid and procs.stop_pid(pid, _marker(sb)):
                stopped.append(f"fault {name}" + (f" (target {t})" if t > 1 else ""))
            pidfile.unlink(missing_ok=True)
    return stopped


# -- the faults ---------------------------------------------------------------------------
def _pool_pause_on(sb: Sandbox, t: int, _s: float) -> str:
    with _admin(sb) as conn:
        admin_command(conn, "PAUSE", target_db(t))
    return f"pool_pause on: pgbouncer database {target_db(t)!r} paused"


def _pool_pause_off(sb: Sandbox, t: int) -> str:
    with _admin(sb) as conn:
        try:
            admin_command(conn, "RESUME", target_db(t))
        except psycopg.Error as e:
            if "not paused" not in str(e):
                raise
    return "pool_pause off: resumed"


def _pool_exhaust_on(sb: Sandbox, t: int, seconds: float) -> str:
    s = sb.state
    dsn = s.url("authenticator", s.bouncer_port, target_db(t))
    return _start_holder(sb, t, "pool_exhaust", "sleep", dsn, POOL_SIZE, seconds)


def _pool_exhaust_off(sb: Sandbox, t: int) -> str:
    _stop_holder(sb, t, "pool_exhaust")
    if procs.port_open(sb.state.bouncer_port):
        wait_pool_drained(sb, servers_idle=True, target=t)
    return "pool_exhaust off: held connections released"


def _idle_on(sb: Sandbox, t: int, seconds: float) -> str:
    dsn = sb.state.url("authenticator", db=target_db(t))
    return _start_holder(sb, t, "idle_in_tx", "idle_tx", dsn, 3, seconds)


def _idle_off(sb: Sandbox, t: int) -> str:
    _stop_holder(sb, t, "idle_in_tx")
    return "idle_in_tx off: sessions ended"


def _grant_on(sb: Sandbox, t: int, _s: float) -> str:
    _sql(sb, t, "REVOKE SELECT ON public.steps FROM authenticated")
    return "grant_revoke on: SELECT on public.steps revoked from authenticated"


def _grant_off(sb: Sandbox, t: int) -> str:
    _sql(sb, t, "GRANT SELECT ON public.steps TO authenticated")
    return "grant_revoke off: SELECT on public.steps granted to authenticated"


def _orphans_on(sb: Sandbox, t: int, _s: float) -> str:
    with sb.superuser_conn(autocommit=False, target=t) as conn:
        conn.execute(
            "INSERT INTO public.step_logs (step_id, note) "
            "SELECT 900000000 + g, %s FROM generate_series(1, %s) AS g",
            (ORPHAN_MARK, ORPHAN_ROWS),
        )
        conn.commit()
    return f"orphans on: {ORPHAN_ROWS} step_logs rows pointing at no step"


def _orphans_off(sb: Sandbox, t: int) -> str:
    with sb.superuser_conn(autocommit=False, target=t) as conn:
        n = conn.execute("DELETE FROM public.step_logs WHERE note = %s", (ORPHAN_MARK,)).rowcount
        conn.commit()
    return f"orphans off: {n} injected rows removed"


def _bloat_on(sb: Sandbox, t: int, _s: float) -> str:
    # Same values written back: contents unchanged, dead tuples left behind, and autovacuum
    # held off on the table so the detector sees them.
    _sql(
        sb,
        t,
        "ALTER TABLE public.step_logs SET (autovacuum_enabled = false)",
        "UPDATE public.step_logs SET note = note, step_id = step_id",
        "UPDATE public.step_logs SET note = note, step_id = step_id",
        "UPDATE public.step_logs SET note = note, step_id = step_id",
    )
    return "bloat on: every public.step_logs row updated 3 times, autovacuum off for it"


def _bloat_off(sb: Sandbox, t: int) -> str:
    _sql(sb, t, "ALTER TABLE public.step_logs RESET (autovacuum_enabled)")
    with sb.superuser_conn(target=t) as conn:
        conn.execute("VACUUM (ANALYZE) public.step_logs")
    return "bloat off: public.step_logs vacuumed, autovacuum back on"


def _pg_down_on(sb: Sandbox, _t: int, _s: float) -> str:
    sb.stop_cluster("target")
    return "pg_down on: target PostgreSQL stopped"


def _pg_down_off(sb: Sandbox, _t: int) -> str:
    sb.start_cluster("target")
    return "pg_down off: target PostgreSQL started"


def _bouncer_down_on(sb: Sandbox, _t: int, _s: float) -> str:
    sb.stop_bouncer()
    return "bouncer_down on: pgbouncer stopped"


def _bouncer_down_off(sb: Sandbox, _t: int) -> str:
    sb.start_bouncer()
    return "bouncer_down off: pgbouncer started"


def _api_down_on(sb: Sandbox, _t: int, _s: float) -> str:
    sb.stop_site("app")
    return "api_down on: app stand-in stopped (Supabase services keep running)"


def _api_down_off(sb: Sandbox, _t: int) -> str:
    sb.start_site("app")
    return "api_down off: app stand-in started"


def _pub_on(sb: Sandbox, t: int, _s: float) -> str:
    _sql(sb, t, "DROP PUBLICATION IF EXISTS supabase_realtime")
    return "publication_drop on: publication supabase_realtime dropped"


def _pub_off(sb: Sandbox, t: int) -> str:
    with sb.superuser_conn(autocommit=False, target=t) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_publication WHERE pubname = 'supabase_realtime'"
        ).fetchone()
        if not exists:
            conn.execute("SET LOCAL ROLE postgres")  # owned by the project owner, as before
            conn.execute(
                "CREATE PUBLICATION supabase_realtime FOR TABLE public.profiles, public.steps"
            )
        conn.commit()
    return "publication_drop off: publication supabase_realtime restored"


FAULTS: dict[str, Fault] = {
    f.name: f
    for f in (
        Fault("pool_pause", "pgbouncer PAUSE of the database", _pool_pause_on, _pool_pause_off),
        Fault(
            "pool_exhaust",
            "every pool server connection held busy (bounded)",
            _pool_exhaust_on,
            _pool_exhaust_off,
        ),
        Fault(
            "grant_revoke",
            "SELECT on public.steps revoked from authenticated",
            _grant_on,
            _grant_off,
        ),
        Fault("orphans", "step_logs rows pointing at no step", _orphans_on, _orphans_off),
        Fault("bloat", "dead tuples in public.step_logs", _bloat_on, _bloat_off),
        Fault("idle_in_tx", "sessions left idle in transaction (bounded)", _idle_on, _idle_off),
        Fault("pg_down", "target PostgreSQL stopped", _pg_down_on, _pg_down_off),
        Fault("bouncer_down", "pgbouncer stopped", _bouncer_down_on, _bouncer_down_off),
        Fault("api_down", "app stand-in stopped", _api_down_on, _api_down_off),
        Fault("publication_drop", "realtime publication dropped", _pub_on, _pub_off),
    )
}


# What each fault legitimately breaks: its own category first, then the categories that
# fail as its symptoms (what the drill's ground truth attributes to it; any other alert
# while it is on is a false positive). Derived from what the fault does to the sandbox:
# the app's /api/health goes through pgbouncer; GoTrue and PostgREST connect directly;
# the REST probe reads public.steps as anon (grant_revoke takes SELECT from authenticated
# only, so the API keeps answering).
_ALL_DB = ("tables", "integrity", "realtime", "auth")
CATEGORIES: dict[str, tuple[str, ...]] = {
    "pool_pause": ("pool", "connection", "api", "performance"),
    "pool_exhaust": ("pool", "connection", "api", "performance"),
    "grant_revoke": ("tables",),
    "orphans": ("integrity",),
    "bloat": ("performance",),
    "idle_in_tx": ("pool",),
    "pg_down": ("connection", "pool", "api", "performance", *_ALL_DB),
    "bouncer_down": ("pool", "connection", "api", "performance"),
    "api_down": ("api", "performance"),
    "publication_drop": ("realtime",),
}


def wait_serving(sb: Sandbox, timeout: float = 20) -> None:
    """Wait until the app answers /api/health with 200 again (after a fault is removed)."""
    import httpx

    if not procs.port_open(sb.state.app_port):
        return
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            r = httpx.get(f"http://{HOST}:{sb.state.app_port}/api/health", timeout=6)
            if r.status_code == 200:
                return
            last = f"HTTP {r.status_code}"
        except httpx.HTTPError as e:
            last = type(e).__name__
        time.sleep(0.2)
    raise WestepError(f"the app did not answer /api/health within {timeout:.0f} s ({last})")


def wait_pool_drained(
    sb: Sandbox, *, servers_idle: bool = False, timeout: float = 15, target: int = 1
) -> None:
    """Wait until no client is queued in pgbouncer (and, with ``servers_idle``, no server
    of the app's database is busy). Clients that gave up while the database was
    unavailable stay queued until pgbouncer next serves or times them out
    (query_wait_timeout, 10 s here): 'off' means the sandbox is as it was, queue included."""
    if not procs.port_open(sb.state.bouncer_port):
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with _admin(sb) as conn:
            pools = admin_show(conn, "pools")
        busy = [p for p in pools if p["cl_waiting"]] + [
            p
            for p in pools
            if servers_idle and p["database"] == target_db(target) and p["sv_active"]
        ]
        if not busy:
            return
        time.sleep(0.1)
    raise WestepError(
        f"pgbouncer still busy or queueing {timeout:.0f} s after the fault was removed"
    )


def guard(sb: Sandbox, env: dict[str, str] | None = None) -> None:
    """Refuse when the environment points westep-ops at something other than this sandbox."""
    env = dict(os.environ) if env is None else env
    s = sb.state
    ours = {
        (HOST, s.target_port),
        (HOST, s.bouncer_port),
        ("localhost", s.target_port),
        ("localhost", s.bouncer_port),
    }
    for name in ("DATABASE_URL", "DIRECT_URL", "WESTEP_OPS_REPAIR_URL"):
        raw = env.get(name)
        if not raw:
            continue
        try:
            parts = urlsplit(raw)
            where = (parts.hostname or "", parts.port or 5432)
        except ValueError:
            where = ("?", 0)
        if where not in ours:
            raise WestepError(
                f"refusing to inject a fault: {name} points at {where[0]}:{where[1]}, "
                f"not at this sandbox (127.0.0.1:{s.target_port}/{s.bouncer_port})"
            )


def inject(sb: Sandbox, name: str, on: bool, seconds: float = 300, target: int = 1) -> str:
    """Turn fault ``name`` on or off in sandbox target ``target`` (1: today's sandbox).
    Faults in :data:`CLUSTER_WIDE` stop a process every target shares: they refuse
    another target, and on target 1 they hit every target."""
    fault = FAULTS.get(name)
    if fault is None:
        raise WestepError(f"unknown fault {name!r}; known: {', '.join(FAULTS)}")
    db = sb.state.check_target(target)
    if target != 1 and name in CLUSTER_WIDE:
        raise WestepError(
            f"fault {name} stops a process every sandbox target shares, so it cannot break "
            f"target {target} alone: run it without --target (it then hits every target)"
        )
    guard(sb)
    d = _faults_dir(sb, target)
    marker = d / f"{name}.on"
    d.mkdir(parents=True, exist_ok=True)
    try:
        msg = fault.on(sb, target, seconds) if on else fault.off(sb, target)
    except psycopg.Error as e:
        raise WestepError(
            f"fault {name} {'on' if on else 'off'} failed: {describe_error(e)}"
        ) from None
    if on:
        marker.write_text(f"{time.time()}\n")
    else:
        marker.unlink(missing_ok=True)
        wait_serving(sb)
        wait_pool_drained(sb)
    return msg if target == 1 else f"target {target} ({db}): {msg}"


def active(sb: Sandbox, target: int = 1) -> list[str]:
    """The faults that are on in ``target`` (1: today's sandbox)."""
    d = _faults_dir(sb, target)
    return sorted(p.stem for p in d.glob("*.on")) if d.exists() else []


def active_by_target(sb: Sandbox) -> dict[int, list[str]]:
    """Every target of the sandbox and the faults on in it."""
    return {t: active(sb, t) for t in range(1, sb.state.targets + 1)}
