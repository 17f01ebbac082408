"""Config commands: config check, init, show."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from westep_ops.cli.common import _cfg, _env
from westep_ops.errors import WestepError
from westep_ops.redact import redact


@click.group("config")
def config_group() -> None:
    """Inspect the configuration."""


@config_group.command("check")
@click.pass_context
def config_check(ctx: click.Context) -> None:
    """Validate the config file; print a one-line summary or the first problem.

    Exit code 0 valid, 2 the first problem as one line naming the key.
    """
    from westep_ops.config import config_path

    c = _cfg(ctx)
    src = config_path(ctx.obj.get("config_path")) or "built-in defaults"
    click.echo(
        f"config ok ({src}): {len(c.critical_tables)} critical tables, {len(c.grants)} grants, "
        f"{len(c.integrity_rules)} integrity rules, {len(c.endpoints)} endpoints, timezone {c.timezone}"
    )


@config_group.command("init")
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False),
    default="westep-ops.json",
    show_default=True,
    help="File to write.",
)
@click.option("--force", is_flag=True, help="Overwrite the file if it exists.")
@click.option(
    "--schema",
    "schemas",
    multiple=True,
    help="Exposed schema to take tables from (repeatable). Default: public.",
)
@click.option(
    "--target",
    "target",
    default=None,
    metavar="NAME",
    help="Discover with this target's variables and write what is found into its"
    " 'overrides' in the config file in use (--config, $WESTEP_OPS_CONFIG or"
    " ./westep-ops.json), which must already list it; --output and --force do not apply.",
)
@click.pass_context
def config_init(
    ctx: click.Context, output: str, force: bool, schemas: tuple[str, ...], target: str | None
) -> None:
    """Write a starting config from what the target has now (read-only, DIRECT_URL).

    Tables of the exposed schemas with the roles that can read them and their RLS state,
    the API roles' current grants as the declared ones, an orphans rule for each
    <x>_id column whose table exists but has no foreign key, the realtime publication
    and its tables, an auth section on Supabase only (plain PostgreSQL: H6 says not
    configured), and endpoints only for URLs in the environment that answer 200 now.
    Review it before use: it declares what IS, not what should be.

    With --target NAME (a fleet: the config's `targets`), the target's own variables
    are used and the sections found replace those of its `overrides` in the config file,
    which is rewritten (indented JSON; the other targets and sections are kept).

    Exit code 0 written, 1 the target could not be read, 2 the file exists (without
    --force) or the set-up is wrong.
    """
    from westep_ops.config import _IDENT, config_path
    from westep_ops.config_init import init_config, init_target

    for name in schemas:
        if not _IDENT.match(name):
            raise WestepError(f"--schema {name!r} is not a plain SQL identifier")
    if target is not None:
        given = [
            f"--{p}"
            for p in ("output", "force")
            if ctx.get_parameter_source(p) == click.core.ParameterSource.COMMANDLINE
        ]
        if given:
            raise click.UsageError(f"{' and '.join(given)} cannot be used with --target")
        path = config_path(ctx.find_root().obj.get("config_path"))
        if path is None:
            raise WestepError("--target needs a config file that lists the target (--config)")
        found = init_target(path, target, os.environ, schemas=list(schemas) or None)
        click.echo(f"wrote the overrides of target {target} into {path}")
    else:
        found = init_config(_env(), Path(output), force=force, schemas=list(schemas) or None)
        click.echo(f"wrote {output}")
    for line in found.summary():
        click.echo(f"  {redact(line)}")


@config_group.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print {source, config} as JSON.")
@click.pass_context
def config_show(ctx: click.Context, as_json: bool) -> None:
    """Print the effective config, every default filled in, and which file it came from.

    Sections absent from the file show ``"required": false`` (auth, realtime): those
    checks apply only where the target has them, and otherwise say "not configured".
    """
    from westep_ops.config import CONFIG_ENV, config_path

    c = _cfg(ctx)
    explicit = ctx.obj.get("config_path")
    path = config_path(explicit)
    if path is None:
        src = "built-in defaults (no --config, no $WESTEP_OPS_CONFIG, no ./westep-ops.json)"
    else:
        how = (
            "--config"
            if explicit
            else f"${CONFIG_ENV}"
            if os.environ.get(CONFIG_ENV)
            else "the working directory"
        )
        src = f"{path.resolve()} (from {how})"
    # No targets list: the one target `default`, shown as before (no "targets": []).
    data = c.model_dump(by_alias=True, mode="json", exclude=None if c.targets else {"targets"})
    if as_json:
        click.echo(json.dumps({"source": src, "config": data}, indent=2))
        return
    click.echo(f"# effective config from {src}; every default shown")
    click.echo(json.dumps(data, indent=2))
