"""Fleet workers on a five-target sandbox: leases divide the targets, each target is swept
exactly once per interval, a kill -9'd worker's targets are taken over within two
intervals with no gap or duplicate in the history, and a fault on one target is opened
and repaired on that target only (or, with ``--repairs dagster``, queued for Dagster for
that target only).

A sandbox of its own (five targets, ports base+20..base+24, directory under the
checkout's ``.westep/`` as the other extra sandboxes: as root, PostgreSQL runs as the
``postgres`` user, which cannot enter pytest's 0700 temporary directories), made and
stopped here; its own ops store, so the history holds only what these workers wrote.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from westep_ops.monitoring.leases import Timing, owner
from westep_ops.sandbox.manager import Sandbox
from westep_ops.sandbox.state import target_db
from westep_ops_tests.helpers import CLI, ROOT, run_cli, wait_for

FLEET_DIR = ROOT / ".westep" / "test-fleet-workers"
FLEET_PORT = int(os.environ.get("WESTEP_OPS_TEST_BASE_PORT", "25530")) + 20
TARGETS = 5
CHEAP_S = 6.0  # the cheap interval of the test config (the default is 60 s)
HEALTH_S = 60.0
SLACK_S = 2.0  # a tick starts up to 1 s early (Monitor.due) or a poll late
SHARED = ("WESTEP_OPS_STORAGE_URL",)


def fleet_config(sb: Sandbox, folder: Path, n: int, cheap_s: float, **alerting: Any) -> Path:
    """The shipped config with ``n`` targets ``t1``..``tn`` on sandbox ``sb``: each reads
    its connection strings from a secrets file of its own (``sandbox env --target T``)
    and watches its own pgbouncer pool (``databaseName``)."""
    folder.mkdir(parents=True, exist_ok=True)
    data = json.loads((ROOT / "westep-ops.json").read_text())
    data["monitoring"]["intervals"] = {
        "performance": int(cheap_s * 1000),
        "health": int(max(HEALTH_S, cheap_s) * 1000),
    }
    data["monitoring"].setdefault("alerting", {}).update(alerting)
    targets = []
    for t in range(1, n + 1):
        secrets = folder / f"t{t}.env"
        secrets.write_text("".join(f"{k}={v}\n" for k, v in sb.state.env(t).items()))
        secrets.chmod(0o600)
        targets.append(
            {
                "name": f"t{t}",
                "secretsFile": str(secrets),
                "tags": {"n": str(t)},
                "overrides": {"databaseName": target_db(t)},
            }
        )
    data["targets"] = targets
    path = folder / "fleet.json"
    path.write_text(json.dumps(data))
    return path


def worker_env(sb: Sandbox, scratch: Path) -> dict[str, str]:
    """The process environment of a worker: nothing of the session sandbox's (every
    target reads its own secrets file), the fleet's ops store, scratch state and logs."""
    from westep_ops.environment import VARIABLES

    env = {k: v for k, v in os.environ.items() if k not in VARIABLES}
    env["WESTEP_OPS_STORAGE_URL"] = sb.state.env(1)["WESTEP_OPS_STORAGE_URL"]
    for name in ("XDG_STATE_HOME", "WESTEP_OPS_LOG_DIR", "WESTEP_OPS_REPORTS_DIR"):
        env[name] = str(scratch / name)
    return env


@pytest.fixture(scope="module")
def fleet() -> Iterator[Sandbox]:
    Sandbox(FLEET_DIR).down()  # left running by an interrupted earlier run
    shutil.rmtree(FLEET_DIR, ignore_errors=True)
    try:
        up = run_cli(
            "sandbox",
            "up",
            "--dir",
            str(FLEET_DIR),
            "--base-port",
            str(FLEET_PORT),
            "--targets",
            str(TARGETS),
            timeout=240,
        )
        assert up.returncode == 0, up.stderr
        yield Sandbox(FLEET_DIR)
    finally:
        Sandbox(FLEET_DIR).down()
        shutil.rmtree(FLEET_DIR, ignore_errors=True)


def rows(sb: Sandbox, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(sb.state.env(1)["WESTEP_OPS_STORAGE_URL"], connect_timeout=5) as c:
        return c.execute(query, params).fetchall()


def clear(sb: Sandbox) -> None:
    with psycopg.connect(sb.state.env(1)["WESTEP_OPS_STORAGE_URL"], autocommit=True) as c:
        if c.execute("SELECT to_regclass('westep_ops.leases')").fetchone() != (None,):
            c.execute(
                "TRUNCATE westep_ops.samples, westep_ops.performance_samples,"
                " westep_ops.alerts, westep_ops.incidents, westep_ops.repair_attempts,"
                " westep_ops.repair_requests, westep_ops.leases, westep_ops.workers"
            )


def start(cfg: Path, env: dict[str, str], log: Path, *args: str) -> subprocess.Popen[str]:
    out = log.open("w")
    return subprocess.Popen(
        [*CLI, "--config", str(cfg), "monitor", *args],
        env=env,
        cwd=ROOT,
        stdout=out,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def grant_revoke(fleet: Sandbox, n: int, state: str) -> Any:
    """``sandbox fault grant_revoke on|off --target n`` on the fleet sandbox."""
    return run_cli(
        "sandbox",
        "fault",
        "grant_revoke",
        state,
        "--target",
        str(n),
        "--dir",
        str(FLEET_DIR),
        env=fleet.state.env(n),
    )


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def holders(sb: Sandbox) -> dict[str, str | None]:
    """Each target's worker while its lease is valid (before the schema exists: none)."""
    try:
        return dict(
            rows(
                sb,
                "SELECT target, CASE WHEN expires_at > clock_timestamp() THEN worker END"
                " FROM westep_ops.leases",
            )
        )
    except psycopg.errors.UndefinedTable:
        return {}


def sweeps(sb: Sandbox) -> dict[str, list[datetime]]:
    """Each target's scheduled sweeps (cheap or full), by their time, oldest first."""
    out: dict[str, list[datetime]] = {f"t{t}": [] for t in range(1, TARGETS + 1)}
    for target, ts in rows(
        sb,
        "SELECT DISTINCT target, ts FROM westep_ops.samples WHERE kind IN ('cheap', 'full')"
        " ORDER BY target, ts",
    ):
        out[target].append(ts)
    return out


def gaps(times: list[datetime]) -> list[float]:
    return [(b - a).total_seconds() for a, b in zip(times, times[1:], strict=False)]


def split_ids() -> tuple[str, str]:
    """Two worker ids that rendezvous hashing gives two or three of the five targets each
    (ids are free-form; a split of 5-0 would test nothing)."""
    names = [f"t{t}" for t in range(1, TARGETS + 1)]
    for k in range(100):
        a, b = f"fleet-a{k}", "fleet-b"
        mine = sum(owner(t, [a, b]) == a for t in names)
        if mine in (2, 3):
            return a, b
    raise AssertionError("no split found")  # pragma: no cover - 100 tries


def test_two_workers_share_five_targets_and_one_takes_over_after_kill_9(
    fleet: Sandbox, tmp_path: Path
) -> None:
    clear(fleet)
    cfg = fleet_config(fleet, tmp_path / "cfg", TARGETS, CHEAP_S)
    env = worker_env(fleet, tmp_path)
    ttl = Timing.for_interval(int(CHEAP_S * 1000))
    a_id, b_id = split_ids()
    a = start(cfg, env, tmp_path / "a.log", "--worker-id", a_id, "--no-recovery")
    b = start(cfg, env, tmp_path / "b.log", "--worker-id", b_id, "--no-recovery")
    try:
        # Both register; the leases settle on the rendezvous owners.
        want = {f"t{t}": owner(f"t{t}", [a_id, b_id]) for t in range(1, TARGETS + 1)}
        wait_for(lambda: holders(fleet) == want, 45, f"leases held as {want}")
        time.sleep(3 * CHEAP_S)  # three intervals of both workers
        os.killpg(a.pid, signal.SIGKILL)
        a.wait(10)
        killed = time.monotonic()
        everything = {t: b_id for t in want}
        wait_for(lambda: holders(fleet) == everything, 2 * CHEAP_S, "b holding every lease")
        takeover = time.monotonic() - killed
        time.sleep(2 * CHEAP_S)
    finally:
        stop(b)
        if a.poll() is None:
            os.killpg(a.pid, signal.SIGKILL)
    b_log = (tmp_path / "b.log").read_text()
    a_log = (tmp_path / "a.log").read_text()
    assert "Traceback" not in a_log + b_log, a_log + b_log
    # The takeover: within the TTL and a round (well under two intervals).
    assert takeover < ttl.ttl_s + 2 * ttl.renew_s + 2, takeover
    for t, owner_id in want.items():
        if owner_id == a_id:
            assert f"lease taken: {t} " in b_log, b_log
    # Each target swept once per interval: never twice within one (no duplicate, however
    # the lease moved), and never a gap of two intervals (none lost in the takeover).
    got = sweeps(fleet)
    for t, times in got.items():
        assert len(times) >= 6, (t, times)
        g = gaps(times)
        assert min(g) >= CHEAP_S - SLACK_S, (t, g)
        assert max(g) < 2 * CHEAP_S, (t, g)
    # One row per category per sweep: no sweep was written twice.
    dup = rows(
        fleet,
        "SELECT target, ts, category, count(*) FROM westep_ops.samples"
        " GROUP BY 1, 2, 3 HAVING count(*) > 1",
    )
    assert dup == []
    # A clean stop hands its leases back and leaves the live workers at once.
    assert rows(fleet, "SELECT count(*) FROM westep_ops.leases WHERE worker IS NOT NULL") == [(0,)]
    assert rows(fleet, "SELECT count(*) FROM westep_ops.workers") == [(1,)]  # a's (killed)


def test_a_fault_on_one_target_opens_and_is_repaired_on_that_target_only(
    fleet: Sandbox, tmp_path: Path
) -> None:
    clear(fleet)
    cfg = fleet_config(fleet, tmp_path / "cfg", TARGETS, CHEAP_S, confirmDelaySeconds=0.5)
    env = worker_env(fleet, tmp_path)
    proc = start(cfg, env, tmp_path / "w.log", "--worker-id", "solo")
    faulted = False
    try:
        every = {f"t{t}": "solo" for t in range(1, TARGETS + 1)}
        wait_for(lambda: holders(fleet) == every, 45, "solo holding every lease")
        wait_for(
            lambda: len(rows(fleet, "SELECT DISTINCT target FROM westep_ops.samples")) == 5,
            45,
            "a first sweep of every target",
        )
        res = grant_revoke(fleet, 3, "on")
        assert res.returncode == 0, res.stderr
        faulted = True
        wait_for(
            lambda: rows(
                fleet,
                "SELECT 1 FROM westep_ops.repair_attempts WHERE target = 't3'"
                " AND outcome = 'repaired'",
            ),
            60,
            "the repair of t3",
        )
        wait_for(
            lambda: rows(fleet, "SELECT 1 FROM westep_ops.incidents WHERE closed_at IS NOT NULL"),
            4 * CHEAP_S,
            "t3's incident closed",
        )
    finally:
        stop(proc)
        if faulted:
            grant_revoke(fleet, 3, "off")
    log = (tmp_path / "w.log").read_text()
    assert "Traceback" not in log, log
    incidents = rows(fleet, "SELECT target, category FROM westep_ops.incidents")
    assert incidents == [("t3", "tables")], incidents
    attempts = rows(fleet, "SELECT DISTINCT target, action FROM westep_ops.repair_attempts")
    assert attempts == [("t3", "fix_table_permissions")], attempts
    # The other targets' samples all passed the tables check throughout.
    bad = rows(
        fleet,
        "SELECT DISTINCT target FROM westep_ops.samples WHERE category = 'tables'"
        " AND status <> 'ok'",
    )
    assert bad == [("t3",)], bad
    # The worker's lines carry the target that alerted.
    assert any(line.strip().startswith("t3 ALERT") for line in log.splitlines()), log


def test_repairs_dagster_queues_the_repair_of_that_target_and_runs_none(
    fleet: Sandbox, tmp_path: Path
) -> None:
    clear(fleet)
    cfg = fleet_config(fleet, tmp_path / "cfg", TARGETS, CHEAP_S, confirmDelaySeconds=0.5)
    env = worker_env(fleet, tmp_path)
    proc = start(cfg, env, tmp_path / "w.log", "--worker-id", "queuer", "--repairs", "dagster")
    faulted = False
    try:
        every = {f"t{t}": "queuer" for t in range(1, TARGETS + 1)}
        wait_for(lambda: holders(fleet) == every, 45, "queuer holding every lease")
        res = grant_revoke(fleet, 4, "on")
        assert res.returncode == 0, res.stderr
        faulted = True
        queued = wait_for(
            lambda: rows(
                fleet, "SELECT target, action, launched_at FROM westep_ops.repair_requests"
            ),
            4 * CHEAP_S,
            "a queued repair request",
        )
    finally:
        stop(proc)
        if faulted:
            grant_revoke(fleet, 4, "off")
    log = (tmp_path / "w.log").read_text()
    assert "Traceback" not in log, log
    assert queued == [("t4", "fix_table_permissions", None)], queued  # for Dagster to launch
    assert rows(fleet, "SELECT count(*) FROM westep_ops.repair_attempts") == [(0,)]


def test_monitor_once_sweeps_only_what_no_worker_holds_and_skips_an_unset_target(
    fleet: Sandbox, tmp_path: Path
) -> None:
    """A person's `monitor --once` beside a running worker: the targets the worker holds
    are not swept a second time (their samples and incidents stay the worker's alone); a
    target whose variables are unset gets one error line and no sample (not a blind
    sweep that reads as its outage); both exit 3."""
    clear(fleet)
    cfg = fleet_config(fleet, tmp_path / "cfg", 2, CHEAP_S)
    data = json.loads(cfg.read_text())
    data["targets"].append({"name": "t9", "env": {"DIRECT_URL": "T9_DIRECT_URL"}})
    cfg.write_text(json.dumps(data))
    env = worker_env(fleet, tmp_path)
    # alone: t1 and t2 swept under their leases (handed back after), t9 refused
    alone = run_cli("--config", str(cfg), "monitor", "--once", env=env, timeout=120)
    assert alone.returncode == 3, alone.stderr
    assert alone.stderr.count("error:") == 1 and "target t9: not set" in alone.stderr
    assert {r[0] for r in rows(fleet, "SELECT DISTINCT target FROM westep_ops.samples")} == {
        "t1",
        "t2",
    }
    assert holders(fleet) == {"t1": None, "t2": None}
    proc = start(cfg, env, tmp_path / "w.log", "--worker-id", "keeper", "--target", "t1")
    try:
        wait_for(lambda: holders(fleet).get("t1") == "keeper", 45, "keeper holding t1")
        res = run_cli(
            "--config", str(cfg), "monitor", "--once", "--target", "t1", env=env, timeout=120
        )
        assert res.returncode == 3, res.stdout + res.stderr
        assert "t1: not swept: its lease is held by worker keeper" in res.stdout
        assert "full sweep" not in res.stdout
        assert holders(fleet).get("t1") == "keeper"  # the lease stays the worker's
    finally:
        stop(proc)
