"""A fleet sandbox (``sandbox up --targets 3``): three target databases behind one
pgbouncer, each with its own seed rows and pool, and faults that break one target only.

A second sandbox of its own (directory and ports base+10..base+14), never the session
sandbox: it is made, used and stopped here. Its directory is under the checkout's
``.westep/`` like the other extra sandbox of the tests (as root, PostgreSQL runs as the
``postgres`` user, which cannot enter pytest's 0700 temporary directories).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from westep_ops.db import admin_show
from westep_ops.sandbox.manager import Sandbox
from westep_ops_tests.helpers import ROOT, run_cli

FLEET_DIR = ROOT / ".westep" / "test-sandbox-fleet"
FLEET_PORT = int(os.environ.get("WESTEP_OPS_TEST_BASE_PORT", "25530")) + 10


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    Sandbox(FLEET_DIR).down()  # left running by an interrupted earlier run
    shutil.rmtree(FLEET_DIR, ignore_errors=True)
    try:
        # One target first, then two more added to the running sandbox (what `up` does
        # for a fleet grown later: new databases, and pgbouncer reloads its pools).
        first = run_cli("sandbox", "up", "--dir", str(FLEET_DIR), "--base-port", str(FLEET_PORT))
        assert first.returncode == 0, first.stderr
        grown = run_cli("sandbox", "up", "--dir", str(FLEET_DIR), "--targets", "3")
        assert grown.returncode == 0, grown.stderr
        assert "targets: 3" in grown.stdout
        yield Sandbox(FLEET_DIR)
    finally:
        Sandbox(FLEET_DIR).down()
        shutil.rmtree(FLEET_DIR, ignore_errors=True)


def target_env(sb: Sandbox, target: int, scratch: Path) -> dict[str, str]:
    """Target ``target``'s environment, as `sandbox env --target` prints it, with the
    per-user state and logs in a scratch folder."""
    res = run_cli("sandbox", "env", "--dir", str(sb.layout.root), "--target", str(target))
    assert res.returncode == 0, res.stderr
    env = {}
    for line in res.stdout.splitlines():
        if line.startswith("export "):
            key, _, value = line.removeprefix("export ").partition("=")
            env[key] = value.strip("'")
    assert env == {**sb.state.env(target), "WESTEP_OPS_SANDBOX_DIR": str(sb.layout.root)}
    for name in ("XDG_STATE_HOME", "WESTEP_OPS_LOG_DIR", "WESTEP_OPS_REPORTS_DIR"):
        env[name] = str(scratch / name)
    return env


def fault(sb: Sandbox, target: int, *args: str) -> str:
    res = run_cli(
        "sandbox",
        "fault",
        *args,
        "--target",
        str(target),
        "--dir",
        str(sb.layout.root),
        env=sb.state.env(target),
    )
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
    return res.stdout


def health(env: dict[str, str]) -> tuple[int, dict[str, Any]]:
    res = run_cli("--config", str(ROOT / "westep-ops.json"), "health-check", "--json", env=env)
    assert "Traceback" not in res.stderr, res.stderr
    report = json.loads(res.stdout)
    return res.returncode, {c["category"]: c["status"] for c in report["checks"]}


def bouncer_databases(sb: Sandbox) -> dict[str, dict[str, Any]]:
    s = sb.state
    with psycopg.connect(
        s.url("pgbouncer_admin", s.bouncer_port, "pgbouncer"),
        autocommit=True,
        prepare_threshold=None,
    ) as conn:
        return {d["name"]: d for d in admin_show(conn, "databases")}


def test_three_targets_each_answer_with_their_own_rows_through_pgbouncer(
    fleet: Sandbox,
) -> None:
    s = fleet.state
    assert s.targets == 3
    listing = run_cli("sandbox", "targets", "--dir", str(FLEET_DIR), "--json")
    assert [(r["target"], r["database"]) for r in json.loads(listing.stdout)] == [
        (1, "postgres"),
        (2, "westep_t2"),
        (3, "westep_t3"),
    ]
    # A row of each target's own, written directly: through pgbouncer each target sees
    # its own and no other's.
    for t in (1, 2, 3):
        with fleet.superuser_conn(target=t) as conn:
            conn.execute("DELETE FROM public.step_logs WHERE note LIKE 'fleet-test-%'")
            conn.execute(
                "INSERT INTO public.step_logs (step_id, note) VALUES (1, %s)", (f"fleet-test-{t}",)
            )
    try:
        for t, db in ((1, "postgres"), (2, "westep_t2"), (3, "westep_t3")):
            env = s.env(t)
            assert f":{s.bouncer_port}/{db}" in env["DATABASE_URL"]
            with psycopg.connect(env["DATABASE_URL"], prepare_threshold=None) as conn:
                row = conn.execute(
                    "SELECT current_database(), inet_server_port(),"
                    " (SELECT count(*) FROM auth.users), (SELECT count(*) FROM public.profiles),"
                    " (SELECT count(*) FROM public.steps),"
                    " (SELECT array_agg(note) FROM public.step_logs WHERE note LIKE 'fleet-test-%'),"
                    " (SELECT count(*) FROM public.step_logs WHERE note NOT LIKE 'fleet-test-%')"
                ).fetchone()
            # The seed rows of schema.sql, in the target's own database behind pgbouncer.
            assert row == (db, s.target_port, 500, 500, 2000, [f"fleet-test-{t}"], 5000)
    finally:
        for t in (1, 2, 3):
            with fleet.superuser_conn(target=t) as conn:
                conn.execute("DELETE FROM public.step_logs WHERE note LIKE 'fleet-test-%'")
    # One pgbouncer entry, hence one pool, per target.
    assert {"postgres", "westep_t2", "westep_t3"} <= set(bouncer_databases(fleet))


def test_grant_revoke_on_target_2_breaks_target_2_only(fleet: Sandbox, tmp_path: Path) -> None:
    env1, env2 = target_env(fleet, 1, tmp_path), target_env(fleet, 2, tmp_path)
    assert "grant_revoke on" in fault(fleet, 2, "grant_revoke", "on")
    try:
        code2, checks2 = health(env2)
        code1, checks1 = health(env1)
        assert code2 == 2 and checks2["tables"] == "critical", checks2
        assert code1 == 0 and set(checks1.values()) == {"ok"}, checks1
        listing = run_cli("sandbox", "targets", "--dir", str(FLEET_DIR), "--json")
        on = {r["target"]: r["faults"] for r in json.loads(listing.stdout)}
        assert on == {1: [], 2: ["grant_revoke"], 3: []}
    finally:
        fault(fleet, 2, "grant_revoke", "off")
    code2, checks2 = health(env2)
    assert code2 == 0 and set(checks2.values()) == {"ok"}, checks2


def test_pool_pause_on_target_3_pauses_only_its_pool(fleet: Sandbox) -> None:
    fault(fleet, 3, "pool_pause", "on")
    try:
        paused = {n: d["paused"] for n, d in bouncer_databases(fleet).items()}
        assert paused["westep_t3"] == 1
        assert paused["postgres"] == 0 and paused["westep_t2"] == 0
        # The other targets still answer through pgbouncer.
        for t in (1, 2):
            with psycopg.connect(
                fleet.state.env(t)["DATABASE_URL"], prepare_threshold=None, connect_timeout=5
            ) as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        fault(fleet, 3, "pool_pause", "off")
    assert all(d["paused"] == 0 for d in bouncer_databases(fleet).values())


@pytest.mark.parametrize("name", ["pg_down", "bouncer_down", "api_down"])
def test_cluster_wide_faults_refuse_another_target(fleet: Sandbox, name: str) -> None:
    res = run_cli(
        "sandbox",
        "fault",
        name,
        "on",
        "--target",
        "2",
        "--dir",
        str(FLEET_DIR),
        env=fleet.state.env(2),
    )
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.startswith("error: ") and "every sandbox target" in res.stderr
    assert all(c.running for c in fleet.status())


def test_unknown_target_and_fewer_targets_are_one_line_errors(fleet: Sandbox) -> None:
    env = run_cli("sandbox", "env", "--dir", str(FLEET_DIR), "--target", "4")
    assert env.returncode == 2 and env.stderr.startswith("error: no sandbox target 4")
    assert env.stdout == ""
    fewer = run_cli("sandbox", "up", "--dir", str(FLEET_DIR), "--targets", "2")
    assert fewer.returncode == 2 and "cannot remove" in fewer.stderr
    assert Sandbox(FLEET_DIR).state.targets == 3
