"""Alerts (list, ack, label) and silences (add, list, expire): what people do about what
monitoring said. Each target's alerts and silences are its own in the ops store; these
commands read and write them per target (``--target``/``--tag``, default every target)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import click

from westep_ops.cli.common import (
    CHECK_CATEGORIES,
    TARGETS_HELP,
    Picked,
    Selection,
    _iso,
    _local,
    _local_tz,
    _person,
    _separate_store,
    _table,
    echo_json_docs,
    pick_targets,
    quiet_store_pool,
    report_target_error,
    target_error_doc,
    target_options,
    worst,
)
from westep_ops.errors import WestepError
from westep_ops.redact import redact

_ALL = TARGETS_HELP.format(default="every target")
_BY_ID = TARGETS_HELP.format(
    default="every target; the alert is looked for in each target's own alerts"
)


@click.group("alerts")
def alerts_group() -> None:
    """Alerts from monitoring: list them, acknowledge them, say whether they were real."""


@alerts_group.command("list", epilog=_ALL)
@click.option("--open", "open_only", is_flag=True, help="Only alerts of incidents still open.")
@click.option(
    "--unlabelled",
    is_flag=True,
    help="Only opened alerts nobody has labelled yet (what is left to judge with `label`).",
)
@click.option(
    "--limit", type=click.IntRange(1, 10000), default=50, show_default=True, help="Per target."
)
@click.option("--json", "as_json", is_flag=True, help="Print as JSON (ISO times with offset).")
@target_options
@click.pass_context
def alerts_list(
    ctx: click.Context,
    open_only: bool,
    unlabelled: bool,
    limit: int,
    as_json: bool,
    names: tuple[str, ...],
    tags: tuple[str, ...],
) -> None:
    """The latest alerts, newest first; times in the configured time zone.

    Exit code 0, 2 bad input, 3 the ops store unavailable (one error line).
    """
    sel = pick_targets(ctx, names, tags, connections=False)
    got, codes = _per_target(
        sel, lambda h: h.alerts(open_only=open_only, unlabelled=unlabelled, limit=limit)
    )
    if as_json:
        echo_json_docs(sel, got, default=_iso)
        sys.exit(worst(codes))
    rows = [{**r, "target": name} for name, rs in got.items() if isinstance(rs, list) for r in rs]
    if not rows:
        answered = [p.name for p, c in zip(sel.targets, codes, strict=True) if c == 0]
        if answered:
            some = f" in {', '.join(answered)}" if len(answered) < len(codes) else ""
            click.echo(("no unlabelled opened alerts" if unlabelled else "no alerts") + some)
        sys.exit(worst(codes))
    rows.sort(key=lambda r: (r["ts"], r["id"]), reverse=True)
    tz = _local_tz()
    table = [
        [
            *([r["target"]] if sel.fleet else []),
            str(r["id"]),
            _local(r["ts"], tz),
            r["severity"],
            r["category"],
            r["kind"],
            "yes" if r["acknowledged_at"] else "",
            {True: "real", False: "false alarm", None: ""}[r["label"]],
            # a silenced alert was recorded and sent nowhere: nobody was paged by it
            ("[silenced, not sent] " if r.get("suppressed_by") else "") + redact(r["message"])[:80],
        ]
        for r in rows
    ]
    header = ["id", f"time ({tz})", "severity", "category", "kind", "ack", "label", "message"]
    click.echo(_table(table, (["target"] if sel.fleet else []) + header))
    if unlabelled:
        from westep_ops.monitoring.notify import label_command

        click.echo(f"label one: {label_command('ID')}")
    sys.exit(worst(codes))


@alerts_group.command("ack", epilog=_BY_ID)
@click.argument("alert_id", type=click.IntRange(min=1))
@click.option("--by", default=None, callback=_person, help="Who acknowledges (default: $USER).")
@target_options
@click.pass_context
def alerts_ack(
    ctx: click.Context,
    alert_id: int,
    by: str | None,
    names: tuple[str, ...],
    tags: tuple[str, ...],
) -> None:
    """Acknowledge alert ALERT_ID: a person is on it. Exit code 0, 2 bad input or no such
    alert, 3 the ops store unavailable."""
    from westep_ops.store import now_utc

    who = by or os.environ.get("USER") or "someone"
    sel = pick_targets(ctx, names, tags, connections=False)
    name, _ = _find_alert(sel, alert_id, lambda h: h.acknowledge(alert_id, who, now_utc()))
    click.echo(f"alert {alert_id}{_of(sel, name)} acknowledged by {who}")


@alerts_group.command("label", epilog=_BY_ID)
@click.argument("alert_id", type=click.IntRange(min=1))
@click.option("--real", "--true", "real", is_flag=True, help="A real problem.")
@click.option("--false-alarm", "--false", "false_alarm", is_flag=True, help="A false alarm.")
@target_options
@click.pass_context
def alerts_label(
    ctx: click.Context,
    alert_id: int,
    real: bool,
    false_alarm: bool,
    names: tuple[str, ...],
    tags: tuple[str, ...],
) -> None:
    """Say whether alert ALERT_ID was real (--real) or a false alarm (--false-alarm);
    exactly one of them (--true and --false are the same flags). Labelling again replaces
    the label. The monthly alert precision counts the labels of opened alerts; `alerts
    list --unlabelled` lists those still to judge. Exit code 0, 2 bad input or no such
    alert, 3 the ops store unavailable.
    """
    from westep_ops.store import now_utc

    # Two flags, not --real/--no-real: click lets the last of those win silently.
    if real == false_alarm:
        raise click.UsageError(
            "give --real or --false-alarm, not both" if real else "give --real or --false-alarm"
        )

    sel = pick_targets(ctx, names, tags, connections=False)
    name, done = _find_alert(sel, alert_id, lambda h: h.label(alert_id, real, now_utc()))
    words = {True: "real", False: "a false alarm"}
    was = done["previous"]
    click.echo(
        f"alert {alert_id}{_of(sel, name)} labelled {words[real]}"
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
    is unreachable (written to it when it returns). Each target has its own silences
    and maintenance windows (--target / --tag).
    """


_ADD = TARGETS_HELP.format(
    default="the one target; in a fleet of several targets `add` needs --target or --tag"
    " (it silences every target they match, one silence each)"
)


@silence_group.command("add", epilog=_ADD)
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
@target_options
@click.pass_context
def silence_add(
    ctx: click.Context,
    categories: tuple[str, ...],
    duration: str,
    reason: str,
    by: str | None,
    names: tuple[str, ...],
    tags: tuple[str, ...],
) -> None:
    """Silence CATEGORY for a while. Exit code 0, 2 on bad input (incl. a fleet of several
    targets without --target/--tag), 3 a target's variables malformed."""
    from westep_ops.silences import SilenceStore, parse_duration
    from westep_ops.store import now_utc, target_state

    d = parse_duration(duration)
    sel = pick_targets(ctx, names, tags, connections=False)
    if sel.several and not (names or tags):
        raise WestepError(
            f"silence add: the config has {len(sel.targets)} targets"
            f" ({', '.join(t.name for t in sel.targets)}); say which with --target NAME or"
            " --tag KEY=VALUE"
        )
    quiet_store_pool()
    codes: list[int] = []
    for p in sel.targets:
        if p.error:
            codes.append(report_target_error(p))
            continue
        s = SilenceStore(p.env.storage_url, target=p.name, state=target_state(p.env, p.name)).add(
            sorted(set(categories)), d, reason, by or os.environ.get("USER") or "someone", now_utc()
        )
        click.echo(
            f"silence {s.describe(_local_tz())} on {', '.join(s.categories)}{_of(sel, p.name)}"
        )
        if s.local:
            click.echo("  (ops store unreachable: kept locally, written to it when it returns)")
        codes.append(0)
    sys.exit(worst(codes))


def _text(value: str, name: str) -> str:
    if not value.strip() or not value.isprintable() or len(value) > 500:
        raise click.BadParameter(f"{name}: 1-500 printable characters")
    return value


@silence_group.command("list", epilog=_ALL)
@click.option("--all", "show_all", is_flag=True, help="Also ended and expired silences.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@target_options
@click.pass_context
def silence_list(
    ctx: click.Context,
    show_all: bool,
    as_json: bool,
    names: tuple[str, ...],
    tags: tuple[str, ...],
) -> None:
    """Active silences (with --all, every one), and maintenance windows covering now.

    Exit code 0, 2 bad input, 3 a target's variables malformed.
    """
    from westep_ops.silences import SilenceStore, window_occurrence
    from westep_ops.store import now_utc, target_state

    sel = pick_targets(ctx, names, tags, connections=False)
    quiet_store_pool()
    now = now_utc()
    codes: list[int] = []
    docs: dict[str, Any] = {}
    rows: list[list[str]] = []
    zone = sel.config.timezone
    for p in sel.targets:
        if p.error:
            codes.append(report_target_error(p))
            docs[p.name] = target_error_doc(p)
            continue
        codes.append(0)
        config = p.config
        store = SilenceStore(
            p.env.storage_url,
            target=p.name,
            state=target_state(p.env, p.name),
            connect_timeout_ms=config.monitoring.timeouts.connect,
        )
        items = store.list(include_ended=show_all, now=now)
        windows = [
            o
            for w in config.maintenance_windows
            if (o := window_occurrence(w, now, config.timezone))
        ]
        docs[p.name] = {
            "target": p.name,
            "silences": [dict(s.as_dict(), active=s.active(now)) for s in items],
            "windows_now": [s.as_dict() for s in windows],
            "source": "ops PostgreSQL"
            if store.error is None
            else f"local copy ({redact(store.error)})",
        }
        if as_json:
            continue
        if store.error is not None:
            where = f" for target {p.name}" if sel.fleet else ""
            click.echo(
                f"(ops store unreachable: {redact(store.error)}; the local copy is shown{where})"
            )
        lead = [p.name] if sel.fleet else []
        rows += [
            [
                *lead,
                s.label,
                ",".join(s.categories),
                _local(s.starts_at, zone, "%Y-%m-%d %H:%M"),
                _local(s.ends_at, zone, "%Y-%m-%d %H:%M"),
                "active" if s.active(now) else ("expired" if s.expired_at else "ended"),
                s.created_by,
                s.reason,
            ]
            for s in items
        ] + [
            [
                *lead,
                "window",
                ",".join(w.categories),
                _local(w.starts_at, zone, "%Y-%m-%d %H:%M"),
                _local(w.ends_at, zone, "%Y-%m-%d %H:%M"),
                "active",
                "config",
                str(w.window),
            ]
            for w in windows
        ]
    if as_json:
        echo_json_docs(sel, docs)
    elif not rows:
        answered = [p.name for p, c in zip(sel.targets, codes, strict=True) if c == 0]
        if answered:
            some = f" in {', '.join(answered)}" if len(answered) < len(codes) else ""
            click.echo("no active silences" + some)
    else:
        header = ["id", "categories", f"starts ({zone})", f"ends ({zone})", "state", "by"]
        click.echo(_table(rows, (["target"] if sel.fleet else []) + [*header, "reason"]))
    sys.exit(worst(codes))


@silence_group.command("expire", epilog=_BY_ID.replace("alert", "silence"))
@click.argument("silence_id")
@target_options
@click.pass_context
def silence_expire(
    ctx: click.Context, silence_id: str, names: tuple[str, ...], tags: tuple[str, ...]
) -> None:
    """End silence SILENCE_ID now. Exit code 0, 2 when there is no such active silence (or
    a local id L<n> is active in several targets: pass --target), 3 a target's variables
    malformed."""
    from westep_ops.silences import SilenceStore, parse_id
    from westep_ops.store import now_utc, target_state

    wanted = parse_id(silence_id)
    sel = pick_targets(ctx, names, tags, connections=False)
    quiet_store_pool()
    now = now_utc()
    stores = []
    for p in sel.targets:
        if p.error:
            raise WestepError(p.error, exit_code=3)
        store = SilenceStore(p.env.storage_url, target=p.name, state=target_state(p.env, p.name))
        if not sel.several or any(s.id == wanted for s in store.list(now=now)):
            stores.append((p.name, store))
    if len(stores) > 1:
        raise WestepError(
            f"silence {silence_id} is active in {len(stores)} targets:"
            f" {', '.join(n for n, _ in stores)} (pass --target NAME)"
        )
    s = stores[0][1].expire(wanted, now) if stores else None
    if s is None:
        among = f" in {', '.join(t.name for t in sel.targets)}" if sel.fleet else ""
        raise WestepError(f"no active silence {silence_id}{among}")
    click.echo(
        f"silence #{s.label} expired ({', '.join(s.categories)}: {s.reason})"
        f"{_of(sel, stores[0][0])}"
    )


def _of(sel: Selection, name: str) -> str:
    """`` (target NAME)`` in a fleet; nothing with the one target."""
    return f" (target {name})" if sel.fleet else ""


def _history(p: Picked) -> Any:
    from westep_ops.monitoring.history import HistoryStore

    store = HistoryStore(p.env.require("storage_url"), target=p.name)
    _separate_store(p.env)
    return store


def _per_target(sel: Selection, fn: Callable[[Any], Any]) -> tuple[dict[str, Any], list[int]]:
    """``fn(history)`` for each picked target; a target that cannot run and an ops store
    that is down are each one error line (exit 3 for that target), the others still run.
    A store already found down is not tried again for the next target (no second wait)."""
    from westep_ops.monitoring.history import HistoryUnavailable

    quiet_store_pool()
    got: dict[str, Any] = {}
    codes: list[int] = []
    down: dict[str, str] = {}  # ops store URL -> why it is unavailable
    for p in sel.targets:
        if p.error:
            codes.append(report_target_error(p))
            got[p.name] = target_error_doc(p)
            continue
        why = down.get(p.env.storage_url or "")
        if why is not None:  # the shared store: said once, for the first target
            codes.append(3)
            got[p.name] = {**target_error_doc(p), "error": why}
            continue
        if why is None:
            store = _history(p)
            try:
                got[p.name] = fn(store)
                codes.append(0)
                continue
            except HistoryUnavailable as e:
                why = down[p.env.storage_url] = f"ops store unavailable: {redact(e)}"
            finally:
                store.close()
        if not sel.fleet:
            raise WestepError(why, exit_code=3)
        others = sum(
            1
            for q in sel.targets[len(got) + 1 :]
            if not q.error and q.env.storage_url == p.env.storage_url
        )
        also = f" (and for the {others} other target(s) that share it)" if others > 0 else ""
        # which target met it only matters when an earlier one was read before it went
        who = f"target {p.name}: " if 0 in codes else ""
        click.echo(f"error: {who}{why}{also}", err=True)
        codes.append(3)
        got[p.name] = {**target_error_doc(p), "error": why}
    return got, codes


def _find_alert(sel: Selection, alert_id: int, fn: Callable[[Any], Any]) -> tuple[str, Any]:
    """Apply ``fn`` to alert ``alert_id`` through the store of the picked target it belongs
    to (ids are unique in the ops store); exit 2 when no picked target has it, 3 when the
    store is unavailable."""
    from westep_ops.monitoring.history import HistoryUnavailable

    quiet_store_pool()
    for p in sel.targets:
        if p.error:
            raise WestepError(p.error, exit_code=3)
        store = _history(p)
        try:
            # The alert must be this target's: acknowledging or labelling another target's
            # alert by its id would change a history this command was not pointed at.
            with store.tx() as conn:
                mine = conn.execute(
                    "SELECT 1 FROM westep_ops.alerts WHERE id = %s AND target = %s",
                    (alert_id, p.name),
                ).fetchone()
            done = fn(store) if mine else None
        except HistoryUnavailable as e:
            raise WestepError(f"ops store unavailable: {redact(e)}", exit_code=3) from None
        finally:
            store.close()
        if done:
            return p.name, done
    among = f" in target{'s' if sel.several else ''} {', '.join(t.name for t in sel.targets)}"
    raise WestepError(f"no alert {alert_id}" + (among if sel.fleet else ""))
