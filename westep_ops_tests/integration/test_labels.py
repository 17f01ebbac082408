"""Labelling alerts where people are: the command in Slack and in the log, `alerts label`
and `alerts list --unlabelled`, the evening summary's list of what is left to judge, and
local times in the command-line lists. Real sandbox, real ops store, a real HTTP webhook."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
import pytest

from westep_ops.config import load_config
from westep_ops.environment import Environment
from westep_ops.monitoring.engine import Monitor
from westep_ops.monitoring.history import HistoryStore
from westep_ops.monitoring.notify import Notifier
from westep_ops.monitoring.summary import daily_summary, local_day
from westep_ops.sandbox import faults
from westep_ops.sandbox.manager import Sandbox
from westep_ops_tests.helpers import run_cli, write_config
from westep_ops_tests.integration.conftest import Webhook, clear_history


@pytest.fixture
def cfg(tmp_path: Path, sandbox: Sandbox) -> Path:
    clear_history()
    return write_config(tmp_path / "mon.json", monitoring__alerting__confirmDelaySeconds=0.2)


@pytest.fixture
def store(sandbox: Sandbox) -> Iterator[HistoryStore]:
    clear_history()
    s = HistoryStore(os.environ["WESTEP_OPS_STORAGE_URL"])
    yield s
    s.close()


def _alert(
    store: HistoryStore,
    ts: datetime,
    category: str = "tables",
    kind: str = "opened",
    message: str = "grant lost",
    suppressed_by: str | None = None,
) -> int:
    return store.add_alert(
        None, ts, kind, "critical", category, message, [], suppressed_by=suppressed_by
    )


def _label(alert_id: int) -> object:
    with psycopg.connect(os.environ["WESTEP_OPS_STORAGE_URL"]) as conn:
        (row,) = conn.execute(
            "SELECT label FROM westep_ops.alerts WHERE id = %s", (alert_id,)
        ).fetchall()
    return row[0]


# -- the command travels with the alert --------------------------------------------------------
def test_an_opened_alert_carries_its_label_command_to_slack_and_the_log(
    sandbox: Sandbox, cfg: Path
) -> None:
    hook = Webhook()
    env = Environment.from_env({**os.environ, "WEBHOOK_URL": hook.url})
    config = load_config(cfg)
    faults.inject(sandbox, "grant_revoke", True)
    try:
        m = Monitor(env, config, HistoryStore(env.storage_url), Notifier(env, config.timezone))
        try:
            r = m.tick(force="full")
        finally:
            m.close()
    finally:
        faults.inject(sandbox, "grant_revoke", False)
        hook.close()
    (opened,) = [a for a in r.alerts if a.kind == "opened"]
    stored = json.loads(run_cli("alerts", "list", "--unlabelled", "--json").stdout)
    assert [a["id"] for a in stored] == [opened.alert_id]  # the id the message names is stored
    command = f"westep-ops alerts label {opened.alert_id} --real|--false-alarm"
    (payload,) = hook.payloads
    assert f"`{command}`" in payload["text"] and "`tables` opened" in payload["text"]
    blob = json.dumps(payload)
    for secret in (*sandbox.state.passwords.values(), "secret-token-xyz"):
        assert secret not in blob
    logs = Path(os.environ["WESTEP_OPS_LOG_DIR"])
    day = opened.ts.astimezone(Notifier(env, config.timezone).tz).strftime("%Y-%m-%d")
    lines = (logs / f"monitoring-alerts-{day}.log").read_text().splitlines()
    (line,) = [x for x in lines if f"(alert {opened.alert_id})" in x]
    assert line.endswith(f"| label it: {command}")

    # A person labels it: it leaves the unlabelled list; relabelling is allowed.
    assert (
        "label one: westep-ops alerts label ID" in run_cli("alerts", "list", "--unlabelled").stdout
    )
    res = run_cli("alerts", "label", str(opened.alert_id), "--real")
    assert res.returncode == 0 and res.stdout.strip() == f"alert {opened.alert_id} labelled real"
    assert _label(opened.alert_id) is True
    res = run_cli("alerts", "list", "--unlabelled")
    assert res.returncode == 0 and res.stdout.strip() == "no unlabelled opened alerts"
    res = run_cli("alerts", "label", str(opened.alert_id), "--false-alarm")
    assert res.stdout.strip() == f"alert {opened.alert_id} labelled a false alarm (was real)"
    assert _label(opened.alert_id) is False
    # The old spelling still works.
    assert run_cli("alerts", "label", str(opened.alert_id), "--true").returncode == 0
    assert _label(opened.alert_id) is True


def test_label_errors_and_non_opened_alerts(store: HistoryStore) -> None:
    now = datetime.now(UTC)
    iid = store.open_incident("pool", "critical", now, now, "pool paused")
    opened = store.add_alert(iid, now, "opened", "critical", "pool", "pool paused", [])
    reminder = store.add_alert(iid, now, "reminder", "critical", "pool", "still paused", [])
    res = run_cli("alerts", "label", "999999", "--real")
    assert res.returncode == 2 and res.stderr.strip() == "error: no alert 999999"
    assert res.stdout == ""
    res = run_cli("alerts", "label", str(reminder), "--false-alarm")
    assert res.returncode == 0 and _label(reminder) is False
    assert (
        f"note: alert {reminder} is a reminder alert; alert precision counts opened alerts,"
        f" here alert {opened} of incident #{iid}" in res.stdout
    )
    # A reminder, a silenced opened alert and a labelled one are not left to judge.
    _alert(store, now, suppressed_by="silence #1")
    listed = json.loads(run_cli("alerts", "list", "--unlabelled", "--json").stdout)
    assert [a["id"] for a in listed] == [opened]
    assert "T" in listed[0]["ts"] and listed[0]["ts"][-6] in "+-"  # ISO 8601 with offset


# -- the evening summary -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("tz", "midnight_utc", "zone_abbr"),
    [
        ("Asia/Tokyo", datetime(2026, 12, 1, 15, 0, tzinfo=UTC), "JST"),
        ("Asia/Kolkata", datetime(2026, 12, 1, 18, 30, tzinfo=UTC), "IST"),
    ],
)
def test_daily_summary_lists_exactly_the_local_days_unlabelled_alerts(
    store: HistoryStore, tz: str, midnight_utc: datetime, zone_abbr: str
) -> None:
    day = date(2026, 12, 2)
    assert local_day(day, tz) == (midnight_utc, midnight_utc + timedelta(days=1))
    second = timedelta(seconds=1)
    before = _alert(store, midnight_utc - second, message="the day before")
    first = _alert(store, midnight_utc, "pool", message="pool paused\nfor good")
    last = _alert(store, midnight_utc + timedelta(days=1) - second, "api")
    after = _alert(store, midnight_utc + timedelta(days=1), message="the day after")
    labelled = _alert(store, midnight_utc + timedelta(hours=3))
    store.label(labelled, False, midnight_utc + timedelta(hours=4))
    _alert(store, midnight_utc + timedelta(hours=5), suppressed_by="silence #1")
    _alert(store, midnight_utc + timedelta(hours=6), kind="reminder")
    store.open_incident("pool", "critical", midnight_utc + second, midnight_utc + second, "x")

    with store.tx() as conn:
        s = daily_summary(conn, day, tz, target="default")
    assert [a["id"] for a in s.unlabelled] == [first, last]
    assert before not in {a["id"] for a in s.unlabelled} and after != last
    assert s.labelled == 1 and s.incidents == 1 and s.still_open == 1
    text = s.text()
    assert text.splitlines()[0].startswith(f"2026-12-02 ({tz}): ")
    assert "opened alerts: 3, 1 labelled, 2 to label (real or false alarm?):" in text
    assert f"  {first}  00:00 {zone_abbr}  pool: pool paused for good" in text.splitlines()
    assert f"  {last}  23:59 {zone_abbr}  api: grant lost" in text.splitlines()
    assert text.splitlines()[-1] == "label one: westep-ops alerts label ID --real|--false-alarm"
    assert "the day before" not in text and "the day after" not in text

    with store.tx() as conn:
        quiet = daily_summary(conn, date(2026, 11, 20), tz, target="default")
    assert quiet.unlabelled == [] and quiet.text().splitlines()[-1] == "opened alerts: none"


def test_the_1800_job_sends_the_list_to_slack_and_one_log_line(store: HistoryStore) -> None:
    from dagster import DagsterInstance

    from westep_ops.definitions import defs

    now = datetime.now(UTC)
    aid = _alert(store, now - timedelta(seconds=5), "realtime", message="publication gone")
    hook = Webhook()
    os.environ["WEBHOOK_URL"] = hook.url
    try:
        with DagsterInstance.ephemeral() as instance:
            res = defs.get_job_def("daily_summary_job").execute_in_process(instance=instance)
    finally:
        del os.environ["WEBHOOK_URL"]
        hook.close()
    assert res.success
    (payload,) = hook.payloads
    assert f"\n  {aid}  " in payload["text"] and "realtime: publication gone" in payload["text"]
    assert "label one: westep-ops alerts label ID --real|--false-alarm" in payload["text"]
    logs = Path(os.environ["WESTEP_OPS_LOG_DIR"])
    lines = [
        x
        for p in logs.glob("monitoring-alerts-*.log")
        for x in p.read_text().splitlines()
        if "[daily]" in x
    ]
    assert any(" / opened alerts: 1, 0 labelled, 1 to label" in x for x in lines), lines


# -- local time in the command-line lists --------------------------------------------------------
def test_alerts_list_prints_local_time_naming_the_zone(store: HistoryStore, tmp_path: Path) -> None:
    aid = _alert(store, datetime(2026, 12, 1, 15, 30, tzinfo=UTC))
    for tz, shown in (
        ("Asia/Tokyo", "2026-12-02 00:30:00"),
        ("Asia/Kolkata", "2026-12-01 21:00:00"),
    ):
        cfg = write_config(tmp_path / f"{tz.replace('/', '-')}.json", timezone=tz)
        out = run_cli("--config", str(cfg), "alerts", "list").stdout.splitlines()
        assert out[0].split()[:3] == ["id", "time", f"({tz})"]
        assert out[1].split()[:3] == [str(aid), *shown.split()]
    (listed,) = json.loads(run_cli("alerts", "list", "--json").stdout)
    assert datetime.fromisoformat(listed["ts"]) == datetime(2026, 12, 1, 15, 30, tzinfo=UTC)


def test_quarantine_and_silence_lists_print_local_time(sandbox: Sandbox, tmp_path: Path) -> None:
    from psycopg import sql

    from westep_ops.repairs.quarantine import ensure_table

    qschema = "westep_tz_quarantine"
    cfg = write_config(
        tmp_path / "kolkata.json", timezone="Asia/Kolkata", repairs__quarantineSchema=qschema
    )
    repair_role = psycopg.conninfo.conninfo_to_dict(os.environ["WESTEP_OPS_REPAIR_URL"])["user"]
    with sandbox.superuser_conn() as conn:
        conn.execute("DROP SCHEMA IF EXISTS westep_tz_src, westep_tz_quarantine CASCADE")
        conn.execute("CREATE SCHEMA westep_tz_src")
        conn.execute("CREATE TABLE westep_tz_src.things (id int)")
        qtable = ensure_table(conn, qschema, "westep_tz_src.things")
        conn.execute(
            sql.SQL(
                "INSERT INTO {} (id, quarantined_at, rule, reason) VALUES (1, %s, 'r', 'x')"
            ).format(qtable),
            (datetime(2026, 12, 1, 18, 45, tzinfo=UTC),),
        )
        conn.execute(
            sql.SQL("GRANT USAGE ON SCHEMA {} TO {}; GRANT SELECT ON {} TO {}").format(
                sql.Identifier(qschema),
                sql.Identifier(repair_role),
                qtable,
                sql.Identifier(repair_role),
            )
        )
    try:
        out = run_cli("--config", str(cfg), "quarantine", "list")
        assert out.returncode == 0, out.stderr
        header, row = out.stdout.splitlines()
        assert header.split()[-3:] == ["last", "quarantined", "(Asia/Kolkata)"]
        assert row.split() == ["westep_tz_src.things", "r", "1", "2026-12-02", "00:15:00"]
        (listed,) = json.loads(run_cli("--config", str(cfg), "quarantine", "list", "--json").stdout)
        assert datetime.fromisoformat(listed["last"]) == datetime(2026, 12, 1, 18, 45, tzinfo=UTC)
    finally:
        with sandbox.superuser_conn() as conn:
            conn.execute("DROP SCHEMA IF EXISTS westep_tz_src, westep_tz_quarantine CASCADE")

    # A silence: its start and end in the configured zone, the header naming it.
    args = ("silence", "add", "--category", "pool", "--for", "2h", "--reason", "tz test")
    added = run_cli("--config", str(cfg), *args)
    assert added.returncode == 0, added.stderr
    sid = added.stdout.split()[1].removeprefix("#")  # "silence #7 (tz test, until ...) on pool"
    try:
        listed = json.loads(run_cli("--config", str(cfg), "silence", "list", "--json").stdout)
        (mine,) = [x for x in listed["silences"] if str(x["id"]) == sid]
        out = run_cli("--config", str(cfg), "silence", "list").stdout.splitlines()
        assert "starts (Asia/Kolkata)" in out[0] and "ends (Asia/Kolkata)" in out[0]
        (row,) = [x for x in out[1:] if x.split()[0] == sid]
        ist = ZoneInfo("Asia/Kolkata")
        for key in ("starts_at", "ends_at"):
            assert f"{datetime.fromisoformat(mine[key]).astimezone(ist):%Y-%m-%d %H:%M}" in row
        assert "IST" in added.stdout  # `silence add` says until when, in the same zone
    finally:
        run_cli("silence", "expire", sid)
