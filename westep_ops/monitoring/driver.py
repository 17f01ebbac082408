"""``westep-ops monitor``: the monitoring cycle in the foreground, without the Dagster daemon.

For places that cannot run a daemon. It writes to the same history store, alerts the same
way, and runs repairs itself (through the same runner, rate limit included). Ctrl-C or
SIGTERM stops it between ticks.

It keeps watching whatever breaks: with the ops store down or frozen the history spools
locally (``ResilientHistory``) and repairs count their hourly limit from the local audit
file; Slack is sent in the background; an exception in a tick or a repair is logged (a
line, and a ``monitor_error`` event) and the next tick runs.
"""

from __future__ import annotations

import signal
import sys
import threading
import traceback
from collections.abc import Callable

from westep_ops.config import DEFAULT_TARGET, Config
from westep_ops.environment import Environment
from westep_ops.monitoring.engine import Monitor, TickResult
from westep_ops.monitoring.history import HistoryUnavailable, ResilientHistory
from westep_ops.monitoring.notify import Notifier
from westep_ops.redact import redact
from westep_ops.repairs.base import run_repair
from westep_ops.store import OpsStore, now_utc


def fast(config: Config) -> Config:
    """The seed's ``--fast``: the full sweep every minute."""
    iv = config.monitoring.intervals
    intervals = iv.model_copy(update={"health": 60_000, "performance": min(iv.performance, 60_000)})
    return config.model_copy(
        update={"monitoring": config.monitoring.model_copy(update={"intervals": intervals})}
    )


def build(
    env: Environment, config: Config, *, recovery: bool, target: str = DEFAULT_TARGET
) -> Monitor:
    """The monitor of one target: its own history (and spool) and notifier."""
    return Monitor(
        env,
        config,
        ResilientHistory(env.storage_url, target=target),
        Notifier(env, config.timezone, background=True, target=target),
        recovery=recovery,
    )


def run_repairs(monitor: Monitor, result: TickResult) -> None:
    """Run the tick's repair requests now, then re-probe what they repaired."""
    if not result.repairs:
        return
    # The history knows when the store is down: then the runner goes straight to the file.
    with monitor.ops_store() as store:
        _run_requests(monitor, result, store)


def log_error(monitor: Monitor, echo: Callable[[str], None], where: str, e: BaseException) -> None:
    """Log an unexpected exception in one line (a traceback with DEBUG) and carry on."""
    text = redact(f"{type(e).__name__}: {e}".splitlines()[0])
    echo(f"{now_utc():%H:%M:%S} error in {where} ({text}); monitoring goes on")
    if monitor.env.debug:
        echo(redact(traceback.format_exc()))
    try:
        monitor.notifier.event(
            now_utc(), type="monitor_error", severity="error", where=where, reason=text
        )
    except OSError:
        pass  # the log dir itself failing must not stop the next tick either


def _run_requests(monitor: Monitor, result: TickResult, store: OpsStore) -> None:
    for req in result.repairs:
        try:
            r = run_repair(
                req.action,
                monitor.env,
                monitor.config,
                trigger=f"incident #{req.incident_id}",
                incident_id=req.incident_id,
                store=store,
                target=monitor.target,
            )
            monitor.notifier.event(
                now_utc(),
                type="repair",
                action=r.action,
                outcome=r.outcome,
                severity="info" if r.ok else "critical",
                incident=req.incident_id,
                summary=r.summary,
            )
            if r.ok:
                monitor.verify(req.category)
        except Exception as e:  # noqa: BLE001 - one repair's crash must not skip the others
            log_error(monitor, print, f"repair {req.action.value}", e)


def report(
    monitor: Monitor, result: TickResult, echo: Callable[[str], None], label: str = ""
) -> None:
    """The lines of one sweep: what failed, its alerts, what a silence held back.
    ``label`` (a fleet's target name) goes after the time."""
    bad = [f"{o.category}={o.status}" for o in result.observations if o.status != "ok"]
    echo(
        f"{now_utc():%H:%M:%S} {label + ' ' if label else ''}{result.ran} sweep"
        f" {result.duration_ms:.0f} ms: "
        + (", ".join(bad) if bad else "all ok")
        + (f" (history unavailable, {result.spooled} spooled)" if result.history_error else "")
    )
    for a in result.alerts:
        echo(f"  {label + ' ' if label else ''}ALERT {a.line(monitor.notifier.tz)}")
    for a in result.suppressed:
        echo(f"  silenced, not sent: {a.kind} {a.category}: {redact(a.message)}")


def run(monitor: Monitor, *, once: bool, echo: Callable[[str], None] = print) -> TickResult | None:
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    last: TickResult | None = None
    try:
        while not stop.is_set():
            try:
                result = monitor.tick(force="full" if once else None)
            except HistoryUnavailable as e:
                # Only a plain HistoryStore raises this; ResilientHistory spools instead.
                echo(f"history unavailable ({e}); retrying")
                monitor.notifier.event(
                    now_utc(), type="history_unavailable", severity="warning", reason=str(e)
                )
                if once:
                    raise
                stop.wait(5)
                continue
            except Exception as e:  # one bad tick must not end monitoring
                if once:
                    raise
                log_error(monitor, echo, "tick", e)
                stop.wait(5)
                continue
            if result.ran:
                last = result
                report(monitor, result, echo)
                try:
                    run_repairs(monitor, result)
                except Exception as e:  # noqa: BLE001 - nor one bad repair
                    log_error(monitor, echo, "repairs", e)
            if once:
                break
            stop.wait(1)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        monitor.close()
    return last


def exit_code(result: TickResult | None) -> int:
    from westep_ops.probes.base import Status
    from westep_ops.probes.base import exit_code as health_code

    if result is None:
        return 3
    return health_code(Status(o.status) for o in result.observations if o.result is not None)


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use: westep-ops monitor")
