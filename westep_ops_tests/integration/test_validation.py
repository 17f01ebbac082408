"""Bad values are refused where they are written (issue 9 item 11).

Every case runs the real ``westep-ops`` command: a refusal is exit code 2 (3 for the
commands whose exit code is a health state) and one ``error:`` line on stderr naming
the key or option, never a traceback. Values that used to pass and fail later (an
overflowing interval, an infinite threshold, a name with a trailing newline) are here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from westep_ops.config import Category, RepairAction, load_config
from westep_ops.sandbox import faults
from westep_ops.sandbox.manager import Sandbox
from westep_ops_tests.helpers import ROOT, run_cli, write_config
from westep_ops_tests.integration.conftest import clear_history

SHIPPED = json.loads((ROOT / "westep-ops.json").read_text())


def _one_error_line(res: Any) -> str:
    assert "Traceback" not in res.stderr, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


def _with(path: tuple[str | int, ...], value: object) -> str:
    """The shipped config as JSON text with one value replaced (the sandbox's real config)."""
    data = json.loads(json.dumps(SHIPPED))
    node: Any = data
    for p in path[:-1]:
        node = node.setdefault(p, {}) if isinstance(p, str) else node[p]
    node[path[-1]] = value
    return json.dumps(data)


def _raw(path: tuple[str | int, ...], literal: str) -> str:
    """Like :func:`_with`, for JSON literals Python cannot write (1e999, NaN)."""
    return _with(path, "@@LITERAL@@").replace('"@@LITERAL@@"', literal)


TH = ("monitoring", "thresholds")
TO = ("monitoring", "timeouts")
IV = ("monitoring", "intervals")
AR = ("monitoring", "autoRecovery")
AL = ("monitoring", "alerting")

# (case id, config text, the key the one error line must name)
CONFIG_CASES = [
    # numbers PostgreSQL or the engine cannot take
    ("statement timeout 1e12", _with((*TO, "statement"), 1e12), "monitoring.timeouts.statement"),
    (
        "statement timeout 10**12 ms",
        _with((*TO, "statement"), 10**12),
        "monitoring.timeouts.statement",
    ),
    ("lock timeout 0 (no limit)", _with((*TO, "lock"), 0), "monitoring.timeouts.lock"),
    ("http timeout an hour", _with((*TO, "http"), 3_600_000), "monitoring.timeouts.http"),
    ("health interval 1e30", _with((*IV, "health"), 1e30), "monitoring.intervals.health"),
    ("health interval 10**30 ms", _with((*IV, "health"), 10**30), "monitoring.intervals.health"),
    (
        "interval with a fraction",
        _with((*IV, "performance"), 60000.5),
        "monitoring.intervals.performance",
    ),
    (
        "interval a week",
        _with((*IV, "performance"), 7 * 86_400_000),
        "monitoring.intervals.performance",
    ),
    (
        "reminder 1e30 minutes",
        _with((*AL, "reminderMinutes"), 1e30),
        "monitoring.alerting.reminderMinutes",
    ),
    (
        "maintenance timeout 1e12 s",
        _with(("repairs", "maintenanceTimeoutSeconds"), 1e12),
        "repairs.maintenanceTimeoutSeconds",
    ),
    (
        "stuck query age 1e30 s",
        _with(("repairs", "stuckQuerySeconds"), 1e30),
        "repairs.stuckQuerySeconds",
    ),
    # thresholds: finite, non-negative, ratios in [0, 1]
    (
        "responseTime 1e999 (infinity)",
        _raw((*TH, "responseTime"), "1e999"),
        "monitoring.thresholds.responseTime",
    ),
    ("responseTime NaN", _raw((*TH, "responseTime"), "NaN"), "monitoring.thresholds.responseTime"),
    (
        "responseTime negative",
        _with((*TH, "responseTime"), -1),
        "monitoring.thresholds.responseTime",
    ),
    ("errorRate above 1", _with((*TH, "errorRate"), 1.5), "monitoring.thresholds.errorRate"),
    ("errorRate negative", _with((*TH, "errorRate"), -0.1), "monitoring.thresholds.errorRate"),
    (
        "connectionUsage 2",
        _with((*TH, "connectionUsage"), 2),
        "monitoring.thresholds.connectionUsage",
    ),
    (
        "deadTupleRatio Infinity",
        _raw((*TH, "deadTupleRatio"), "Infinity"),
        "monitoring.thresholds.deadTupleRatio",
    ),
    (
        "replicationLagBytes negative",
        _with((*TH, "replicationLagBytes"), -1),
        "monitoring.thresholds.replicationLagBytes",
    ),
    (
        "poolMaxWaitSeconds -Infinity",
        _raw((*TH, "poolMaxWaitSeconds"), "-Infinity"),
        "monitoring.thresholds.poolMaxWaitSeconds",
    ),
    (
        "latencyBudgetMs 1e999",
        _raw(("endpoints", 0, "latencyBudgetMs"), "1e999"),
        "endpoints[0].latencyBudgetMs",
    ),
    # counts are integers with bounds, booleans are booleans
    (
        "maxAttemptsPerHour true",
        _with((*AR, "maxAttemptsPerHour"), True),
        "monitoring.autoRecovery.maxAttemptsPerHour",
    ),
    (
        "maxAttemptsPerHour 1e9",
        _with((*AR, "maxAttemptsPerHour"), 10**9),
        "monitoring.autoRecovery.maxAttemptsPerHour",
    ),
    (
        'maxAttemptsPerHour "3"',
        _with((*AR, "maxAttemptsPerHour"), "3"),
        "monitoring.autoRecovery.maxAttemptsPerHour",
    ),
    (
        "failureThreshold 2.0",
        _with((*AL, "failureThreshold"), 2.0),
        "monitoring.alerting.failureThreshold",
    ),
    (
        "successThreshold 0",
        _with((*AL, "successThreshold"), 0),
        "monitoring.alerting.successThreshold",
    ),
    ('enabled "yes"', _with((*AR, "enabled"), "yes"), "monitoring.autoRecovery.enabled"),
    ("enabled 1", _with((*AR, "enabled"), 1), "monitoring.autoRecovery.enabled"),
    (
        'expectStatus "200"',
        _with(("endpoints", 0, "expectStatus"), "200"),
        "endpoints[0].expectStatus",
    ),
    # identifiers and strings: no control characters, no surrounding whitespace
    (
        "table with trailing newline",
        _with(("criticalTables", 0, "table"), "public.profiles\n"),
        "criticalTables[0].table",
    ),
    (
        "role with leading space",
        _with(("criticalTables", 0, "roles", 0), " anon"),
        "criticalTables[0].roles[0]",
    ),
    (
        "column with a tab",
        _with(("integrityRules", 0, "columns", 0), "step_id\t"),
        "integrityRules[0].columns[0]",
    ),
    ("grant role with NUL", _with(("grants", 0, "role"), "anon\u0000"), "grants[0].role"),
    (
        "endpoint path with newline",
        _with(("endpoints", 0, "path"), "/api/health\n"),
        "endpoints[0].path",
    ),
    (
        "endpoint path with DEL",
        _with(("endpoints", 0, "path"), "/api/\u007fhealth"),
        "endpoints[0].path",
    ),
    (
        "unknown action key",
        _with((*AR, "actions"), {"bogus": ["restore_db_connection"]}),
        "monitoring.autoRecovery.actions.bogus",
    ),
    # values that crashed the loader (exit 3, "unexpected ...") instead of naming the key
    ("timezone that is a folder", _with(("timezone",), "Asia"), "timezone"),
    (
        "privilege that is a number",
        _with(("grants", 0, "privileges"), [1]),
        "grants[0].privileges[0]",
    ),
    # the file's shape
    ("key given twice", '{"timezone": "UTC", "timezone": "Asia/Tokyo"}', "timezone"),
    ("nested below a key", '{"monitoring": ' + '{"x": ' * 40 + "1" + "}" * 41, "monitoring.x.x.x"),
]


@pytest.mark.parametrize(
    ("text", "key"), [c[1:] for c in CONFIG_CASES], ids=[c[0] for c in CONFIG_CASES]
)
def test_config_check_refuses_the_value_naming_the_key(tmp_path: Path, text: str, key: str) -> None:
    cfg = tmp_path / "cfg.json"
    cfg.write_text(text)
    res = run_cli("--config", str(cfg), "config", "check")
    line = _one_error_line(res)
    assert res.returncode == 2, line
    assert line.startswith(f"error: config error in {cfg}: {key}"), line


def test_deeply_nested_file_is_one_line_exit_2(tmp_path: Path) -> None:
    cfg = tmp_path / "deep.json"
    cfg.write_text("[" * 100_000 + "]" * 100_000)  # json.loads raised RecursionError: exit 3
    res = run_cli("--config", str(cfg), "config", "check")
    assert res.returncode == 2
    assert "nested deeper than" in _one_error_line(res)


def test_an_integer_too_long_to_read_is_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "long.json"
    cfg.write_text('{"monitoring": {"intervals": {"health": ' + "9" * 5000 + "}}}")
    res = run_cli("--config", str(cfg), "config", "check")
    assert res.returncode == 2 and "invalid JSON" in _one_error_line(res)


def test_the_bounds_accept_their_edges_and_json_shapes(tmp_path: Path) -> None:
    """Strictness must not refuse a correct config: edges, ints for floats, enum names."""
    data = json.loads(json.dumps(SHIPPED))
    m = data["monitoring"]
    m["intervals"] = {"health": 86_400_000, "performance": 1000}
    m["timeouts"] = {"connect": 100, "statement": 600_000, "lock": 600_000, "http": 600_000}
    m["thresholds"].update(responseTime=1500, errorRate=0, connectionUsage=1)
    m["autoRecovery"].update(maxAttemptsPerHour=0, actions={"pool": ["restore_connection_pool"]})
    m["alerting"] = {"failureThreshold": 100, "confirmDelaySeconds": 0, "reminderMinutes": 10080}
    cfg = tmp_path / "edges.json"
    cfg.write_text(json.dumps(data))
    res = run_cli("--config", str(cfg), "config", "check")
    assert res.returncode == 0, res.stderr
    c = load_config(cfg)
    assert c.monitoring.timeouts.statement == 600_000
    assert c.monitoring.thresholds.response_time == 1500.0
    assert c.monitoring.auto_recovery.actions == {
        Category.pool: [RepairAction.restore_connection_pool]
    }


# -- --thresholds files of `trends` --------------------------------------------------------
THRESHOLD_CASES = [
    (
        "unknown key",
        {"settings": [{"name": "a", "responseTim": 1500}]},
        "settings[0].responseTim: unknown key",
    ),
    (
        "negative responseTime",
        {"settings": [{"name": "a", "responseTime": -5}]},
        "settings[0].responseTime",
    ),
    (
        "zero failureThreshold",
        {"settings": [{"name": "a", "failureThreshold": 0}]},
        "settings[0].failureThreshold",
    ),
    (
        "boolean count",
        {"settings": [{"name": "a", "successThreshold": True}]},
        "settings[0].successThreshold",
    ),
    ("string boolean", {"settings": [{"name": "a", "confirm": "no"}]}, "settings[0].confirm"),
    ("name with newline", {"settings": [{"name": "strict\n"}]}, "settings[0].name"),
    (
        "name missing",
        {"settings": [{"confirm": False}]},
        "settings[0].name: required key is missing",
    ),
    ("empty list", {"settings": []}, "settings"),
    (
        "names taken twice",
        {"settings": [{"name": "a"}, {"name": "a"}]},
        "settings: names must be distinct",
    ),
    (
        "the name of the current setting",
        {"settings": [{"name": "current"}]},
        "settings: names must be distinct",
    ),
    ("unknown top-level key", {"settings": [{"name": "a"}], "extra": 1}, "extra: unknown key"),
]


@pytest.mark.parametrize(
    ("data", "expected"), [c[1:] for c in THRESHOLD_CASES], ids=[c[0] for c in THRESHOLD_CASES]
)
def test_thresholds_file_is_refused_before_the_store(
    tmp_path: Path, data: object, expected: str
) -> None:
    th = tmp_path / "th.json"
    th.write_text(json.dumps(data))
    # No ops store at all: the file must be judged first, so the error is about the file.
    res = run_cli(
        "trends", "--month", "2026-11", "--thresholds", str(th), env={"WESTEP_OPS_STORAGE_URL": ""}
    )
    line = _one_error_line(res)
    assert res.returncode == 2
    assert line.startswith(f"error: thresholds error in {th}: {expected}"), line


def test_thresholds_infinity_is_refused(tmp_path: Path) -> None:
    th = tmp_path / "th.json"
    th.write_text('{"settings": [{"name": "a", "responseTime": 1e999}]}')
    res = run_cli(
        "trends", "--month", "2026-11", "--thresholds", str(th), env={"WESTEP_OPS_STORAGE_URL": ""}
    )
    assert (
        res.returncode == 2
        and "settings[0].responseTime: Input should be a finite number" in _one_error_line(res)
    )


# -- --month -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "month",
    [
        "2026-1",
        "2026-13",
        "2026-00",
        "26-11",
        "2026-11-01",
        "2026/11",
        "November",
        "1969-12",
        "２０２６-11",
    ],
)
def test_month_must_be_yyyy_mm_exactly(month: str, tmp_path: Path) -> None:
    env = {"WESTEP_OPS_STORAGE_URL": "", "WESTEP_OPS_REPORTS_DIR": str(tmp_path)}
    res = run_cli("trends", "--month", month, env=env)
    assert res.returncode == 2
    assert _one_error_line(res).startswith("error: --month must be YYYY-MM")
    assert list(tmp_path.iterdir()) == []  # "2026-1" used to write reports/2026-1/


# -- contradictory and out-of-range flags ---------------------------------------------------
FLAG_CASES = [
    (
        "label both ways",
        ["alerts", "label", "1", "--true", "--false"],
        "--real or --false-alarm, not both",
    ),
    ("label neither way", ["alerts", "label", "1"], "give --real or --false-alarm"),
    ("label alert 0", ["alerts", "label", "0", "--true"], "'ALERT_ID'"),
    ("ack alert -1", ["alerts", "ack", "--", "-1"], "'ALERT_ID'"),
    ("ack by nobody", ["alerts", "ack", "1", "--by", " "], "'--by'"),
    ("performance 0 samples", ["performance", "--samples", "0"], "'--samples'"),
    ("performance interval 0", ["performance", "--interval", "0"], "'--interval'"),
    ("performance interval negative", ["performance", "--interval", "-1"], "'--interval'"),
    ("drill interval 0", ["drill", "--interval", "0"], "'--interval'"),
    ("drill with no fault", ["drill", "--faults", ","], "'--faults'"),
    (
        "fault seconds negative",
        ["sandbox", "fault", "orphans", "on", "--seconds", "-5"],
        "'--seconds'",
    ),
    ("sandbox on port 80", ["sandbox", "up", "--base-port", "80"], "'--base-port'"),
    ("sandbox past the last port", ["sandbox", "up", "--base-port", "65534"], "'--base-port'"),
    ("ui on port 0", ["ui", "--port", "0"], "'--port'"),
    ("quarantine id 0", ["quarantine", "restore", "public.step_logs", "--id", "0"], "'--id'"),
    (
        "quarantine rule not a name",
        ["quarantine", "restore", "public.step_logs", "--rule", "a b"],
        "'a b' is not a SQL identifier",
    ),
    (
        "quarantine table with newline",
        ["quarantine", "restore", "public.step_logs\n"],
        "is not a SQL identifier",
    ),
    ("alerts list limit 0", ["alerts", "list", "--limit", "0"], "'--limit'"),
]


@pytest.mark.parametrize(
    ("args", "expected"), [c[1:] for c in FLAG_CASES], ids=[c[0] for c in FLAG_CASES]
)
def test_bad_flags_are_one_line_exit_2(tmp_path: Path, args: list[str], expected: str) -> None:
    # Nothing to reach: were a flag accepted, the command would stop at the missing store
    # or sandbox with another message, never touch a real one.
    env = {
        "WESTEP_OPS_STORAGE_URL": "",
        "WESTEP_OPS_SANDBOX_DIR": str(tmp_path / "sb"),
        "DAGSTER_HOME": str(tmp_path),
    }
    res = run_cli(*args, env=env, timeout=30)
    line = _one_error_line(res)
    assert res.returncode == 2, line
    assert expected in line, line
    assert not (tmp_path / "sb").exists()


# -- one exit-code rule ---------------------------------------------------------------------
@pytest.fixture
def bad_config(tmp_path: Path) -> Path:
    p = tmp_path / "bad.json"
    p.write_text(_with((*IV, "health"), 1e30))
    return p


@pytest.mark.parametrize(
    "args",
    [
        ["health-check"],
        ["health-check", "--json"],
        ["monitor", "--once"],
        ["monitor", "--once", "--no-recovery"],
        ["db-status"],
    ],
    ids=" ".join,
)
def test_health_state_commands_exit_3_on_bad_config(bad_config: Path, args: list[str]) -> None:
    """Their 2 means critical: a bad config must not read as an outage."""
    res = run_cli("--config", str(bad_config), *args)
    assert res.returncode == 3
    assert _one_error_line(res).startswith("error: config error in")


@pytest.mark.parametrize(
    "args",
    [
        ["health-check", "--category", "bogus"],
        ["monitor", "--once", "--bogus"],
        ["db-status", "--bogus"],
    ],
    ids=" ".join,
)
def test_health_state_commands_exit_3_on_bad_flags(args: list[str]) -> None:
    res = run_cli(*args)
    assert res.returncode == 3
    _one_error_line(res)


def test_health_state_commands_exit_3_without_their_connection() -> None:
    res = run_cli("db-status", env={"DIRECT_URL": ""})
    assert res.returncode == 3 and "DIRECT_URL is not set" in _one_error_line(res)
    res = run_cli("monitor", "--once", env={"WESTEP_OPS_STORAGE_URL": ""})
    assert res.returncode == 3 and "WESTEP_OPS_STORAGE_URL is not set" in _one_error_line(res)


@pytest.mark.parametrize(
    "args",
    [
        ["monitor"],
        ["diagnose"],
        ["recover"],
        ["repair"],
        ["repair", "restore_db_connection"],
        ["test-connection"],
        ["performance"],
    ],
    ids=" ".join,
)
def test_other_commands_exit_2_on_bad_config(bad_config: Path, args: list[str]) -> None:
    res = run_cli("--config", str(bad_config), *args)
    assert res.returncode == 2
    assert _one_error_line(res).startswith("error: config error in")


def test_other_commands_exit_2_on_bad_flags() -> None:
    for args in (
        ["monitor", "--bogus"],
        ["diagnose", "--bogus"],
        ["recover", "--bogus"],
        ["repair", "--bogus"],
    ):
        res = run_cli(*args)
        assert res.returncode == 2, args
        _one_error_line(res)


# -- on the real sandbox ----------------------------------------------------------------------
def test_labels_and_exit_codes_on_a_real_alert(sandbox: Sandbox, tmp_path: Path) -> None:
    """A real outage is 2, a bad config 3; --true --false leaves the label as it was."""
    clear_history()
    cfg = write_config(tmp_path / "mon.json", monitoring__alerting__confirmDelaySeconds=0.2)
    faults.inject(sandbox, "grant_revoke", True)
    try:
        res = run_cli("--config", str(cfg), "monitor", "--once", "--no-recovery")
    finally:
        faults.inject(sandbox, "grant_revoke", False)
    assert res.returncode == 2 and "tables=critical" in res.stdout, res.stdout + res.stderr

    def label() -> object:
        listing = json.loads(run_cli("alerts", "list", "--json").stdout)
        return next(a for a in listing if a["id"] == alert_id)["label"]

    alert_id = json.loads(run_cli("alerts", "list", "--json").stdout)[0]["id"]
    both = run_cli("alerts", "label", str(alert_id), "--true", "--false")
    assert both.returncode == 2 and "not both" in _one_error_line(both)
    assert label() is None
    assert run_cli("alerts", "label", str(alert_id), "--false").returncode == 0
    assert label() is False
    assert run_cli("alerts", "label", str(alert_id), "--true").returncode == 0
    assert label() is True

    broken = tmp_path / "broken.json"
    broken.write_text(_with(("monitoring", "autoRecovery", "maxAttemptsPerHour"), True))
    res = run_cli("--config", str(broken), "monitor", "--once", "--no-recovery")
    assert res.returncode == 3 and "maxAttemptsPerHour" in _one_error_line(res)
