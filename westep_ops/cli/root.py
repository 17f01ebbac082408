"""The ``westep-ops`` group and its console entry point.

The group loads a command's module only when that command runs (or when help lists
them all), so ``westep-ops health-check`` imports the probe commands and nothing of the
other groups. ``main`` turns every failure into one ``error:`` line and an exit code.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from typing import Any

import click

from westep_ops.errors import WestepError
from westep_ops.redact import redact

# Every top-level command: its name and where it is, "module:attribute" in westep_ops.cli.
COMMANDS = {
    "test-connection": "health:test_connection",
    "health-check": "health:health_check",
    "db-status": "health:db_status_cmd",
    "performance": "health:performance",
    "diagnose": "health:diagnose_cmd",
    "repair": "repair:repair_cmd",
    "recover": "repair:recover_cmd",
    "quarantine": "repair:quarantine_group",
    "monitor": "monitor:monitor_cmd",
    "alerts": "alerts:alerts_group",
    "silence": "alerts:silence_group",
    "trends": "sla:trends_cmd",
    "status": "status:status_cmd",
    "drill": "sandbox:drill_cmd",
    "sandbox": "sandbox:sandbox_group",
    "config": "config:config_group",
    "targets": "targets:targets_group",
    "ui": "ui:ui",
}


class LazyGroup(click.Group):
    """A group whose commands are imported on first use (click's documented lazy pattern)."""

    def __init__(self, *args: Any, lazy_commands: dict[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_commands = lazy_commands

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy_commands])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        where = self.lazy_commands.get(cmd_name)
        if where is None:
            return super().get_command(ctx, cmd_name)
        module, attribute = where.split(":")
        command = getattr(importlib.import_module(f"westep_ops.cli.{module}"), attribute)
        assert isinstance(command, click.Command), where
        return command

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        try:
            return super().resolve_command(ctx, args)
        except click.exceptions.NoSuchCommand as e:
            # click suggests from the commands it holds; these are held by name only.
            raise click.exceptions.NoSuchCommand(
                e.command_name, possibilities=self.list_commands(ctx), ctx=ctx
            ) from None


@click.group(
    cls=LazyGroup, lazy_commands=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]}
)
@click.option(
    "--config",
    "config_path",
    default=None,
    help="Config file (default: $WESTEP_OPS_CONFIG, else ./westep-ops.json, else built-in defaults).",
)
@click.version_option(package_name="westep-ops")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None) -> None:
    """Monitor, diagnose and repair a PostgreSQL + pgbouncer (Supabase) backend.

    Connection strings come from the environment (DATABASE_URL, DIRECT_URL,
    PGBOUNCER_ADMIN_URL, WESTEP_OPS_STORAGE_URL, ...); `westep-ops sandbox env` prints
    them for the local sandbox.
    """
    ctx.ensure_object(dict)
    ctx.obj["config_path"] = config_path


def main() -> None:
    """Console entry point: run the CLI, turning every failure into one clear line."""
    try:
        cli.main(prog_name="westep-ops", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.UsageError as e:
        hint = f" (see '{e.ctx.command_path} --help')" if e.ctx else ""
        click.echo(f"error: {redact(e.format_message())}{hint}", err=True)
        sys.exit(e.exit_code)
    except click.ClickException as e:
        click.echo(f"error: {redact(e.format_message())}", err=True)
        sys.exit(e.exit_code)
    except WestepError as e:
        click.echo(f"error: {redact(e)}", err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as e:  # noqa: BLE001 - the last line of defence: one line, no secrets
        if os.environ.get("DEBUG", "").lower() in ("1", "true", "yes"):
            click.echo(redact(traceback.format_exc()), err=True)
        click.echo(f"error: unexpected {type(e).__name__}: {redact(e)}", err=True)
        sys.exit(3)
    sys.exit(0)
