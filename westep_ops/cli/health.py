"""Probe commands: test-connection, health-check, db-status, performance, diagnose.

These must start fast: only click and ``cli.common`` are imported at module level; each
command imports its probes when it runs (never Dagster or pandas).
"""

from __future__ import annotations

import sys
from typing import Any

import click

from westep_ops.cli.common import (
    CHECK_CATEGORIES,
    TARGETS_HELP,
    HealthStateCommand,
    Picked,
    Selection,
    _status_word,
    _styled,
    _table,
    each_target,
    echo_json_docs,
    pick_targets,
    report_target_error,
    target_error_doc,
    target_heading,
    target_options,
    worst,
)
from westep_ops.errors import WestepError
from westep_ops.redact import redact

_ALL = TARGETS_HELP.format(default="every target")


def _lead(sel: Selection, p: Picked) -> list[str]:
    """The leading table cell naming the target, in a fleet only."""
    return [p.name] if sel.fleet else []


@click.command("test-connection", epilog=_ALL)
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@target_options
@click.pass_context
def test_connection(
    ctx: click.Context, as_json: bool, names: tuple[str, ...], tags: tuple[str, ...]
) -> None:
    """Reach the database directly, through pgbouncer, pgbouncer's admin console and the
    ops storage; print each one's latency or why it failed.

    Exit code 0 when all four answer, 1 when any does not, 2 on bad configuration, 3 a
    target's variables missing. The admin console is optional: with PGBOUNCER_ADMIN_URL
    unset it is skipped, not failed. One target's JSON is the list of connections (their
    "target" field is the connection: database, pgbouncer, ...); in a fleet the table's
    first column is the fleet target and that one is headed "connection".
    """
    from westep_ops.probes.connection import test_connections

    sel = pick_targets(ctx, names, tags)
    codes: list[int] = []
    docs: dict[str, Any] = {}
    rows = []
    tested = each_target(sel, lambda p: test_connections(p.env, p.config))
    for p, results in zip(sel.targets, tested, strict=True):
        if results is None:
            codes.append(report_target_error(p))
            docs[p.name] = target_error_doc(p)
            continue
        codes.append(0 if all(r.passed for r in results) else 1)
        docs[p.name] = [r.as_dict() for r in results]
        for r in results:
            lat = "" if r.connect_ms is None else f"{r.connect_ms:.1f} ms"
            q = "" if r.query_ms is None else f"{r.query_ms:.1f} ms"
            rows.append(
                [
                    *_lead(sel, p),
                    r.target,
                    _status_word(r.ok, r.skipped),
                    lat,
                    q,
                    r.where or r.env_var,
                    redact(r.detail),
                ]
            )
    if as_json:
        echo_json_docs(sel, docs)
    elif rows:
        header = ["target", "connection"] if sel.fleet else ["target"]
        click.echo(_table(rows, [*header, "status", "connect", "query", "where", "detail"]))
    sys.exit(worst(codes))


def _probe_session(p: Picked) -> Any:
    from westep_ops.probes.session import ProbeSession

    return ProbeSession(p.env, p.config)


@click.command("health-check", cls=HealthStateCommand, epilog=_ALL)
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON (for jq).")
@click.option(
    "--category",
    "categories",
    multiple=True,
    type=click.Choice(CHECK_CATEGORIES),
    help="Only these categories (repeatable). Default: all of H1-H7.",
)
@target_options
@click.pass_context
def health_check(
    ctx: click.Context,
    as_json: bool,
    categories: tuple[str, ...],
    names: tuple[str, ...],
    tags: tuple[str, ...],
) -> None:
    """Run the health checks H1-H7 once and print one line per category.

    H1 connection, H2 pool, H3 tables, H4 integrity, H5 realtime, H6 auth, H7 api.
    Exit code: 0 healthy, 1 warning, 2 critical, 3 a check could not run or the command
    could not start (bad config, flag, URL, target: never 2, which means an outage).
    DEBUG=true prints every query with its timing on stderr.
    """
    sel = pick_targets(ctx, names, tags)
    codes: list[int] = []
    docs: dict[str, Any] = {}
    rows: list[list[str]] = []
    footers: list[str] = []
    swept = each_target(sel, lambda p: _health_one(sel, p, categories))
    for p, one in zip(sel.targets, swept, strict=True):
        if one is None:
            codes.append(report_target_error(p))
            docs[p.name] = target_error_doc(p)
            continue
        code, doc, lines, footer, error = one
        if error:
            click.echo(error, err=True)
        codes.append(code)
        docs[p.name] = doc
        rows += lines
        footers.append(footer)
    if as_json:
        echo_json_docs(sel, docs)
    elif rows:
        header = ["target"] if sel.fleet else []
        click.echo(_table(rows, [*header, "check", "status", "time", "summary"]))
        for footer in footers:
            click.echo(footer)
    sys.exit(worst(codes))


def _health_one(
    sel: Selection, p: Picked, categories: tuple[str, ...]
) -> tuple[int, dict[str, Any], list[list[str]], str, str]:
    """One target's sweep: its exit code, JSON document, table rows, footer line and the
    error line for exit code 3 (empty otherwise). Prints nothing (runs in a thread)."""
    import time

    from westep_ops.config import Category
    from westep_ops.probes.base import MONITOR_MISCONFIGURED, exit_code
    from westep_ops.probes.health import run_health_check

    try:
        session = _probe_session(p)
    except WestepError as e:
        raise WestepError(str(e), exit_code=3) from None
    t0 = time.perf_counter()
    with session:
        results = run_health_check(session, [Category(c) for c in categories] or None)
        shared = session.stats.get("prefetch_ms")
    total_ms = (time.perf_counter() - t0) * 1000
    code = exit_code(r.status for r in results)
    doc = {
        "target": p.name,
        "status": ["ok", "warning", "critical", "error"][code],
        "exit_code": code,
        "duration_ms": round(total_ms, 2),
        "checks": [r.as_dict() for r in results],
    }
    rows = []
    for r in results:
        cause = f" (likely caused by {r.suspected_cause.value})" if r.suspected_cause else ""
        rows.append(
            [
                *_lead(sel, p),
                r.name,
                _styled(r.status.value),
                f"{r.duration_ms:.1f} ms",
                redact(r.summary) + cause,
            ]
        )
    batches = (
        f" (of which {shared:.0f} ms in the batched queries the checks share)" if shared else ""
    )
    footer = f"{len(results)} checks in {total_ms:.0f} ms{batches}"
    if sel.fleet:
        footer = f"{p.name}: {footer}"
    error = ""
    if code == 3:
        # The server answered and refused the monitor: say so in one line (exit 3, not an outage).
        who = f"target {p.name}: " if sel.fleet else ""
        prefix = "monitoring is misconfigured: "
        causes = [
            r.summary.removeprefix(prefix)
            for r in results
            if MONITOR_MISCONFIGURED in r.findings and r.summary.startswith(prefix)
        ]
        if causes:
            error = f"error: {who}{prefix}{redact('; '.join(causes))}"
        else:
            # A check that could not run for another reason (e.g. a grant only H4 needs):
            # name the first one and its cause, so exit 3 never comes without a line.
            first = next(r for r in results if r.status.value == "error")
            error = f"error: {who}{first.name} could not run: {redact(first.summary)}"
    return code, doc, rows, footer, error


@click.command("db-status", cls=HealthStateCommand, epilog=_ALL)
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@target_options
@click.pass_context
def db_status_cmd(
    ctx: click.Context, as_json: bool, names: tuple[str, ...], tags: tuple[str, ...]
) -> None:
    """Server version, uptime, connections, database size, recovery state, paused project.

    Exit code 0 when the database answers, 2 when it does not, 3 when the command could
    not start (bad config, flag, URL, target).
    """
    from westep_ops.probes.db_status import db_status

    sel = pick_targets(ctx, names, tags)
    codes: list[int] = []
    docs: dict[str, Any] = {}

    def one(p: Picked) -> Any:
        session = _probe_session(p)
        session.env.require("direct_url")  # unset is "could not run" (3), not "unreachable" (2)
        with session:
            return db_status(session)

    for i, (p, st) in enumerate(zip(sel.targets, each_target(sel, one), strict=True)):
        if st is None:
            codes.append(report_target_error(p))
            docs[p.name] = target_error_doc(p)
            continue
        codes.append(0 if st.reachable else 2)
        docs[p.name] = {"target": p.name, **st.as_dict()}
        if not as_json:
            target_heading(sel, p, first=i == 0)
            for k, v in st.lines():
                click.echo(f"{k:<12} {redact(v)}")
    if as_json:
        echo_json_docs(sel, docs)
    sys.exit(worst(codes))


@click.command("performance", epilog=_ALL)
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
@target_options
@click.pass_context
def performance(
    ctx: click.Context,
    samples: int,
    interval: float,
    as_json: bool,
    names: tuple[str, ...],
    tags: tuple[str, ...],
) -> None:
    """Performance monitor P1-P4: response time, error rate, throughput, memory.

    Prints the latest metrics and a one-paragraph summary. Exit code 0 ok, 1 on a
    warning, 2 on bad input (config, flag, URL, target), 3 a target's variables missing.
    Several targets are sampled side by side (up to 8 at once).
    """
    import time

    from westep_ops.config import Category
    from westep_ops.probes.health import run_health_check
    from westep_ops.probes.performance import PerformanceMonitor

    sel = pick_targets(ctx, names, tags)
    codes: list[int] = []
    docs: dict[str, Any] = {}

    def sampled(p: Picked) -> Any:
        monitor = PerformanceMonitor()
        session = _probe_session(p)
        session.keep_open = True
        with session:
            for i in range(samples):
                if i:
                    time.sleep(interval)
                results = run_health_check(session, [Category.connection, Category.api])
                monitor.sample(session, results)
                session.end_sweep()
        return monitor

    for n, (p, monitor) in enumerate(zip(sel.targets, each_target(sel, sampled), strict=True)):
        if monitor is None:
            codes.append(report_target_error(p))
            docs[p.name] = target_error_doc(p)
            continue
        latest = monitor.latest()
        assert latest is not None
        codes.append(1 if latest.problems else 0)
        docs[p.name] = {"target": p.name, **latest.as_dict()}
        if not as_json:
            target_heading(sel, p, first=n == 0)
            click.echo(monitor.summary())
    if as_json:
        echo_json_docs(sel, docs)
    sys.exit(worst(codes))


@click.command("diagnose", epilog=_ALL)
@click.option("--json", "as_json", is_flag=True, help="Print the diagnosis as JSON (for jq).")
@target_options
@click.pass_context
def diagnose_cmd(
    ctx: click.Context, as_json: bool, names: tuple[str, ...], tags: tuple[str, ...]
) -> None:
    """Diagnose D1-D4 in depth (read-only) and write logs/diagnosis-report-YYYY-MM-DD.md
    (in a fleet, logs/diagnosis-report-<target>-YYYY-MM-DD.md, one per target).

    D1 connection timing direct vs pooled, D2 declared vs actual grants and RLS, D3
    integrity rule counts with sample keys, D4 realtime publication and slots. The
    report starts with the verdict. Exit code 0 when no problem is found, 1 otherwise,
    2 on bad input (config, flag, URL, target), 3 a target's variables missing.
    """
    from westep_ops.probes.diagnosis import diagnose

    sel = pick_targets(ctx, names, tags)
    codes: list[int] = []
    docs: dict[str, Any] = {}
    diagnosed = each_target(
        sel, lambda p: diagnose(p.env, p.config, target=p.name if sel.fleet else None)
    )
    for i, (p, d) in enumerate(zip(sel.targets, diagnosed, strict=True)):
        if d is None:
            codes.append(report_target_error(p))
            docs[p.name] = target_error_doc(p)
            continue
        codes.append(0 if not d.problems else 1)
        docs[p.name] = {**d.as_dict(), "target": p.name}
        if not as_json:
            target_heading(sel, p, first=i == 0)
            click.echo(f"Verdict: {d.verdict}")
            for problem in d.problems:
                click.echo(f"  - {redact(problem)}")
            click.echo(f"report: {d.report}")
    if as_json:
        echo_json_docs(sel, docs)
    sys.exit(worst(codes))
