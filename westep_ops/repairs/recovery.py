"""Automatic recovery (the seed's auto-recovery.ts): from a health check to repairs.

Failing categories map to repairs (config ``autoRecovery.actions``, refined by what each
check found: a pgbouncer that is down or a paused Supabase project has no repair, only
an escalation). Symptoms explained by another failure (``suspected_cause``) are not
repaired themselves. Repairs run in a safe order, the stack is re-checked, and whatever
is still failing is escalated: level 2 (a person must act) or level 3 (outside help).
A check that could not run (``error``) is never repaired; when the server answered and
refused the monitor (wrong password, missing database, SSL, permission denied) recovery
says "monitoring is misconfigured: ..." once instead of escalating an outage, and while
the monitor's database logins are refused it repairs nothing (the picture is partial).
With ``autoRecovery.enabled = false`` recovery only reports what it would do.

One module over 400 lines on purpose: :func:`plan_repairs` maps every check's findings
to repairs or escalations case by case, and the plan, its run, the re-check and the
report are one flow read in order.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from westep_ops.config import DEFAULT_TARGET, Category, Config, RepairAction
from westep_ops.environment import Environment
from westep_ops.probes.base import MONITOR_MISCONFIGURED, CheckResult, Status
from westep_ops.probes.db_status import DbStatus, db_status
from westep_ops.probes.health import run_health_check
from westep_ops.probes.performance import PerformanceMonitor, PerformanceSample
from westep_ops.probes.session import ProbeSession
from westep_ops.redact import redact
from westep_ops.repairs import actions as _actions  # noqa: F401 - registers the repairs
from westep_ops.repairs.base import LEVEL_EXTERNAL, LEVEL_MANUAL, RepairResult, run_repair
from westep_ops.store import OpsStore, log_dir, target_state

# The escalation "category" of the monitor's own misconfiguration (not a category H1-H7).
MONITOR_CATEGORY = "monitor"
MISCONFIGURED_PREFIX = "monitoring is misconfigured: "

# Repairs that unblock others go first; data changes and VACUUM last.
SAFE_ORDER = [
    RepairAction.restore_connection_pool,
    RepairAction.restore_db_connection,
    RepairAction.repair_auth,
    RepairAction.fix_table_permissions,
    RepairAction.restore_realtime_publication,
    RepairAction.fix_data_integrity,
    RepairAction.optimize_performance,
]

# H4's finding per rule: "integrity:<rule name>"
INTEGRITY_PREFIX = "integrity:"

DIAGNOSE_AFTER = {RepairAction.fix_data_integrity, RepairAction.optimize_performance}

# findings with no repair of ours: (level, what a person or outsider must do)
NO_REPAIR: dict[str, tuple[int, str]] = {
    "direct_connection_failed": (
        LEVEL_MANUAL,
        "PostgreSQL does not accept connections: start or fix the server (westep-ops does not own it)",
    ),
    "pooled_connection_failed": (
        LEVEL_MANUAL,
        "the pooled connection fails while pgbouncer itself looks fine: check its auth file and log",
    ),
    "project_paused": (LEVEL_EXTERNAL, "resume the paused Supabase project from the dashboard"),
    "pgbouncer_down": (LEVEL_MANUAL, "start pgbouncer (westep-ops does not own the service)"),
    "pool_missing": (LEVEL_MANUAL, "add the database to pgbouncer's [databases] section"),
    "wal_level": (LEVEL_MANUAL, "set wal_level = logical and restart PostgreSQL"),
    "notify_lost": (
        LEVEL_MANUAL,
        "LISTEN/NOTIFY is not delivered: check the server's notification queue",
    ),
    "replication_lag": (
        LEVEL_MANUAL,
        "a replication slot lags: restart the realtime server or drop the slot",
    ),
    "auth_schema_missing": (LEVEL_EXTERNAL, "the auth schema is gone: Supabase support"),
    "auth_table_missing": (LEVEL_EXTERNAL, "auth tables are missing: Supabase support"),
    "auth_role_missing": (LEVEL_EXTERNAL, "API roles are missing: Supabase support"),
    "auth_endpoint_down": (
        LEVEL_MANUAL,
        "the auth service does not answer: check it or the Supabase status page",
    ),
    "endpoint_down": (
        LEVEL_MANUAL,
        "the app does not answer: check its hosting (westep-ops does not own it)",
    ),
    "table_missing": (
        LEVEL_MANUAL,
        "a critical table is missing: restore it from a migration or backup",
    ),
    "role_missing": (LEVEL_MANUAL, "a declared role is missing: recreate it"),
    "rls_disabled": (
        LEVEL_MANUAL,
        "row-level security is off on a table declared with it on: every row is exposed; "
        "ENABLE ROW LEVEL SECURITY after checking why it was turned off",
    ),
    "rls_enabled": (
        LEVEL_MANUAL,
        "row-level security is on where the config declares it off: clients may see no rows",
    ),
    "table_locked": (
        LEVEL_MANUAL,
        "a critical table is held in ACCESS EXCLUSIVE: end or wait for the session named",
    ),
    "rls_no_policy": (
        LEVEL_MANUAL,
        "a role that must see rows has no RLS policy letting it read: add one"
        " (westep-ops never writes policies)",
    ),
}

# findings that are figures under load, not faults: shown (a warning in health-check),
# never repaired, never escalated, never an incident of their own
OBSERVE_ONLY = {"pool_queue", "pool_unwatched"}

# findings that pick a specific repair instead of the category's default
FINDING_ACTIONS: dict[str, RepairAction] = {
    "idle_in_transaction": RepairAction.restore_db_connection,
    "connections_full": RepairAction.restore_db_connection,
    "pool_paused": RepairAction.restore_connection_pool,
    "pool_exhausted": RepairAction.restore_connection_pool,
    "pool_wait": RepairAction.restore_connection_pool,
    "pool_disabled": RepairAction.restore_connection_pool,
    "performance_degraded": RepairAction.optimize_performance,
}


@dataclass
class Escalation:
    level: int
    category: str
    reason: str


# H3 findings that name a table/role pair R3 can give SELECT (or schema USAGE) back to.
R3_FINDINGS = {"grant_missing", "schema_usage_missing", "select_failed"}
# A warning, not a stuck session: terminates nothing unless the config opts in.
CONNECTIONS_HIGH = "connections_high"


@dataclass
class PlannedRepair:
    action: RepairAction
    triggers: list[str]
    # What the failing check found broken (R3: table/role pairs); None: the repair
    # re-derives it from the check's own rules when it runs.
    found: list[tuple[str, str]] | None = None


@dataclass
class RecoveryReport:
    started: datetime
    enabled: bool
    dry_run: bool
    before: list[CheckResult]
    performance_before: PerformanceSample | None
    plan: list[PlannedRepair]
    repairs: list[RepairResult] = field(default_factory=list)
    after: list[CheckResult] = field(default_factory=list)
    db_status: DbStatus | None = None
    diagnosis: str | None = None
    escalations: list[Escalation] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    duration_ms: float = 0.0
    path: Path | None = None
    target: str = DEFAULT_TARGET  # the fleet target recovered (named in the report file)

    @property
    def misconfigured(self) -> str | None:
        """The monitor's own misconfiguration, when a check found one (no repair for it)."""
        return next((e.reason for e in self.escalations if e.category == MONITOR_CATEGORY), None)

    @property
    def verdict(self) -> str:
        if self.misconfigured and not self.plan:
            return (
                "MONITOR MISCONFIGURED: no repair ran and the target was not judged;"
                " a person must fix the monitor's connection settings or grants"
            )
        if (
            not self.plan
            and not self.escalations
            and all(r.status.rank <= Status.ok.rank for r in self.before)
        ):
            return "healthy: nothing to recover"
        if self.escalations:
            top = max(e.level for e in self.escalations)
            return f"ESCALATED (level {top}): {len(self.escalations)} problem(s) need {'outside help' if top == 3 else 'a person'}"
        if self.dry_run or not self.enabled:
            return f"report only: {len(self.plan)} repair(s) would run"
        skipped = [r for r in self.repairs if r.outcome == "skipped"]
        if skipped:
            return (
                f"silenced: {len(skipped)} repair(s) skipped ("
                + "; ".join(r.summary for r in skipped)
                + ")"
            )
        return (
            f"recovered: {sum(r.ok for r in self.repairs)} repair(s) ran, every check passes again"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "started": self.started.isoformat(),
            "enabled": self.enabled,
            "dry_run": self.dry_run,
            "before": [r.as_dict() for r in self.before],
            "plan": [
                {"action": p.action.value, "triggers": p.triggers, "found": p.found}
                for p in self.plan
            ],
            "repairs": [r.as_dict() for r in self.repairs],
            "after": [r.as_dict() for r in self.after],
            "escalations": [e.__dict__ for e in self.escalations],
            "notes": self.notes,
            "db_status": self.db_status.as_dict() if self.db_status else None,
            "diagnosis": self.diagnosis,
            "report": str(self.path) if self.path else None,
        }


def plan_repairs(
    results: list[CheckResult], perf: PerformanceSample | None, config: Config
) -> tuple[list[PlannedRepair], list[Escalation]]:
    """Which repairs the failing checks call for, and what no repair of ours can fix."""
    by_action: dict[RepairAction, list[str]] = {}
    found: dict[RepairAction, list[tuple[str, str]]] = {}
    escalations: list[Escalation] = []
    rules = {rule.name: rule for rule in config.integrity_rules}
    defaults = config.monitoring.auto_recovery.actions
    refused = [r for r in results if MONITOR_MISCONFIGURED in r.findings]
    if refused:
        # The server answered and refused the monitor: nothing on the target to repair,
        # and the checks that could not run are blind, not failing. One escalation says so.
        causes = "; ".join(redact(r.summary.removeprefix(MISCONFIGURED_PREFIX)) for r in refused)
        escalations.append(
            Escalation(
                LEVEL_MANUAL,
                MONITOR_CATEGORY,
                f"{MISCONFIGURED_PREFIX}{causes}",
            )
        )
    # With the monitor's own database logins refused, the picture is partial and what
    # else fails may be a symptom of the refusal (e.g. its pooled probe queued behind a
    # pgbouncer that cannot log in as it): repairing on it could make things worse.
    blind = any(r.category is Category.connection for r in refused)
    for r in results:
        if r.status in (Status.ok, Status.not_configured) or r.suspected_cause is not None:
            continue
        if r.status is Status.error and refused:
            continue
        if blind:
            escalations.append(
                Escalation(
                    LEVEL_MANUAL,
                    r.category.value,
                    f"not repaired while the monitor is misconfigured: {redact(r.summary)}",
                )
            )
            continue
        if r.status is Status.error:
            escalations.append(
                Escalation(
                    LEVEL_MANUAL, r.category.value, f"check could not run: {redact(r.summary)}"
                )
            )
            continue
        if r.findings and set(r.findings) <= OBSERVE_ONLY:
            continue  # load, not a fault
        chosen: list[RepairAction] = []
        escalated = False
        for f in r.findings:
            if f == "pooled_connection_failed" and "direct_connection_failed" in r.findings:
                # PostgreSQL itself is down: the pool fails because of it, and "pgbouncer's
                # auth file" would send the on-call engineer to the wrong place.
                continue
            if f.startswith(INTEGRITY_PREFIX):
                # R5 only for rules that opted in; the others go to a person, with counts.
                rule = rules.get(f.removeprefix(INTEGRITY_PREFIX))
                if rule is not None and rule.repair == "quarantine":
                    chosen.append(RepairAction.fix_data_integrity)
                else:
                    escalations.append(
                        Escalation(
                            LEVEL_MANUAL,
                            r.category.value,
                            f"{_rule_detail(r, f)}: report-only rule (repair: report): a person"
                            " decides what to do with these rows",
                        )
                    )
                    escalated = True
            elif f == "direct_connection_failed" and _too_many_clients(r):
                chosen.append(RepairAction.restore_db_connection)
            elif f == CONNECTIONS_HIGH:
                if config.repairs.terminate.on_connections_high:
                    chosen.append(RepairAction.restore_db_connection)
                else:
                    escalations.append(
                        Escalation(
                            LEVEL_MANUAL,
                            r.category.value,
                            "many connections in use, but a busy server is not a stuck one:"
                            " nothing is terminated automatically"
                            " (repairs.terminate.onConnectionsHigh); see who holds them"
                            f" ({redact(r.summary)})",
                        )
                    )
                    escalated = True
            elif f in NO_REPAIR:
                level, what = NO_REPAIR[f]
                escalations.append(
                    Escalation(level, r.category.value, f"{what} ({redact(r.summary)})")
                )
                escalated = True
            elif f in FINDING_ACTIONS:
                chosen.append(FINDING_ACTIONS[f])
        unexplained = [
            f
            for f in r.findings
            if f not in NO_REPAIR
            and f not in FINDING_ACTIONS
            and f not in OBSERVE_ONLY
            and f != CONNECTIONS_HIGH
            and not f.startswith(INTEGRITY_PREFIX)
        ]
        if unexplained or not r.findings:
            chosen.extend(defaults.get(r.category, []))
        if not chosen and not escalated:
            escalations.append(
                Escalation(
                    LEVEL_MANUAL, r.category.value, f"no automatic repair for: {redact(r.summary)}"
                )
            )
        for a in dict.fromkeys(chosen):
            by_action.setdefault(a, []).append(f"{r.category.value}: {redact(r.summary)}")
            if a is RepairAction.fix_table_permissions and r.category is Category.tables:
                found.setdefault(a, []).extend(_h3_pairs(r))
    if (
        not blind
        and perf is not None
        and perf.problems
        and any("dead tuples" in p for p in perf.problems)
    ):
        by_action.setdefault(RepairAction.optimize_performance, []).append(
            "performance: " + "; ".join(p for p in perf.problems if "dead tuples" in p)
        )
    plan = [
        PlannedRepair(a, by_action[a], found.get(a) or None) for a in SAFE_ORDER if a in by_action
    ]
    return plan, escalations


def _rule_detail(r: CheckResult, finding: str) -> str:
    """H4's own line for one rule (name, count, kind, table), redacted."""
    name = finding.removeprefix(INTEGRITY_PREFIX)
    for item in r.values.get("items") or []:
        if item.get("rule") == name and item.get("detail"):
            return redact(str(item["detail"]))
    return name


def _h3_pairs(r: CheckResult) -> list[tuple[str, str]]:
    """The table/role pairs H3 found unreadable for a reason R3 can fix."""
    return [
        (i["table"], i["role"])
        for i in r.values.get("items", [])
        if "role" in i and i.get("finding") in R3_FINDINGS
    ]


def _too_many_clients(r: CheckResult) -> bool:
    """A full server refuses new logins; ending stuck sessions (R1) is then the repair."""
    text = str(r.values.get("direct_error", "")).lower()
    return "too many clients" in text or "remaining connection slots" in text


def sweep(env: Environment, config: Config) -> tuple[list[CheckResult], PerformanceSample]:
    monitor = PerformanceMonitor()
    with ProbeSession(env, config) as session:
        results = run_health_check(session)
        perf = monitor.sample(session, results)
    return results, perf


def recover(
    env: Environment,
    config: Config,
    *,
    dry_run: bool = False,
    store: OpsStore | None = None,
    target: str = DEFAULT_TARGET,
) -> RecoveryReport:
    """Check, repair what the checks call for, re-check, escalate the rest, write the report."""
    tz = ZoneInfo(config.timezone)
    t0 = time.perf_counter()
    enabled = config.monitoring.auto_recovery.enabled
    before, perf = sweep(env, config)
    plan, escalations = plan_repairs(before, perf, config)
    report = RecoveryReport(
        datetime.now(tz), enabled, dry_run, before, perf, plan, escalations=escalations
    )
    report.target = target
    connection = next((r for r in before if r.category is Category.connection), None)
    if connection is not None and connection.status is Status.critical:
        # The seed's runbook: on a database connection failure, check the database status too.
        with ProbeSession(env, config) as session:
            report.db_status = db_status(session)
    own_store = store is None
    store = store or OpsStore(
        env.storage_url,
        connect_timeout_ms=config.monitoring.timeouts.connect,
        target=target,
        state=target_state(env, target),
    )
    try:
        _run_plan(report, env, config, store, dry_run=dry_run or not enabled)
        if plan and not dry_run and enabled:
            _judge_after(report, env, config, store.target)
        if any(p.action in DIAGNOSE_AFTER for p in plan):
            # The seed's runbook: data integrity and performance warnings get a diagnosis too.
            from westep_ops.probes.diagnosis import diagnose

            named = None if target == DEFAULT_TARGET else target
            report.diagnosis = diagnose(env, config, target=named).report
    except Exception as e:  # noqa: BLE001 - whatever broke, the report is still written
        report.escalations.append(
            Escalation(
                LEVEL_MANUAL,
                "recovery",
                redact(
                    f"recovery stopped early: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                ),
            )
        )
    finally:
        if own_store:
            store.close()
        report.duration_ms = round((time.perf_counter() - t0) * 1000, 1)
        report.path = write_report(report, tz)
    return report


def _run_plan(
    report: RecoveryReport, env: Environment, config: Config, store: OpsStore, *, dry_run: bool
) -> None:
    """Run every planned repair; one that raises is that repair's failure, the rest go on."""
    for p in report.plan:
        trigger = "; ".join(p.triggers)[:500]
        try:
            result = run_repair(
                p.action,
                env,
                config,
                dry_run=dry_run,
                trigger=trigger,
                store=store,
                found=p.found,
                target=store.target,
            )
        except Exception as e:  # noqa: BLE001 - run_repair records its own; this is the last net
            result = RepairResult(
                p.action.value,
                trigger,
                dry_run,
                "failed",
                redact(f"failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"),
                escalation=LEVEL_MANUAL,
                target=store.target,
            )
        report.repairs.append(result)
        if result.outcome == "refused" or (result.escalation and not result.ok):
            report.escalations.append(
                Escalation(result.escalation or LEVEL_MANUAL, p.action.value, result.summary)
            )


def _judge_after(report: RecoveryReport, env: Environment, config: Config, target: str) -> None:
    """Re-check; escalate what still fails, except what a silence covers (left on purpose)."""
    from westep_ops.silences import current

    report.after, _ = sweep(env, config)
    silenced = current(config, env.storage_url, target=target, state=target_state(env, target))
    escalated = {e.category for e in report.escalations}
    for r in report.after:
        if (
            r.status.rank <= Status.ok.rank
            or r.suspected_cause is not None
            or MONITOR_MISCONFIGURED in r.findings
            or r.category.value in escalated
        ):
            continue
        by = silenced.describe(r.category.value)
        if by:
            report.notes.append(
                f"{r.category.value} still failing, silenced by {by}: not escalated"
            )
            continue
        report.escalations.append(
            Escalation(
                LEVEL_MANUAL, r.category.value, f"still failing after repair: {redact(r.summary)}"
            )
        )


def write_report(report: RecoveryReport, tz: ZoneInfo) -> Path:
    stamp = report.started.astimezone(tz).strftime("%Y-%m-%dT%H-%M-%S")
    # Unique per run: two recoveries in the same second must not share (and lose) a file.
    # A fleet target's name leads (recovery-<target>-<stamp>-<id>.md); the one target's
    # file is named as it always was.
    named = "" if report.target == DEFAULT_TARGET else f"{report.target}-"
    path = log_dir() / f"recovery-{named}{stamp}-{uuid.uuid4().hex[:8]}.md"
    path.write_text(render_markdown(report), encoding="utf-8")
    return path


def _status_table(results: list[CheckResult]) -> list[str]:
    lines = ["| check | status | summary |", "|---|---|---|"]
    for r in results:
        cause = f" (likely caused by {r.suspected_cause.value})" if r.suspected_cause else ""
        lines.append(f"| {r.name} | {r.status.value} | {redact(r.summary)}{cause} |")
    return lines


def render_markdown(report: RecoveryReport) -> str:
    out = [
        f"# Recovery{'' if report.target == DEFAULT_TARGET else f' of {report.target}'}"
        f" {report.started.strftime('%Y-%m-%d %H:%M:%S %Z')}",
        "",
        f"**Verdict: {report.verdict}**",
        "",
        f"Auto-recovery {'enabled' if report.enabled else 'DISABLED (report only)'}"
        f"{', dry run' if report.dry_run else ''}; took {report.duration_ms / 1000:.1f} s.",
        "",
    ]
    if report.escalations:
        out += ["## Escalations", ""]
        for e in report.escalations:
            who = "outside help (level 3)" if e.level == LEVEL_EXTERNAL else "a person (level 2)"
            out.append(f"- **{e.category}** needs {who}: {redact(e.reason)}")
        out.append("")
    out += ["## Health before", "", *_status_table(report.before), ""]
    if report.db_status is not None:
        out += (
            ["## Database status", ""]
            + [f"- {k}: {redact(v)}" for k, v in report.db_status.lines()]
            + [""]
        )
    if report.plan:
        out += ["## Repairs", ""]
        for r in report.repairs:
            out.append(f"### {r.action}: {r.outcome} ({r.duration_ms / 1000:.1f} s)")
            out += ["", f"- trigger: {redact(r.trigger)}", f"- result: {redact(r.summary)}"]
            out += [f"- change: `{redact(c)}`" for c in r.changes] or ["- change: none"]
            out += [f"- note: {redact(n)}" for n in r.notes]
            out.append("")
    if report.after:
        out += ["## Health after", "", *_status_table(report.after), ""]
    if report.notes:
        out += ["## Notes", "", *[f"- {redact(n)}" for n in report.notes], ""]
    if report.diagnosis:
        out += ["## Diagnosis", "", f"Written to `{report.diagnosis}`.", ""]
    return "\n".join(out) + "\n"
