"""``westep-ops drill``: prove the detection and recovery targets on the sandbox.

With monitoring running at a short interval, each fault is injected at a known time;
the drill waits for the alert and for the automatic repair (or the escalation), removes
the fault, waits until monitoring sees the stack healthy again, and records the ground
truth (``westep_ops.drill_faults``) next to the incidents it caused, so the monthly SLA
report of the current month shows them and judges its alerts against it. Rows lost are
counted over every table of the app by row fingerprints (md5 of each row), taken before
the fault is removed and before any quarantined row is put back, so a repair cannot hide
a loss behind the restore (must be 0; rows moved to the quarantine are kept, not lost).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import psycopg
from psycopg import sql

from westep_ops.config import Config
from westep_ops.environment import Environment
from westep_ops.errors import WestepError
from westep_ops.monitoring import driver
from westep_ops.monitoring.engine import Monitor
from westep_ops.monitoring.history import HistoryStore
from westep_ops.monitoring.notify import Notifier
from westep_ops.repairs.quarantine import restore
from westep_ops.sandbox import faults
from westep_ops.sandbox.manager import Sandbox

DEFAULT_FAULTS = ("pool_pause", "grant_revoke", "orphans", "publication_drop", "pg_down")
APP_TABLES = ("auth.users", "public.profiles", "public.steps", "public.step_logs")


@dataclass
class DrillResult:
    fault: str
    detected: bool
    category: str | None
    detect_s: float | None
    recover_s: float | None
    outcome: str  # repaired automatically | escalated (level N) | not detected
    rows_lost: int
    alerts: int


def drill_config(config: Config, interval_s: float) -> Config:
    m = config.monitoring
    ms = int(interval_s * 1000)
    return config.model_copy(
        update={
            "monitoring": m.model_copy(
                update={
                    "intervals": m.intervals.model_copy(update={"health": ms, "performance": ms}),
                    "alerting": m.alerting.model_copy(
                        update={"confirm_delay_seconds": min(2.0, interval_s / 2)}
                    ),
                    # The sandbox is ours to break: the hourly limit would stop a drill halfway.
                    "auto_recovery": m.auto_recovery.model_copy(
                        update={"max_attempts_per_hour": 1000}
                    ),
                }
            )
        }
    )


def _rows(sb: Sandbox) -> Counter[str]:
    """A multiset of the app's rows (table + md5 of the row), the fault's own rows left out."""
    out: Counter[str] = Counter()
    with sb.superuser_conn() as conn:
        for t in APP_TABLES:
            rel = sql.Identifier(*t.split("."))
            skip = (
                sql.SQL("r.note IS DISTINCT FROM {}").format(sql.Literal(faults.ORPHAN_MARK))
                if t == "public.step_logs"
                else sql.SQL("true")
            )
            for (h,) in conn.execute(
                sql.SQL("SELECT md5(r::text) FROM {} AS r WHERE {}").format(rel, skip)
            ):
                out[f"{t}:{h}"] += 1
    return out


def _lost(before: Counter[str], after: Counter[str]) -> int:
    """Rows present before and missing (or changed) after."""
    return sum((before - after).values())


def _settled(incident: tuple | None) -> bool:
    """Detected, and then repaired (resolved) or escalated."""
    return incident is not None and (incident[3] is not None or incident[4] is not None)


def run_drill(
    sb: Sandbox,
    env: Environment,
    config: Config,
    names: list[str],
    interval_s: float,
    echo: Callable[[str], None] = print,
    timeout_s: float = 90,
) -> list[DrillResult]:
    unknown = [n for n in names if n not in faults.FAULTS]
    if unknown:
        raise WestepError(
            f"unknown fault(s): {', '.join(unknown)}; known: {', '.join(faults.FAULTS)}"
        )
    faults.guard(sb)
    cfg = drill_config(config, interval_s)
    store = HistoryStore(env.storage_url)
    monitor = Monitor(env, cfg, store, Notifier(env, cfg.timezone))
    drill_id = datetime.now(UTC).strftime("drill-%Y%m%dT%H%M%S")
    results = []

    def spin(until: Callable[[], bool], limit: float) -> bool:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            r = monitor.tick()
            if r.ran:
                driver.run_repairs(monitor, r)
            if until():
                return True
            time.sleep(0.2)
        return False

    def incident_since(t: datetime) -> tuple | None:
        with store.tx() as conn:
            return conn.execute(
                "SELECT id, category, detected_at, resolved_at, escalation, recovered_by FROM westep_ops.incidents"
                " WHERE started_at >= %s - interval '1 second' ORDER BY id LIMIT 1",
                (t,),
            ).fetchone()

    def all_closed() -> bool:
        with store.tx() as conn:
            return (
                conn.execute(
                    "SELECT count(*) FROM westep_ops.incidents WHERE closed_at IS NULL"
                ).fetchone()[0]
                == 0
            )

    for left in faults.active(sb):  # a drill starts from a clean sandbox
        echo(f"  removing fault {left}, left on before the drill")
        faults.inject(sb, left, False)
    try:
        monitor.tick(force="full")
        spin(all_closed, timeout_s)  # start from a healthy, quiet state
        for name in names:
            before = _rows(sb)
            t0 = datetime.now(UTC)
            with store.tx() as conn:
                (fid,) = conn.execute(
                    "INSERT INTO westep_ops.drill_faults (drill, fault, injected_at) VALUES (%s, %s, %s) RETURNING id",
                    (drill_id, name, t0),
                ).fetchone()
            faults.inject(sb, name, True, timeout_s + 60)
            try:
                echo(f"  {name}: injected")
                spin(lambda t=t0: _settled(incident_since(t)), timeout_s)
                inc = incident_since(t0)
                try:  # before the fault is removed and before any restore
                    settled_rows: Counter[str] | None = _rows(sb)
                except psycopg.Error:
                    settled_rows = None  # the database is down (pg_down): count once it is back
                if name == "orphans":
                    # Put the quarantined fault rows back so 'off' removes them as it made them.
                    with psycopg.connect(env.repair_url or "") as conn:
                        if conn.execute(
                            "SELECT to_regclass('westep_quarantine.public__step_logs')"
                        ).fetchone()[0]:
                            restore(
                                conn,
                                cfg.repairs.quarantine_schema,
                                "public.step_logs",
                                rule="step_logs_orphans",
                            )
                            conn.commit()
            finally:
                faults.inject(sb, name, False)  # always: a drill never leaves a fault behind
            removed = datetime.now(UTC)
            spin(all_closed, timeout_s)  # monitoring sees it healthy again (escalated ones too)
            inc = incident_since(t0) or inc
            lost = _lost(before, settled_rows if settled_rows is not None else _rows(sb))
            if inc is None:
                res = DrillResult(name, False, None, None, None, "not detected", lost, 0)
            else:
                iid, cat, detected, resolved, escalation, by = inc
                outcome = (
                    f"escalated (level {escalation})"
                    if escalation
                    else "repaired automatically"
                    if (by or "").startswith("auto:")
                    else "recovered"
                )
                res = DrillResult(
                    name,
                    True,
                    cat,
                    round((detected - t0).total_seconds(), 1),
                    # An escalated fault "recovers" when the drill removes it: not a recovery time.
                    round((resolved - detected).total_seconds(), 1)
                    if resolved and not escalation
                    else None,
                    outcome,
                    lost,
                    0,
                )
            with store.tx() as conn:
                res.alerts = conn.execute(
                    "SELECT count(*) FROM westep_ops.alerts WHERE kind = 'opened' AND ts >= %s AND ts <= %s",
                    (t0, datetime.now(UTC)),
                ).fetchone()[0]
                conn.execute(
                    "UPDATE westep_ops.drill_faults SET removed_at = %s, detected_at = %s, recovered_at = %s,"
                    " incident_id = %s, outcome = %s, rows_lost = %s WHERE id = %s",
                    (
                        removed,
                        inc[2] if inc else None,
                        inc[3] if inc else None,
                        inc[0] if inc else None,
                        res.outcome,
                        lost,
                        fid,
                    ),
                )
            echo(
                f"  {name}: {res.outcome}"
                + (f", detected in {res.detect_s} s" if res.detected else "")
                + (
                    f", recovered {res.recover_s} s after the alert"
                    if res.recover_s is not None
                    else ""
                )
                + f", rows lost {lost}"
            )
            results.append(res)
    finally:
        monitor.close()
    return results


def false_alerts(env: Environment, since: datetime) -> int:
    """Alerts opened since ``since`` outside every drill fault's window: false positives."""
    store = HistoryStore(env.storage_url)
    try:
        with store.tx() as conn:
            return conn.execute(
                "SELECT count(*) FROM westep_ops.alerts a WHERE a.kind = 'opened' AND a.ts >= %s AND NOT EXISTS"
                " (SELECT 1 FROM westep_ops.drill_faults d WHERE a.ts BETWEEN d.injected_at"
                " AND coalesce(d.removed_at, now()) + interval '30 seconds')",
                (since,),
            ).fetchone()[0]
    finally:
        store.close()


def as_rows(results: list[DrillResult]) -> list[dict]:
    return [asdict(r) for r in results]
