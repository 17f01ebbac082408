"""``westep-ops ui``: the Dagster UI (webserver + daemon) on this project, and one
monitoring worker beside it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import click

from westep_ops.cli.common import _env, _separate_store
from westep_ops.errors import WestepError

# `dagster dev` warns that ./dagster.yaml "will not be used" whenever DAGSTER_HOME is
# elsewhere, though `ui` copies it there: that one message is dropped, nothing else.
_DAGSTER_DEV = """
import logging, runpy, sys
class CopiedConfig(logging.Filter):
    def filter(self, record):
        return "will not be used to configure Dagster" not in record.getMessage()
logging.getLogger("dagster").addFilter(CopiedConfig())
sys.argv = ["dagster", *sys.argv[1:]]
runpy.run_module("dagster", run_name="__main__")
"""


@click.command("ui")
@click.option(
    "--port", type=click.IntRange(1, 65535), default=3000, show_default=True, help="Webserver port."
)
@click.option(
    "--worker/--no-worker",
    default=True,
    show_default=True,
    help="Start one monitoring worker (westep-ops monitor --repairs dagster) beside Dagster.",
)
def ui(port: int, worker: bool) -> None:
    """Open the Dagster UI (webserver + daemon) on this project, storage in the ops database,
    with one monitoring worker beside it.

    Needs WESTEP_OPS_STORAGE_URL; derives the psycopg2 URL Dagster's storage needs.
    Starts ``dagster dev`` (Dagster 1.13 prints that ``dg dev`` supersedes it; ``dg``
    is the separate dagster-dg-cli package, which runs ``dagster dev`` underneath) and,
    unless ``--no-worker``, one ``westep-ops monitor --repairs dagster`` child: the worker
    probes the fleet's targets (leases shared with any other worker on the same ops
    store) and queues repairs, which Dagster's monitoring sensor reads and launches. The
    worker stops with Dagster (Ctrl-C or a SIGTERM to this process stops both, and
    Dagster's webserver and daemon with them). With workers elsewhere (a Deployment,
    a process supervisor), ``--no-worker`` starts Dagster alone.
    """
    env = _env()
    storage = env.require("storage_url")
    _separate_store(env)
    child = dict(os.environ)
    child.setdefault(
        "WESTEP_OPS_DAGSTER_STORAGE_URL",
        storage.replace("postgresql://", "postgresql+psycopg2://", 1).replace(
            "postgres://", "postgresql+psycopg2://", 1
        ),
    )
    if not (Path("dagster.yaml").exists() and Path("workspace.yaml").exists()):
        raise WestepError(
            "run 'westep-ops ui' from the project directory (it needs dagster.yaml and workspace.yaml)"
        )
    home = Path(child.get("DAGSTER_HOME") or ".westep/dagster_home").resolve()
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(Path("dagster.yaml").read_text())
    child["DAGSTER_HOME"] = str(home)
    cmd = [
        sys.executable,
        "-c",
        _DAGSTER_DEV,
        "dev",
        "-w",
        "workspace.yaml",
        "-p",
        str(port),
        "-h",
        "127.0.0.1",
    ]
    monitor = None
    if worker:
        monitor = subprocess.Popen(
            [sys.executable, "-m", "westep_ops.cli", "monitor", "--repairs", "dagster"], env=child
        )
        click.echo(
            f"monitoring worker started (pid {monitor.pid}): westep-ops monitor --repairs dagster"
        )
    click.echo(f"Dagster UI on http://127.0.0.1:{port} (Ctrl-C to stop)")
    # Its own process group, so a signal to `westep-ops ui` alone (a supervisor's SIGTERM)
    # is forwarded to the webserver and daemon too, not only to `dagster dev`.
    dagster = subprocess.Popen(cmd, env=child, start_new_session=True)
    stop = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        while dagster.poll() is None and not stop.is_set():
            stop.wait(0.5)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        stop_dagster(dagster)
        if monitor is not None:
            stop_worker(monitor)
    sys.exit(dagster.returncode or 0)


def stop_dagster(dagster: subprocess.Popen, wait_s: float = 20.0) -> None:
    """Stop ``dagster dev`` and its children (webserver, daemon, code server): SIGINT to
    its process group (its own clean shutdown), SIGKILL to the group after ``wait_s``."""
    if dagster.poll() is not None:
        return
    try:
        os.killpg(dagster.pid, signal.SIGINT)
        dagster.wait(timeout=wait_s)
    except subprocess.TimeoutExpired:
        dagster.kill()
        dagster.wait()
    except ProcessLookupError:
        pass
    try:  # whatever of the group outlived it (an orphaned webserver or daemon)
        os.killpg(dagster.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def stop_worker(monitor: subprocess.Popen, wait_s: float = 10.0) -> None:
    """Stop the worker child: SIGTERM (it finishes its tick and releases its leases), then
    SIGKILL after ``wait_s`` (its leases then expire and other workers take them)."""
    if monitor.poll() is not None:
        return
    monitor.terminate()
    try:
        monitor.wait(timeout=wait_s)
    except subprocess.TimeoutExpired:
        monitor.kill()
        monitor.wait()
