"""Targets commands: targets list, targets check (the fleet of the config)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click

from westep_ops.cli.common import _cfg, _status_word, _table, config_dir, target_options
from westep_ops.errors import WestepError

_selecting = target_options


def _chosen(
    ctx: click.Context, names: tuple[str, ...], tags: tuple[str, ...]
) -> tuple[Any, list[Any], Path]:
    """The config, and its targets picked by --target/--tag (not resolved: `list` only
    reads where the variables come from, `check` resolves each picked target once); the
    config file's folder."""
    from westep_ops.targets import parse_tags, select, target_specs

    config = _cfg(ctx)
    return config, select(target_specs(config), names, parse_tags(tags)), config_dir(ctx)


@click.group("targets")
def targets_group() -> None:
    """The monitored targets: the config's `targets` list, or the one target `default`.

    Without a `targets` list the config and the environment (DIRECT_URL, DATABASE_URL,
    ...) are one target named `default`, as always. The probe, repair, alerts and silence
    commands take the same --target NAME / --tag KEY=VALUE to pick targets.
    """


@targets_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON document: the targets.")
@_selecting
@click.pass_context
def targets_list(
    ctx: click.Context, as_json: bool, names: tuple[str, ...], tags: tuple[str, ...]
) -> None:
    """Each target's name, tags and where its connection strings come from.

    Only the NAMES of the environment variables (or the secrets file) and whether each
    is set; never a value. Shown: the required variables (DATABASE_URL, DIRECT_URL),
    every variable that is set, and every one the target maps to another name. Exit code 0, 2 a bad config or selection.
    """
    from westep_ops.targets import REQUIRED, target_sources

    _config, chosen, base_dir = _chosen(ctx, names, tags)
    out: list[dict[str, Any]] = []
    for target in chosen:
        entry: dict[str, Any] = {"name": target.name, "tags": dict(target.tags)}
        try:
            read = target_sources(target, os.environ, base_dir)
        except WestepError as err:
            entry["error"] = str(err)
            entry["variables"] = {}
        else:
            entry["variables"] = {
                name: source
                for name, source in read.sources.items()
                if name in REQUIRED
                or source.is_set
                or (source.origin == "env" and source.where != name)
            }
        out.append(entry)
    if as_json:
        doc = [{**e, "variables": {k: s.as_json() for k, s in e["variables"].items()}} for e in out]
        click.echo(json.dumps({"targets": doc}, indent=2))
        return
    for i, e in enumerate(out):
        if i:
            click.echo()
        tags_text = ", ".join(f"{k}={v}" for k, v in e["tags"].items()) or "no tags"
        click.echo(f"{click.style(e['name'], bold=True)}  ({tags_text})")
        if "error" in e:
            click.echo(f"  {click.style('error', fg='red')}: {e['error']}")
        rows = [
            [name, s.describe(), "set" if s.is_set else click.style("unset", fg="red")]
            for name, s in e["variables"].items()
        ]
        if rows:
            table = _table(rows, ["variable", "from", "state"])
            click.echo("\n".join(f"  {line}" for line in table.splitlines()))


@targets_group.command("check")
@_selecting
@click.pass_context
def targets_check(ctx: click.Context, names: tuple[str, ...], tags: tuple[str, ...]) -> None:
    """Check that each target resolves: its merged config is valid, its variables are
    well-formed and the required ones (DATABASE_URL, DIRECT_URL) are set.

    Reads the environment and secrets files only; connects to nothing (health-check
    does). Exit code 0 every target ok, 2 a bad config, selection or target.
    """
    from westep_ops.targets import resolve_target

    config, chosen, base_dir = _chosen(ctx, names, tags)
    failed = 0
    for target in chosen:
        try:
            resolved = resolve_target(config, target, os.environ, base_dir)
        except WestepError as e:
            problem = str(e).removeprefix(f"target {target.name}: ")
        else:
            missing = resolved.missing()
            problem = ""
            if missing:
                where = [f"{m} from {resolved.sources[m].describe()}" for m in missing]
                problem = "not set: " + ", ".join(where)
        failed += bool(problem)
        click.echo(
            f"{_status_word(not problem)}  {target.name}" + (f": {problem}" if problem else "")
        )
    if failed:
        raise WestepError(f"{failed} of {len(chosen)} targets cannot be monitored as configured")
    click.echo(f"{len(chosen)} target{'s' if len(chosen) != 1 else ''} ok")
