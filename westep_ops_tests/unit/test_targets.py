"""Targets in the config (issue 14, item 1): parsing, merging, selection, refusals and
redaction, without a sandbox; the CLI's `targets list|check` against a fake environment."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from westep_ops.config import Config, parse_config, target_config
from westep_ops.environment import Environment
from westep_ops.errors import WestepError
from westep_ops.redact import redact
from westep_ops.targets import DEFAULT_TARGET, resolve_targets, select
from westep_ops_tests.helpers import ROOT, run_cli

SHIPPED = json.loads((ROOT / "westep-ops.json").read_text())
STAGING_DSN = "postgresql://monitor:st4ging-pw@db.staging:5432/postgres"
STAGING_POOLED = "postgresql://monitor:st4ging-pw@db.staging:6432/postgres"


def _fleet(**extra: Any) -> dict[str, Any]:
    return {
        **SHIPPED,
        "targets": [
            {
                "name": "staging",
                "env": {"DIRECT_URL": "STAGING_DIRECT_URL", "DATABASE_URL": "STAGING_DATABASE_URL"},
                "tags": {"environment": "staging", "team": "core"},
                "overrides": {
                    "monitoring": {"thresholds": {"responseTime": 500}},
                    "criticalTables": [{"table": "public.only_here", "roles": ["anon"]}],
                },
            },
            {"name": "prod", "secretsFile": "prod.env", "tags": {"environment": "prod"}},
        ],
        **extra,
    }


def test_no_targets_is_one_default_target_with_todays_config_and_environment() -> None:
    config = parse_config(SHIPPED)
    env = {"DIRECT_URL": STAGING_DSN, "DATABASE_URL": STAGING_POOLED, "ALERT_CHANNEL": "#ops"}
    (target,) = resolve_targets(config, env)
    assert target.name == DEFAULT_TARGET and dict(target.tags) == {}
    assert target.config is config  # nothing merged, nothing re-read
    assert target.environment == Environment.from_env(env)
    assert target.missing() == []
    assert target.sources["DIRECT_URL"].where == "DIRECT_URL"


def test_overrides_merge_objects_and_replace_lists() -> None:
    config = parse_config(_fleet())
    effective = target_config(config, config.targets[0])
    assert effective.monitoring.thresholds.response_time == 500  # overridden
    assert effective.monitoring.thresholds.error_rate == config.monitoring.thresholds.error_rate
    assert effective.monitoring.intervals == config.monitoring.intervals  # untouched object
    assert [t.table for t in effective.critical_tables] == ["public.only_here"]  # list replaced
    assert effective.grants == config.grants  # shared section reused
    assert effective.pool == config.pool and effective.targets == []
    assert effective.realtime == config.realtime and effective.auth == config.auth
    assert target_config(config, config.targets[1]).critical_tables == config.critical_tables


def test_a_section_set_only_in_one_target_is_required_there_only() -> None:
    data = {k: v for k, v in _fleet().items() if k != "realtime"}
    data["targets"][0]["overrides"]["realtime"] = {"tables": ["public.steps"]}
    config = parse_config(data)
    assert target_config(config, config.targets[0]).realtime.required is True
    assert target_config(config, config.targets[1]).realtime.required is False


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (
            {"name": "a", "env": {"DIRECT_URL": STAGING_DSN}},
            "targets[0].env.DIRECT_URL: must be the NAME",
        ),
        (
            {"name": "a", "env": {"DIRECT_URL": "hunter2"}},
            "targets[0].env.DIRECT_URL: must be the NAME",
        ),
        (
            {"name": "a", "env": {"DIRECT_URL": "X"}, "tags": {"k": STAGING_DSN}},
            "targets[0].tags.k: looks like a connection string with a password or a key",
        ),
        (
            {
                "name": "a",
                "env": {"DIRECT_URL": "X"},
                "tags": {"k": "eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoiYW5vbiJ9.x"},
            },
            "targets[0].tags.k: looks like a connection string with a password or a key",
        ),
        (
            {"name": "a", "env": {"DIREC_URL": "X"}},
            "targets[0].env: not a westep-ops variable: DIREC_URL",
        ),
        ({"name": "a"}, "targets[0]: a target needs 'env'"),
        (
            {"name": "a b", "env": {"DIRECT_URL": "X"}},
            "targets[0].name: String should match pattern",
        ),
        (
            {"name": "a", "env": {"DIRECT_URL": "X"}, "overrides": {"targets": []}},
            "targets do not nest",
        ),
        (
            {
                "name": "a",
                "env": {"DIRECT_URL": "X"},
                "overrides": {"monitoring": {"timeouts": {"connect": 1}}},
            },
            "targets[0].overrides.monitoring.timeouts.connect: Input should be greater than or equal to 100",
        ),
        (
            {"name": "a", "env": {"DIRECT_URL": "X"}, "overrides": {"criticalTable": []}},
            "targets[0].overrides.criticalTable: unknown key",
        ),
    ],
)
def test_a_bad_target_is_one_line_naming_the_key_and_never_the_secret(
    target: dict[str, Any], expected: str
) -> None:
    with pytest.raises(WestepError) as e:
        parse_config({**SHIPPED, "targets": [target]}, "fleet.json")
    message = str(e.value)
    assert message.startswith("config error in fleet.json: ") and expected in message
    assert "\n" not in message and e.value.exit_code == 2
    for secret in ("st4ging-pw", "hunter2", "eyJhbGci"):
        assert secret not in message


def test_target_names_are_unique() -> None:
    one = {"name": "a", "env": {"DIRECT_URL": "X"}}
    with pytest.raises(WestepError, match="target names must be unique: a"):
        parse_config({**SHIPPED, "targets": [one, one]})


def test_each_target_reads_its_own_variables_and_never_borrows_the_default_ones(
    tmp_path: Path,
) -> None:
    (tmp_path / "prod.env").write_text(
        "# prod\nexport DIRECT_URL='postgresql://monitor:pr0d-pw@db.prod/postgres'\n"
        "WEBHOOK_URL=https://hooks.slack.com/services/T/B/pr0dhook\nOTHER_APP_KEY=ignored\n"
    )
    environ = {
        "STAGING_DIRECT_URL": STAGING_DSN,
        "STAGING_DATABASE_URL": STAGING_POOLED,
        "DIRECT_URL": "postgresql://monitor:default-pw@db.default/postgres",  # not a target's
        "DATABASE_URL": "postgresql://monitor:default-pw@db.default:6432/postgres",
        "WESTEP_OPS_STORAGE_URL": "postgresql://ops:ops-pw@ops/ops",
    }
    staging, prod = resolve_targets(parse_config(_fleet()), environ, tmp_path)
    assert staging.environment.direct_url == STAGING_DSN
    assert staging.environment.storage_url == environ["WESTEP_OPS_STORAGE_URL"]  # shared
    assert staging.sources["WESTEP_OPS_STORAGE_URL"].origin == "shared"
    assert staging.missing() == [] and staging.config.monitoring.thresholds.response_time == 500
    assert prod.environment.direct_url == "postgresql://monitor:pr0d-pw@db.prod/postgres"
    assert prod.environment.database_url is None  # the default's DATABASE_URL is not borrowed
    assert prod.missing() == ["DATABASE_URL"]
    assert prod.sources["DATABASE_URL"].origin == "file"
    assert prod.environment.webhook_url == "https://hooks.slack.com/services/T/B/pr0dhook"
    assert prod.environment.storage_url == environ["WESTEP_OPS_STORAGE_URL"]  # not in the file
    # Every secret read for a target is masked wherever it would be printed.
    text = redact(f"{STAGING_DSN} pr0d-pw https://hooks.slack.com/services/T/B/pr0dhook")
    assert "st4ging-pw" not in text and "pr0d-pw" not in text and "pr0dhook" not in text
    assert "st4ging-pw" not in repr(staging) and "pr0d-pw" not in repr(prod)


def test_a_malformed_value_names_the_target_and_the_variable_it_came_from() -> None:
    environ = {"STAGING_DIRECT_URL": "mysql://monitor:st4ging-pw@db/x"}
    with pytest.raises(WestepError) as e:
        resolve_targets(parse_config(_fleet()), environ, Path("/nonexistent"))
    assert str(e.value) == (
        "target staging: DIRECT_URL must be a postgresql:// URL (got scheme 'mysql')"
        " (from $STAGING_DIRECT_URL)"
    )


def test_a_missing_or_malformed_secrets_file_is_one_line_without_its_content(
    tmp_path: Path,
) -> None:
    config = parse_config(_fleet())
    with pytest.raises(WestepError, match=r"secrets file .*prod.env: not found"):
        resolve_targets(config, {}, tmp_path)
    (tmp_path / "prod.env").write_text("DIRECT_URL=postgresql://m:x@h/db\nsecret-without-key\n")
    with pytest.raises(WestepError) as e:
        resolve_targets(config, {}, tmp_path)
    assert "line 2: not KEY=VALUE" in str(e.value) and "secret-without-key" not in str(e.value)


def test_select_by_name_and_tag() -> None:
    targets = parse_config(_fleet()).targets
    assert [t.name for t in select(targets)] == ["staging", "prod"]
    assert [t.name for t in select(targets, ["prod", "staging"])] == ["staging", "prod"]
    assert [t.name for t in select(targets, tags={"environment": "prod"})] == ["prod"]
    assert [t.name for t in select(targets, ["staging"], {"team": "core"})] == ["staging"]
    with pytest.raises(WestepError, match=r"^unknown target nope \(targets: staging, prod\)$"):
        select(targets, ["nope"])
    with pytest.raises(WestepError, match=r"^no target matches --tag environment=dev"):
        select(targets, tags={"environment": "dev"})
    with pytest.raises(WestepError, match=r"^no target matches --target prod --tag team=core"):
        select(targets, ["prod"], {"team": "core"})


def test_config_show_without_targets_is_unchanged(tmp_path: Path) -> None:
    assert "targets" not in Config().model_dump(by_alias=True, exclude={"targets"})
    out = run_cli("--config", str(ROOT / "westep-ops.json"), "config", "show", "--json")
    assert out.returncode == 0, out.stderr
    assert "targets" not in json.loads(out.stdout)["config"]


def test_targets_list_and_check_show_names_never_values(tmp_path: Path) -> None:
    path = tmp_path / "fleet.json"
    path.write_text(json.dumps(_fleet()))
    (tmp_path / "prod.env").write_text("DIRECT_URL=postgresql://monitor:pr0d-pw@db.prod/postgres\n")
    env = {"STAGING_DIRECT_URL": STAGING_DSN, "STAGING_DATABASE_URL": STAGING_POOLED}
    listed = run_cli("--config", str(path), "targets", "list", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    doc = json.loads(listed.stdout)["targets"]
    assert [t["name"] for t in doc] == ["staging", "prod"]
    assert doc[0]["variables"]["DIRECT_URL"] == {
        "from": "env",
        "name": "STAGING_DIRECT_URL",
        "set": True,
    }
    assert doc[1]["variables"]["DATABASE_URL"]["set"] is False
    checked = run_cli("--config", str(path), "targets", "check", env=env)
    assert checked.returncode == 2
    assert "ok  staging" in checked.stdout
    assert "FAIL  prod: not set: DATABASE_URL" in checked.stdout
    assert checked.stderr.strip() == "error: 1 of 2 targets cannot be monitored as configured"
    ok = run_cli("--config", str(path), "targets", "check", "--tag", "environment=staging", env=env)
    assert ok.returncode == 0 and ok.stdout.strip().endswith("1 target ok")
    for out in (listed, checked, ok):
        assert "st4ging-pw" not in out.stdout + out.stderr
        assert "pr0d-pw" not in out.stdout + out.stderr
    unknown = run_cli("--config", str(path), "targets", "list", "--target", "nope", env=env)
    assert unknown.returncode == 2 and unknown.stderr.startswith("error: unknown target nope")


def test_a_target_cannot_override_the_time_zone() -> None:
    raw = {
        "targets": [{"name": "a", "env": {"DIRECT_URL": "A_URL"}, "overrides": {"timezone": "UTC"}}]
    }
    with pytest.raises(WestepError, match="cannot set timezone"):
        parse_config(raw)
