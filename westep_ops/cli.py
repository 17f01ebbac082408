"""The ``westep-ops`` command line.

Kept light on purpose: Dagster and pandas are never imported on the path of the probe
commands, so ``westep-ops test-connection`` starts in a fraction of a second. Every error
the user can cause ends as one ``error: ...`` line on stderr and a non-zero exit code,
never a traceback (set ``DEBUG=true`` to see one for an unexpected failure).
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any

import click

from westep_ops.errors import WestepError
from westep_ops.redact import redact

# H1-H7 by name, spelled out so the probe commands need not import the config module
# (pydantic) to build their options; a test checks it against config.Category.
CHECK_CATEGORIES = ["connection", "pool", "tables", "integrity", "realtime", "auth", "api"]

FAULT_SECONDS = 300


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
                e.exit_code = 3
            raise

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except WestepError as e:
            if e.exit_code == 2 and self._reports_state(bool(ctx.params.get(self.state_flag))):
                e.exit_code = 3
            raise


def _status_word(ok: bool, skipped: bool = False) -> str:
    if skipped:
        return click.style("skipped", fg="bright_black")
    return click.style("ok", fg="green") if ok else click.style("FAIL", fg="red", bold=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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


@cli.command("test-connection")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@click.pass_context
def test_connection(ctx: click.Context, as_json: bool) -> None:
    """Reach the database directly, through pgbouncer, pgbouncer's admin console and the
    ops storage; print each one's latency or why it failed.

    Exit code 0 when all four answer, 1 when any does not, 2 on bad configuration. The
    admin console is optional: with PGBOUNCER_ADMIN_URL unset it is skipped, not failed.
    """
    from westep_ops.probes.connection import test_connections

    config = _cfg(ctx)
    results = test_connections(_env(), config)
    if as_json:
        click.echo(json.dumps([r.as_dict() for r in results], indent=2))
    else:
        rows = []
        for r in results:
            lat = "" if r.connect_ms is None else f"{r.connect_ms:.1f} ms"
            q = "" if r.query_ms is None else f"{r.query_ms:.1f} ms"
            rows.append(
                [
                    r.target,
                    _status_word(r.ok, r.skipped),
                    lat,
                    q,
                    r.where or r.env_var,
                    redact(r.detail),
                ]
            )
        click.echo(_table(rows, ["target", "status", "connect", "query", "where", "detail"]))
    sys.exit(0 if all(r.passed for r in results) else 1)


# -- health -------------------------------------------------------------------------------
def _probe_session(ctx: click.Context) -> Any:
    from westep_ops.probes.session import ProbeSession

    return ProbeSession(_env(), _cfg(ctx))


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


@cli.command("health-check", cls=HealthStateCommand)
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON (for jq).")
@click.option(
    "--category",
    "categories",
    multiple=True,
    type=click.Choice(CHECK_CATEGORIES),
    help="Only these categories (repeatable). Default: all of H1-H7.",
)
@click.pass_context
def health_check(ctx: click.Context, as_json: bool, categories: tuple[str, ...]) -> None:
    """Run the health checks H1-H7 once and print one line per category.

    H1 connection, H2 pool, H3 tables, H4 integrity, H5 realtime, H6 auth, H7 api.
    Exit code: 0 healthy, 1 warning, 2 critical, 3 a check could not run or the command
    could not start (bad config, flag, URL: never 2, which means an outage).
    DEBUG=true prints every query with its timing on stderr.
    """
    import time

    from westep_ops.config import Category
    from westep_ops.probes.base import MONITOR_MISCONFIGURED, exit_code
    from westep_ops.probes.health import run_health_check

    try:
        session = _probe_session(ctx)
    except WestepError as e:
        raise WestepError(str(e), exit_code=3) from None
    t0 = time.perf_counter()
    with session:
        results = run_health_check(session, [Category(c) for c in categories] or None)
        shared = session.stats.get("prefetch_ms")
    total_ms = (time.perf_counter() - t0) * 1000
    code = exit_code(r.status for r in results)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "status": ["ok", "warning", "critical", "error"][code],
                    "exit_code": code,
                    "duration_ms": round(total_ms, 2),
                    "checks": [r.as_dict() for r in results],
                },
                indent=2,
                default=str,
            )
        )
    else:
        rows = []
        for r in results:
            cause = f" (likely caused by {r.suspected_cause.value})" if r.suspected_cause else ""
            rows.append(
                [
                    r.name,
                    _styled(r.status.value),
                    f"{r.duration_ms:.1f} ms",
                    redact(r.summary) + cause,
                ]
            )
        click.echo(_table(rows, ["check", "status", "time", "summary"]))
        batches = (
            f" (of which {shared:.0f} ms in the batched queries the checks share)" if shared else ""
        )
        click.echo(f"{len(results)} checks in {total_ms:.0f} ms{batches}")
    if code == 3:
        # The server answered and refused the monitor: say so in one line (exit 3, not an outage).
        prefix = "monitoring is misconfigured: "
        causes = [
            r.summary.removeprefix(prefix)
            for r in results
            if MONITOR_MISCONFIGURED in r.findings and r.summary.startswith(prefix)
        ]
        if causes:
            click.echo(f"error: {prefix}{redact('; '.join(causes))}", err=True)
        else:
            # A check that could not run for another reason (e.g. a grant only H4 needs):
            # name the first one and its cause, so exit 3 never comes without a line.
            first = next(r for r in results if r.status.value == "error")
            click.echo(f"error: {first.name} could not run: {redact(first.summary)}", err=True)
    sys.exit(code)


@cli.command("db-status", cls=HealthStateCommand)
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@click.pass_context
def db_status_cmd(ctx: click.Context, as_json: bool) -> None:
    """Server version, uptime, connections, database size, recovery state, paused project.

    Exit code 0 when the database answers, 2 when it does not, 3 when the command could
    not start (bad config, flag, URL).
    """
    from westep_ops.probes.db_status import db_status

    session = _probe_session(ctx)
    session.env.require("direct_url")  # unset is "could not run" (3), not "unreachable" (2)
    with session:
        st = db_status(session)
    if as_json:
        click.echo(json.dumps(st.as_dict(), indent=2))
    else:
        for k, v in st.lines():
            click.echo(f"{k:<12} {redact(v)}")
    sys.exit(0 if st.reachable else 2)


@cli.command("performance")
@click.option(
    "--samples",
    type=click.IntRange(1, 1000),
    default=2,
    show_default=True,
    help="Samples to take (two or more give throughput and rollback deltas).",
)
@click.option(
    "--interval",
    type=click.FloatRange(0.1, 3600),
    default=1.0,
    show_default=True,
    help="Seconds between samples.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the latest sample as JSON.")
@click.pass_context
def performance(ctx: click.Context, samples: int, interval: float, as_json: bool) -> None:
    """Performance monitor P1-P4: response time, error rate, throughput, memory.

    Prints the latest metrics and a one-paragraph summary. Exit code 0 ok, 1 on a
    warning, 2 on bad input (config, flag, URL).
    """
    import time

    from westep_ops.config import Category
    from westep_ops.probes.health import run_health_check
    from westep_ops.probes.performance import PerformanceMonitor

    monitor = PerformanceMonitor()
    session = _probe_session(ctx)
    session.keep_open = True
    with session:
        for i in range(samples):
            if i:
                time.sleep(interval)
            results = run_health_check(session, [Category.connection, Category.api])
            monitor.sample(session, results)
            session.end_sweep()
    latest = monitor.latest()
    assert latest is not None
    if as_json:
        click.echo(json.dumps(latest.as_dict(), indent=2, default=str))
    else:
        click.echo(monitor.summary())
    sys.exit(1 if latest.problems else 0)


# -- diagnosis and repair -----------------------------------------------------------------
@cli.command("diagnose")
@click.option("--json", "as_json", is_flag=True, help="Print the diagnosis as JSON (for jq).")
@click.pass_context
def diagnose_cmd(ctx: click.Context, as_json: bool) -> None:
    """Diagnose D1-D4 in depth (read-only) and write logs/diagnosis-report-YYYY-MM-DD.md.

    D1 connection timing direct vs pooled, D2 declared vs actual grants and RLS, D3
    integrity rule counts with sample keys, D4 realtime publication and slots. The
    report starts with the verdict. Exit code 0 when no problem is found, 1 otherwise,
    2 on bad input (config, flag, URL).
    """
    from westep_ops.probes.diagnosis import diagnose

    d = diagnose(_env(), _cfg(ctx))
    if as_json:
        click.echo(json.dumps(d.as_dict(), indent=2, default=str))
    else:
        click.echo(f"Verdict: {d.verdict}")
        for p in d.problems:
            click.echo(f"  - {redact(p)}")
        click.echo(f"report: {d.report}")
    sys.exit(0 if not d.problems else 1)


def _print_repair(r: Any) -> None:
    colour = "green" if r.ok else "red"
    took = f"{r.duration_ms:.0f} ms" if r.duration_ms < 1000 else f"{r.duration_ms / 1000:.1f} s"
    click.echo(f"{click.style(r.action, bold=True)}: {click.style(r.outcome, fg=colour)} ({took})")
    click.echo(f"  {redact(r.summary)}")
    for c in r.changes:
        click.echo(f"  change: {redact(c)}")
    for n in r.notes:
        click.echo(f"  note: {redact(n)}")


@cli.command("repair")
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
@click.pass_context
def repair_cmd(
    ctx: click.Context,
    action: str | None,
    dry_run: bool,
    force: bool,
    all_declared: bool,
    as_json: bool,
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
    run, 1 when one failed or was refused, 2 on bad input (config, flag, URL, unknown action).
    """
    from westep_ops.config import RepairAction
    from westep_ops.repairs.base import parse_action, run_repair
    from westep_ops.repairs.recovery import plan_repairs, sweep

    env, config = _env(), _cfg(ctx)
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
        )
        for a in actions
    ]
    if as_json:
        click.echo(json.dumps([r.as_dict() for r in results_], indent=2, default=str))
    else:
        for r in results_:
            _print_repair(r)
    sys.exit(0 if all(r.ok for r in results_) else 1)


@cli.command("recover")
@click.option(
    "--with-health-check", is_flag=True, help="Also print the full health table before and after."
)
@click.option("--dry-run", is_flag=True, help="Plan and report only; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the recovery as JSON.")
@click.pass_context
def recover_cmd(ctx: click.Context, with_health_check: bool, dry_run: bool, as_json: bool) -> None:
    """Check health, run the repairs it calls for in a safe order, re-check, escalate the rest.

    A recovery always decides on a fresh health check (acting on stale results is how
    repairs do harm). A repair that crashes is that repair's failure: the others
    still run and the report is always written, logs/recovery-<timestamp>-<id>.md
    (one file per run). With autoRecovery.enabled = false it only reports. Exit code 0 when everything passes
    afterwards, 1 when something was escalated to a person or outside help, 2 on bad
    input (config, flag, URL).
    """
    from westep_ops.repairs.recovery import recover

    env = _env()
    _separate_store(env)
    report = recover(env, _cfg(ctx), dry_run=dry_run)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2, default=str))
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


@cli.group("quarantine")
def quarantine_group() -> None:
    """Rows moved out by fix_data_integrity: list them, or put them back."""


@quarantine_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_context
def quarantine_list(ctx: click.Context, as_json: bool) -> None:
    """Quarantined rows per table and rule (uses WESTEP_OPS_REPAIR_URL); times in the
    configured time zone (--json: ISO 8601 with offset)."""
    from westep_ops.repairs.base import RepairContext
    from westep_ops.repairs.quarantine import list_quarantine

    config = _cfg(ctx)
    with _repair_db(RepairContext(_env(), config)) as conn:
        rows = list_quarantine(conn, config.repairs.quarantine_schema)
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=_iso))
    elif not rows:
        click.echo("quarantine is empty")
    else:
        tz = config.timezone
        click.echo(
            _table(
                [[r["table"], r["rule"], str(r["rows"]), _local(r["last"], tz)] for r in rows],
                ["table", "rule", "rows", f"last quarantined ({tz})"],
            )
        )


@quarantine_group.command("restore")
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
@click.pass_context
def quarantine_restore(
    ctx: click.Context, table: str, rule: str | None, ids: tuple[int, ...], dry_run: bool
) -> None:
    """Put quarantined rows of TABLE (e.g. public.step_logs, or 'public."Step"' quoted as in
    the config) back exactly as they were; a restore the table refuses restores nothing.

    Exit code 0 restored (or would restore), 1 the repair database refused, 2 bad input.
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
    config = _cfg(ctx)
    with _repair_db(RepairContext(_env(), config)) as conn:
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


# -- monitoring ---------------------------------------------------------------------------
@cli.command("monitor", cls=HealthStateCommand, state_flag="once")
@click.option(
    "--fast", is_flag=True, help="Full sweep every minute (default: monitoring.intervals)."
)
@click.option("--no-recovery", is_flag=True, help="Alert only; never start a repair.")
@click.option(
    "--once", is_flag=True, help="One full sweep, then exit with the health-check exit code."
)
@click.pass_context
def monitor_cmd(ctx: click.Context, fast: bool, no_recovery: bool, once: bool) -> None:
    """Monitor continuously in the foreground (no Dagster daemon needed); Ctrl-C stops it.

    It keeps watching through failures of its own parts: while the ops store is down it
    spools to monitor-spool.sqlite3 ($WESTEP_OPS_STATE_DIR, default the log dir) and
    replays it when the store returns; Slack is sent in the background and resent until
    delivered; open incidents left by an earlier monitor get their repair. An ops store
    that is the monitored database is refused (exit 2).

    Cheap probes every monitoring.intervals.performance, the full H1-H7 sweep every
    monitoring.intervals.health; samples, incidents and alerts go to the ops store
    (WESTEP_OPS_STORAGE_URL), alerts also to logs/ and Slack (WEBHOOK_URL). Incidents
    that have a repair trigger it (subject to autoRecovery) unless --no-recovery.

    With --once the exit code is health-check's: 0 healthy, 1 warning, 2 critical, 3
    could not run (bad config, flag, URL included). Without it: 2 on bad input.
    """
    from westep_ops.monitoring import driver
    from westep_ops.monitoring.history import HistoryUnavailable

    env, config = _env(), _cfg(ctx)
    env.require("storage_url")
    _separate_store(env)
    if fast:
        config = driver.fast(config)
    monitor = driver.build(env, config, recovery=not no_recovery)
    try:
        last = driver.run(monitor, once=once, echo=lambda s: click.echo(redact(s)))
    except HistoryUnavailable as e:
        raise WestepError(f"ops store unavailable: {redact(e)}", exit_code=3) from None
    if once:
        sys.exit(driver.exit_code(last))


@cli.group("alerts")
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


# -- silences ---------------------------------------------------------------------------
SILENCE_CATEGORIES = [*CHECK_CATEGORIES, "performance"]


@cli.group("silence")
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


# -- SLA ----------------------------------------------------------------------------------
def _month(ctx: click.Context, param: click.Parameter, value: str) -> str:
    from westep_ops.monitoring.sla import check_month

    return check_month(value)  # before the store is opened; one error: line, exit 2


@cli.command("trends")
@click.option(
    "--month",
    required=True,
    callback=_month,
    help="Month to analyse, YYYY-MM exactly, e.g. 2026-11 (configured time zone).",
)
@click.option(
    "--thresholds",
    "thresholds",
    default=None,
    help="JSON file of alternative alert settings (what-if).",
)
@click.option(
    "--lang",
    type=click.Choice(["en", "ja"]),
    default=None,
    help="Report language (default: reportLanguage).",
)
@click.option(
    "--reports-dir",
    envvar="WESTEP_OPS_REPORTS_DIR",
    default="reports",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Where the month's folder is written (or $WESTEP_OPS_REPORTS_DIR).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@click.pass_context
def trends_cmd(
    ctx: click.Context,
    month: str,
    thresholds: str | None,
    lang: str | None,
    reports_dir: str,
    as_json: bool,
) -> None:
    """Monthly SLA report: write reports/YYYY-MM/sla-report.md with its charts.

    Availability (gaps never count as up), response time, error rate, incidents, MTTD,
    MTTR, auto-recovery success, alert precision and false positives, coverage; each
    against its target and the month before. --thresholds replays alerting over the
    stored samples under other settings and compares alerts, false positives and misses.
    Exit code 0, 2 on bad input (config, month, thresholds file), 3 ops store unavailable.
    """
    from westep_ops.monitoring import sla as monthly
    from westep_ops.monitoring.history import HistoryStore, HistoryUnavailable

    env, config = _env(), _cfg(ctx)
    monthly.parse_settings(thresholds, config)  # a bad file is refused before the store
    store = HistoryStore(env.require("storage_url"))
    _separate_store(env)
    try:
        report = monthly.build(
            store,
            config,
            month,
            lang=lang or config.report_language,
            thresholds=thresholds,
            reports_dir=Path(reports_dir),
        )
    except HistoryUnavailable as e:
        raise WestepError(f"ops store unavailable: {redact(e)}") from None
    finally:
        store.close()
    if as_json:
        click.echo(
            json.dumps(
                {
                    "report": str(report.path),
                    "figures": report.figures.as_dict(),
                    "verdicts": report.figures.verdicts(),
                    "whatif": report.whatif,
                },
                indent=2,
                default=str,
            )
        )
        return
    click.echo(report.path.read_text().split("\n## ")[0])
    if report.whatif:
        click.echo(
            _table(
                [
                    [
                        w["name"],
                        str(w["alerts"]),
                        str(w["judged_true"]),
                        str(w["false_positives"]),
                        str(w["unjudged"]),
                        f"{w['missed']} of {w['truth_windows']}",
                    ]
                    for w in report.whatif
                ],
                ["settings", "alerts", "real", "false positives", "unjudged", "missed"],
            )
        )
    click.echo(f"report: {report.path}")


@cli.command("drill")
@click.option(
    "--faults",
    "fault_names",
    default=None,
    help="Comma-separated faults to inject in turn "
    "(default: pool_pause,grant_revoke,orphans,publication_drop,pg_down).",
)
@click.option(
    "--interval",
    type=click.FloatRange(1, 300),
    default=None,
    help="Probe everything every SECONDS, for quick runs "
    "(default: the config's own intervals, monitoring.intervals).",
)
@click.option(
    "--quiet",
    "quiet_s",
    type=click.FloatRange(0, 86400),
    default=None,
    help="Seconds with no fault on before the first fault, between faults and after the "
    "last (0: none; default: 3 cheap-probe intervals).",
)
@click.option(
    "--trials",
    type=click.IntRange(1, 100),
    default=1,
    show_default=True,
    help="Inject each fault this many times (median and worst are reported per fault).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.pass_context
def drill_cmd(
    ctx: click.Context,
    fault_names: str,
    interval: float | None,
    quiet_s: float | None,
    trials: int,
    as_json: bool,
) -> None:
    """Fault drill on the sandbox only: quiet windows and faults in turn, at the config's
    own probe intervals; detection, recovery and false alarms measured.

    Prints per fault and trial: detected (by an alert in a category the fault breaks),
    time from the injection to the alert (and to the first failing sample), time from the
    alert to the verified recovery, repaired automatically or escalated, rows lost (must
    be 0) and rows quarantined; then per fault n, median and worst; then the alerts that
    matched no fault on (false positives), and those inside the quiet windows per quiet
    hour. The ground truth goes into the history, so this month's SLA report judges its
    alerts against it. Progress goes to stderr with --json. Exit code 1 if a fault went
    undetected, rows were lost or an alert matched no fault.
    """
    from westep_ops.sandbox import drill
    from westep_ops.sandbox.manager import Sandbox
    from westep_ops.sandbox.state import sandbox_dir

    names = (
        list(drill.DEFAULT_FAULTS)
        if fault_names is None
        else [f.strip() for f in fault_names.split(",") if f.strip()]
    )
    if not names:
        raise click.BadParameter("names no fault", param_hint="'--faults'")
    sb = Sandbox(sandbox_dir())
    env = _env()
    env.require("storage_url")
    _separate_store(env)
    report = drill.run_drill(
        sb,
        env,
        _cfg(ctx),
        names,
        interval,
        quiet_s=quiet_s,
        trials=trials,
        echo=(lambda s: click.echo(s, err=True)) if as_json else click.echo,
    )
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
        sys.exit(1 if report.failed else 0)

    def secs(v: float | None) -> str:
        return f"{v} s" if v is not None else "-"

    click.echo(
        _table(
            [
                [
                    r.fault,
                    str(r.trial),
                    "yes" if r.detected else click.style("NO", fg="red"),
                    r.category or "-",
                    secs(r.detect_s),
                    secs(r.first_fail_s),
                    secs(r.recover_s),
                    r.outcome,
                    str(r.rows_lost),
                    str(r.rows_quarantined),
                    str(r.alerts),
                ]
                for r in report.results
            ],
            [
                "fault",
                "trial",
                "detected",
                "category",
                "to alert",
                "to 1st failing",
                "to recover",
                "outcome",
                "rows lost",
                "quarantined",
                "alerts",
            ],
        )
    )
    click.echo(
        "\nper fault (times from the injection; recovery from the alert):\n"
        + _table(
            [
                [
                    s["fault"],
                    str(s["n"]),
                    f"{s['detected']}/{s['n']}",
                    secs(s["detect_s"]["median"]),
                    secs(s["detect_s"]["worst"]),
                    secs(s["recover_s"]["median"]),
                    secs(s["recover_s"]["worst"]),
                    str(s["rows_lost"]),
                    str(s["rows_quarantined"]),
                ]
                for s in drill.summarize(report.results)
            ],
            [
                "fault",
                "n",
                "detected",
                "alert median",
                "alert worst",
                "recover median",
                "recover worst",
                "rows lost",
                "quarantined",
            ],
        )
    )
    t = report.tally
    per_hour = t.per_quiet_hour
    click.echo(
        f"quiet windows: {t.quiet_windows}, {t.quiet_s / 60:.1f} min with no fault on, "
        f"alerts in them: {t.quiet_alerts}"
        + (f" ({per_hour:.2f} per quiet hour)" if per_hour is not None else " (not measured)")
    )
    click.echo(
        f"alerts during the drill: {t.alerts}, matching a fault on: {t.attributed}, "
        f"false positives: {t.false_positives}"
    )
    sys.exit(1 if report.failed else 0)


# -- config -------------------------------------------------------------------------------
@cli.group("config")
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
def config_init(output: str, force: bool, schemas: tuple[str, ...]) -> None:
    """Write a starting config from what the target has now (read-only, DIRECT_URL).

    Tables of the exposed schemas with the roles that can read them and their RLS state,
    the API roles' current grants as the declared ones, an orphans rule for each
    <x>_id column whose table exists but has no foreign key, the realtime publication
    and its tables, an auth section on Supabase only (plain PostgreSQL: H6 says not
    configured), and endpoints only for URLs in the environment that answer 200 now.
    Review it before use: it declares what IS, not what should be.

    Exit code 0 written, 1 the target could not be read, 2 the file exists (without
    --force) or the set-up is wrong.
    """
    from westep_ops.config import _IDENT
    from westep_ops.config_init import init_config

    for name in schemas:
        if not _IDENT.match(name):
            raise WestepError(f"--schema {name!r} is not a plain SQL identifier")
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
    data = c.model_dump(by_alias=True, mode="json")
    if as_json:
        click.echo(json.dumps({"source": src, "config": data}, indent=2))
        return
    click.echo(f"# effective config from {src}; every default shown")
    click.echo(json.dumps(data, indent=2))


# -- sandbox ------------------------------------------------------------------------------
def _sandbox_dir_option(f: Any) -> Any:
    return click.option(
        "--dir",
        "sandbox_dir",
        type=click.Path(file_okay=False),
        default=None,
        help="Sandbox state directory (default: $WESTEP_OPS_SANDBOX_DIR or .westep/sandbox).",
    )(f)


def _sandbox(sandbox_dir: str | None) -> Any:
    from westep_ops.sandbox.manager import Sandbox
    from westep_ops.sandbox.state import sandbox_dir as resolve

    return Sandbox(resolve(sandbox_dir))


@cli.group("sandbox")
def sandbox_group() -> None:
    """A local PostgreSQL 15 + pgbouncer + app stand-in to monitor (127.0.0.1 only)."""


@sandbox_group.command("up")
@_sandbox_dir_option
@click.option(
    "--base-port",
    type=click.IntRange(1024, 65535 - 3),
    default=None,
    help="First of four ports: target, pgbouncer (+1), ops (+2), app (+3). "
    "Default $WESTEP_OPS_SANDBOX_BASE_PORT or 25430; fixed once the sandbox exists.",
)
def sandbox_up(sandbox_dir: str | None, base_port: int | None) -> None:
    """Create (first time) and start the sandbox. Safe to run again: running parts are kept."""
    from westep_ops.sandbox.state import default_base_port

    sb = _sandbox(sandbox_dir)
    if sb.exists and base_port is not None and base_port != sb.state.base_port:
        raise WestepError(
            f"this sandbox already uses base port {sb.state.base_port}; "
            "run 'westep-ops sandbox down' and remove its directory to change ports"
        )
    comps = sb.up(base_port or default_base_port())
    _print_components(comps)
    click.echo(
        f'sandbox up in {sb.layout.root}; load its environment with: eval "$(westep-ops sandbox env)"'
    )


@sandbox_group.command("down")
@_sandbox_dir_option
def sandbox_down(sandbox_dir: str | None) -> None:
    """Stop the processes this sandbox started (from its pid files; data is kept)."""
    sb = _sandbox(sandbox_dir)
    stopped = sb.down()
    click.echo("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))


def _print_components(comps: list[Any]) -> None:
    rows = [
        [
            c.name,
            _status_word(c.running) if c.running else click.style("stopped", fg="yellow"),
            f"127.0.0.1:{c.port}",
            str(c.pid or ""),
        ]
        for c in comps
    ]
    click.echo(_table(rows, ["component", "status", "address", "pid"]))


@sandbox_group.command("status")
@_sandbox_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def sandbox_status(sandbox_dir: str | None, as_json: bool) -> None:
    """Show which sandbox processes run and which faults are on. Exit 1 if any part is down."""
    from westep_ops.sandbox import faults

    sb = _sandbox(sandbox_dir)
    if not sb.exists:
        raise WestepError(
            f"no sandbox in {sb.layout.root}: run 'westep-ops sandbox up'", exit_code=1
        )
    comps = sb.status()
    active = faults.active(sb)
    if as_json:
        click.echo(
            json.dumps({"components": [c.__dict__ for c in comps], "faults": active}, indent=2)
        )
    else:
        _print_components(comps)
        click.echo("faults on: " + (", ".join(active) if active else "none"))
    sys.exit(0 if all(c.running for c in comps) else 1)


@sandbox_group.command("env")
@_sandbox_dir_option
def sandbox_env(sandbox_dir: str | None) -> None:
    """Print `export` lines pointing westep-ops at the sandbox (they contain its passwords).

    Use: eval "$(westep-ops sandbox env)"
    """
    import shlex

    sb = _sandbox(sandbox_dir)
    for k, v in sb.state.env().items():
        click.echo(f"export {k}={shlex.quote(v)}")
    click.echo(f"export WESTEP_OPS_SANDBOX_DIR={shlex.quote(str(sb.layout.root))}")


@sandbox_group.command("fault")
@_sandbox_dir_option
@click.argument("name")
@click.argument("state", type=click.Choice(["on", "off"]))
@click.option(
    "--seconds",
    type=click.FloatRange(1, 3600),
    default=FAULT_SECONDS,
    show_default=True,
    help="Upper bound for faults that hold connections (pool_exhaust, idle_in_tx).",
)
def sandbox_fault(sandbox_dir: str | None, name: str, state: str, seconds: float) -> None:
    """Inject (on) or undo (off) fault NAME in the sandbox; nothing else is ever touched.

    Faults: pool_pause, pool_exhaust, grant_revoke, orphans, bloat, idle_in_tx, pg_down,
    bouncer_down, api_down, publication_drop.
    """
    from westep_ops.sandbox import faults

    sb = _sandbox(sandbox_dir)
    click.echo(faults.inject(sb, name, state == "on", seconds))


@sandbox_group.command("faults")
@_sandbox_dir_option
def sandbox_faults(sandbox_dir: str | None) -> None:
    """List the faults that can be injected and which are on."""
    from westep_ops.sandbox import faults

    sb = _sandbox(sandbox_dir)
    on = set(faults.active(sb)) if sb.exists else set()
    for f in faults.FAULTS.values():
        click.echo(f"{f.name:<18} {'ON ' if f.name in on else '   '} {f.what}")


# -- Dagster UI ---------------------------------------------------------------------------
# `dagster dev` warns that ./dagster.yaml "will not be used" whenever DAGSTER_HOME is
# elsewhere, though `ui` copies it there: that one message is dropped, nothing else.
_DAGSTER_DEV = """
import logging, runpy, sys
class CopiedConfig(logging.Filter):
    def filter(self, record):
        return "will not be used to configure Dagster" not in record.getMessage()
logging.getLogger("dagster").addFilter(CopiedConfig())
sys.argv = ["dagster", *sys.argv[1:]]
runpy.run_module("dagster", run_name="__main__")
"""


@cli.command("ui")
@click.option(
    "--port", type=click.IntRange(1, 65535), default=3000, show_default=True, help="Webserver port."
)
def ui(port: int) -> None:
    """Open the Dagster UI (webserver + daemon) on this project, storage in the ops database.

    Needs WESTEP_OPS_STORAGE_URL; derives the psycopg2 URL Dagster's storage needs.
    Starts ``dagster dev`` (Dagster 1.13 prints that ``dg dev`` supersedes it; ``dg``
    is the separate dagster-dg-cli package, which runs ``dagster dev`` underneath).
    """
    import subprocess

    env = _env()
    storage = env.require("storage_url")
    _separate_store(env)
    child = dict(os.environ)
    child.setdefault(
        "WESTEP_OPS_DAGSTER_STORAGE_URL",
        storage.replace("postgresql://", "postgresql+psycopg2://", 1).replace(
            "postgres://", "postgresql+psycopg2://", 1
        ),
    )
    if not (Path("dagster.yaml").exists() and Path("workspace.yaml").exists()):
        raise WestepError(
            "run 'westep-ops ui' from the project directory (it needs dagster.yaml and workspace.yaml)"
        )
    home = Path(child.get("DAGSTER_HOME") or ".westep/dagster_home").resolve()
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(Path("dagster.yaml").read_text())
    child["DAGSTER_HOME"] = str(home)
    cmd = [
        sys.executable,
        "-c",
        _DAGSTER_DEV,
        "dev",
        "-w",
        "workspace.yaml",
        "-p",
        str(port),
        "-h",
        "127.0.0.1",
    ]
    click.echo(f"Dagster UI on http://127.0.0.1:{port} (Ctrl-C to stop)")
    sys.exit(subprocess.call(cmd, env=child))


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


if __name__ == "__main__":
    main()
