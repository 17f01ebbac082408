"""Repair commands: repair, recover, and the quarantine group (list, restore)."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from westep_ops.cli.common import (
    TARGETS_HELP,
    Picked,
    _iso,
    _local,
    _separate_store,
    _styled,
    _table,
    echo_json_docs,
    pick_targets,
    quiet_store_pool,
    report_target_error,
    target_error_doc,
    target_heading,
    target_options,
    worst,
)
from westep_ops.errors import WestepError
from westep_ops.redact import redact

_ONE = TARGETS_HELP.format(
    default="the one target; it changes one target only: when more than one target"
    " matches it refuses (exit 2) and names them"
)
_ALL = TARGETS_HELP.format(default="every target")


def _one_target(
    ctx: click.Context,
    names: tuple[str, ...],
    tags: tuple[str, ...],
    command: str,
    as_json: bool = False,
) -> Picked:
    """The one target a changing command acts on: exit 2 when several match, 3 when its
    variables are missing (nothing can be repaired there). In a fleet the text output
    starts with a line naming it."""
    sel = pick_targets(ctx, names, tags, one_for=command)
    p = sel.targets[0]
    if p.error:
        raise WestepError(p.error, exit_code=3)
    if sel.fleet and not as_json:
        target_heading(sel, p, first=True)
    quiet_store_pool()
    return p


def _print_repair(r: Any) -> None:
    colour = "green" if r.ok else "red"
    took = f"{r.duration_ms:.0f} ms" if r.duration_ms < 1000 else f"{r.duration_ms / 1000:.1f} s"
    click.echo(f"{click.style(r.action, bold=True)}: {click.style(r.outcome, fg=colour)} ({took})")
    click.echo(f"  {redact(r.summary)}")
    for c in r.changes:
        click.echo(f"  change: {redact(c)}")
    for n in r.notes:
        click.echo(f"  note: {redact(n)}")


@click.command("repair", epilog=_ONE)
@click.argument("action", required=False)
@click.option("--dry-run", is_flag=True, help="Say what would change; change nothing.")
@click.option(
    "--force",
    is_flag=True,
    help="Run even past autoRecovery.maxAttemptsPerHour (recorded as forced).",
)
@click.option(
    "--all-declared",
    is_flag=True,
    help="fix_table_permissions only: grant every declared privilege that is missing, not"
    " just what the health check needs (a person's explicit request).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result(s) as JSON.")
@target_options
@click.pass_context
def repair_cmd(
    ctx: click.Context,
    action: str | None,
    dry_run: bool,
    force: bool,
    all_declared: bool,
    as_json: bool,
    names: tuple[str, ...],
    tags: tuple[str, ...],
) -> None:
    """Run repair ACTION, or without ACTION the repairs the current health calls for.

    \b
    Actions: restore_db_connection, restore_connection_pool, fix_table_permissions,
             repair_auth, fix_data_integrity, optimize_performance,
             restore_realtime_publication
    Repairs use WESTEP_OPS_REPAIR_URL / WESTEP_OPS_PGBOUNCER_REPAIR_URL, run under
    lock and statement timeouts, are verified by the matching check afterwards and
    recorded when they start and when they end (ops store, logs/repair-attempts.jsonl,
    and the per-user repair budget). fix_table_permissions gives back only what the
    health check needs (SELECT and schema USAGE for the critical tables' roles) and
    reports the rest of the declared drift; --all-declared grants that too.
    restore_connection_pool and restore_realtime_publication skip while a silence or
    maintenance window covers their category (--force overrides). Exit code 0 when every
    repair succeeded, had nothing to do, was skipped (silenced) or was done by another
    run, 1 when one failed or was refused, 2 on bad input (config, flag, URL, unknown
    action, more than one target), 3 the target's variables missing.
    """
    from westep_ops.config import RepairAction
    from westep_ops.repairs.base import parse_action, run_repair
    from westep_ops.repairs.recovery import plan_repairs, sweep

    if action is not None:
        parse_action(action)  # an unknown action is bad input before any target is read
    picked = _one_target(ctx, names, tags, "repair", as_json)
    env, config = picked.env, picked.config
    _separate_store(env)
    if all_declared and (
        action is None or parse_action(action) is not RepairAction.fix_table_permissions
    ):
        raise WestepError("--all-declared applies only to: repair fix_table_permissions")
    found: dict[Any, Any] = {}
    if action is not None:
        actions = [parse_action(action)]
        trigger = "manual"
    else:
        results, perf = sweep(env, config)
        plan, escalations = plan_repairs(results, perf, config)
        actions = [p.action for p in plan]
        found = {p.action: p.found for p in plan}
        trigger = "health check"
        for e in escalations:
            click.echo(f"escalation (level {e.level}) {e.category}: {redact(e.reason)}", err=True)
        if not actions:
            click.echo("nothing to repair" + (" (see escalations above)" if escalations else ""))
            sys.exit(1 if escalations else 0)
    results_ = [
        run_repair(
            a,
            env,
            config,
            dry_run=dry_run,
            force=force,
            trigger=trigger,
            found=found.get(a),
            all_declared=all_declared,
            target=picked.name,
        )
        for a in actions
    ]
    if as_json:
        click.echo(json.dumps([r.as_dict() for r in results_], indent=2, default=str))
    else:
        for r in results_:
            _print_repair(r)
    sys.exit(0 if all(r.ok for r in results_) else 1)


@click.command("recover", epilog=_ONE)
@click.option(
    "--with-health-check", is_flag=True, help="Also print the full health table before and after."
)
@click.option("--dry-run", is_flag=True, help="Plan and report only; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the recovery as JSON.")
@target_options
@click.pass_context
def recover_cmd(
    ctx: click.Context,
    with_health_check: bool,
    dry_run: bool,
    as_json: bool,
    names: tuple[str, ...],
    tags: tuple[str, ...],
) -> None:
    """Check health, run the repairs it calls for in a safe order, re-check, escalate the rest.

    A recovery always decides on a fresh health check (acting on stale results is how
    repairs do harm). A repair that crashes is that repair's failure: the others
    still run and the report is always written, logs/recovery-<timestamp>-<id>.md
    (one file per run). With autoRecovery.enabled = false it only reports. Exit code 0
    when everything passes afterwards, 1 when something was escalated to a person or
    outside help, 2 on bad input (config, flag, URL, more than one target), 3 the
    target's variables missing.
    """
    from westep_ops.repairs.recovery import recover

    picked = _one_target(ctx, names, tags, "recover", as_json)
    env = picked.env
    _separate_store(env)
    report = recover(env, picked.config, dry_run=dry_run, target=picked.name)
    if as_json:
        click.echo(json.dumps({"target": picked.name, **report.as_dict()}, indent=2, default=str))
        sys.exit(1 if report.escalations else 0)
    if with_health_check:
        click.echo(_health_table(report.before))
    click.echo(f"Verdict: {report.verdict}")
    for r in report.repairs:
        _print_repair(r)
    for e in report.escalations:
        click.echo(
            click.style(f"escalation (level {e.level}) {e.category}: ", fg="red") + redact(e.reason)
        )
    if with_health_check and report.after:
        click.echo(_health_table(report.after))
    click.echo(f"report: {report.path}")
    sys.exit(1 if report.escalations else 0)


def _health_table(results: list[Any]) -> str:
    rows = [[r.name, _styled(r.status.value), redact(r.summary)] for r in results]
    return _table(rows, ["check", "status", "summary"])


@click.group("quarantine")
def quarantine_group() -> None:
    """Rows moved out by fix_data_integrity: list them, or put them back."""


@quarantine_group.command("list", epilog=_ALL)
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@target_options
@click.pass_context
def quarantine_list(
    ctx: click.Context, as_json: bool, names: tuple[str, ...], tags: tuple[str, ...]
) -> None:
    """Quarantined rows per table and rule (uses WESTEP_OPS_REPAIR_URL); times in the
    configured time zone (--json: ISO 8601 with offset). Exit code 0, 1 a repair database
    refused, 2 bad input, 3 a target's variables missing."""
    from westep_ops.repairs.base import RepairContext
    from westep_ops.repairs.quarantine import list_quarantine

    sel = pick_targets(ctx, names, tags)
    codes: list[int] = []
    docs: dict[str, Any] = {}
    for i, p in enumerate(sel.targets):
        if p.error:
            codes.append(report_target_error(p))
            docs[p.name] = target_error_doc(p)
            continue
        config = p.config
        try:
            with _repair_db(RepairContext(p.env, config, target=p.name)) as conn:
                rows = list_quarantine(conn, config.repairs.quarantine_schema)
        except WestepError as e:
            if not sel.several:
                raise
            click.echo(f"error: target {p.name}: {redact(e)}", err=True)
            codes.append(e.exit_code)
            docs[p.name] = {**target_error_doc(p), "exit_code": e.exit_code, "error": str(e)}
            continue
        codes.append(0)
        docs[p.name] = rows
        if as_json:
            continue
        target_heading(sel, p, first=i == 0)
        if not rows:
            click.echo("quarantine is empty")
        else:
            tz = config.timezone
            click.echo(
                _table(
                    [[r["table"], r["rule"], str(r["rows"]), _local(r["last"], tz)] for r in rows],
                    ["table", "rule", "rows", f"last quarantined ({tz})"],
                )
            )
    if as_json:
        echo_json_docs(sel, docs, default=_iso)
    sys.exit(worst(codes))


@quarantine_group.command("restore", epilog=_ONE)
@click.argument("table")
@click.option("--rule", help="Only rows quarantined by this rule (its integrityRules name).")
@click.option(
    "--id",
    "ids",
    type=click.IntRange(min=1),
    multiple=True,
    help="Only these quarantine ids (repeatable).",
)
@click.option("--dry-run", is_flag=True, help="Count what would go back; change nothing.")
@target_options
@click.pass_context
def quarantine_restore(
    ctx: click.Context,
    table: str,
    rule: str | None,
    ids: tuple[int, ...],
    dry_run: bool,
    names: tuple[str, ...],
    tags: tuple[str, ...],
) -> None:
    """Put quarantined rows of TABLE (e.g. public.step_logs, or 'public."Step"' quoted as in
    the config) back exactly as they were; a restore the table refuses restores nothing.

    Exit code 0 restored (or would restore), 1 the repair database refused, 2 bad input
    (incl. more than one target), 3 the target's variables missing.
    """
    from westep_ops.config import _ident, _qualified
    from westep_ops.repairs.base import RepairContext
    from westep_ops.repairs.quarantine import restore

    try:
        table = _qualified(table)
        if rule is not None:
            _ident(rule)
    except ValueError as e:
        raise WestepError(str(e)) from None
    picked = _one_target(ctx, names, tags, "quarantine restore")
    config = picked.config
    with _repair_db(RepairContext(picked.env, config, target=picked.name)) as conn:
        n = restore(
            conn,
            config.repairs.quarantine_schema,
            table,
            rule=rule,
            ids=list(ids) or None,
            dry_run=dry_run,
        )
        if not dry_run:
            conn.commit()
    click.echo(f"{'would restore' if dry_run else 'restored'} {n} rows into {table}")


def _repair_db(rctx: Any) -> Any:
    from contextlib import contextmanager

    from westep_ops.repairs.base import RepairFailed

    @contextmanager
    def cm() -> Any:
        try:
            with rctx.db() as conn:
                yield conn
        except RepairFailed as e:
            raise WestepError(str(e), exit_code=1) from None

    return cm()
