"""``westep-ops drill``: prove the detection and recovery targets on the sandbox.

Monitoring runs in-process at the configuration's own intervals (``--interval`` forces
a short one for quick runs). The drill alternates quiet windows (no fault on, at the same
cadence: before the first fault, between faults, after the last) with faults injected at
a known time; for each fault it waits for the alert and for the automatic repair (or the
escalation), removes the fault, waits until monitoring sees the stack healthy again, and
records the ground truth (``westep_ops.drill_faults``: each fault with the categories it
legitimately breaks, each quiet window as ``fault = 'quiet'``) next to the incidents it
caused, so the monthly SLA report judges its alerts against it.

A fault is detected only by an alert in one of its categories; detection is timed from
the injection itself (and the probe's share, the first failing sample, beside it). Every
other alert opened during the drill is a false positive; those inside quiet windows are
also given per quiet hour. Each quiet window before a fault lasts ``--quiet`` plus a
random part of the probe interval that watches the fault, so faults land at random
moments of the probe cycle. Rows lost are counted over every table of the app by row
fingerprints (md5 of each row), taken before the fault is removed and before any
quarantined row is put back, so a repair cannot hide a loss behind the restore (must be
0); rows the repair moved to the quarantine are counted apart, not as lost.

One module over 400 lines on purpose: :func:`run_drill` is the drill's timeline (quiet
window, inject, wait for alert and repair, remove, settle, record), step by step in one
function, and the tallies beside it read only its results.
"""

from __future__ import annotations

import random
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql

from westep_ops.config import Config
from westep_ops.db import one_row
from westep_ops.environment import VARIABLES, Environment
from westep_ops.errors import WestepError
from westep_ops.monitoring import driver, engine
from westep_ops.monitoring.engine import Monitor
from westep_ops.monitoring.history import HistoryStore
from westep_ops.monitoring.notify import Notifier
from westep_ops.repairs.quarantine import quarantine_name, restore
from westep_ops.sandbox import faults
from westep_ops.sandbox.manager import Sandbox

DEFAULT_FAULTS = ("pool_pause", "grant_revoke", "orphans", "publication_drop", "pg_down")
APP_TABLES = ("auth.users", "public.profiles", "public.steps", "public.step_logs")
QUIET = "quiet"  # drill_faults.fault of a quiet window (categories '{}')
QUIET_INTERVALS = 3  # default quiet window: this many cheap-probe intervals
# An alert this long after a fault was removed may still be that fault's (INTERFACES §3).
GRACE_S = 60


@dataclass
class DrillResult:
    fault: str
    trial: int
    categories: list[str]  # what the fault may break, its own category first
    detected: bool  # an alert in one of its categories
    category: str | None
    detect_s: float | None  # alert - injection
    first_fail_s: float | None  # first failing sample - injection (the probe's share)
    recover_s: float | None  # verified recovery - alert (None when escalated)
    outcome: str  # repaired automatically | escalated (level N) | recovered | not detected
    rows_lost: int
    rows_quarantined: int
    alerts: int  # opened while it was on (+ grace) in one of its categories


@dataclass
class AlertTally:
    """Alerts opened during a drill, judged against its ground truth."""

    alerts: int = 0  # opened between the drill's first quiet window and its last
    attributed: int = 0  # inside a fault's window (+ grace), in one of its categories
    false_positives: int = 0  # every other one
    quiet_windows: int = 0
    quiet_s: float = 0.0
    quiet_alerts: int = 0  # false positives inside quiet windows

    @property
    def per_quiet_hour(self) -> float | None:
        return self.quiet_alerts * 3600 / self.quiet_s if self.quiet_s > 0 else None

    def __add__(self, other: AlertTally) -> AlertTally:
        return AlertTally(
            **{k: getattr(self, k) + getattr(other, k) for k in asdict(self)},
        )

    def as_dict(self) -> dict[str, Any]:
        per_hour = self.per_quiet_hour
        return {
            **asdict(self),
            "quiet_s": round(self.quiet_s, 1),
            "per_quiet_hour": None if per_hour is None else round(per_hour, 2),
        }


@dataclass
class DrillReport:
    drill: str
    cadence: str  # how often monitoring probed, in words
    results: list[DrillResult] = field(default_factory=list)
    tally: AlertTally = field(default_factory=AlertTally)

    @property
    def failed(self) -> bool:
        """A fault went undetected, rows were lost, or an alert matched no fault."""
        return self.tally.false_positives > 0 or any(
            not r.detected or r.rows_lost for r in self.results
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "drill": self.drill,
            "cadence": self.cadence,
            "results": as_rows(self.results),
            "summary": summarize(self.results),
            "quiet": self.tally.as_dict(),
            "false_positives": self.tally.false_positives,
        }


def drill_config(config: Config, interval_s: float | None) -> Config:
    """The config the drill monitors with: its own intervals unless ``interval_s`` is
    given (then every probe runs that often and the confirmation waits at most 2 s)."""
    m = config.monitoring
    update: dict[str, Any] = {
        # The sandbox is ours to break: the hourly limit would stop a drill halfway.
        "auto_recovery": m.auto_recovery.model_copy(update={"max_attempts_per_hour": 1000})
    }
    if interval_s is not None:
        ms = int(interval_s * 1000)
        update["intervals"] = m.intervals.model_copy(update={"health": ms, "performance": ms})
        update["alerting"] = m.alerting.model_copy(
            update={"confirm_delay_seconds": min(2.0, interval_s / 2)}
        )
    return config.model_copy(update={"monitoring": m.model_copy(update=update)})


def probe_interval_s(config: Config, category: str) -> float:
    """How often monitoring probes ``category``: the cheap interval or the full sweep's."""
    iv = config.monitoring.intervals
    cheap = {c.value for c in engine.CHEAP} | {engine.PERFORMANCE}
    return (iv.performance if category in cheap else iv.health) / 1000


def default_quiet_s(config: Config) -> float:
    return QUIET_INTERVALS * config.monitoring.intervals.performance / 1000


def cadence(config: Config) -> str:
    iv = config.monitoring.intervals
    if iv.health == iv.performance:
        return f"every probe every {iv.performance / 1000:g} s"
    return (
        f"cheap probes every {iv.performance / 1000:g} s, full sweep every {iv.health / 1000:g} s"
    )


def _rows(sb: Sandbox, sandbox_target: int = 1) -> Counter[str]:
    """A multiset of the app's rows (table + md5 of the row) in sandbox target
    ``sandbox_target``'s database, the fault's own rows left out."""
    out: Counter[str] = Counter()
    with sb.superuser_conn(target=sandbox_target) as conn:
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


def _quarantined(
    sb: Sandbox, qschema: str, since: datetime, sandbox_target: int = 1
) -> Counter[str]:
    """The app's rows moved to the quarantine since ``since``, fingerprinted as in
    :func:`_rows` (md5 over the source's columns, which the quarantine keeps as they were)."""
    out: Counter[str] = Counter()
    with sb.superuser_conn(target=sandbox_target) as conn:
        for t in APP_TABLES:
            schema, name = t.split(".")
            qname = quarantine_name(t)
            if not conn.execute(
                "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = %s AND c.relname = %s",
                (qschema, qname),
            ).fetchone():
                continue
            cols = [
                r[0]
                for r in conn.execute(
                    "SELECT a.attname::text FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
                    " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s"
                    " AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
                    (schema, name),
                )
            ]
            row = sql.SQL(", ").join(sql.Identifier("q", c) for c in cols)
            for (h,) in conn.execute(
                sql.SQL(
                    "SELECT md5(ROW({})::text) FROM {} AS q WHERE q.quarantined_at >= {}"
                ).format(row, sql.Identifier(qschema, qname), sql.Literal(since))
            ):
                out[f"{t}:{h}"] += 1
    return out


def _lost(before: Counter[str], after: Counter[str], moved: Counter[str] | None = None) -> int:
    """Rows present before and missing (or changed) after, those kept in the quarantine
    (``moved``) aside."""
    return sum(((before - after) - (moved or Counter())).values())


def _settled(incident: tuple | None) -> bool:
    """Detected, and then repaired (resolved) or escalated."""
    return incident is not None and (incident[4] is not None or incident[5] is not None)


def run_drill(
    sb: Sandbox,
    env: Environment,
    config: Config,
    names: list[str],
    interval_s: float | None = None,
    *,
    quiet_s: float | None = None,
    trials: int = 1,
    echo: Callable[[str], None] = print,
    timeout_s: float | None = None,
    seed: int | None = None,
    target: str,
    sandbox_target: int = 1,
) -> DrillReport:
    """Quiet window, fault, quiet window, ... for every fault ``trials`` times, at the
    config's intervals (or every ``interval_s`` seconds), on monitored target ``target``
    whose database is sandbox target ``sandbox_target`` (``sandbox_target_of``): the
    faults are injected there, only that target's incidents and alerts are read, and the
    ground truth is stored under its name."""
    unknown = [n for n in names if n not in faults.FAULTS]
    if unknown:
        raise WestepError(
            f"unknown fault(s): {', '.join(unknown)}; known: {', '.join(faults.FAULTS)}"
        )
    shared = [n for n in names if n in faults.CLUSTER_WIDE]
    if sandbox_target != 1 and shared:
        raise WestepError(
            f"target {target} is sandbox target {sandbox_target}: {', '.join(shared)} stop a"
            " process every sandbox target shares, so they cannot break it alone; choose"
            " --faults without them"
        )
    faults.guard(sb)  # the process environment (faults.inject checks it too)
    faults.guard(  # and the target's own variables (a fleet target's come from elsewhere)
        sb,
        {name: v for name, (attr, *_) in VARIABLES.items() if (v := getattr(env, attr, None))},
    )
    cfg = drill_config(config, interval_s)
    quiet = default_quiet_s(cfg) if quiet_s is None else quiet_s
    # Long enough for a fault seen only by the full sweep to be detected and to close.
    timeout = (
        timeout_s
        if timeout_s is not None
        else max(90.0, 2 * cfg.monitoring.intervals.health / 1000 + 60)
    )
    rng = random.Random(seed)
    store = HistoryStore(env.storage_url, target=target)
    monitor = Monitor(env, cfg, store, Notifier(env, cfg.timezone, target=target))
    report = DrillReport(datetime.now(UTC).strftime("drill-%Y%m%dT%H%M%S"), cadence(cfg))

    def spin(until: Callable[[], bool], limit: float) -> bool:
        """Monitor at the drill's cadence until ``until()`` holds (checked after each
        probe) or ``limit`` seconds pass."""
        deadline = time.monotonic() + limit
        if until():
            return True
        while time.monotonic() < deadline:
            r = monitor.tick()
            if r.ran:
                driver.run_repairs(monitor, r)
                if until():
                    return True
            time.sleep(0.2)
        return until()

    def incident_since(t: datetime, categories: list[str]) -> tuple | None:
        with store.tx() as conn:
            return conn.execute(
                "SELECT id, category, started_at, detected_at, resolved_at, escalation,"
                " recovered_by FROM westep_ops.incidents WHERE target = %s"
                " AND started_at >= %s - interval '1 second' AND category = ANY(%s)"
                " ORDER BY id LIMIT 1",
                (target, t, categories),
            ).fetchone()

    def closed(categories: list[str]) -> bool:
        """No incident open in these categories (one open in another category, a false
        alarm that does not close, does not hold the drill up: it is counted)."""
        with store.tx() as conn:
            return (
                one_row(
                    conn.execute(
                        "SELECT count(*) FROM westep_ops.incidents WHERE target = %s"
                        " AND closed_at IS NULL AND category = ANY(%s)",
                        (target, categories),
                    )
                )[0]
                == 0
            )

    def truth(fault: str, start: datetime, end: datetime | None, categories: list[str]) -> int:
        with store.tx() as conn:
            return one_row(
                conn.execute(
                    "INSERT INTO westep_ops.drill_faults (target, drill, fault, injected_at,"
                    " removed_at, categories) VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
                    (target, report.drill, fault, start, end, categories),
                )
            )[0]

    def quiet_window(seconds: float, first: bool = False) -> None:
        if seconds <= 0:
            return
        start = datetime.now(UTC)
        if first:  # the drill's first probe, everything at once, inside the window
            driver.run_repairs(monitor, monitor.tick(force="full"))
        spin(lambda: False, seconds - (datetime.now(UTC) - start).total_seconds())
        truth(QUIET, start, datetime.now(UTC), [])
        echo(f"  quiet: {seconds:.0f} s with no fault on")

    def one_fault(trial: int, name: str) -> DrillResult:
        cats = list(faults.CATEGORIES[name])
        # An incident still open in its categories (the previous fault's, or one from
        # before the drill) would hide the alert: wait until monitoring closes it.
        if not spin(lambda: closed(cats), timeout):
            raise WestepError(
                f"drill stopped before {name}: an incident in {', '.join(cats)} stayed open"
                f" for {timeout:.0f} s (see westep-ops alerts list)"
            )
        before = _rows(sb, sandbox_target)
        t0 = datetime.now(UTC)
        fid = truth(name, t0, None, cats)
        faults.inject(sb, name, True, timeout + 60, sandbox_target)
        settled_rows: Counter[str] | None = None
        moved: Counter[str] | None = None
        try:
            echo(f"  {name}: injected (trial {trial})")
            spin(lambda: _settled(incident_since(t0, cats)), timeout)
            inc = incident_since(t0, cats)
            try:  # before the fault is removed and before any restore
                settled_rows = _rows(sb, sandbox_target)
                moved = _quarantined(sb, cfg.repairs.quarantine_schema, t0, sandbox_target)
            except psycopg.Error:
                pass  # the database is down (pg_down): count once it is back
            if name == "orphans":
                # Put the quarantined fault rows back so 'off' removes them as it made them.
                with psycopg.connect(env.repair_url or "") as conn:
                    if one_row(
                        conn.execute("SELECT to_regclass('westep_quarantine.public__step_logs')")
                    )[0]:
                        restore(
                            conn,
                            cfg.repairs.quarantine_schema,
                            "public.step_logs",
                            rule="step_logs_orphans",
                        )
                        conn.commit()
        finally:
            faults.inject(sb, name, False, target=sandbox_target)  # never left behind
        removed = datetime.now(UTC)
        spin(lambda: closed(cats), timeout)  # monitoring sees it healthy again
        inc = incident_since(t0, cats) or inc
        if settled_rows is None or moved is None:
            settled_rows = _rows(sb, sandbox_target)
            moved = _quarantined(sb, cfg.repairs.quarantine_schema, t0, sandbox_target)
        lost = _lost(before, settled_rows, moved)
        n_moved = sum(moved.values())
        if inc is None:
            res = DrillResult(
                name, trial, cats, False, None, None, None, None, "not detected", lost, n_moved, 0
            )
        else:
            _iid, cat, started, detected, resolved, escalation, by = inc
            outcome = (
                f"escalated (level {escalation})"
                if escalation
                else "repaired automatically"
                if (by or "").startswith("auto:")
                else "recovered"
            )
            res = DrillResult(
                name,
                trial,
                cats,
                True,
                cat,
                round((detected - t0).total_seconds(), 1),
                round((started - t0).total_seconds(), 1),
                # An escalated fault "recovers" when the drill removes it: not a recovery time.
                round((resolved - detected).total_seconds(), 1)
                if resolved and not escalation
                else None,
                outcome,
                lost,
                n_moved,
                0,
            )
        with store.tx() as conn:
            res.alerts = one_row(
                conn.execute(
                    "SELECT count(*) FROM westep_ops.alerts WHERE target = %s"
                    " AND kind = 'opened' AND ts >= %s"
                    " AND ts <= %s + make_interval(secs => %s) AND category = ANY(%s)",
                    (target, t0, removed, GRACE_S, cats),
                )
            )[0]
            conn.execute(
                "UPDATE westep_ops.drill_faults SET removed_at = %s, detected_at = %s,"
                " recovered_at = %s, incident_id = %s, outcome = %s, rows_lost = %s,"
                " rows_quarantined = %s WHERE id = %s",
                (
                    removed,
                    inc[3] if inc else None,
                    inc[4] if inc else None,
                    inc[0] if inc else None,
                    res.outcome,
                    lost,
                    n_moved,
                    fid,
                ),
            )
        echo(
            f"  {name}: {res.outcome}"
            + (
                f", alerted {res.detect_s} s after the injection"
                f" (first failing sample at {res.first_fail_s} s)"
                if res.detected
                else ""
            )
            + (
                f", recovered {res.recover_s} s after the alert"
                if res.recover_s is not None
                else ""
            )
            + f", rows lost {lost}"
            + (f", quarantined {n_moved}" if n_moved else "")
        )
        return res

    for left in faults.active(sb, sandbox_target):  # a drill starts from a clean target
        echo(f"  removing fault {left}, left on before the drill")
        faults.inject(sb, left, False, target=sandbox_target)
    echo(f"  drill {report.drill}: {report.cadence}; quiet windows of {quiet:g} s")
    try:
        if not quiet:
            driver.run_repairs(monitor, monitor.tick(force="full"))
        seen: Counter[str] = Counter()  # a fault named twice counts as two trials
        for i, name in enumerate(n for _ in range(trials) for n in names):
            seen[name] += 1
            trial = seen[name]
            own = faults.CATEGORIES[name][0]
            # A random part of the interval that watches the fault: it lands at a random
            # moment of the probe cycle, not always just after (or before) a probe.
            jitter = rng.uniform(0, probe_interval_s(cfg, own))
            quiet_window(quiet + jitter if quiet else 0, first=i == 0)
            report.results.append(one_fault(trial, name))
        quiet_window(quiet)
    finally:
        try:
            with store.tx() as conn:  # an interrupted drill: its windows end now
                conn.execute(
                    "UPDATE westep_ops.drill_faults SET removed_at = now()"
                    " WHERE drill = %s AND removed_at IS NULL",
                    (report.drill,),
                )
        finally:
            monitor.close()
    report.tally = false_alerts(env, report.drill, target=target)
    return report


def sandbox_target_of(sb: Sandbox, env: Environment) -> int:
    """The sandbox target (1..N) whose database ``env``'s DIRECT_URL names: the one a
    drill breaks for this monitored target (1 when DIRECT_URL is unset: the guard then
    says what is wrong). One clear error (exit 2) for a database the sandbox does not have."""
    from psycopg.conninfo import conninfo_to_dict

    from westep_ops.sandbox.state import target_db

    if not env.direct_url:
        return 1
    db = conninfo_to_dict(env.direct_url).get("dbname")
    for t in range(1, sb.state.targets + 1):
        if target_db(t) == db:
            return t
    have = ", ".join(target_db(t) for t in range(1, sb.state.targets + 1))
    raise WestepError(
        f"DIRECT_URL names database {db!r}, which is no target of this sandbox ({have}):"
        " the drill breaks only a sandbox target"
    )


def false_alerts(env: Environment, drill: str, *, target: str) -> AlertTally:
    """Alerts opened during ``drill`` judged against its ground truth: attributed to a
    fault when inside its window (+ ``GRACE_S``) and in one of its categories; every
    other one is a false positive (counted apart, and per hour, inside quiet windows)."""
    store = HistoryStore(env.storage_url, target=target)
    try:
        with store.tx() as conn:
            row = one_row(
                conn.execute(
                    """
                WITH d AS (SELECT fault, injected_at, coalesce(removed_at, now()) AS removed_at,
                                  categories
                           FROM westep_ops.drill_faults
                           WHERE drill = %(drill)s AND target = %(target)s),
                a AS (SELECT al.ts, al.category FROM westep_ops.alerts al
                      WHERE al.target = %(target)s AND al.kind = 'opened'
                        AND al.ts BETWEEN (SELECT min(injected_at) FROM d)
                                      AND (SELECT max(removed_at) FROM d)),
                j AS (SELECT EXISTS (SELECT 1 FROM d WHERE d.fault <> %(quiet)s
                                       AND a.ts BETWEEN d.injected_at
                                           AND d.removed_at + make_interval(secs => %(grace)s)
                                       AND a.category = ANY(d.categories)) AS attributed,
                             EXISTS (SELECT 1 FROM d WHERE d.fault = %(quiet)s
                                       AND a.ts BETWEEN d.injected_at AND d.removed_at) AS quiet
                      FROM a)
                SELECT (SELECT count(*) FROM j),
                       (SELECT count(*) FROM j WHERE attributed),
                       (SELECT count(*) FROM j WHERE quiet AND NOT attributed),
                       (SELECT count(*) FROM d WHERE fault = %(quiet)s),
                       (SELECT coalesce(sum(extract(epoch FROM removed_at - injected_at)), 0)
                          FROM d WHERE fault = %(quiet)s)
                """,
                    {"drill": drill, "quiet": QUIET, "grace": GRACE_S, "target": target},
                )
            )
    finally:
        store.close()
    alerts, attributed, quiet_alerts, windows, quiet_s = row
    return AlertTally(
        alerts=alerts,
        attributed=attributed,
        false_positives=alerts - attributed,
        quiet_windows=windows,
        quiet_s=float(quiet_s),
        quiet_alerts=quiet_alerts,
    )


def _stats(values: list[float | None]) -> dict[str, float | None]:
    v = [x for x in values if x is not None]
    return {
        "median": round(statistics.median(v), 1) if v else None,
        "worst": round(max(v), 1) if v else None,
    }


def summarize(results: list[DrillResult]) -> list[dict[str, Any]]:
    """Per fault (in the order first run): trials, detected, median and worst detection
    (from the injection, and the probe's share), recovery after the alert, outcomes, rows."""
    out = []
    for name in dict.fromkeys(r.fault for r in results):
        rs = [r for r in results if r.fault == name]
        out.append(
            {
                "fault": name,
                "n": len(rs),
                "detected": sum(r.detected for r in rs),
                "detect_s": _stats([r.detect_s for r in rs]),
                "first_fail_s": _stats([r.first_fail_s for r in rs]),
                "recover_s": _stats([r.recover_s for r in rs]),
                "outcomes": dict(Counter(r.outcome for r in rs)),
                "rows_lost": sum(r.rows_lost for r in rs),
                "rows_quarantined": sum(r.rows_quarantined for r in rs),
            }
        )
    return out


def as_rows(results: list[DrillResult]) -> list[dict]:
    return [asdict(r) for r in results]
