"""``westep-ops sandbox up|down|status``: start and stop the local stack idempotently.

One module over 400 lines on purpose: :class:`Sandbox` owns the local stack's processes
(the target and ops PostgreSQL clusters, pgbouncer, the app and Supabase stand-ins) and
their files and ports; up, down and status share all of it.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import psycopg
from psycopg import sql

from westep_ops.errors import WestepError
from westep_ops.sandbox import procs
from westep_ops.sandbox.scram import scram_verifier
from westep_ops.sandbox.state import (
    HOST,
    MAX_TARGETS,
    OPS_DB,
    POOL_SIZE,
    TARGET_LOGINS,
    Layout,
    SandboxState,
    new_anon_key,
    new_password,
    target_db,
)

# The same statements as in schema.sql, for sandboxes made before the login existed.
ROLE_PROBE_SQL = """
CREATE ROLE westep_role_probe LOGIN NOINHERIT CONNECTION LIMIT 3;
GRANT anon, authenticated, service_role TO westep_role_probe;
ALTER ROLE westep_role_probe SET default_transaction_read_only = on;
ALTER ROLE westep_role_probe SET statement_timeout = '5s';
"""
BOUNCER_USERS = ("authenticator", "supabase_auth_admin", "westep_monitor", "postgres")


# A fleet's connection budget. A monitor keeps two server connections per target: its
# sweep's direct one, and the server side of its pooled one, which pgbouncer keeps idle
# in the target's pool between sweeps (server_idle_timeout, 600 s, outlasts the 60 s
# cadence); on pgbouncer's client side, the pooled connection during a sweep and the
# admin console kept open. A worker taking over a target may briefly overlap the one
# that released it, hence the slack. One target keeps the sandbox's historic figures
# (the monitor's CONNECTION LIMIT 6, max_connections 40, max_client_conn 200).
def monitor_connection_limit(targets: int) -> int:
    """The ``westep_monitor`` login's CONNECTION LIMIT for ``targets`` targets."""
    return 2 * targets + 4 + targets // 5


def target_max_connections(targets: int) -> int:
    """The target cluster's max_connections. One target: 40, the sandbox's historic
    figure. A fleet: the monitor's two per target and ~35 others (the app's and the
    fault holders' pools, repairs, superuser sessions) at 65% of it, so that the monitor
    itself never trips H2's ``connectionUsage`` warning (80% by default), with room for
    a takeover's overlap (measured at 200 targets: 433 in use, 91% of 478, warned on
    every target, hence this margin)."""
    if targets <= 1:
        return 40
    return -(-(2 * targets + 35) * 100 // 65) + 3  # ceil, plus the superuser reserve


def bouncer_max_clients(targets: int) -> int:
    """pgbouncer's max_client_conn: per target a pooled client and an admin console."""
    return max(200, 3 * targets + 100)


# schema.sql's line that starts the part run again in every extra target database.
PER_DATABASE_MARK = "-- westep-ops: per-database part."


@dataclass
class Component:
    name: str
    running: bool
    pid: int | None
    port: int
    detail: str = ""


class Sandbox:
    """One sandbox directory: its state, its processes, its credentials."""

    def __init__(self, root: Path) -> None:
        self.layout = Layout(root)
        self._state = self.layout.load()

    # -- state -------------------------------------------------------------------------
    @property
    def exists(self) -> bool:
        return self._state is not None

    @property
    def state(self) -> SandboxState:
        if self._state is None:
            raise WestepError(
                f"no sandbox in {self.layout.root}: run 'westep-ops sandbox up' first"
            )
        return self._state

    def superuser_conn(
        self, *, autocommit: bool = True, timeout: int = 5, target: int = 1
    ) -> psycopg.Connection:
        """Direct superuser connection to a target database: set-up and fault injection only."""
        return psycopg.connect(
            self.state.url("supabase_admin", db=target_db(target)),
            autocommit=autocommit,
            connect_timeout=timeout,
            application_name="westep-sandbox",
        )

    # -- up ----------------------------------------------------------------------------
    def up(self, base_port: int, targets: int | None = None) -> list[Component]:
        """Create (first time) and start the sandbox; with ``targets``, make sure that many
        target databases exist (None: keep what the sandbox has; a new sandbox has 1)."""
        if targets is not None and not 1 <= targets <= MAX_TARGETS:
            raise WestepError(f"--targets must be from 1 to {MAX_TARGETS} (got {targets})")
        if targets is not None and self._state is not None and targets < self._state.targets:
            raise WestepError(
                f"this sandbox already has {self._state.targets} targets; --targets cannot "
                "remove any (run 'westep-ops sandbox down' and remove its directory to start over)"
            )
        run_as = procs.RunAs()
        root = self.layout.root
        root.mkdir(parents=True, exist_ok=True)
        if self._state is None:
            self._state = SandboxState.new(base_port)
            self.layout.save(self._state)
        elif not self._state.anon_key:  # made before the stand-in knew an anon key
            self._state.anon_key = new_anon_key()
            self.layout.save(self._state)
        missing = [r for r in TARGET_LOGINS if r not in self._state.passwords]
        if missing:  # made before these logins existed
            self._state.passwords.update({r: new_password() for r in missing})
            self.layout.save(self._state)
        self._state.register_secrets()
        self._capacity = targets or self._state.targets  # what a new cluster is made for
        self._start_cluster("target", run_as)
        self._migrate_roles()
        self._ensure_targets(targets or self._state.targets)
        self._ensure_capacity(run_as)
        self._start_cluster("ops", run_as)
        self._start_bouncer(run_as)
        self.start_app()
        return self.status()

    def _cluster_paths(self, which: str) -> tuple[Path, Path, int]:
        base = self.layout.target if which == "target" else self.layout.ops
        port = self.state.target_port if which == "target" else self.state.ops_port
        return base, base / "data", port

    def _start_cluster(self, which: str, run_as: procs.RunAs) -> None:
        base, data, port = self._cluster_paths(which)
        state = self.state
        initialized = state.target_initialized if which == "target" else state.ops_initialized
        if procs.our_pid(data / "postmaster.pid", str(data)):
            return
        if not initialized:
            self._initdb(which, run_as)
        else:
            self._check_port_free(port, f"{which} PostgreSQL")
            self._pg_ctl_start(base, data, run_as)
        if not initialized:
            self._bootstrap(which)
            if which == "target":
                state.target_initialized = True
            else:
                state.ops_initialized = True
            self.layout.save(state)

    def _check_port_free(self, port: int, what: str) -> None:
        if procs.port_open(port):
            raise WestepError(
                f"port {port} for the {what} is already in use by another process: "
                "choose other ports with --base-port (or WESTEP_OPS_SANDBOX_BASE_PORT)"
            )

    def _initdb(self, which: str, run_as: procs.RunAs) -> None:
        base, data, port = self._cluster_paths(which)
        self._check_port_free(port, f"{which} PostgreSQL")
        if base.exists():
            shutil.rmtree(base)  # a half-made cluster from an interrupted up
        base.mkdir(parents=True)
        os.chmod(base, 0o700)
        run_as.own(base)
        superuser = "supabase_admin" if which == "target" else "westep_ops"
        password = (
            self.state.passwords["supabase_admin"] if which == "target" else self.state.ops_password
        )
        pwfile = base / "pwfile"
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(password + "\n")
        run_as.own(pwfile)
        try:
            run_as.run(
                [
                    procs.pg_bin("initdb"),
                    "-D",
                    str(data),
                    "-U",
                    superuser,
                    f"--pwfile={pwfile}",
                    "--auth=scram-sha-256",
                    "--encoding=UTF8",
                    "--locale=C.UTF-8",
                    "--no-sync",
                ],
                cwd=base,
            )
        finally:
            pwfile.unlink(missing_ok=True)
        conf = [
            f"listen_addresses = '{HOST}'",
            f"port = {port}",
            "unix_socket_directories = ''",
            "password_encryption = 'scram-sha-256'",
            "shared_buffers = '32MB'",
            # A throwaway sandbox: durability traded for start-up and test speed.
            "fsync = off",
            "synchronous_commit = off",
            "full_page_writes = off",
            "log_min_messages = warning",
            "log_line_prefix = '%m [%p] %q%u@%d '",
            # Lets the server notice clients that vanished mid-query (fault clean-up).
            "client_connection_check_interval = '1s'",
        ]
        if which == "target":
            conf += [
                f"max_connections = {target_max_connections(getattr(self, '_capacity', 1))}",
                "wal_level = logical",
                "max_wal_senders = 5",
                "max_replication_slots = 5",
                "shared_preload_libraries = 'pg_stat_statements'",
                "track_io_timing = on",
            ]
        else:
            conf += ["max_connections = 60"]
        with open(data / "postgresql.conf", "a") as f:
            f.write("\n# westep-ops sandbox\n" + "\n".join(conf) + "\n")
        (data / "pg_hba.conf").write_text(
            "# westep-ops sandbox: password logins over loopback only\n"
            "host all all 127.0.0.1/32 scram-sha-256\n"
        )
        self._pg_ctl_start(base, data, run_as)

    def _pg_ctl_start(self, base: Path, data: Path, run_as: procs.RunAs) -> None:
        run_as.run(
            [
                procs.pg_bin("pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(base / "postgres.log"),
                "-w",
                "-t",
                "60",
                "start",
            ],
            cwd=base,
            timeout=90,
        )

    def _bootstrap(self, which: str) -> None:
        state = self.state
        if which == "ops":
            with psycopg.connect(
                state.url("westep_ops", state.ops_port, "postgres"),
                autocommit=True,
                connect_timeout=10,
            ) as conn:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(OPS_DB)))
            return
        schema = resources.files("westep_ops.sandbox").joinpath("schema.sql").read_text()
        with self.superuser_conn(autocommit=False, timeout=10) as conn:
            conn.execute(schema)  # our own static file: no parameters, no user input
            for role in TARGET_LOGINS:
                conn.execute(
                    sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                        sql.Identifier(role), sql.Literal(self._verifier(role))
                    )
                )
            conn.commit()

    def _migrate_roles(self) -> None:
        """Bring a sandbox made by an older version to today's roles: the monitor loses its
        old switch role (membership in the API roles let it write through SET ROLE), and
        the optional role-probe login exists."""
        with self.superuser_conn(autocommit=False, timeout=10) as conn:
            conn.execute("DROP ROLE IF EXISTS westep_monitor_switch")  # and its memberships
            if not conn.execute(
                "SELECT 1 FROM pg_roles WHERE rolname = 'westep_role_probe'"
            ).fetchone():
                conn.execute(ROLE_PROBE_SQL)
                conn.execute(
                    sql.SQL("ALTER ROLE westep_role_probe PASSWORD {}").format(
                        sql.Literal(self._verifier("westep_role_probe"))
                    )
                )
            conn.commit()

    def _per_database_sql(self) -> str:
        schema = resources.files("westep_ops.sandbox").joinpath("schema.sql").read_text()
        head, mark, tail = schema.partition(PER_DATABASE_MARK)
        if not mark:
            raise WestepError("schema.sql has lost its per-database mark")  # our own file
        return mark + tail

    def _ensure_targets(self, n: int) -> None:
        """Targets 2..n: database ``westep_tT`` with schema.sql's per-database part (schema,
        grants, publication, seed rows); the roles are the cluster's, shared. A database
        beyond the recorded count is a half-made one from an interrupted up: made again."""
        state = self.state
        for t in range(state.targets + 1, n + 1):
            db = sql.Identifier(target_db(t))
            with self.superuser_conn(timeout=10) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(db))
                conn.execute(sql.SQL("CREATE DATABASE {}").format(db))
                conn.execute(sql.SQL("GRANT CREATE ON DATABASE {} TO postgres").format(db))
            with self.superuser_conn(autocommit=False, timeout=10, target=t) as conn:
                conn.execute(self._per_database_sql())  # our own static file
                conn.commit()
            state.targets = t
            self.layout.save(state)
        self._reload_bouncer()

    def _ensure_capacity(self, run_as: procs.RunAs) -> None:
        """Fit the connection limits to the targets: the monitor login's CONNECTION LIMIT,
        and max_connections (raised with ALTER SYSTEM and a restart of the target cluster
        when a grown fleet needs more; never lowered)."""
        n = self.state.targets
        with self.superuser_conn(timeout=10) as conn:
            conn.execute(
                sql.SQL("ALTER ROLE westep_monitor CONNECTION LIMIT {}").format(
                    sql.Literal(monitor_connection_limit(n))
                )
            )
            row = conn.execute("SHOW max_connections").fetchone()
            have = int(row[0]) if row else 0
            want = target_max_connections(n)
            if have >= want:
                return
            conn.execute(sql.SQL("ALTER SYSTEM SET max_connections = {}").format(sql.Literal(want)))
        base, data, _port = self._cluster_paths("target")
        run_as.run(
            [procs.pg_bin("pg_ctl"), "-D", str(data), "-l", str(base / "postgres.log")]
            + ["-m", "fast", "-w", "-t", "60", "restart"],
            cwd=base,
            timeout=90,
        )

    def _verifier(self, role: str) -> str:
        # One verifier per role, shared by PostgreSQL and pgbouncer's userlist, so that
        # pgbouncer can pass SCRAM through to the server without a plaintext password.
        cache = self.layout.root / ".verifiers"
        if not hasattr(self, "_verifiers"):
            self._verifiers: dict[str, str] = {}
            if cache.exists():
                for line in cache.read_text().splitlines():
                    k, _, v = line.partition(" ")
                    self._verifiers[k] = v
        if role not in self._verifiers:
            self._verifiers[role] = scram_verifier(self.state.passwords[role])
            fd = os.open(cache, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            with os.fdopen(fd, "a") as f:
                f.write(f"{role} {self._verifiers[role]}\n")
        return self._verifiers[role]

    def bouncer_pidfile(self) -> Path:
        return self.layout.bouncer / "pgbouncer.pid"

    def start_bouncer(self) -> None:
        self._start_bouncer(procs.RunAs())

    def _start_bouncer(self, run_as: procs.RunAs) -> None:
        d = self.layout.bouncer
        if procs.our_pid(self.bouncer_pidfile(), str(d)):
            return
        state = self.state
        self._check_port_free(state.bouncer_port, "pgbouncer")
        d.mkdir(parents=True, exist_ok=True)
        os.chmod(d, 0o700)
        run_as.own(d)
        users = [f'"{u}" "{self._verifier(u)}"' for u in BOUNCER_USERS]
        users += [
            f'"{u}" "{scram_verifier(state.passwords[u])}"'
            for u in ("pgbouncer_admin", "pgbouncer_stats")
        ]
        userlist = d / "userlist.txt"
        fd = os.open(userlist, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("\n".join(users) + "\n")
        run_as.own(userlist)
        self._write_bouncer_ini(run_as)
        ini = d / "pgbouncer.ini"
        self.bouncer_pidfile().unlink(missing_ok=True)
        run_as.run([procs.pgbouncer_bin(), "-d", str(ini)], cwd=d, timeout=15)
        deadline = time.monotonic() + 10
        while procs.read_pid(self.bouncer_pidfile()) is None and time.monotonic() < deadline:
            time.sleep(0.02)
        procs.wait_port(
            state.bouncer_port,
            10,
            proc_pid=procs.read_pid(self.bouncer_pidfile()),
            what="pgbouncer",
        )

    def _write_bouncer_ini(self, run_as: procs.RunAs) -> bool:
        """Write pgbouncer.ini: one [databases] entry, hence one pool, per target.
        Returns whether it changed."""
        d = self.layout.bouncer
        state = self.state
        userlist = d / "userlist.txt"
        databases = "\n".join(
            f"{target_db(t)} = host={HOST} port={state.target_port} dbname={target_db(t)}"
            for t in range(1, state.targets + 1)
        )
        ini = d / "pgbouncer.ini"
        text = f"""; westep-ops sandbox pgbouncer: transaction pooling, small pool, admin console
[databases]
{databases}

[pgbouncer]
listen_addr = {HOST}
listen_port = {state.bouncer_port}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = {userlist}
admin_users = pgbouncer_admin
stats_users = pgbouncer_stats
pool_mode = transaction
default_pool_size = {POOL_SIZE}
reserve_pool_size = 0
max_client_conn = {bouncer_max_clients(state.targets)}
; apps see an error rather than hanging forever when the pool is exhausted
query_wait_timeout = 10
server_connect_timeout = 3
server_login_retry = 1
ignore_startup_parameters = extra_float_digits,options
logfile = {d / "pgbouncer.log"}
pidfile = {self.bouncer_pidfile()}
"""
        changed = not ini.exists() or ini.read_text() != text
        ini.write_text(text)
        run_as.own(ini)
        return changed

    def _reload_bouncer(self) -> None:
        """A running pgbouncer picks up targets added since it started (RELOAD)."""
        if not procs.our_pid(self.bouncer_pidfile(), str(self.layout.bouncer)):
            return  # its start writes the whole configuration
        if not self._write_bouncer_ini(procs.RunAs()):
            return
        from westep_ops.db import admin_command

        s = self.state
        with psycopg.connect(
            s.url("pgbouncer_admin", s.bouncer_port, "pgbouncer"),
            autocommit=True,
            connect_timeout=5,
            prepare_threshold=None,
        ) as conn:
            admin_command(conn, "RELOAD")

    SITES = ("app", "supabase")
    SITE_MODULE = "westep_ops.sandbox.app"

    def site_marker(self) -> str:
        """What a stand-in of *this* sandbox has in its command line (not another's)."""
        return f"--state-dir {self.layout.root} "

    def site_pidfile(self, site: str) -> Path:
        return self.layout.app / f"{site}.pid"

    def start_app(self) -> None:
        for site in self.SITES:
            self.start_site(site)

    def start_site(self, site: str) -> None:
        d = self.layout.app
        if procs.our_pid(self.site_pidfile(site), self.site_marker()):
            return
        state = self.state
        port = state.app_port if site == "app" else state.supabase_port
        self._check_port_free(port, f"{site} stand-in")
        d.mkdir(parents=True, exist_ok=True)
        env = {
            "PATH": os.environ.get("PATH", ""),
            "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
            "APP_SERVICE_ROLE_KEY": state.service_role_key,
            "APP_ANON_KEY": state.anon_key,
        }
        if site == "app":
            # The app reaches the database through pgbouncer (Prisma's DATABASE_URL).
            env["APP_DATABASE_URL"] = state.url("authenticator", state.bouncer_port)
        else:
            # GoTrue and PostgREST hold direct connections, as on Supabase.
            env["APP_DATABASE_URL"] = state.url("authenticator")
            env["APP_AUTH_DATABASE_URL"] = state.url("supabase_auth_admin")
        pid = procs.spawn_detached(
            [
                sys.executable,
                "-m",
                self.SITE_MODULE,
                "--site",
                site,
                "--port",
                str(port),
                "--state-dir",
                str(self.layout.root),
            ],
            log=d / f"{site}.log",
            env=env,
            cwd=d,
        )
        self.site_pidfile(site).write_text(f"{pid}\n")
        procs.wait_port(port, 15, proc_pid=pid, what=f"{site} stand-in")

    def stop_site(self, site: str) -> bool:
        pid = procs.our_pid(self.site_pidfile(site), self.site_marker())
        self.site_pidfile(site).unlink(missing_ok=True)
        if not pid:
            return False
        return procs.stop_pid(pid, self.site_marker())

    # -- down --------------------------------------------------------------------------
    def down(self) -> list[str]:
        """Stop every process this sandbox started (pid files only). Returns what stopped."""
        if self._state is None:
            return []
        from westep_ops.sandbox import faults  # avoid a cycle: faults uses Sandbox

        stopped = faults.stop_all_holders(self)
        for site in self.SITES:
            if self.stop_site(site):
                stopped.append(f"{site} stand-in")
        if self.stop_bouncer():
            stopped.append("pgbouncer")
        run_as = procs.RunAs()
        for which in ("target", "ops"):
            if self.stop_cluster(which, run_as):
                stopped.append(f"{which} postgres")
        return stopped

    def stop_bouncer(self) -> bool:
        marker = str(self.layout.bouncer)
        pid = procs.our_pid(self.bouncer_pidfile(), marker)
        if not pid:
            return False
        # SIGINT: immediate shutdown (SIGTERM would wait for clients to leave).
        return procs.stop_pid(pid, marker, sig=signal.SIGINT)

    def stop_cluster(self, which: str, run_as: procs.RunAs | None = None) -> bool:
        base, data, _port = self._cluster_paths(which)
        if not procs.our_pid(data / "postmaster.pid", str(data)):
            return False
        (run_as or procs.RunAs()).run(
            [procs.pg_bin("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "-t", "30", "stop"],
            cwd=base,
            timeout=45,
        )
        return True

    def start_cluster(self, which: str) -> None:
        self._start_cluster(which, procs.RunAs())

    # -- status ------------------------------------------------------------------------
    def status(self) -> list[Component]:
        if self._state is None:
            return []
        s = self.state
        out = []
        for which, port in (("target", s.target_port), ("ops", s.ops_port)):
            _base, data, _ = self._cluster_paths(which)
            pid = procs.our_pid(data / "postmaster.pid", str(data))
            label = "target postgres" if which == "target" else "ops postgres"
            out.append(Component(label, bool(pid) and procs.port_open(port), pid, port))
        pid = procs.our_pid(self.bouncer_pidfile(), str(self.layout.bouncer))
        out.append(
            Component(
                "pgbouncer", bool(pid) and procs.port_open(s.bouncer_port), pid, s.bouncer_port
            )
        )
        for site, port in (("app", s.app_port), ("supabase", s.supabase_port)):
            pid = procs.our_pid(self.site_pidfile(site), self.site_marker())
            out.append(
                Component(f"{site} stand-in", bool(pid) and procs.port_open(port), pid, port)
            )
        return out
