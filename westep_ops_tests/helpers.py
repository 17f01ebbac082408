"""Helpers every test may use: the checkout's root, the real CLI in a subprocess, configs.

Nothing here starts a sandbox or opens a database connection; the session sandbox and the
helpers that need it are in ``integration/conftest.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "westep_ops.cli"]
# The health asset's checks, one per category H1-H7 (a snapshot: changing it is deliberate).
HEALTH_CHECKS = [
    "h1_connection",
    "h2_pool",
    "h3_tables",
    "h4_integrity",
    "h5_realtime",
    "h6_auth",
    "h7_api",
]


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run the real ``westep-ops`` command in a subprocess (exit codes, stdout, stderr)."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, env=full_env, cwd=ROOT, timeout=timeout
    )


def write_config(path: Path, **overrides: object) -> Path:
    """The shipped sandbox config with dotted-key overrides, e.g. repairs__stuckQuerySeconds=1."""
    data = json.loads((ROOT / "westep-ops.json").read_text())
    for dotted, value in overrides.items():
        node = data
        *parents, leaf = dotted.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    path.write_text(json.dumps(data))
    return path


def wait_for(predicate: Any, timeout: float, what: str, every: float = 0.5) -> Any:
    """``predicate()``'s first truthy answer within ``timeout`` seconds, polled every
    ``every``; an AssertionError naming ``what`` when none came."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = predicate()
        if got:
            return got
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
