"""H4: count the rows breaking each configured integrity rule.

Declares a catalog query (what each rule needs, checked as the monitor before anything
runs) for round trip 1, and, given its answer and the locks, one count per runnable rule
for round trip 2 (the batch folds them into one SELECT in a read-only transaction
bounded by statement_timeout and lock_timeout). A rule that cannot run (a typo, a
missing grant, a locked table) is that rule's own error or warning; the others count.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from psycopg import sql

from westep_ops.config import Category, IntegrityRule, qualified_name, split_name
from westep_ops.integrity import count_sql
from westep_ops.probes.base import MONITOR_MISCONFIGURED, CheckResult, Status, timed_result
from westep_ops.probes.health.batch import Answers
from westep_ops.probes.health.common import (
    DB_FAILURES,
    failure,
    names_params,
    not_configured,
    reason,
)
from westep_ops.probes.health.query import Locked, NotRun, Query
from westep_ops.probes.session import ProbeSession

Verdict = tuple[Status, str, str | None]

# What each rule needs, checked as the monitor before anything runs: a typo or a missing
# grant becomes that rule's own error instead of failing the whole batch.
RULE_CATALOG_SQL = """
SELECT x.s AS schema_name, x.t AS table_name, n.oid IS NOT NULL AS schema_exists, c.oid IS NOT NULL AS table_exists,
       CASE WHEN n.oid IS NOT NULL THEN has_schema_privilege(n.oid, 'USAGE') END AS usage,
       CASE WHEN c.oid IS NOT NULL THEN has_table_privilege(c.oid, 'SELECT') END AS can_select,
       ARRAY(SELECT a.attname::text FROM pg_attribute a
             WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped) AS columns,
       ARRAY(SELECT a.attname::text FROM pg_attribute a
             WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
               AND has_column_privilege(c.oid, a.attnum, 'SELECT')) AS readable_columns,
       session_user::text AS monitor
FROM unnest(%s::text[], %s::text[]) AS x(s, t)
LEFT JOIN pg_namespace n ON n.nspname = x.s
LEFT JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = x.t AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
"""


def integrity_rule_sql(rule: Any) -> sql.Composable:
    """A query counting the rows that break ``rule`` (the rows fix_data_integrity would move)."""
    return count_sql(rule)


def _rule_tables(rules: Iterable[IntegrityRule]) -> list[str]:
    out: list[str] = []
    for r in rules:
        out += [r.table] + ([r.references] if r.references else [])
    return list(dict.fromkeys(out))


def rule_problem(rule: IntegrityRule, catalog: dict[str, dict[str, Any]]) -> str | None:
    """Why ``rule`` cannot run as the monitor (exactly what is missing), or None."""
    needs = [(rule.table, [*rule.columns, *(rule.key or []), *(rule.order_by or [])])]
    if rule.references:
        needs.append((rule.references, rule.referenced_columns or ["id"]))
    for table, cols in needs:
        row = catalog[table]
        schema = split_name(table)[0]
        if not row["schema_exists"]:
            return f"schema {schema} does not exist (rule names {table})"
        if not row["usage"]:
            return (
                f"the monitoring login {row['monitor']} lacks USAGE on schema {schema}: "
                f"GRANT USAGE ON SCHEMA {schema} TO {row['monitor']}"
            )
        if not row["table_exists"]:
            return f"table {table} does not exist"
        missing = [c for c in dict.fromkeys(cols) if c not in row["columns"]]
        if missing:
            return f"column {', '.join(missing)} does not exist in {table}"
        # Column grants are enough, except for duplicates (they read ctid).
        unreadable = [c for c in dict.fromkeys(cols) if c not in row["readable_columns"]]
        if not row["can_select"] and (unreadable or rule.kind == "duplicates"):
            return (
                f"the monitoring login {row['monitor']} lacks SELECT on {table}: "
                f"GRANT SELECT ON {table} TO {row['monitor']}"
            )
    return None


def _by_table(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """RULE_CATALOG_SQL rows by the config's spelling of their table (public."step log")."""
    return {qualified_name(r["schema_name"], r["table_name"]): r for r in rows}


def _runnable(
    rules: Iterable[IntegrityRule], catalog: dict[str, dict[str, Any]], locks: dict[str, str]
) -> list[IntegrityRule]:
    return [
        r
        for r in rules
        if rule_problem(r, catalog) is None and not any(t in locks for t in _rule_tables([r]))
    ]


def tables_read(session: ProbeSession) -> list[str]:
    """The tables H4's rules read (the sweep looks at their locks in round trip 1)."""
    return _rule_tables(session.config.integrity_rules)


@dataclass
class Needs:
    """H4's queries this sweep: the rules' catalog (round trip 1), then the counts of the
    rules that can run (round trip 2)."""

    rules: list[IntegrityRule]
    catalog: Query | None  # None: no integrityRules
    counts: dict[str, Query] = field(default_factory=dict)  # rule name -> its count

    def first(self) -> list[Query]:
        return [self.catalog] if self.catalog else []

    def second(self, answers: Answers) -> list[Query]:
        if self.catalog is None:
            return []
        try:
            catalog = _by_table(answers.rows(self.catalog))
        except DB_FAILURES:
            return []  # judged as the catalog's failure
        runnable = _runnable(self.rules, catalog, answers.locks.held)
        self.counts = {
            r.name: Query(
                Category.integrity,
                r.name,
                integrity_rule_sql(r),
                scalar=True,
                reads=tuple(_rule_tables([r])),
            )
            for r in runnable
        }
        return list(self.counts.values())


def needs(session: ProbeSession, heavy: bool = True) -> Needs:
    rules = list(session.config.integrity_rules)
    params = names_params(_rule_tables(rules))
    catalog = Query(Category.integrity, "rule catalog", RULE_CATALOG_SQL, params)
    return Needs(rules, catalog if rules else None)


def check_integrity(session: ProbeSession, need: Needs, answers: Answers) -> CheckResult:
    """H4: each rule's verdict in ``values["items"]``, from its count or why it did not run."""
    res = CheckResult(Category.integrity)
    rules = need.rules
    ledger = answers.locks
    with timed_result(res):
        if need.catalog is None:
            return not_configured(res, "no integrityRules in the config")
        try:
            catalog = _by_table(answers.rows(need.catalog))
        except DB_FAILURES as e:
            res.problem(Status.error, f"integrity rules could not run: {reason(e)}")
            return res.finish("")
        if ledger.error:
            res.values["locks_error"] = ledger.error
        locks = ledger.held
        items: list[dict[str, Any]] = []
        for r in rules:
            item: dict[str, Any] = {"rule": r.name, "kind": r.kind, "table": r.table}
            problem = rule_problem(r, catalog)
            locked = next((t for t in _rule_tables([r]) if t in locks), None)
            query = need.counts.get(r.name)
            outcome = answers.outcome(query) if query is not None else None
            if problem is not None:
                verdict: Verdict = (
                    Status.error,
                    f"{r.name}: cannot run: {problem}",
                    MONITOR_MISCONFIGURED,
                )
            elif isinstance(outcome, int):
                item["count"] = outcome
                verdict = (
                    (
                        Status(r.severity),
                        f"{r.name}: {outcome} rows ({r.kind} in {r.table})",
                        f"integrity:{r.name}",
                    )
                    if outcome
                    else (Status.ok, "no violations", None)
                )
            elif isinstance(outcome, Locked) or (outcome is None and locked is not None):
                table = outcome.table if isinstance(outcome, Locked) else str(locked)
                verdict = (
                    ledger.status(table),
                    f"{r.name}: {table}: {locks[table]}",
                    "table_locked",
                )
            elif isinstance(outcome, NotRun):
                verdict = (
                    Status.error,
                    f"{r.name}: not run (H4's {outcome.budget_ms:.0f} ms for re-running rules "
                    "one by one was spent)",
                    None,
                )
            elif isinstance(outcome, BaseException):
                verdict = (
                    Status.error,
                    f"{r.name}: could not run: {failure(session, outcome)}",
                    None,
                )
            else:
                verdict = (Status.error, f"{r.name}: not run", None)
            status, text, finding = verdict
            item.update(status=status, detail=text)
            if status is not Status.ok:
                res.problem(status, text, finding)
            items.append(item)
        res.values["violations"] = {i["rule"]: i["count"] for i in items if "count" in i}
        res.values["items"] = items
        res.finish(f"{len(rules)} rules, no violations")
    return res
