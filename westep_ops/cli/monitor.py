"""The standalone monitor: ``westep-ops monitor`` (no Dagster daemon needed)."""

from __future__ import annotations

import sys

import click

from westep_ops.cli.common import HealthStateCommand, _cfg, _env, _separate_store
from westep_ops.errors import WestepError
from westep_ops.redact import redact


@click.command("monitor", cls=HealthStateCommand, state_flag="once")
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
