"""The standalone monitor: ``westep-ops monitor`` (no Dagster daemon needed)."""

from __future__ import annotations

import signal
import sys
import threading
from dataclasses import replace

import click

from westep_ops.cli.common import HealthStateCommand, _cfg, _separate_store, config_dir
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
@click.option(
    "--target", "names", multiple=True, metavar="NAME", help="Only this target (repeatable)."
)
@click.option(
    "--tag", "tags", multiple=True, metavar="KEY=VALUE", help="Only targets with this tag."
)
@click.option(
    "--repairs",
    type=click.Choice(["inline", "dagster"]),
    default="inline",
    show_default=True,
    help="inline: run repairs here; dagster: queue them for the Dagster sensor's repair runs.",
)
@click.option(
    "--worker-id",
    default=None,
    metavar="ID",
    help="This worker's name among the workers sharing the fleet (default: host:pid).",
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 256),
    default=16,
    show_default=True,
    help="Targets probed at the same time (one slot per target's sweep).",
)
@click.pass_context
def monitor_cmd(
    ctx: click.Context,
    fast: bool,
    no_recovery: bool,
    once: bool,
    names: tuple[str, ...],
    tags: tuple[str, ...],
    repairs: str,
    worker_id: str | None,
    concurrency: int,
) -> None:
    """Monitor continuously in the foreground (no Dagster daemon needed); Ctrl-C stops it.

    It keeps watching through failures of its own parts: while the ops store is down it
    spools to monitor-spool.sqlite3 (a fleet target T: monitor-spool.T.sqlite3;
    $WESTEP_OPS_STATE_DIR, default the log dir) and replays it when the store returns; Slack is sent in the background and resent until
    delivered; open incidents left by an earlier monitor get their repair. An ops store
    that is the monitored database is refused (exit 2).

    Cheap probes every monitoring.intervals.performance, the full H1-H7 sweep every
    monitoring.intervals.health; samples, incidents and alerts go to the ops store
    (WESTEP_OPS_STORAGE_URL), alerts also to logs/ and Slack (WEBHOOK_URL). Incidents
    that have a repair trigger it (subject to autoRecovery) unless --no-recovery.

    A fleet (the config's targets, picked with --target/--tag; default all): the targets
    are probed concurrently (--concurrency slots), and several monitor processes on the
    same ops store share them through leases held there: each target is probed by one
    worker; a line is printed per lease taken, released or lost. A worker that stops
    hands its targets back; one killed is replaced within its lease TTL (a third of the
    cheap interval, 3-30 s). While the ops store is down a worker keeps probing the
    targets it last held (spooling) and takes no new one.

    With --once the exit code is health-check's: 0 healthy, 1 warning, 2 critical, 3
    could not run (bad config, flag, URL included); over several targets, the worst. It
    takes each target's lease for the sweep like a worker: a target a running worker
    holds is not swept (one line; exit 3 for it): its worker stores it, and
    health-check probes without storing; one a killed worker left is taken once it runs
    out (30 s at most). Without --once: 2 on bad input. A fleet target
    whose DATABASE_URL/DIRECT_URL are unset gets one error line and is not monitored.
    """
    from westep_ops.monitoring import driver, fleet
    from westep_ops.monitoring.history import HistoryUnavailable
    from westep_ops.monitoring.leases import default_worker_id
    from westep_ops.targets import parse_tags, resolve_target, select, target_specs

    config = _cfg(ctx)
    # names and tags first: only the targets picked are resolved
    specs = select(target_specs(config), names, parse_tags(tags))
    chosen, unset = [], 0
    base = config_dir(ctx)
    for spec in specs:
        t = resolve_target(config, spec, None, base)
        if config.targets and t.missing():
            # nothing to probe with: one line, exit 3 for it (never samples of a blind
            # sweep, which would read as the target's own outage)
            where = ", ".join(f"{m} from {t.sources[m].describe()}" for m in t.missing())
            click.echo(f"error: target {t.name}: not set: {where}; not monitored", err=True)
            unset += 1
            continue
        chosen.append(t)
    if not chosen:
        sys.exit(3)
    for t in chosen:
        t.environment.require("storage_url")
        _separate_store(t.environment)
    if fast:
        chosen = [replace(t, config=driver.fast(t.config)) for t in chosen]
    echo = lambda s: click.echo(redact(s))  # noqa: E731
    once_id = f"once:{default_worker_id()}"
    if once and len(chosen) == 1 and repairs == "inline":
        (t,) = chosen
        with fleet.once_leases(chosen, echo, once_id) as (leases, held_elsewhere):
            if held_elsewhere:
                sys.exit(3)
            monitor = driver.build(t.environment, t.config, recovery=not no_recovery, target=t.name)
            if leases is not None:
                fleet.fence_history(monitor.history, leases.fence(t.name))
            try:
                last = driver.run(monitor, once=True, echo=echo)
            except HistoryUnavailable as e:
                raise WestepError(f"ops store unavailable: {redact(e)}", exit_code=3) from None
        sys.exit(max(driver.exit_code(last), 3 if unset else 0))
    if once:
        results = fleet.once(
            chosen,
            recovery=not no_recovery,
            repairs=repairs,
            concurrency=concurrency,
            echo=echo,
            worker_id=once_id,
        )
        sys.exit(max([driver.exit_code(r) for r in results] + [3 if unset else 0]))
    worker = fleet.Worker(
        chosen,
        storage_url=chosen[0].environment.storage_url or "",
        worker_id=worker_id or default_worker_id(),
        recovery=not no_recovery,
        repairs=repairs,
        concurrency=concurrency,
        echo=echo,
    )
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        worker.run(stop)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
