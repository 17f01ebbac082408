"""Process control for the sandbox: run as an unprivileged user, pid files, clean stops.

PostgreSQL and pgbouncer refuse to run as root, so when we are root their processes run
as the ``postgres`` system user (or ``WESTEP_OPS_SANDBOX_USER``). We only ever stop a
process recorded in one of our pid files, and only after checking that its command line
still points into our sandbox directory (a recycled pid is left alone).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TypedDict

from westep_ops.errors import WestepError

PG_BIN_CANDIDATES = ("/usr/lib/postgresql/15/bin",)
USER_ENV = "WESTEP_OPS_SANDBOX_USER"


def pg_bin(name: str) -> str:
    for d in (os.environ.get("WESTEP_OPS_PG_BIN"), *PG_BIN_CANDIDATES):
        if d and (Path(d) / name).exists():
            return str(Path(d) / name)
    found = shutil.which(name)
    if found:
        return found
    raise WestepError(
        f"PostgreSQL 15 binary {name!r} not found: install postgresql-15 "
        "(apt-get install postgresql-15) or set WESTEP_OPS_PG_BIN"
    )


def pgbouncer_bin() -> str:
    found = shutil.which("pgbouncer") or (
        "/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None
    )
    if not found:
        raise WestepError("pgbouncer not found: run 'sudo apt-get install -y pgbouncer'")
    return found


class SwitchUser(TypedDict, total=False):
    """The ``subprocess`` arguments that run a child as another user (empty: as ourselves)."""

    user: int
    group: int
    extra_groups: list[int]
    umask: int


class RunAs:
    """Who the database processes run as: ourselves, or a system user when we are root."""

    def __init__(self) -> None:
        self.uid = os.geteuid()
        self.gid = os.getegid()
        self.name = pwd.getpwuid(self.uid).pw_name
        self.switch = False
        if self.uid == 0:
            name = os.environ.get(USER_ENV, "postgres")
            try:
                entry = pwd.getpwnam(name)
            except KeyError:
                raise WestepError(
                    f"running as root, and user {name!r} for the database processes does not "
                    f"exist: create it (useradd --system {name}) or set {USER_ENV}"
                ) from None
            self.uid, self.gid, self.name, self.switch = entry.pw_uid, entry.pw_gid, name, True

    def kwargs(self) -> SwitchUser:
        if not self.switch:
            return {}
        return {"user": self.uid, "group": self.gid, "extra_groups": [], "umask": 0o077}

    def own(self, *paths: Path) -> None:
        if self.switch:
            for p in paths:
                os.chown(p, self.uid, self.gid)

    def run(self, cmd: Sequence[str], *, cwd: Path, timeout: float = 120) -> str:
        """Run a command as the database user; raise WestepError with its output on failure."""
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LC_ALL": "C.UTF-8",
            "LANG": "C.UTF-8",
        }
        try:
            proc = subprocess.run(
                list(cmd),
                cwd=cwd,
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout,
                **self.kwargs(),
            )
        except subprocess.TimeoutExpired:
            raise WestepError(
                f"{Path(cmd[0]).name} did not finish within {timeout:.0f} s"
            ) from None
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise WestepError(f"{Path(cmd[0]).name} failed: {' | '.join(tail)}")
        return proc.stdout


def read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None


def cmdline(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def alive(pid: int | None, marker: str | None = None) -> bool:
    """Is ``pid`` running (not a zombie), and does its command line mention ``marker``?"""
    if not pid:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if stat.rsplit(")", 1)[-1].split()[0] == "Z":
        return False
    return marker is None or marker in cmdline(pid)


def our_pid(pidfile: Path, marker: str) -> int | None:
    """The pid in ``pidfile`` if that process is alive and is ours, else None."""
    pid = read_pid(pidfile)
    return pid if alive(pid, marker) else None


def stop_pid(pid: int, marker: str, *, sig: int = signal.SIGTERM, wait: float = 10) -> bool:
    """Signal a process we started; escalate to SIGKILL after ``wait`` seconds."""
    if not alive(pid, marker):
        return False
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    time.sleep(0.1)
    return True


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.3) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_port(port: int, timeout: float, *, proc_pid: int | None = None, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(port):
            return
        if proc_pid is not None and not alive(proc_pid):
            raise WestepError(f"{what or 'process'} exited during start-up; see its log")
        time.sleep(0.05)
    raise WestepError(f"{what or 'service'} did not open port {port} within {timeout:.0f} s")


def spawn_detached(
    cmd: Sequence[str], *, log: Path, env: dict[str, str], cwd: Path, run_as: RunAs | None = None
) -> int:
    """Start a long-lived process in its own session (survives our exit); return its pid."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            list(cmd),
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **(run_as.kwargs() if run_as else SwitchUser()),
        )
    return proc.pid
