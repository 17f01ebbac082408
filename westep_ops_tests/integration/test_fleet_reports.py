"""History, incidents and SLA per target: two targets' rows in one real ops store.

Each target's daily rollup, monthly figures, fleet report and ``westep-ops status`` line
show only its own rows; a store that is down makes ``status`` exit 3 with one line.
"""

from __future__ import annotations

import json
import os
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg

from westep_ops.config import load_config
from westep_ops.monitoring import rollups
from westep_ops.monitoring import sla as monthly
from westep_ops.monitoring.history import HistoryStore
from westep_ops.sandbox.manager import Sandbox
from westep_ops.store_schema import migrate
from westep_ops_tests.helpers import ROOT, run_cli
from westep_ops_tests.integration.conftest import clear_history

TZ = "Asia/Tokyo"
VARIABLES = ("DIRECT_URL", "DATABASE_URL", "PGBOUNCER_ADMIN_URL")


def _fleet_config(tmp_path: Path, sandbox: Sandbox) -> tuple[Path, dict[str, str]]:
    env = sandbox.state.env()
    shipped = json.loads((ROOT / "westep-ops.json").read_text())
    targets, environ = [], {}
    for name in ("alpha", "beta"):
        prefix = name.upper() + "_"
        targets.append(
            {
                "name": name,
                "env": {v: prefix + v for v in VARIABLES},
                "tags": {"environment": "sandbox", "team": name},
            }
        )
        environ.update({prefix + v: env[v] for v in VARIABLES})
    path = tmp_path / "fleet.json"
    path.write_text(json.dumps({**shipped, "timezone": TZ, "targets": targets}))
    return path, environ


def _write_history(now: datetime) -> int:
    """The last 90 minutes: alpha all ok; beta ok until 20 minutes ago, then its connection
    critical, with an open critical incident. Returns beta's incident id."""
    url = os.environ["WESTEP_OPS_STORAGE_URL"]
    with psycopg.connect(url, autocommit=True) as conn:
        migrate(conn)
        rows = []
        for m in range(90, -1, -1):
            ts = now - timedelta(minutes=m)
            for category in ("connection", "api"):
                rows.append(("alpha", ts, category, "ok"))
                bad = category == "connection" and m < 20
                rows.append(("beta", ts, category, "critical" if bad else "ok"))
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO westep_ops.samples (target, ts, kind, category, status, summary)"
                " VALUES (%s, %s, 'cheap', %s, %s, 'x')",
                rows,
            )
            cur.executemany(
                "INSERT INTO westep_ops.performance_samples (target, ts, mean_api_ms,"
                " http_requests, http_failures, tps, status) VALUES (%s, %s, %s, 2, 0, 1, 'ok')",
                [
                    (t, now - timedelta(minutes=m), 100 if t == "alpha" else 900)
                    for m in range(0, 90, 5)
                    for t in ("alpha", "beta")
                ],
            )
        started = now - timedelta(minutes=19, seconds=50)
        (iid,) = conn.execute(
            "INSERT INTO westep_ops.incidents (target, category, severity, started_at,"
            " detected_at, summary) VALUES ('beta', 'connection', 'critical', %s, %s, 'down')"
            " RETURNING id",
            (started, started + timedelta(seconds=30)),
        ).fetchone()
        conn.execute(
            "INSERT INTO westep_ops.alerts (target, incident_id, ts, kind, severity, category,"
            " message) VALUES ('beta', %s, %s, 'opened', 'critical', 'connection', 'down')",
            (iid, started + timedelta(seconds=30)),
        )
    return int(iid)


def test_two_targets_in_one_store_each_see_only_their_own_rows(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    clear_history()
    now = datetime.now(UTC).replace(microsecond=0)
    iid = _write_history(now)
    config_path, environ = _fleet_config(tmp_path, sandbox)
    config = load_config(config_path)
    url = os.environ["WESTEP_OPS_STORAGE_URL"]
    store = HistoryStore(url)
    try:
        # Daily rollups: each target's rows, written with its name, counting its samples.
        day = datetime.combine(now.astimezone(ZoneInfo(TZ)).date(), datetime.min.time())
        start = day.replace(tzinfo=ZoneInfo(TZ)) - timedelta(days=1)
        end = start + timedelta(days=2)
        for target in ("alpha", "beta"):
            rollups.roll_up_health(store, start, end, TZ, 125, target=target)
            rollups.roll_up_performance(store, start, end, TZ, target=target)
        with psycopg.connect(url) as conn:
            health = {
                (t, c): (ok, critical)
                for t, c, ok, critical in conn.execute(
                    "SELECT target, category, sum(ok), sum(critical) FROM westep_ops.daily_health"
                    " GROUP BY target, category"
                )
            }
            hourly = dict(
                conn.execute(
                    "SELECT target, max(p95_api_ms) FROM westep_ops.hourly_performance"
                    " GROUP BY target"
                ).fetchall()
            )
        assert health[("alpha", "connection")] == (91, 0)
        assert health[("beta", "connection")] == (71, 20)
        assert health[("alpha", "api")] == health[("beta", "api")] == (91, 0)
        assert hourly == {"alpha": 100, "beta": 900}
        # A refresh of one target leaves the other's rows alone.
        rollups.roll_up_health(store, start, end, TZ, 125, target="alpha")
        with psycopg.connect(url) as conn:
            (n,) = conn.execute(
                "SELECT count(*) FROM westep_ops.daily_health WHERE target = 'beta'"
            ).fetchone()
        assert n == 2
        a_inc = rollups.load_incidents(store, start, end, target="alpha")
        b_inc = rollups.load_incidents(store, start, end, target="beta")
        assert a_inc.empty and list(b_inc["id"]) == [iid]
        # The monthly figures: beta's incident is beta's, not alpha's.
        month = now.astimezone(ZoneInfo(TZ)).strftime("%Y-%m")
        reports = tmp_path / "reports"
        fleet = monthly.build_fleet(
            store,
            month,
            [(t, config) for t in ("alpha", "beta")],
            reports_dir=reports,
        )
    finally:
        store.close()
    a, b = fleet.reports["alpha"].figures, fleet.reports["beta"].figures
    assert (a.incidents, b.incidents) == (0, 1)
    assert b.mttr_open_incidents == 1 and b.down_minutes > 15 and a.down_minutes == 0
    assert a.alerts == 0 and b.alerts == 1
    assert a.availability == 1.0 and b.availability is not None and b.availability < 0.9
    # Ninety minutes of a month: too little measured time, never counted as met.
    assert a.status()["availability"] == "insufficient data"
    text = fleet.path.read_text() if fleet.path else ""
    assert fleet.path == reports / month / "fleet-report.md"
    assert (reports / month / "alpha" / "sla-report.md").exists()
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if "[" in line}
    assert set(rows) == {"alpha", "beta"}
    assert "| 0 / 0 |" in rows["alpha"] and "| 1 / 1 |" in rows["beta"]
    assert "insufficient data" in rows["alpha"] and "100.000%" in rows["alpha"]
    assert "Availability: 0 of 2 targets met" in text
    per_target = (reports / month / "beta" / "sla-report.md").read_text()
    assert per_target.startswith(f"# beta: SLA report {month} (Asia/Tokyo)")
    assert "not judged: availability (insufficient data:" in per_target

    # westep-ops status: one line per target, its own state and incidents.
    out = run_cli("--config", str(config_path), "status", "--json", env=environ)
    assert out.returncode == 2, out.stderr  # beta is critical
    doc = {t["target"]: t for t in json.loads(out.stdout)["targets"]}
    assert doc["alpha"]["state"] == "ok" and doc["alpha"]["open_incidents"] == []
    assert doc["beta"]["state"] == "critical" and doc["beta"]["failing"] == {
        "connection": "critical"
    }
    assert [i["id"] for i in doc["beta"]["open_incidents"]] == [iid]
    assert doc["alpha"]["availability"] == 1.0 and doc["alpha"]["worker"] is None
    assert 0 < doc["beta"]["availability"] < 1 and doc["beta"]["measured_share"] > 0
    assert doc["alpha"]["last_sample_age_s"] < 60
    alone = run_cli("--config", str(config_path), "status", "--target", "alpha", env=environ)
    assert alone.returncode == 0, alone.stderr
    assert "beta" not in alone.stdout and "alpha" in alone.stdout
    tagged = run_cli("--config", str(config_path), "status", "--tag", "team=beta", env=environ)
    assert tagged.returncode == 2 and "CRITICAL (connection critical)" in tagged.stdout
    assert f"#{iid} connection" in tagged.stdout

    # The worker holding a valid lease is shown; an expired lease is no holder.
    with psycopg.connect(url, autocommit=True) as conn:
        ours = not conn.execute("SELECT to_regclass('westep_ops.leases')").fetchone()[0]
        if ours:  # the fleet worker's table (FLEET.md: target PK, worker, epoch, expires_at)
            conn.execute(
                "CREATE TABLE westep_ops.leases (target text PRIMARY KEY, worker text NOT NULL,"
                " epoch bigint NOT NULL, expires_at timestamptz NOT NULL)"
            )
        conn.execute(
            "INSERT INTO westep_ops.leases (target, worker, epoch, expires_at) VALUES"
            " ('alpha', 'worker-a', 1, now() + interval '1 minute'),"
            " ('beta', 'worker-b', 1, now() - interval '1 second')"
        )
    try:
        leased = run_cli("--config", str(config_path), "status", "--json", env=environ)
        doc = {t["target"]: t for t in json.loads(leased.stdout)["targets"]}
        assert (doc["alpha"]["worker"], doc["beta"]["worker"]) == ("worker-a", None)
        text_out = run_cli("--config", str(config_path), "status", env=environ).stdout
        assert "worker-a" in text_out and "worker-b" not in text_out
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            if ours:
                conn.execute("DROP TABLE westep_ops.leases")
            else:
                conn.execute("DELETE FROM westep_ops.leases WHERE target IN ('alpha', 'beta')")

    # A target with no recent sample is "not measured", never a default "ok".
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DELETE FROM westep_ops.samples WHERE target = 'alpha'")
    quiet = run_cli("--config", str(config_path), "status", "--target", "alpha", env=environ)
    assert quiet.returncode == 1, quiet.stderr
    assert "NOT MEASURED" in quiet.stdout and "never" in quiet.stdout
    # Not measured now, but its critical incident is still open: the last thing known.
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DELETE FROM westep_ops.samples WHERE target = 'beta'")
    blind = run_cli("--config", str(config_path), "status", "--json", env=environ)
    (beta,) = [t for t in json.loads(blind.stdout)["targets"] if t["target"] == "beta"]
    assert blind.returncode == 2 and beta["state"] == "not measured" and beta["failing"] == {}
    clear_history()


def test_status_on_a_store_that_is_down_exits_3_with_one_line(sandbox: Sandbox) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = f"postgresql://westep_ops:secret-pw@127.0.0.1:{port}/westep_ops"
    out = run_cli("status", env={"WESTEP_OPS_STORAGE_URL": down})
    assert out.returncode == 3
    assert out.stderr.splitlines() == [out.stderr.strip()] and out.stderr.startswith(
        "error: ops store unavailable: connection refused"
    )
    assert "secret-pw" not in out.stderr + out.stdout and out.stdout == ""


def test_drill_runs_on_one_target_and_says_so_when_several_match(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    config_path, environ = _fleet_config(tmp_path, sandbox)
    both = run_cli("--config", str(config_path), "drill", "--faults", "orphans", env=environ)
    assert both.returncode == 2 and both.stdout == ""
    assert both.stderr.splitlines() == [
        "error: drill runs on one target; 2 match (alpha, beta): name one with --target NAME"
    ]
    tagged = run_cli(
        "--config", str(config_path), "drill", "--tag", "environment=sandbox", env=environ
    )
    assert tagged.returncode == 2 and "2 match (alpha, beta)" in tagged.stderr
    unknown = run_cli(
        "--config",
        str(config_path),
        "trends",
        "--month",
        "2026-11",
        "--target",
        "gamma",
        env=environ,
    )
    assert unknown.returncode == 2
    assert unknown.stderr.startswith("error: unknown target gamma (targets: alpha, beta)")
