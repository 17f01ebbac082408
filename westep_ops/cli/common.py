"""What every command group shares: the config and environment loaded on demand, the
ops store's separation check, plain-text tables and status words, the exit-code
contract of the health-state commands, and times shown in the configured zone.

Imports only click and ``westep_ops.errors`` at module level: every command module
imports this one, so nothing heavy may be imported here.
"""

from __future__ import annotations

from typing import Any

import click

from westep_ops.errors import WestepError

# H1-H7 by name, spelled out so the probe commands need not import the config module
# (pydantic) to build their options; a test checks it against config.Category.
CHECK_CATEGORIES = ["connection", "pool", "tables", "integrity", "realtime", "auth", "api"]


def _cfg(ctx: click.Context) -> Any:
    from westep_ops.config import load_config

    return load_config(ctx.obj.get("config_path"))


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
        from westep_ops.config import load_config

        return load_config(click.get_current_context().find_root().obj.get("config_path")).timezone
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
