"""``westep-ops monitor``: the monitoring cycle in the foreground, without the Dagster daemon.

For places that cannot run a daemon. It writes to the same history store, alerts the same
way, and runs repairs itself (through the same runner, rate limit included). Ctrl-C or
SIGTERM stops it between ticks.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable

from westep_ops.config import Config
from westep_ops.environment import Environment
from westep_ops.monitoring.engine import Monitor, TickResult
from westep_ops.monitoring.history import HistoryStore, HistoryUnavailable
from westep_ops.monitoring.notify import Notifier
from westep_ops.repairs.base import run_repair
from westep_ops.store import OpsStore, now_utc


def fast(config: Config) -> Config:
    """The seed's ``--fast``: the full sweep every minute."""
    iv = config.monitoring.intervals
    intervals = iv.model_copy(update={"health": 60_000, "performance": min(iv.performance, 60_000)})
    return config.model_copy(
        update={"monitoring": config.monitoring.model_copy(update={"intervals": intervals})}
    )


def build(env: Environment, config: Config, *, recovery: bool) -> Monitor:
    return Monitor(
        env,
        config,
        HistoryStore(env.storage_url),
        Notifier(env, config.timezone),
        recovery=recovery,
    )


def run_repairs(monitor: Monitor, result: TickResult) -> None:
    """Run the tick's repair requests now, then re-probe what they repaired."""
    if not result.repairs:
        return
    with OpsStore(monitor.env.storage_url) as store:
        _run_requests(monitor, result, store)


def _run_requests(monitor: Monitor, result: TickResult, store: OpsStore) -> None:
    for req in result.repairs:
        r = run_repair(
            req.action,
            monitor.env,
            monitor.config,
            trigger=f"incident #{req.incident_id}",
            incident_id=req.incident_id,
            store=store,
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


def run(monitor: Monitor, *, once: bool, echo: Callable[[str], None] = print) -> TickResult | None:
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    last: TickResult | None = None
    try:
        while not stop.is_set():
            try:
                result = monitor.tick(force="full" if once else None)
            except HistoryUnavailable as e:
                # Keep watching; without the history there is no hysteresis to apply.
                echo(f"history unavailable ({e}); retrying")
                monitor.notifier.event(
                    now_utc(), type="history_unavailable", severity="warning", reason=str(e)
                )
                if once:
                    raise
                stop.wait(5)
                continue
            if result.ran:
                last = result
                bad = [f"{o.category}={o.status}" for o in result.observations if o.status != "ok"]
                echo(
                    f"{now_utc():%H:%M:%S} {result.ran} sweep {result.duration_ms:.0f} ms: "
                    + (", ".join(bad) if bad else "all ok")
                )
                for a in result.alerts:
                    echo(f"  ALERT {a.line(monitor.notifier.tz)}")
                run_repairs(monitor, result)
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
