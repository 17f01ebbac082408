"""Alerts (list, ack, label) and silences (add, list, expire): what people do about what
monitoring said."""

from __future__ import annotations

import json
import os
from typing import Any

import click

from westep_ops.cli.common import (
    CHECK_CATEGORIES,
    _cfg,
    _env,
    _iso,
    _local,
    _local_tz,
    _person,
    _separate_store,
    _table,
)
from westep_ops.errors import WestepError
from westep_ops.redact import redact


@click.group("alerts")
def alerts_group() -> None:
    """Alerts from monitoring: list them, acknowledge them, say whether they were real."""


@alerts_group.command("list")
@click.option("--open", "open_only", is_flag=True, help="Only alerts of incidents still open.")
@click.option(
    "--unlabelled",
    is_flag=True,
    help="Only opened alerts nobody has labelled yet (what is left to judge with `label`).",
)
@click.option("--limit", type=click.IntRange(1, 10000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print as JSON (ISO times with offset).")
def alerts_list(open_only: bool, unlabelled: bool, limit: int, as_json: bool) -> None:
    """The latest alerts, newest first; times in the configured time zone."""
    rows = _history_call(
        lambda h: h.alerts(open_only=open_only, unlabelled=unlabelled, limit=limit)
    )
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=_iso))
        return
    if not rows:
        click.echo("no unlabelled opened alerts" if unlabelled else "no alerts")
        return
    tz = _local_tz()
    table = [
        [
            str(r["id"]),
            _local(r["ts"], tz),
            r["severity"],
            r["category"],
            r["kind"],
            "yes" if r["acknowledged_at"] else "",
            {True: "real", False: "false alarm", None: ""}[r["label"]],
            redact(r["message"])[:80],
        ]
        for r in rows
    ]
    click.echo(
        _table(
            table, ["id", f"time ({tz})", "severity", "category", "kind", "ack", "label", "message"]
        )
    )
    if unlabelled:
        from westep_ops.monitoring.notify import label_command

        click.echo(f"label one: {label_command('ID')}")


@alerts_group.command("ack")
@click.argument("alert_id", type=click.IntRange(min=1))
@click.option("--by", default=None, callback=_person, help="Who acknowledges (default: $USER).")
def alerts_ack(alert_id: int, by: str | None) -> None:
    """Acknowledge alert ALERT_ID: a person is on it."""
    from westep_ops.store import now_utc

    who = by or os.environ.get("USER") or "someone"
    if not _history_call(lambda h: h.acknowledge(alert_id, who, now_utc())):
        raise WestepError(f"no alert {alert_id}")
    click.echo(f"alert {alert_id} acknowledged by {who}")


@alerts_group.command("label")
@click.argument("alert_id", type=click.IntRange(min=1))
@click.option("--real", "--true", "real", is_flag=True, help="A real problem.")
@click.option("--false-alarm", "--false", "false_alarm", is_flag=True, help="A false alarm.")
def alerts_label(alert_id: int, real: bool, false_alarm: bool) -> None:
    """Say whether alert ALERT_ID was real (--real) or a false alarm (--false-alarm);
    exactly one of them (--true and --false are the same flags). Labelling again replaces
    the label. The monthly alert precision counts the labels of opened alerts; `alerts
    list --unlabelled` lists those still to judge. Exit code 0, 2 bad input or no such
    alert.
    """
    from westep_ops.store import now_utc

    # Two flags, not --real/--no-real: click lets the last of those win silently.
    if real == false_alarm:
        raise click.UsageError(
            "give --real or --false-alarm, not both" if real else "give --real or --false-alarm"
        )

    done = _history_call(lambda h: h.label(alert_id, real, now_utc()))
    if done is None:
        raise WestepError(f"no alert {alert_id}")
    words = {True: "real", False: "a false alarm"}
    was = done["previous"]
    click.echo(
        f"alert {alert_id} labelled {words[real]}"
        + (f" (was {words[was]})" if was is not None and was != real else "")
    )
    if done["kind"] != "opened":
        opened = done["opened_id"]
        click.echo(
            f"note: alert {alert_id} is a {done['kind']} alert; alert precision counts opened"
            " alerts"
            + (f", here alert {opened} of incident #{done['incident_id']}" if opened else "")
        )


SILENCE_CATEGORIES = [*CHECK_CATEGORIES, "performance"]


@click.group("silence")
def silence_group() -> None:
    """Silences: no alert and no automatic repair for some categories for a while.

    \b
    While a silence (or a maintenance window from the config's maintenanceWindows)
    covers a category, the monitor still records what it sees -- incidents are kept,
    marked silenced, and their alerts are recorded as suppressed -- but sends nothing
    and runs no automatic repair for it; restore_connection_pool and
    restore_realtime_publication skip (unless --force). When it ends the state is
    judged afresh. Stored in the ops PostgreSQL, or in the local state file while it
    is unreachable (written to it when it returns).
    """


@silence_group.command("add")
@click.option(
    "--category",
    "categories",
    multiple=True,
    required=True,
    type=click.Choice(SILENCE_CATEGORIES),
    help="A category to silence (repeatable).",
)
@click.option(
    "--for", "duration", required=True, help="How long: 30m, 2h, 1d (1 minute to 30 days)."
)
@click.option(
    "--reason",
    required=True,
    callback=lambda c, p, v: _text(v, "--reason"),
    help="Why (shown in list and in skipped repairs).",
)
@click.option("--by", default=None, callback=_person, help="Who (default: $USER).")
def silence_add(categories: tuple[str, ...], duration: str, reason: str, by: str | None) -> None:
    """Silence CATEGORY for a while. Exit code 0, 2 on bad input."""
    from westep_ops.silences import SilenceStore, parse_duration
    from westep_ops.store import now_utc

    d = parse_duration(duration)
    env = _env()
    s = SilenceStore(env.storage_url).add(
        sorted(set(categories)), d, reason, by or os.environ.get("USER") or "someone", now_utc()
    )
    click.echo(f"silence {s.describe(_local_tz())} on {', '.join(s.categories)}")
    if s.local:
        click.echo("  (ops store unreachable: kept locally, written to it when it returns)")


def _text(value: str, name: str) -> str:
    if not value.strip() or not value.isprintable() or len(value) > 500:
        raise click.BadParameter(f"{name}: 1-500 printable characters")
    return value


@silence_group.command("list")
@click.option("--all", "show_all", is_flag=True, help="Also ended and expired silences.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_context
def silence_list(ctx: click.Context, show_all: bool, as_json: bool) -> None:
    """Active silences (with --all, every one), and maintenance windows covering now."""
    from westep_ops.silences import SilenceStore, window_occurrence
    from westep_ops.store import now_utc

    config = _cfg(ctx)
    now = now_utc()
    store = SilenceStore(_env().storage_url, connect_timeout_ms=config.monitoring.timeouts.connect)
    items = store.list(include_ended=show_all, now=now)
    windows = [
        o for w in config.maintenance_windows if (o := window_occurrence(w, now, config.timezone))
    ]
    if as_json:
        click.echo(
            json.dumps(
                {
                    "silences": [dict(s.as_dict(), active=s.active(now)) for s in items],
                    "windows_now": [s.as_dict() for s in windows],
                    "source": "ops PostgreSQL"
                    if store.error is None
                    else f"local copy ({redact(store.error)})",
                },
                indent=2,
            )
        )
        return
    if store.error is not None:
        click.echo(f"(ops store unreachable: {redact(store.error)}; the local copy is shown)")
    rows = [
        [
            s.label,
            ",".join(s.categories),
            _local(s.starts_at, config.timezone, "%Y-%m-%d %H:%M"),
            _local(s.ends_at, config.timezone, "%Y-%m-%d %H:%M"),
            "active" if s.active(now) else ("expired" if s.expired_at else "ended"),
            s.created_by,
            s.reason,
        ]
        for s in items
    ] + [
        [
            "window",
            ",".join(w.categories),
            _local(w.starts_at, config.timezone, "%Y-%m-%d %H:%M"),
            _local(w.ends_at, config.timezone, "%Y-%m-%d %H:%M"),
            "active",
            "config",
            str(w.window),
        ]
        for w in windows
    ]
    if not rows:
        click.echo("no active silences")
        return
    zone = config.timezone
    click.echo(
        _table(
            rows,
            ["id", "categories", f"starts ({zone})", f"ends ({zone})", "state", "by", "reason"],
        )
    )


@silence_group.command("expire")
@click.argument("silence_id")
def silence_expire(silence_id: str) -> None:
    """End silence SILENCE_ID now. Exit code 0, 2 when there is no such active silence."""
    from westep_ops.silences import SilenceStore, parse_id
    from westep_ops.store import now_utc

    s = SilenceStore(_env().storage_url).expire(parse_id(silence_id), now_utc())
    if s is None:
        raise WestepError(f"no active silence {silence_id}")
    click.echo(f"silence #{s.label} expired ({', '.join(s.categories)}: {s.reason})")


def _history_call(fn: Any) -> Any:
    from westep_ops.monitoring.history import HistoryStore, HistoryUnavailable

    env = _env()
    store = HistoryStore(env.require("storage_url"))
    _separate_store(env)
    try:
        return fn(store)
    except HistoryUnavailable as e:
        raise WestepError(f"ops store unavailable: {redact(e)}") from None
    finally:
        store.close()
