"""What every repair shares: its context, its result record, and the runner.

The runner is where the safety rules live, once: repairs only ever use the repair
credentials (``WESTEP_OPS_REPAIR_URL``, ``WESTEP_OPS_PGBOUNCER_REPAIR_URL``), never the
monitor's; every statement runs under ``lock_timeout`` and ``statement_timeout``; the
hourly limit per action holds across processes (ops store + advisory lock); a refused
attempt is recorded and escalated, not dropped; the matching probe verifies the effect;
and every attempt is audited with what it changed.

One module over 400 lines on purpose: :func:`run_repair` (~200 lines) applies the safety
rules above once, in their order (lock, count, record, act, verify, complete the record,
unlock); split, that order would be spread over files.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

import psycopg
from psycopg import sql

from westep_ops.config import DEFAULT_TARGET, Category, Config, RepairAction
from westep_ops.db import connect, describe_error
from westep_ops.environment import Environment
from westep_ops.errors import WestepError
from westep_ops.probes.base import MONITOR_MISCONFIGURED, CheckResult, Status
from westep_ops.probes.health import run_health_check
from westep_ops.probes.session import ProbeSession
from westep_ops.redact import redact
from westep_ops.store import LocalLock, OpsStore, now_utc, target_state

# Escalation levels of the seed: 1 automatic, 2 a person must act, 3 outside help.
LEVEL_MANUAL = 2
LEVEL_EXTERNAL = 3
WAIT_FOR_OTHER_S = 30.0  # how long a repair waits for the same repair running elsewhere


class RepairSkipped(Exception):
    """The repair chose not to act (e.g. its category is silenced); ``str()`` says why."""


class RepairFailed(Exception):
    """The repair could not do its work; ``str()`` is the one-line reason."""

    def __init__(self, message: str, escalation: int = LEVEL_MANUAL) -> None:
        super().__init__(message)
        self.escalation = escalation


@dataclass
class RepairContext:
    env: Environment
    config: Config
    dry_run: bool = False
    trigger: str = "manual"
    force: bool = False  # a person's explicit --force (overrides a silence)
    changes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # What the failing check found broken, for repairs that fix only that: for R3 the
    # (table, role) pairs H3 named; None = re-derive it from the check's own rules now.
    found: list[tuple[str, str]] | None = None
    # A person asked for every declared privilege (repair fix_table_permissions --all-declared).
    all_declared: bool = False
    # Seam for silences / maintenance windows (a later branch): may R2 RESUME this
    # pgbouncer database now? None = always.
    may_resume: Callable[[str], bool] | None = None
    target: str = DEFAULT_TARGET  # the fleet target (its silences decide "skipped")

    @property
    def timeouts(self) -> Any:
        return self.config.monitoring.timeouts

    def change(self, text: str) -> None:
        """Record one change (or, in a dry run, one change that would be made)."""
        self.changes.append(("would: " if self.dry_run else "") + text)

    def apply(self, conn: psycopg.Connection, stmt: sql.SQL | sql.Composed) -> None:
        """Record ``stmt`` as a change and run it, unless this is a dry run."""
        self.change(stmt.as_string(conn))
        if not self.dry_run:
            conn.execute(stmt)

    @contextmanager
    def db(self, *, autocommit: bool = False) -> Iterator[psycopg.Connection]:
        """The privileged direct connection, with lock and statement timeouts."""
        dsn = self.env.repair_url
        if not dsn:
            raise RepairFailed(
                "WESTEP_OPS_REPAIR_URL is not set: repairs need their own privileged login"
            )
        try:
            conn = connect(
                dsn,
                connect_timeout_ms=self.timeouts.connect,
                statement_timeout_ms=self.timeouts.statement,
                autocommit=autocommit,
                application_name="westep-ops-repair",
            )
        except psycopg.Error as e:
            raise RepairFailed(f"cannot connect for repair: {describe_error(e)}") from None
        try:
            conn.execute(
                sql.SQL("SET lock_timeout = {}").format(sql.Literal(int(self.timeouts.lock)))
            )
            if not autocommit:
                conn.commit()
            yield conn
        finally:
            conn.close()

    @contextmanager
    def pgbouncer_admin(self) -> Iterator[psycopg.Connection]:
        dsn = self.env.pgbouncer_repair_url
        if not dsn:
            raise RepairFailed(
                "WESTEP_OPS_PGBOUNCER_REPAIR_URL is not set: pool repairs need an admin_users login"
            )
        try:
            conn = connect(dsn, connect_timeout_ms=self.timeouts.connect, admin_console=True)
        except psycopg.Error as e:
            raise RepairFailed(f"pgbouncer admin console: {describe_error(e)}") from None
        try:
            yield conn
        finally:
            conn.close()


@dataclass
class RepairResult:
    action: str
    trigger: str
    dry_run: bool
    # repaired | nothing_to_do | dry_run | failed | refused | verify_failed | skipped
    # (silenced) | done_by_other (another run repaired it while this one waited)
    outcome: str
    summary: str
    changes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    before: dict[str, Any] = field(default_factory=dict)
    after: dict[str, Any] = field(default_factory=dict)
    duration_ms: float = 0.0
    escalation: int | None = None
    forced: bool = False
    target: str = ""  # the fleet target's name
    database: str = ""  # host:port/db that was repaired (no credentials)

    @property
    def ok(self) -> bool:
        return self.outcome in ("repaired", "nothing_to_do", "dry_run", "skipped", "done_by_other")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Repair:
    action: RepairAction
    description: str
    verify: tuple[Category, ...]
    fn: Callable[[RepairContext], str]


REGISTRY: dict[RepairAction, Repair] = {}


def repair(
    action: RepairAction, description: str, verify: tuple[Category, ...]
) -> Callable[..., Any]:
    """Register a repair function: it changes things through ``ctx`` and returns a summary."""

    def deco(fn: Callable[[RepairContext], str]) -> Callable[[RepairContext], str]:
        REGISTRY[action] = Repair(action, description, verify, fn)
        return fn

    return deco


def parse_action(name: str) -> RepairAction:
    try:
        return RepairAction(name)
    except ValueError:
        known = ", ".join(a.value for a in RepairAction)
        raise WestepError(f"unknown repair action {name!r}; known: {known}") from None


def target_id(env: Environment) -> str:
    """host:port/db of the repaired database (no credentials): the audit's and the
    concurrency tag's notion of 'the same target'."""
    url = env.repair_url or env.direct_url or ""
    try:
        p = urlsplit(url)
        return f"{p.hostname}:{p.port or 5432}{p.path}"
    except ValueError:
        return "unknown"


def _report_only(config: Config) -> set[str]:
    """H4's findings of rules that did not opt in to cleaning: R5 never touches them."""
    return {f"integrity:{r.name}" for r in config.integrity_rules if r.repair != "quarantine"}


def _still_failing(action: RepairAction, r: CheckResult, config: Config) -> bool:
    """Whether ``r`` says the repair did not work: judged on what the repair may change.

    R5 cleans only the rules that opted in; violations of report-only rules after it are
    not its failure (they are reported, for a person).
    """
    if r.status in (Status.ok, Status.not_configured) or r.suspected_cause is not None:
        return False
    if action is RepairAction.fix_data_integrity and r.category is Category.integrity:
        return not (r.findings and set(r.findings) <= _report_only(config))
    return True


def _probe(env: Environment, config: Config, categories: tuple[Category, ...]) -> list[CheckResult]:
    if not categories:
        return []
    with ProbeSession(env, config) as session:
        return run_health_check(session, categories)


def monitor_refused(r: CheckResult) -> bool:
    """H1 found the monitor's own direct login refused (wrong password, missing database...)."""
    return (
        r.category is Category.connection
        and MONITOR_MISCONFIGURED in r.findings
        and "direct_error" in r.values
    )


def _brief(results: list[CheckResult]) -> dict[str, Any]:
    return {
        r.category.value: {"status": r.status.value, "summary": redact(r.summary)} for r in results
    }


def run_repair(
    action: RepairAction,
    env: Environment,
    config: Config,
    *,
    dry_run: bool = False,
    trigger: str = "manual",
    force: bool = False,
    store: OpsStore | None = None,
    verify: bool = True,
    incident_id: int | None = None,
    found: list[tuple[str, str]] | None = None,
    all_declared: bool = False,
    may_resume: Callable[[str], bool] | None = None,
    wait_s: float = WAIT_FOR_OTHER_S,
    target: str = DEFAULT_TARGET,
) -> RepairResult:
    """Run one repair with every safety rule applied; always returns a recorded result.

    Order matters: take the lock (the ops store's advisory lock and a local file lock),
    then count the hourly limit, then record the attempt as running, then act, then
    complete the record, then unlock. So two processes never both pass the count, and a
    process killed mid-repair leaves a record that counts and is reported as interrupted.
    When another run holds the lock this one waits for it (up to ``wait_s``) and, if the
    checks pass by then, reports "done by another run". Any exception is this repair's
    ``failed`` outcome, never the caller's crash. Nothing runs while the monitor's own
    direct login is refused (the picture is partial).

    ``found`` narrows a repair to what the failing check named (see RepairContext);
    ``all_declared`` is a person's request to apply every declared privilege (R3);
    ``may_resume`` may forbid R2's RESUME (silences are also checked by the repair itself).
    ``target`` is the fleet target's name: its attempts alone count toward its hourly
    limit, and its lock is its own (two targets repair side by side).
    """
    from westep_ops.repairs import actions  # noqa: F401 - registers the repairs (imports us)

    spec = REGISTRY[action]
    own_store = store is None
    store = store or OpsStore(
        env.storage_url,
        connect_timeout_ms=config.monitoring.timeouts.connect,
        target=target,
        state=target_state(env, target),
    )
    if store.target != target:
        raise ValueError(f"repair of target {target} given the store of target {store.target}")
    started = now_utc()
    t0 = time.perf_counter()
    result = RepairResult(
        action.value,
        trigger,
        dry_run,
        "failed",
        "",
        target=target,
        database=target_id(env),
        forced=force,
    )
    uid = uuid.uuid4().hex
    local = LocalLock(action.value, target)
    locked = local_locked = recorded = False

    def record_base() -> dict[str, Any]:
        rec = result.as_dict()
        rec.update(
            started_at=started.isoformat(),
            finished_at=now_utc().isoformat(),
            incident_id=incident_id,
            attempt_uid=uid,
        )
        rec.pop("duration_ms")
        rec.pop("notes")
        return rec

    try:
        if not dry_run:
            waited, deadline_at = False, time.monotonic() + wait_s
            while True:
                local_locked = local.acquire()
                lock = store.try_lock(action.value) if local_locked else False
                if local_locked and lock is not False:
                    locked = bool(lock)
                    break
                if local_locked:
                    local.release()
                    local_locked = False
                if time.monotonic() >= deadline_at:
                    result.outcome = "refused"
                    result.escalation = LEVEL_MANUAL
                    result.summary = (
                        f"refused: another {action.value} is still running after {wait_s:.0f} s"
                    )
                    return result
                waited = True
                time.sleep(0.5)
            for gone in store.reap_interrupted(action.value, uid):
                result.notes.append(
                    f"an earlier attempt (started {gone.get('started_at')}) was interrupted:"
                    " its process stopped before it finished; it counts toward the limit"
                )
            if waited and spec.verify:
                now_ok = _probe(env, config, spec.verify)
                if all(r.status in (Status.ok, Status.not_configured) for r in now_ok):
                    result.outcome = "done_by_other"
                    result.after = _brief(now_ok)
                    result.summary = (
                        f"done by another run: {action.value} ran elsewhere while this run"
                        " waited, and the checks pass now"
                    )
                    return result
            limit = config.monitoring.auto_recovery.max_attempts_per_hour
            count, source = store.attempts_last_hour(action.value)
            if count >= limit and not force:
                result.outcome = "refused"
                result.escalation = LEVEL_MANUAL
                result.summary = (
                    f"refused: {count} attempts of {action.value} in the last hour "
                    f"(limit {limit}, counted from {source}); a person must look (level 2)"
                )
                return result
            try:
                store.start(record_base())
            except OSError as e:
                result.notes.append(f"start of the attempt not recorded: {describe_error(e)}")
        # H1 too: with the monitor's own direct login refused, the picture is partial and
        # a repair could make things worse (no repair is unable to then).
        before = _probe(env, config, tuple(dict.fromkeys((Category.connection, *spec.verify))))
        result.before = _brief([r for r in before if r.category in spec.verify])
        refused = next((r for r in before if monitor_refused(r)), None)
        if refused is not None and not dry_run:
            result.outcome = "refused"
            result.escalation = LEVEL_MANUAL
            result.summary = (
                f"refused: monitoring is misconfigured ({redact(refused.summary)}); "
                "a person must fix the monitor's login first (level 2)"
            )
            return result
        ctx = RepairContext(
            env,
            config,
            dry_run=dry_run,
            trigger=trigger,
            force=force,
            found=found,
            all_declared=all_declared,
            may_resume=may_resume,
            target=target,
        )
        try:
            summary = spec.fn(ctx)
        except RepairSkipped as e:
            result.changes, result.notes = ctx.changes, result.notes + ctx.notes
            result.outcome = "skipped"
            result.summary = redact(str(e))
            return result
        except RepairFailed as e:
            result.changes, result.notes = ctx.changes, result.notes + ctx.notes
            result.summary = redact(str(e))
            result.escalation = e.escalation
            return result
        except psycopg.Error as e:
            result.changes, result.notes = ctx.changes, result.notes + ctx.notes
            result.summary = f"failed: {describe_error(e)}"
            result.escalation = LEVEL_MANUAL
            return result
        except Exception as e:  # noqa: BLE001 - any crash of one repair is its failed outcome
            result.changes, result.notes = ctx.changes, result.notes + ctx.notes
            first = (str(e).splitlines() or [""])[0]
            result.summary = redact(f"failed: {type(e).__name__}: {first}")
            result.escalation = LEVEL_MANUAL
            return result
        result.changes, result.notes = ctx.changes, result.notes + ctx.notes
        result.summary = redact(summary)
        if dry_run:
            result.outcome = "dry_run"
            return result
        if verify and spec.verify:
            after = _probe(env, config, spec.verify)
            result.after = _brief(after)
            still = [r for r in after if _still_failing(action, r, config)]
            if action is RepairAction.fix_data_integrity:
                left = [f for r in after for f in r.findings if f in _report_only(config)]
                if left:
                    result.notes.append(
                        "report-only rules still have violations (a person decides): "
                        + ", ".join(f.removeprefix("integrity:") for f in left)
                    )
            if still:
                result.outcome = "verify_failed"
                result.escalation = LEVEL_MANUAL
                result.summary += "; still failing after the repair: " + "; ".join(
                    f"{r.name}: {redact(r.summary)}" for r in still
                )
                return result
        result.outcome = "repaired" if ctx.changes else "nothing_to_do"
        return result
    except Exception as e:  # noqa: BLE001 - the probes or the store crashing: still a result
        result.outcome = "failed"
        result.escalation = LEVEL_MANUAL
        first = (str(e).splitlines() or [""])[0]
        result.summary = redact(f"failed: {type(e).__name__}: {first}")
        return result
    finally:
        result.duration_ms = round((time.perf_counter() - t0) * 1000, 1)
        try:
            if not recorded:
                store.record(record_base())
        except (OSError, psycopg.Error) as e:
            result.notes.append(f"audit not fully written: {describe_error(e)}")
        # Released only once recorded, so whoever takes the lock next counts this attempt.
        if locked:
            store.unlock(action.value)
        if local_locked:
            local.release()
        if own_store:
            store.close()
