"""The CLI package's wiring, without processes: every command defined in ``westep_ops/cli/``
is reachable from ``westep-ops``, and importing the package loads no command module."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import click

import westep_ops.cli
from westep_ops.cli.root import COMMANDS, cli


def _reachable(group: click.Group, ctx: click.Context) -> set[int]:
    found: set[int] = set()
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None, name
        assert command.name == name, (name, command.name)
        found.add(id(command))
        if isinstance(command, click.Group):
            found |= _reachable(command, click.Context(command, parent=ctx, info_name=name))
    return found


def test_every_command_module_is_wired_into_the_group() -> None:
    reachable = _reachable(cli, click.Context(cli, info_name="westep-ops"))
    defined = {}
    for info in pkgutil.iter_modules(westep_ops.cli.__path__):
        if info.name.startswith("__"):  # __main__ runs the CLI
            continue
        module = importlib.import_module(f"westep_ops.cli.{info.name}")
        for attribute, value in vars(module).items():
            if isinstance(value, click.Command) and value is not cli:
                defined[f"{info.name}:{attribute}"] = value
    assert defined, "no command found in westep_ops/cli/"
    missing = [where for where, command in defined.items() if id(command) not in reachable]
    assert not missing, f"defined but not reachable from westep-ops: {missing}"
    for name, where in COMMANDS.items():
        assert defined[where].name == name


def test_importing_the_package_loads_no_command_module() -> None:
    code = (
        "import sys, westep_ops.cli; "
        "print(sorted(m for m in sys.modules if m.startswith('westep_ops.cli.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['westep_ops.cli.common', 'westep_ops.cli.root']"
