"""Probe commands: test-connection, health-check, db-status, performance, diagnose.

These must start fast: only click and ``cli.common`` are imported at module level; each
command imports its probes when it runs (never Dagster or pandas).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from westep_ops.cli.common import (
    CHECK_CATEGORIES,
    HealthStateCommand,
    _cfg,
    _env,
    _status_word,
    _styled,
    _table,
)
from westep_ops.errors import WestepError
from westep_ops.redact import redact


@click.command("test-connection")
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


def _probe_session(ctx: click.Context) -> Any:
    from westep_ops.probes.session import ProbeSession

    return ProbeSession(_env(), _cfg(ctx))


@click.command("health-check", cls=HealthStateCommand)
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


@click.command("db-status", cls=HealthStateCommand)
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


@click.command("performance")
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


@click.command("diagnose")
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
