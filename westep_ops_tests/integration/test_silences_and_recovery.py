"""Silences, maintenance windows and a recovery that finishes what it starts, against the
real sandbox: pgbouncer really paused, a webhook received on a local HTTP server, the
ops store really down (a URL nobody answers), a monitor really killed with SIGKILL."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
from psycopg import sql

from westep_ops.config import load_config
from westep_ops.environment import Environment
from westep_ops.monitoring import driver
from westep_ops.monitoring.engine import Monitor
from westep_ops.monitoring.history import HistoryStore
from westep_ops.monitoring.notify import Notifier
from westep_ops.sandbox import faults
from westep_ops.sandbox.manager import Sandbox
from westep_ops.silences import LOCAL_FILE
from westep_ops.store import state_home
from westep_ops_tests.helpers import CLI, ROOT, run_cli, write_config
from westep_ops_tests.integration.conftest import Webhook, admin_rows, clear_history
from westep_ops_tests.integration.dagster_idioms import sensor_tick

DOWN = {"WESTEP_OPS_STORAGE_URL": "postgresql://westep_ops:x@127.0.0.1:1/westep_ops"}


def rows(query: str, *params: Any) -> list[tuple]:
    with psycopg.connect(os.environ["WESTEP_OPS_STORAGE_URL"]) as conn:
        return conn.execute(query, params).fetchall()


def clear_silences() -> None:
    with psycopg.connect(os.environ["WESTEP_OPS_STORAGE_URL"], autocommit=True) as conn:
        if conn.execute("SELECT to_regclass('westep_ops.silences')").fetchone()[0]:
            conn.execute("TRUNCATE westep_ops.silences")
    for path in state_home().glob(f"target-*/{LOCAL_FILE}"):
        path.unlink(missing_ok=True)


@pytest.fixture
def clean(sandbox: Sandbox) -> Iterator[None]:
    clear_history()
    clear_silences()
    yield
    clear_silences()


@pytest.fixture
def hook() -> Iterator[Webhook]:
    h = Webhook()
    os.environ["WEBHOOK_URL"], os.environ["ALERT_CHANNEL"] = h.url, "#ops"
    try:
        yield h
    finally:
        del os.environ["WEBHOOK_URL"], os.environ["ALERT_CHANNEL"]
        h.close()


def monitor(cfg: Path) -> Monitor:
    env = Environment.from_env()
    config = load_config(cfg)
    return Monitor(env, config, HistoryStore(env.storage_url), Notifier(env, config.timezone))


def pool_paused(sb: Sandbox) -> bool:
    db = load_config(ROOT / "westep-ops.json").database_name
    return any(r["name"] == db and int(r["paused"]) == 1 for r in admin_rows(sb, "DATABASES"))


def logged_alerts(category: str) -> tuple[list[str], list[dict]]:
    logs = Path(os.environ["WESTEP_OPS_LOG_DIR"])
    lines = [
        line
        for p in logs.glob("monitoring-alerts-*.log")
        for line in p.read_text().splitlines()
        if f"[{category}]" in line
    ]
    events = [
        e
        for p in logs.glob("monitoring-events-*.json")
        for e in map(json.loads, p.read_text().splitlines())
        if e.get("type") == "alert" and e.get("category") == category
    ]
    return lines, events


def cli(cfg: Path, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return run_cli("--config", str(cfg), *args, **kw)


def _silenced_pool_then_judged_afresh(sb: Sandbox, cfg: Path, hook: Webhook, expire: Any) -> None:
    """Shared by the silence and the window test: pool_pause while pool is silenced.

    ``expire(monitor)`` ends the silence (or the window)."""
    lines_before, events_before = logged_alerts("pool")
    faults.inject(sb, "pool_pause", True)
    try:
        m = monitor(cfg)
        try:
            r = m.tick(force="full")
            assert len(r.opened) == 1, r
            (iid,) = r.opened
            assert r.alerts == [] and r.repairs == []
            assert [a.kind for a in r.suppressed] == ["opened"]
            ((by,),) = rows("SELECT silenced_by FROM westep_ops.incidents WHERE id = %s", iid)
            assert by
            sent = rows(
                "SELECT kind, suppressed_by, channels FROM westep_ops.alerts WHERE incident_id = %s",
                iid,
            )
            assert sent and all(s and ch == [] for _k, s, ch in sent), sent
            # The standalone driver and the sensor repair only what the engine asks for;
            # and R2 itself refuses to RESUME a pause made during a silence.
            repair = cli(cfg, "repair", "restore_connection_pool", "--json")
            (res,) = json.loads(repair.stdout)
            assert repair.returncode == 0 and res["outcome"] == "skipped", repair.stdout
            assert res["summary"].startswith("skipped: silenced by ")
            assert pool_paused(sb)
            again = m.tick(force="cheap")  # still silenced: no reminder, no repair
            assert again.alerts == [] and again.repairs == []
            assert pool_paused(sb)
            assert logged_alerts("pool") == (lines_before, events_before)
            assert hook.payloads == []

            expire(m)
            after = m.tick(force="cheap")  # judged afresh: still failing, so alerted now
            assert [(a.kind, a.category) for a in after.alerts] == [("opened", "pool")]
            assert "after the silence ended" in after.alerts[0].message
            assert [q.action.value for q in after.repairs] == ["restore_connection_pool"]
            driver.run_repairs(m, after)
            assert not pool_paused(sb)
        finally:
            m.close()
    finally:
        faults.inject(sb, "pool_pause", False)
    assert any("`pool` opened" in p["text"] for p in hook.payloads), hook.payloads
    lines, _events = logged_alerts("pool")
    assert len(lines) > len(lines_before)


def test_a_silence_on_pool_sends_nothing_repairs_nothing_until_it_is_expired(
    sandbox: Sandbox, clean: None, hook: Webhook, tmp_path: Path
) -> None:
    cfg = write_config(tmp_path / "c.json", monitoring__alerting__confirmDelaySeconds=0.2)
    add = run_cli(
        "silence",
        "add",
        "--category",
        "pool",
        "--for",
        "2h",
        "--reason",
        "migration",
        "--by",
        "kim",
    )
    assert add.returncode == 0, add.stderr
    sid = re.search(r"silence #(\d+) ", add.stdout).group(1)
    listed = json.loads(run_cli("silence", "list", "--json").stdout)
    assert [(s["id"], s["categories"], s["created_by"]) for s in listed["silences"]] == [
        (int(sid), ["pool"], "kim")
    ]

    def expire(_m: Monitor) -> None:
        out = run_cli("silence", "expire", sid)
        assert out.returncode == 0, out.stderr
        assert json.loads(run_cli("silence", "list", "--json").stdout)["silences"] == []

    _silenced_pool_then_judged_afresh(sandbox, cfg, hook, expire)
    ((by,),) = rows("SELECT silenced_by FROM westep_ops.incidents")
    assert f"#{sid} (migration, until " in by  # the record keeps that it was silenced


def test_a_maintenance_window_covering_now_silences_the_same_way(
    sandbox: Sandbox, clean: None, hook: Webhook, tmp_path: Path
) -> None:
    tz = "Asia/Tokyo"
    start = datetime.now(ZoneInfo(tz)) - timedelta(minutes=5)
    window = {
        "name": "weekly",
        "cron": f"{start.minute} {start.hour} * * *",
        "durationMinutes": 60,
        "categories": ["pool"],
    }
    cfg = write_config(
        tmp_path / "w.json",
        monitoring__alerting__confirmDelaySeconds=0.2,
        maintenanceWindows=[window],
    )
    listed = json.loads(cli(cfg, "silence", "list", "--json").stdout)
    assert [w["window"] for w in listed["windows_now"]] == ["weekly"]

    def expire(m: Monitor) -> None:
        # The window ends (as the clock would make it, an hour later): the same config
        # without it, for the monitor and for the repair it runs.
        m.config = load_config(write_config(cfg, monitoring__alerting__confirmDelaySeconds=0.2))

    _silenced_pool_then_judged_afresh(sandbox, cfg, hook, expire)
    ((by,),) = rows("SELECT silenced_by FROM westep_ops.incidents")
    assert "maintenance window 'weekly'" in by


def test_a_bad_cron_is_one_error_line(tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path / "bad.json",
        maintenanceWindows=[
            {"name": "w", "cron": "0 25 * * 0", "durationMinutes": 60, "categories": ["pool"]}
        ],
    )
    out = cli(cfg, "silence", "list", env=DOWN)
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert out.stderr.startswith("error:") and "maintenanceWindows[0].cron" in out.stderr


def test_bad_silence_input_is_one_error_line(sandbox: Sandbox) -> None:
    for args in (
        ["add", "--category", "pool", "--for", "45d", "--reason", "x"],
        ["add", "--category", "pool", "--for", "soon", "--reason", "x"],
        ["add", "--category", "disk", "--for", "1h", "--reason", "x"],
        ["expire", "nope"],
        ["expire", "999999"],
    ):
        out = run_cli("silence", *args)
        assert out.returncode == 2, (args, out.stdout, out.stderr)
        assert out.stderr.startswith("error:") and "Traceback" not in out.stderr


def test_a_silence_added_while_the_store_is_down_holds_and_reaches_it(
    sandbox: Sandbox, clean: None
) -> None:
    add = run_cli(
        "silence", "add", "--category", "realtime", "--for", "1h", "--reason", "outage", env=DOWN
    )
    assert add.returncode == 0 and "kept locally" in add.stdout, add.stdout + add.stderr
    down = json.loads(run_cli("silence", "list", "--json", env=DOWN).stdout)
    assert [s["categories"] for s in down["silences"]] == [["realtime"]]
    # Back up: written to the store once, however often it is read.
    for _ in range(2):
        up = json.loads(run_cli("silence", "list", "--json").stdout)
        assert [(s["categories"], s["local"]) for s in up["silences"]] == [(["realtime"], False)]
    assert rows("SELECT count(*) FROM westep_ops.silences") == [(1,)]
    # Realtime repaired by hand while silenced: skipped, the publication left as it is.
    faults.inject(sandbox, "publication_drop", True)
    try:
        out = run_cli("repair", "restore_realtime_publication", "--json")
        (res,) = json.loads(out.stdout)
        assert res["outcome"] == "skipped" and "outage" in res["summary"]
        forced = run_cli("repair", "restore_realtime_publication", "--force", "--json")
        (res,) = json.loads(forced.stdout)
        assert res["outcome"] == "repaired", res
    finally:
        faults.inject(sandbox, "publication_drop", False)


# -- recovery finishes what it starts ----------------------------------------------------
def _superuser(sb: Sandbox) -> psycopg.Connection:
    return psycopg.connect(os.environ["WESTEP_OPS_REPAIR_URL"], autocommit=False)


@pytest.fixture
def held_acl(sandbox: Sandbox) -> Iterator[Any]:
    """An open transaction that changed public.steps' ACL: a GRANT on it waits for us."""
    held: list[psycopg.Connection] = []

    def hold() -> psycopg.Connection:
        conn = _superuser(sandbox)
        conn.execute("REVOKE TRUNCATE ON public.steps FROM anon")
        held.append(conn)
        return conn

    yield hold
    for c in held:
        c.rollback()
        c.close()


def test_recover_with_a_repair_that_fails_runs_the_others_and_writes_its_report(
    sandbox: Sandbox, clean: None, held_acl: Any, tmp_path: Path
) -> None:
    cfg = write_config(tmp_path / "r.json", monitoring__timeouts__lock=500)
    faults.inject(sandbox, "grant_revoke", True)
    faults.inject(sandbox, "publication_drop", True)
    lock = held_acl()
    try:
        out = cli(cfg, "recover", "--json", timeout=120)
    finally:
        lock.rollback()
        faults.inject(sandbox, "publication_drop", False)
        faults.inject(sandbox, "grant_revoke", False)
    assert out.returncode == 1, out.stdout + out.stderr
    report = json.loads(out.stdout)
    outcomes = {r["action"]: r["outcome"] for r in report["repairs"]}
    assert outcomes["fix_table_permissions"] == "failed", report["repairs"]
    # ...and the repair after it in the safe order still ran.
    assert outcomes["restore_realtime_publication"] == "repaired"
    assert any(e["category"] == "fix_table_permissions" for e in report["escalations"])
    path = Path(report["report"])
    assert path.exists() and "fix_table_permissions: failed" in path.read_text()


def test_hourly_limit_holds_across_an_ops_store_outage(
    sandbox: Sandbox, clean: None, tmp_path: Path
) -> None:
    """3 allowed: 3 run while the store is down (each from another log dir), the 4th is
    refused, and once the store is back none runs within the hour (not 3 more)."""
    cfg = write_config(tmp_path / "l.json")

    def repair(env: dict[str, str]) -> dict:
        out = cli(cfg, "repair", "repair_auth", "--json", env=env)
        (r,) = json.loads(out.stdout)
        return r

    outcomes = []
    for i in range(4):
        logs = tmp_path / f"logs{i}"
        logs.mkdir()
        outcomes.append(repair({**DOWN, "WESTEP_OPS_LOG_DIR": str(logs)})["outcome"])
    assert outcomes == ["nothing_to_do"] * 3 + ["refused"]
    back = repair({})
    assert back["outcome"] == "refused" and "3 attempts" in back["summary"], back
    counted = rows(
        "SELECT count(*) FROM westep_ops.repair_attempts WHERE action = 'repair_auth'"
        " AND outcome = 'nothing_to_do'"
    )
    assert counted == [(3,)]  # replayed into the store exactly once
    assert repair({})["outcome"] == "refused"
    assert rows(
        "SELECT count(*) FROM westep_ops.repair_attempts WHERE action = 'repair_auth'"
        " AND outcome = 'nothing_to_do'"
    ) == [(3,)]


def test_the_stores_recent_attempts_count_while_it_is_down(
    sandbox: Sandbox, clean: None, tmp_path: Path
) -> None:
    cfg = write_config(tmp_path / "l.json")
    for _ in range(2):
        out = cli(cfg, "repair", "repair_auth", "--json")
        assert json.loads(out.stdout)[0]["outcome"] == "nothing_to_do"
    # Another machine's (or a forgotten file's) copy is not needed: the last answer is kept.
    first = cli(cfg, "repair", "repair_auth", "--json", env=DOWN)
    second = cli(cfg, "repair", "repair_auth", "--json", env=DOWN)
    assert json.loads(first.stdout)[0]["outcome"] == "nothing_to_do"
    assert json.loads(second.stdout)[0]["outcome"] == "refused"


def test_kill_9_during_a_repair_leaves_an_interrupted_attempt_and_the_next_monitor_repairs(
    sandbox: Sandbox, clean: None, held_acl: Any, tmp_path: Path
) -> None:
    cfg = write_config(
        tmp_path / "k.json",
        monitoring__alerting__confirmDelaySeconds=0.2,
        monitoring__timeouts__lock=120_000,
        monitoring__timeouts__statement=120_000,
    )

    def fingerprint() -> list[tuple]:
        with psycopg.connect(os.environ["WESTEP_OPS_REPAIR_URL"]) as c:
            return c.execute(
                "SELECT md5(string_agg(s::text, ',' ORDER BY id)) FROM public.steps s"
            ).fetchall()

    before = fingerprint()
    faults.inject(sandbox, "grant_revoke", True)
    lock = held_acl()
    env = {**os.environ, "WESTEP_OPS_CONFIG": str(cfg)}
    proc = subprocess.Popen(
        [*CLI, "monitor"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        running: list[tuple] = []
        while time.monotonic() < deadline and not running:
            time.sleep(0.5)
            running = rows(
                "SELECT id FROM westep_ops.repair_attempts WHERE action = 'fix_table_permissions'"
                " AND outcome = 'running'"
            )
        assert running, "the repair never started"
        time.sleep(1)  # it is now waiting on our lock
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        lock.rollback()
    try:
        assert fingerprint() == before  # data intact
        once = cli(cfg, "monitor", "--once", timeout=120)
        assert once.returncode in (0, 1, 2), once.stdout + once.stderr  # the health code
        got = rows(
            "SELECT outcome FROM westep_ops.repair_attempts WHERE action = 'fix_table_permissions'"
            " ORDER BY id"
        )
        assert [o for (o,) in got] == ["interrupted", "repaired"], got
        (summary,) = rows(
            "SELECT summary FROM westep_ops.repair_attempts WHERE outcome = 'interrupted'"
        )[0]
        assert summary.startswith("interrupted:")
        from westep_ops.store import OpsStore

        with OpsStore(os.environ["WESTEP_OPS_STORAGE_URL"]) as store:
            assert store.attempts_last_hour("fix_table_permissions")[0] == 2
    finally:
        faults.inject(sandbox, "grant_revoke", False)


def test_two_recovers_at_once_one_waits_and_each_writes_its_report(
    sandbox: Sandbox, clean: None, held_acl: Any, tmp_path: Path
) -> None:
    cfg = write_config(
        tmp_path / "t.json",
        monitoring__timeouts__lock=60_000,
        monitoring__timeouts__statement=60_000,
    )
    faults.inject(sandbox, "grant_revoke", True)
    lock = held_acl()
    env = {**os.environ, "WESTEP_OPS_CONFIG": str(cfg)}
    procs = []
    try:
        for _ in range(2):
            procs.append(
                subprocess.Popen(
                    [*CLI, "recover", "--json"],
                    env=env,
                    cwd=ROOT,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
            time.sleep(4)  # the first one is now holding the repair lock, waiting on ours
        lock.rollback()
        outs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        faults.inject(sandbox, "grant_revoke", False)
    reports = [json.loads(o) for o, _e in outs]
    outcomes = sorted(
        r["outcome"]
        for rep in reports
        for r in rep["repairs"]
        if r["action"] == "fix_table_permissions"
    )
    assert outcomes == ["done_by_other", "repaired"], [
        (r["action"], r["outcome"], r["summary"]) for rep in reports for r in rep["repairs"]
    ]
    assert all(p.returncode == 0 for p in procs), outs
    paths = {rep["report"] for rep in reports}
    assert len(paths) == 2 and all(Path(p).exists() for p in paths)


def test_the_dagster_sensor_respects_a_silence(
    sandbox: Sandbox, clean: None, tmp_path: Path
) -> None:
    """Same engine: while `tables` is silenced the sensor opens a silenced incident and
    requests no repair run; once the silence is expired it requests the repair."""
    from dagster import DagsterInstance

    from westep_ops_tests.integration.test_monitoring import _age_samples

    cfg = write_config(tmp_path / "s.json", monitoring__alerting__confirmDelaySeconds=0.2)
    add = run_cli("silence", "add", "--category", "tables", "--for", "1h", "--reason", "grants")
    sid = re.search(r"silence #(\d+) ", add.stdout).group(1)
    os.environ["WESTEP_OPS_CONFIG"], saved = str(cfg), os.environ["WESTEP_OPS_CONFIG"]
    faults.inject(sandbox, "grant_revoke", True)
    try:
        with DagsterInstance.ephemeral() as instance:

            def tick() -> Any:
                return sensor_tick(instance)

            silenced = tick()
            # No repair; the incident is still recorded, so today's daily assets refresh.
            assert [r.job_name for r in silenced.run_requests] == ["daily_monitoring_job"]
            ((by,),) = rows("SELECT silenced_by FROM westep_ops.incidents WHERE closed_at IS NULL")
            assert by.startswith(f"#{sid} (grants")
            assert rows("SELECT count(*) FROM westep_ops.alerts WHERE suppressed_by IS NULL") == [
                (0,)
            ]
            assert run_cli("silence", "expire", sid).returncode == 0
            _age_samples()
            (request,) = tick().run_requests
            assert "fix_table_permissions" in request.run_key
    finally:
        os.environ["WESTEP_OPS_CONFIG"] = saved
        faults.inject(sandbox, "grant_revoke", False)


def test_recover_survives_a_westep_error_inside_fix_data_integrity(
    sandbox: Sandbox, clean: None, tmp_path: Path
) -> None:
    """R5 raises (a WestepError: the quarantine table for public.step_logs is found keeping
    another table's rows), which used to abort recover with exit 2 and no report."""
    from westep_ops.repairs.quarantine import COMMENT_PREFIX, ensure_table

    cfg = write_config(tmp_path / "i.json")
    qtable = sql.Identifier("westep_quarantine", "public__step_logs")

    def count() -> int:
        with psycopg.connect(os.environ["WESTEP_OPS_REPAIR_URL"]) as c:
            return c.execute("SELECT count(*) FROM public.step_logs").fetchone()[0]

    def label(source: str) -> None:
        with psycopg.connect(os.environ["WESTEP_OPS_REPAIR_URL"], autocommit=True) as c:
            c.execute(
                sql.SQL("COMMENT ON TABLE {} IS {}").format(
                    qtable, sql.Literal(COMMENT_PREFIX + source)
                )
            )

    with psycopg.connect(os.environ["WESTEP_OPS_REPAIR_URL"], autocommit=True) as c:
        if c.execute("SELECT to_regclass('westep_quarantine.public__step_logs')").fetchone()[0]:
            label("public.step_logs")  # left mislabelled by an interrupted earlier run
        ensure_table(c, "westep_quarantine", "public.step_logs")
    faults.inject(sandbox, "orphans", True)
    faults.inject(sandbox, "publication_drop", True)
    label("public.steps")  # as if it kept rows of another table: R5 must refuse to mix them
    before = count()
    try:
        out = cli(cfg, "recover", "--json", timeout=180)
        after = count()
    finally:
        faults.inject(sandbox, "orphans", False)
        faults.inject(sandbox, "publication_drop", False)
        label("public.step_logs")
    assert out.returncode == 1, out.stdout + out.stderr
    report = json.loads(out.stdout)
    outcomes = {r["action"]: (r["outcome"], r["summary"]) for r in report["repairs"]}
    assert outcomes["fix_data_integrity"][0] == "failed", outcomes
    assert "refusing to mix them" in outcomes["fix_data_integrity"][1], outcomes
    assert outcomes["restore_realtime_publication"][0] == "repaired", outcomes
    assert after == before  # nothing moved, nothing lost
    assert Path(report["report"]).exists()


def test_every_repair_outcome_of_an_incident_is_followed(
    sandbox: Sandbox, clean: None, tmp_path: Path
) -> None:
    """One repair succeeds (recovered_by is set), then another fails: that escalates, once."""
    cfg = write_config(tmp_path / "f.json", monitoring__alerting__confirmDelaySeconds=0.2)

    def attempt(iid: int, action: str, outcome: str) -> None:
        with psycopg.connect(os.environ["WESTEP_OPS_STORAGE_URL"]) as c:
            c.execute(
                "INSERT INTO westep_ops.repair_attempts (action, trigger, target, database,"
                " started_at, finished_at, dry_run, outcome, summary, incident_id, escalation)"
                " VALUES (%s, 'test', 'default', 'sandbox', now(), now(), false, %s, %s, %s, 2)",
                (action, outcome, f"{action} {outcome} (constructed)", iid),
            )

    faults.inject(sandbox, "grant_revoke", True)
    m = monitor(cfg)
    try:
        (iid,) = m.tick(force="full").opened
        attempt(iid, "fix_table_permissions", "repaired")
        assert [a.kind for a in m.tick(force="full").alerts] == []
        assert rows("SELECT recovered_by FROM westep_ops.incidents") == [
            ("auto:fix_table_permissions",)
        ]
        attempt(iid, "repair_auth", "failed")
        later = m.tick(force="full")
        assert [a.kind for a in later.alerts] == ["escalated"]
        assert "repair_auth failed" in later.alerts[0].message
        assert [
            a.kind for a in m.tick(force="full").alerts
        ] == []  # one escalation, not one per tick
    finally:
        m.close()
        faults.inject(sandbox, "grant_revoke", False)
