"""Bad configuration is one clear line naming the key, exit code 2, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from westep_ops.config import load_config
from westep_ops_tests.helpers import ROOT, run_cli


def _write(tmp_path: Path, data: object) -> Path:
    p = tmp_path / "cfg.json"
    p.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return p


def _shipped() -> dict:
    return json.loads((ROOT / "westep-ops.json").read_text())


def _check(path: Path) -> tuple[int, str]:
    res = run_cli("--config", str(path), "config", "check")
    assert "Traceback" not in res.stderr
    return res.returncode, res.stderr.strip()


def test_shipped_sandbox_config_is_valid() -> None:
    cfg = load_config(ROOT / "westep-ops.json")
    assert cfg.monitoring.intervals.health == 300_000
    assert cfg.monitoring.auto_recovery.max_attempts_per_hour == 3
    assert cfg.timezone == "Asia/Tokyo"
    res = run_cli("--config", str(ROOT / "westep-ops.json"), "config", "check")
    assert res.returncode == 0 and "3 critical tables" in res.stdout


def _broken(mutate) -> dict:  # type: ignore[no-untyped-def]
    data = _shipped()
    mutate(data)
    return data


CASES = [
    (
        "missing key",
        _broken(lambda d: d["criticalTables"][0].pop("roles")),
        "criticalTables[0].roles: required key is missing",
    ),
    (
        "wrong type",
        _broken(lambda d: d["monitoring"]["thresholds"].__setitem__("responseTime", "fast")),
        "monitoring.thresholds.responseTime: Input should be a valid number",
    ),
    (
        "unknown repair action",
        _broken(
            lambda d: d["monitoring"]["autoRecovery"].__setitem__(
                "actions", {"pool": ["reboot_everything"]}
            )
        ),
        "monitoring.autoRecovery.actions.pool[0]: Input should be",
    ),
    (
        "unknown key (typo)",
        _broken(lambda d: d["monitoring"].__setitem__("autoRecovry", {})),
        "monitoring.autoRecovry: unknown key",
    ),
    (
        "hostile identifier",
        _broken(
            lambda d: d["criticalTables"][0].__setitem__("table", "public.steps; DROP TABLE x")
        ),
        "criticalTables[0].table: 'public.steps; DROP TABLE x' is not a SQL identifier",
    ),
    (
        "bad time zone",
        _broken(lambda d: d.__setitem__("timezone", "Mars/Olympus")),
        "timezone: unknown time zone 'Mars/Olympus'",
    ),
    ("invalid JSON", '{"monitoring": {', "invalid JSON at line 1"),
    ("not an object", "[1, 2]", "the top level must be a JSON object"),
]


@pytest.mark.parametrize("label,data,expected", CASES, ids=[c[0] for c in CASES])
def test_bad_config_is_one_line_exit_2(
    tmp_path: Path, label: str, data: object, expected: str
) -> None:
    code, err = _check(_write(tmp_path, data))
    assert code == 2, label
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: config error")
    assert expected in err


def test_unreadable_and_missing_files(tmp_path: Path) -> None:
    code, err = _check(tmp_path)  # a directory cannot be read as a file
    assert code == 2 and "cannot read" in err and len(err.splitlines()) == 1
    binary = tmp_path / "bin.json"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    code, err = _check(binary)
    assert code == 2 and "cannot read" in err
    code, err = _check(tmp_path / "nope.json")
    assert code == 2 and "file not found" in err


def test_env_config_path_is_used(tmp_path: Path) -> None:
    p = _write(tmp_path, {"timezone": "Europe/Paris"})
    res = run_cli("config", "check", env={"WESTEP_OPS_CONFIG": str(p)})
    assert res.returncode == 0 and "Europe/Paris" in res.stdout


def test_other_commands_share_the_error_path(tmp_path: Path) -> None:
    p = _write(tmp_path, {"monitoring": {"intervals": {"health": 5}}})
    res = run_cli("--config", str(p), "test-connection")
    assert res.returncode == 2
    assert (
        "monitoring.intervals.health: Input should be greater than or equal to 1000" in res.stderr
    )


def test_usage_errors_are_one_line() -> None:
    for args in (
        ["no-such-command"],
        ["sandbox", "fault", "orphans", "sideways"],
        ["test-connection", "--bogus"],
    ):
        res = run_cli(*args)
        assert res.returncode == 2, args
        assert len(res.stderr.strip().splitlines()) == 1 and res.stderr.startswith("error: "), (
            res.stderr
        )
