"""What every command group shares: the config and environment loaded on demand, the
targets a command acts on (``--target``/``--tag``), the ops store's separation check,
plain-text tables and status words, the exit-code contract of the health-state
commands, and times shown in the configured zone.

Imports only click and ``westep_ops.errors`` at module level: every command module
imports this one, so nothing heavy may be imported here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import click

from westep_ops.errors import WestepError

# H1-H7 by name, spelled out so the probe commands need not import the config module
# (pydantic) to build their options; a test checks it against config.Category.
CHECK_CATEGORIES = ["connection", "pool", "tables", "integrity", "realtime", "auth", "api"]


def _cfg(ctx: click.Context) -> Any:
    """The config, loaded (and every target's merged sections validated) once per run."""
    from westep_ops.config import load_config

    obj = ctx.find_root().obj
    if "config" not in obj:
        obj["config"] = load_config(obj.get("config_path"))
    return obj["config"]


def _env() -> Any:
    from westep_ops.environment import Environment

    return Environment.from_env()


def _separate_store(env: Any) -> None:
    """Exit 2 with one line when WESTEP_OPS_STORAGE_URL is the monitored database itself."""
    from westep_ops.store import refuse_monitored_store

    refuse_monitored_store(
        env.storage_url, {"DIRECT_URL": env.direct_url, "WESTEP_OPS_REPAIR_URL": env.repair_url}
    )


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [
        max(len(click.unstyle(str(r[i]))) for r in [header, *rows]) for i in range(len(header))
    ]

    def fmt(r: list[str]) -> str:
        return "  ".join(
            str(c) + " " * (w - len(click.unstyle(str(c)))) for c, w in zip(r, widths, strict=True)
        ).rstrip()

    return "\n".join([fmt(header), *(fmt(r) for r in rows)])


class HealthStateCommand(click.Command):
    """A command whose exit code is a health state: 0 ok, 1 warning, 2 critical, 3 could not run.

    Anything that keeps it from running (a bad flag, config, URL or environment) exits 3,
    never 2: a typo must not read as an outage in cron or a Nagios-style check. With
    ``state_flag``, only runs with that flag report a health state (``monitor --once``).
    """

    def __init__(self, *args: Any, state_flag: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.state_flag = state_flag

    def _reports_state(self, given: bool) -> bool:
        return self.state_flag is None or given

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        flag = f"--{self.state_flag}" if self.state_flag else None
        given = flag in args
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as e:
            if self._reports_state(given):
                # click declares exit_code a ClassVar; this one error exits 3, not 2
                e.exit_code = 3  # type: ignore[misc]
            raise

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except WestepError as e:
            given = bool(self.state_flag and ctx.params.get(self.state_flag))
            if e.exit_code == 2 and self._reports_state(given):
                e.exit_code = 3
            raise


def _status_word(ok: bool, skipped: bool = False) -> str:
    if skipped:
        return click.style("skipped", fg="bright_black")
    return click.style("ok", fg="green") if ok else click.style("FAIL", fg="red", bold=True)


_STATUS_STYLE = {
    "ok": "green",
    "warning": "yellow",
    "error": "magenta",
    "critical": "red",
    "not_configured": "bright_black",
}


def _styled(status: str) -> str:
    quiet = status in ("ok", "not_configured")
    word = status.replace("_", " ") if quiet else status.upper()
    return click.style(word, fg=_STATUS_STYLE[status], bold=not quiet)


def _local_tz() -> str:
    """The configured time zone for times people read; UTC when the config cannot be read
    (the tables say which zone they show, so that is never mistaken for local time)."""
    try:
        return str(_cfg(click.get_current_context()).timezone)
    except (WestepError, RuntimeError):
        return "UTC"


def _local(ts: Any, tz: str, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    """A stored (aware) time in ``tz``; empty when there is none."""
    from zoneinfo import ZoneInfo

    return ts.astimezone(ZoneInfo(tz)).strftime(fmt) if ts is not None else ""


def _iso(value: Any) -> str:
    """JSON for what json cannot write itself: times as ISO 8601 with their offset."""
    from datetime import datetime

    return value.isoformat() if isinstance(value, datetime) else str(value)


def _person(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and (not value.strip() or not value.isprintable() or len(value) > 100):
        raise click.BadParameter("a name of 1-100 printable characters")
    return value


# -- targets: which of the config's targets a command acts on ------------------------------

F = TypeVar("F", bound=Callable[..., Any])

TARGETS_HELP = (
    "Targets: --target NAME (repeatable) and --tag KEY=VALUE (repeatable; every tag must"
    " match) pick the config's targets; without them {default}. Without a `targets` list"
    ' in the config the output is as it always was (JSON objects gain a "target"'
    " field); in a fleet each table line or block of text names its target. --json over"
    " one target prints its document; over several, one object keyed by target name whose"
    " values are the one-target documents. The exit code is the worst target's; a target"
    " whose variables are missing or malformed is reported on its own (one error line,"
    " exit code 3 for it) and the others still run."
)


def target_options(f: F) -> F:
    """``--target NAME`` and ``--tag KEY=VALUE`` (both repeatable), as ``names``/``tags``."""
    f = click.option(
        "--tag",
        "tags",
        multiple=True,
        metavar="KEY=VALUE",
        help="Only targets with this tag (repeatable: all must match).",
    )(f)
    return click.option(
        "--target",
        "names",
        multiple=True,
        metavar="NAME",
        help="Only this target (repeatable). Default: see below.",
    )(f)


@dataclass
class Picked:
    """One target a command acts on: its resolved config and environment, or why not."""

    name: str
    tags: Mapping[str, str]
    config: Any  # westep_ops.config.Config (not imported here: see the module docstring)
    env: Any = None  # westep_ops.environment.Environment; None when ``error`` is set
    error: str | None = None  # why this target cannot run (missing or malformed variables)


@dataclass
class Selection:
    """The targets picked for one command run."""

    targets: list[Picked]
    fleet: bool  # the config has a ``targets`` list (output names the target)
    config: Any = None  # the config as loaded (shared sections; ``targets`` included)
    base_dir: Path = field(default_factory=Path.cwd)

    @property
    def several(self) -> bool:
        return len(self.targets) > 1


def config_dir(ctx: click.Context) -> Path:
    """The config file's folder (relative ``secretsFile`` paths are taken from there)."""
    from westep_ops.config import config_path

    path = config_path(ctx.find_root().obj.get("config_path"))
    return path.resolve().parent if path is not None else Path.cwd()


def pick_targets(
    ctx: click.Context,
    names: tuple[str, ...] | list[str] = (),
    tags: tuple[str, ...] | list[str] = (),
    *,
    one_for: str | None = None,
    connections: bool = True,
) -> Selection:
    """The targets ``--target``/``--tag`` pick (all by default), each resolved once.

    Without a ``targets`` list the one target ``default`` is today's config and process
    environment, read exactly as before (a malformed variable is the same error). In a
    fleet the names and tags are matched first and only the targets picked are resolved;
    one whose variables are malformed or whose DATABASE_URL/DIRECT_URL are unset is kept
    with its ``error`` (the command reports it for that target, exit 3, and runs the
    others). An unknown name or an empty match is one error, exit 2. ``one_for`` (a
    command that changes a target, e.g. ``"repair"``): more than one match is an error
    (exit 2) naming the matches. ``connections=False`` (a command that reads only the
    ops store: alerts, silences): unset connection variables are not an error.
    """
    from westep_ops.targets import (
        DEFAULT_TARGET,
        parse_tags,
        resolve_target,
        select,
        target_specs,
    )

    config = _cfg(ctx)
    chosen = select(target_specs(config), names, parse_tags(tags))
    if one_for is not None and len(chosen) > 1:
        raise WestepError(
            f"{one_for} acts on one target and {len(chosen)} match:"
            f" {', '.join(t.name for t in chosen)} (pass --target NAME)"
        )
    if not config.targets:
        return Selection([Picked(DEFAULT_TARGET, {}, config, _env())], False, config)
    base_dir = config_dir(ctx)
    picked: list[Picked] = []
    for spec in chosen:
        try:
            resolved = resolve_target(config, spec, None, base_dir)
        except WestepError as e:
            picked.append(Picked(spec.name, dict(spec.tags), config, None, str(e)))
            continue
        missing = resolved.missing() if connections else []
        error = None
        if missing:
            where = ", ".join(f"{m} from {resolved.sources[m].describe()}" for m in missing)
            error = f"target {spec.name}: not set: {where}"
        picked.append(
            Picked(
                spec.name,
                dict(spec.tags),
                resolved.config,
                None if error else resolved.environment,
                error,
            )
        )
    return Selection(picked, True, config, base_dir)


def target_error_doc(p: Picked) -> dict[str, Any]:
    """The JSON of a target that could not run."""
    return {"target": p.name, "status": "error", "exit_code": 3, "error": p.error}


def report_target_error(p: Picked) -> int:
    """One ``error:`` line on stderr for a target that could not run; its exit code (3)."""
    from westep_ops.redact import redact

    click.echo(f"error: {redact(p.error or '')}", err=True)
    return 3


def echo_json_docs(
    sel: Selection, docs: dict[str, Any], default: Callable[[Any], Any] = str
) -> None:
    """One target: its document as is; several: one object keyed by target name."""
    import json

    out = next(iter(docs.values())) if not sel.several else docs
    click.echo(json.dumps(out, indent=2, default=default))


def with_target(doc: Any, name: str) -> Any:
    """A one-target JSON object with a leading ``target`` field (lists are left as they are)."""
    if isinstance(doc, dict) and "target" not in doc:
        return {"target": name, **doc}
    return doc


def target_heading(sel: Selection, p: Picked, first: bool) -> None:
    """In a fleet, a line naming the target before its block of text output."""
    if not sel.fleet:
        return
    if not first:
        click.echo()
    tags = ", ".join(f"{k}={v}" for k, v in p.tags.items())
    click.echo(click.style(f"target {p.name}", bold=True) + (f"  ({tags})" if tags else ""))


R = TypeVar("R")
MAX_PARALLEL_TARGETS = 8  # targets probed at once by one command (2 connections each at most)


def each_target(sel: Selection, fn: Callable[[Picked], R]) -> list[R | None]:
    """``fn(target)`` for every picked target that can run (None for one that cannot), at
    most :data:`MAX_PARALLEL_TARGETS` at a time, in the selection's order. A target that
    hangs holds only its own slot (until its own timeouts); ``fn`` must not print."""
    runnable = [p for p in sel.targets if p.error is None]
    if len(runnable) <= 1:
        done = {p.name: fn(p) for p in runnable}
    else:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(
            max_workers=min(MAX_PARALLEL_TARGETS, len(runnable)),
            thread_name_prefix="westep-target",
        ) as pool:
            futures = {p.name: pool.submit(fn, p) for p in runnable}
            done = {name: f.result() for name, f in futures.items()}
    return [done.get(p.name) for p in sel.targets]


def worst(codes: list[int]) -> int:
    """The exit code over several targets: the worst (highest) one; 0 for none."""
    return max(codes, default=0)


def quiet_store_pool() -> None:
    """psycopg-pool's own warnings (a reconnect attempt, a pool closing) stay off stderr:
    a command says what failed in its one ``error:`` line."""
    import logging

    logger = logging.getLogger("psycopg.pool")
    logger.setLevel(logging.CRITICAL)
    logger.propagate = False
