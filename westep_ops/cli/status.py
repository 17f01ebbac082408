"""The fleet summary: ``westep-ops status``.

Also the ``--target``/``--tag`` options of the report commands (``trends``, ``drill``),
until ``cli/common.py`` has the one helper every command shares.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import click

from westep_ops.cli.common import HealthStateCommand, _cfg, _env, _table
from westep_ops.errors import WestepError
from westep_ops.redact import redact


def target_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--target NAME`` (repeatable) and ``--tag KEY=VALUE`` (repeatable)."""
    f = click.option(
        "--tag",
        "tags",
        multiple=True,
        metavar="KEY=VALUE",
        help="Only the targets carrying this tag (repeatable: all of them).",
    )(f)
    return click.option(
        "--target",
        "target_names",
        multiple=True,
        metavar="NAME",
        help="Only this target of the config's targets (repeatable; default: all).",
    )(f)


def pick_targets(
    ctx: click.Context, names: tuple[str, ...], tags: tuple[str, ...], *, one: str | None = None
) -> list[Any]:
    """The config's targets (``targets.resolve_targets``) named and tagged so; with
    ``one`` (the command's name), exactly one: several matches are one error (exit 2)."""
    from westep_ops import targets

    chosen = targets.select(
        targets.resolve_targets(_cfg(ctx)), names, targets.parse_tags(tags) or None
    )
    if one and len(chosen) > 1:
        raise WestepError(
            f"{one} runs on one target; {len(chosen)} match"
            f" ({', '.join(t.name for t in chosen)}): name one with --target NAME"
        )
    return chosen


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 172800:
        return f"{seconds / 3600:.0f} h ago"
    return f"{seconds / 86400:.0f} d ago"


_STATE_STYLE = {"ok": "green", "warning": "yellow", "critical": "red", "not measured": "magenta"}


@click.command("status", cls=HealthStateCommand)
@target_options
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@click.pass_context
def status_cmd(
    ctx: click.Context, target_names: tuple[str, ...], tags: tuple[str, ...], as_json: bool
) -> None:
    """Fleet summary from the ops store: one line per target.

    State: ok; warning or critical with the failing categories (each category's latest
    sample, and any open incident's severity); "not measured" when the target has no
    sample fresher than its staleness limit (2x the cheap-probe interval + the
    confirmation delay): never a default "ok". Beside it: open incidents, month-to-date
    availability over the measured time and the share of the month measured, the worker
    holding the target's lease (a fleet worker, westep-ops monitor; "-" when none holds
    a valid one) and the age of the last sample. Reads only the ops store
    (WESTEP_OPS_STORAGE_URL); it probes nothing.

    Exit code: 0 every target ok, 1 a warning or a target not measured, 2 a target
    critical or with a critical incident open, 3 could not run (bad flag or config, ops
    store unavailable).
    """
    import psycopg

    from westep_ops.db import connect, describe_error
    from westep_ops.monitoring.sla import stale_s
    from westep_ops.monitoring.summary import LEVEL, StatusSpec, fleet_status

    chosen = pick_targets(ctx, target_names, tags)
    specs = [
        StatusSpec(
            t.name,
            t.config.timezone,
            stale_s(t.config),
            2 * t.config.monitoring.intervals.health / 1000
            + t.config.monitoring.alerting.confirm_delay_seconds,
            dict(t.tags),
        )
        for t in chosen
    ]
    url = _env().require("storage_url")
    now = datetime.now(UTC)
    try:
        with connect(url, connect_timeout_ms=3000, statement_timeout_ms=30_000) as conn:
            lines = fleet_status(conn, specs, now)
    except psycopg.Error as e:  # the store down, refusing us, or too slow: one line
        raise WestepError(f"ops store unavailable: {redact(describe_error(e))}", 3) from None
    worst = max((t.level for t in lines), default=0)
    state = {0: "ok", 1: "warning", 2: "critical"}[worst]
    if as_json:
        click.echo(
            json.dumps(
                {"state": state, "exit_code": worst, "targets": [t.as_json() for t in lines]},
                indent=2,
            )
        )
        sys.exit(worst)
    rows = []
    for t in lines:
        word = click.style(t.state.upper() if t.level else t.state, fg=_STATE_STYLE[t.state])
        failing = ", ".join(f"{c} {s}" for c, s in sorted(t.failing.items()))
        opened = ", ".join(f"#{i['id']} {i['category']}" for i in t.open_incidents)
        rows.append(
            [
                t.target,
                word + (f" ({failing})" if failing else ""),
                opened or "none",
                f"{t.availability:.3%}" if t.availability is not None else "not measured",
                f"{t.measured_share:.0%}",
                t.worker or "-",
                _age(t.last_sample_age_s),
            ]
        )
    click.echo(
        _table(
            rows,
            [
                "target",
                "state",
                "open incidents",
                "availability (month)",
                "measured",
                "worker",
                "last sample",
            ],
        )
    )
    counts = {s: sum(t.state == s for t in lines) for s in LEVEL}
    click.echo(
        f"{len(lines)} target(s): "
        + ", ".join(f"{n} {s}" for s, n in counts.items() if n)
        + f"; month to date since {lines[0].month_start:%Y-%m-%d}"
        if lines
        else "no target"
    )
    sys.exit(worst)
