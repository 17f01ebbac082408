"""`--target` / `--tag` on the probe, repair, alerts and silence commands (issue 14, item 2):
option parsing, selection errors and exit codes, without a sandbox (nothing here reaches a
database: every case stops at the selection or at a target whose variables are unset)."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest

from westep_ops.cli.common import pick_targets
from westep_ops.errors import WestepError
from westep_ops_tests.helpers import ROOT, run_cli

SHIPPED = json.loads((ROOT / "westep-ops.json").read_text())
VARS = ("DIRECT_URL", "DATABASE_URL")
DSN = "postgresql://monitor:s3cret-pw@db.{}:5432/postgres"


def _fleet(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """Targets a (prod, core), b (prod) and c (dev): only a's and c's variables are set,
    and c's DIRECT_URL is malformed."""
    targets = [
        {
            "name": name,
            "env": {v: f"{name.upper()}_{v}" for v in VARS},
            "tags": tags,
        }
        for name, tags in (
            ("a", {"environment": "prod", "team": "core"}),
            ("b", {"environment": "prod"}),
            ("c", {"environment": "dev"}),
        )
    ]
    path = tmp_path / "fleet.json"
    path.write_text(json.dumps({**SHIPPED, "targets": targets}))
    environ = {f"A_{v}": DSN.format("a") for v in VARS}
    environ.update({"C_DIRECT_URL": "mysql://nope", "C_DATABASE_URL": DSN.format("c")})
    return path, environ


def _ctx(path: Path) -> click.Context:
    ctx = click.Context(click.Command("x"), obj={"config_path": str(path)})
    return ctx


def test_pick_resolves_only_the_picked_targets_and_keeps_each_ones_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, environ = _fleet(tmp_path)
    for k, v in environ.items():
        monkeypatch.setenv(k, v)
    with _ctx(path) as ctx:
        sel = pick_targets(ctx)
        assert sel.fleet and sel.several
        a, b, c = sel.targets
        assert (a.name, a.error, a.env.direct_url) == ("a", None, DSN.format("a"))
        assert a.tags == {"environment": "prod", "team": "core"}
        assert b.env is None and b.error == (
            "target b: not set: DATABASE_URL from $B_DATABASE_URL, DIRECT_URL from $B_DIRECT_URL"
        )
        assert c.env is None and c.error is not None
        assert c.error.startswith("target c: DIRECT_URL") and "$C_DIRECT_URL" in c.error
        assert "s3cret" not in c.error and "mysql://nope" not in c.error
        # c's malformed URL does not stop a selection that leaves it out.
        only = pick_targets(ctx, ["a"])
        assert [p.name for p in only.targets] == ["a"] and not only.several
        prod = pick_targets(ctx, tags=["environment=prod"])
        assert [p.name for p in prod.targets] == ["a", "b"]
        assert [p.name for p in pick_targets(ctx, ["b", "a"], ["team=core"]).targets] == ["a"]
        with pytest.raises(WestepError, match=r"^unknown target z \(targets: a, b, c\)$"):
            pick_targets(ctx, ["z"])
        with pytest.raises(WestepError, match=r"^no target matches --tag environment=qa"):
            pick_targets(ctx, tags=["environment=qa"])
        with pytest.raises(WestepError, match=r"^--tag 'team' is not KEY=VALUE"):
            pick_targets(ctx, tags=["team"])
        with pytest.raises(
            WestepError,
            match=r"^repair acts on one target and 2 match: a, b \(pass --target NAME\)$",
        ) as e:
            pick_targets(ctx, tags=["environment=prod"], one_for="repair")
        assert e.value.exit_code == 2
        assert pick_targets(ctx, ["a"], one_for="repair").targets[0].name == "a"


def test_without_targets_the_one_target_is_default_and_today_s_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DIRECT_URL", DSN.format("x"))
    with _ctx(ROOT / "westep-ops.json") as ctx:
        sel = pick_targets(ctx)
        assert not sel.fleet and not sel.several
        (p,) = sel.targets
        assert (p.name, p.error, p.env.direct_url) == ("default", None, DSN.format("x"))
        assert pick_targets(ctx, ["default"]).targets[0].name == "default"
        with pytest.raises(WestepError, match=r"^unknown target prod \(targets: default\)$"):
            pick_targets(ctx, ["prod"])


@pytest.mark.parametrize(
    ("args", "code", "line"),
    [
        # health-state commands: a bad selection cannot run (3), never critical (2)
        (["health-check", "--target", "z"], 3, "error: unknown target z (targets: a, b, c)"),
        (["db-status", "--tag", "team"], 3, "error: --tag 'team' is not KEY=VALUE"),
        (["test-connection", "--target", "z"], 2, "error: unknown target z"),
        (["diagnose", "--tag", "environment=qa"], 2, "error: no target matches --tag"),
        (["performance", "--target", "z"], 2, "error: unknown target z"),
        (["quarantine", "list", "--target", "z"], 2, "error: unknown target z"),
        (
            ["repair", "--dry-run"],
            2,
            "error: repair acts on one target and 3 match: a, b, c (pass --target NAME)",
        ),
        (
            ["repair", "restore_connection_pool", "--target", "a", "--target", "b"],
            2,
            "error: repair acts on one target and 2 match: a, b (pass --target NAME)",
        ),
        (
            ["recover", "--tag", "environment=prod"],
            2,
            "error: recover acts on one target and 2 match: a, b (pass --target NAME)",
        ),
        (
            ["quarantine", "restore", "public.steps"],
            2,
            "error: quarantine restore acts on one target and 3 match",
        ),
        (["repair", "no_such_action", "--target", "a"], 2, "error: unknown repair action"),
        (["alerts", "list", "--target", "z"], 2, "error: unknown target z"),
        (["alerts", "ack", "1", "--tag", "team"], 2, "error: --tag 'team' is not KEY=VALUE"),
        (["alerts", "label", "1", "--real", "--target", "z"], 2, "error: unknown target z"),
        (["silence", "list", "--tag", "environment=qa"], 2, "error: no target matches"),
        (["silence", "expire", "3", "--target", "z"], 2, "error: unknown target z"),
        (
            ["silence", "add", "--category", "pool", "--for", "1h", "--reason", "r"],
            2,
            "error: silence add: the config has 3 targets (a, b, c); say which with"
            " --target NAME or --tag KEY=VALUE",
        ),
        (
            ["silence", "add", "--category", "pool", "--for", "1h", "--reason", "r"]
            + ["--target", "c"],
            3,
            "error: target c: DIRECT_URL",
        ),
        # one target whose variables are unset: reported for it, exit 3 (nothing to run)
        (
            ["db-status", "--target", "b"],
            3,
            "error: target b: not set: DATABASE_URL from $B_DATABASE_URL, DIRECT_URL from"
            " $B_DIRECT_URL",
        ),
        (["health-check", "--target", "b"], 3, "error: target b: not set: DATABASE_URL"),
        (["test-connection", "--target", "c"], 3, "error: target c: DIRECT_URL"),
        (["diagnose", "--target", "b"], 3, "error: target b: not set"),
        (["repair", "--target", "b"], 3, "error: target b: not set"),
        (["recover", "--target", "c"], 3, "error: target c: DIRECT_URL"),
    ],
)
def test_selection_errors_are_one_line_and_the_documented_exit_code(
    tmp_path: Path, args: list[str], code: int, line: str
) -> None:
    path, environ = _fleet(tmp_path)
    out = run_cli("--config", str(path), *args, env=environ)
    assert out.returncode == code, (out.stdout, out.stderr)
    assert out.stderr.startswith(line), out.stderr
    assert len(out.stderr.splitlines()) == 1, out.stderr
    assert "Traceback" not in out.stderr and "s3cret" not in out.stdout + out.stderr


def test_several_targets_that_cannot_run_each_get_their_line_and_json_entry(
    tmp_path: Path,
) -> None:
    path, environ = _fleet(tmp_path)
    out = run_cli(
        "--config", str(path), "db-status", "--target", "b", "--target", "c", "--json", env=environ
    )
    assert out.returncode == 3
    lines = out.stderr.splitlines()
    assert [line.split(":")[0:2] for line in lines] == [
        ["error", " target b"],
        ["error", " target c"],
    ]
    doc = json.loads(out.stdout)
    assert list(doc) == ["b", "c"]
    assert doc["b"]["target"] == "b" and doc["b"]["exit_code"] == 3
    assert doc["b"]["error"].startswith("target b: not set: DATABASE_URL")
    one = run_cli("--config", str(path), "db-status", "--target", "b", "--json", env=environ)
    assert json.loads(one.stdout)["target"] == "b"  # one target: its document, not keyed


@pytest.mark.parametrize(
    "command",
    [
        ["health-check"],
        ["test-connection"],
        ["db-status"],
        ["performance"],
        ["diagnose"],
        ["repair"],
        ["recover"],
        ["quarantine", "list"],
        ["quarantine", "restore"],
        ["alerts", "list"],
        ["alerts", "ack"],
        ["alerts", "label"],
        ["silence", "add"],
        ["silence", "list"],
        ["silence", "expire"],
    ],
)
def test_help_documents_the_selection(command: list[str]) -> None:
    out = run_cli(*command, "--help")
    assert out.returncode == 0
    text = " ".join(out.stdout.split())
    assert "--target NAME" in text and "--tag KEY=VALUE" in text
    assert "keyed by target name" in text and "worst" in text
    if command[0] in ("repair", "recover") or command[-1] == "restore":
        assert "more than one target matches it refuses (exit 2)" in text
    elif command[-1] == "add":
        assert "in a fleet of several targets `add` needs --target or --tag" in text
    elif command[-1] in ("ack", "label", "expire"):
        assert "looked for in each target's own" in text
    else:
        assert "without them every target" in text
