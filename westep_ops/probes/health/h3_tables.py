"""H3: every critical table is readable by every role that must read it.

Declares one catalog query (grants, schema USAGE, RLS and its policies per table/role
pair) for the sweep's first round trip; with the optional role-probe login, H3 also
reads each pair for real as the role, in one round trip of its own on that login's
connection (declared here, run by the same runner).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from westep_ops.config import Category, split_name
from westep_ops.probes.base import CheckResult, Status, timed_result
from westep_ops.probes.health.batch import Answers, run_queries
from westep_ops.probes.health.common import DB_FAILURES, failure, not_configured, reason
from westep_ops.probes.health.locks import LockLedger
from westep_ops.probes.health.query import Locked, NotRun, Query
from westep_ops.probes.session import ProbeSession, Unavailable

Verdict = tuple[Status, str, str | None]

ROLE_PROBE = "roleprobe"  # the session target of the optional role-probe login
# Readability per role comes from the catalogs, so the monitoring login needs no
# membership in the API roles (SET ROLE needs only membership, and through it the monitor
# could write). Names are matched in pg_namespace/pg_class, not with to_regclass(): that
# folds case and raises "permission denied for schema" when the monitor lacks USAGE.
# RLS: on for the role unless it is a superuser, BYPASSRLS, or owns the table without
# FORCE; rows are visible only through a permissive SELECT (or ALL) policy for the role
# (pg_policy.polroles holds 0 for PUBLIC; a policy applies to members who inherit).
PRIVS_SQL = """
SELECT x.t, x.r, c.oid IS NOT NULL AS table_exists, ro.oid IS NOT NULL AS role_exists,
       -- Column-level SELECT (Supabase's column security pattern) is readable too.
       CASE WHEN c.oid IS NOT NULL AND ro.oid IS NOT NULL
            THEN has_any_column_privilege(ro.oid, c.oid, 'SELECT') END AS can_select,
       CASE WHEN c.oid IS NOT NULL AND ro.oid IS NOT NULL
            THEN has_table_privilege(ro.oid, c.oid, 'SELECT') END AS table_select,
       CASE WHEN n.oid IS NOT NULL AND ro.oid IS NOT NULL
            THEN has_schema_privilege(ro.oid, n.oid, 'USAGE') END AS schema_usage,
       coalesce(pr.oid IS NOT NULL AND ro.oid IS NOT NULL
                AND pg_has_role(pr.oid, ro.oid, 'MEMBER'), false) AS switchable,
       session_user::text AS monitor,
       c.relrowsecurity AS rls,
       CASE WHEN c.oid IS NOT NULL AND ro.oid IS NOT NULL
            THEN c.relrowsecurity AND NOT ro.rolsuper AND NOT ro.rolbypassrls
                 AND (c.relforcerowsecurity OR NOT pg_has_role(ro.oid, c.relowner, 'USAGE'))
       END AS rls_applies,
       CASE WHEN c.oid IS NOT NULL AND ro.oid IS NOT NULL
            THEN EXISTS (SELECT 1 FROM pg_policy p
                         WHERE p.polrelid = c.oid AND p.polpermissive AND p.polcmd IN ('r', '*')
                           AND EXISTS (SELECT 1 FROM unnest(p.polroles) AS pol(role_oid)
                                       WHERE pol.role_oid = 0
                                          OR pg_has_role(ro.oid, pol.role_oid, 'USAGE')))
       END AS read_policy
FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[]) WITH ORDINALITY AS x(t, s, n, r, i)
LEFT JOIN pg_namespace n ON n.nspname = x.s
LEFT JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = x.n AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
LEFT JOIN pg_roles ro ON ro.rolname = x.r
LEFT JOIN pg_roles pr ON pr.rolname = %s
ORDER BY x.i
"""


def _pairs(session: ProbeSession) -> list[tuple[str, str]]:
    return [(t.table, r) for t in session.config.critical_tables for r in t.roles]


def role_probe_login(session: ProbeSession) -> str | None:
    """The role-probe login's user name (from WESTEP_OPS_ROLE_PROBE_URL), if one is set."""
    url = session.env.role_probe_url
    if not url:
        return None
    try:
        user = conninfo_to_dict(url).get("user")
    except psycopg.ProgrammingError:
        return None
    return str(user) if user else None


def _privs_params(session: ProbeSession, pairs: list[tuple[str, str]]) -> tuple[Any, ...]:
    names = [split_name(p[0]) for p in pairs]
    return (
        [p[0] for p in pairs],
        [s for s, _ in names],
        [n for _, n in names],
        [p[1] for p in pairs],
        role_probe_login(session),
    )


def _catalog_verdict(row: dict[str, Any]) -> tuple[Status, str, str | None] | None:
    """What the catalog alone says about one pair; None when the role can read it."""
    t, r = row["t"], row["r"]
    if not row["table_exists"]:
        return Status.critical, f"table {t} does not exist", "table_missing"
    if not row["role_exists"]:
        return Status.critical, f"role {r} does not exist", "role_missing"
    if not row["can_select"]:
        return Status.critical, f"{r} has no SELECT on {t}", "grant_missing"
    if not row["schema_usage"]:
        schema = split_name(t)[0]
        return Status.critical, f"{r} has no USAGE on schema {schema}", "schema_usage_missing"
    return None


def _to_read(rows: list[dict[str, Any]], locks: dict[str, str]) -> list[tuple[str, str]]:
    """Pairs the role-probe login reads for real: granted, switchable, not behind a lock."""
    return [
        (r["t"], r["r"])
        for r in rows
        if _catalog_verdict(r) is None and r["switchable"] and r["t"] not in locks
    ]


def _select_note(row: dict[str, Any]) -> str:
    if row.get("table_select") is False:
        return "SELECT on some columns only (column grants)"
    return "SELECT granted"


def _rls_note(row: dict[str, Any]) -> str:
    if not row["rls"]:
        return "RLS off"
    if not row["rls_applies"]:
        return f"RLS on, not applied to {row['r']} (bypass or owner)"
    if row["read_policy"]:
        return f"RLS on, a SELECT policy applies to {row['r']}"
    return f"RLS on and no SELECT policy for {row['r']}: it reads 0 rows"


def _role_probe_state(session: ProbeSession) -> str | None:
    """None when the role-probe login can be used this sweep, else why not (catalog only)."""
    if not session.configured("roleprobe"):
        return "WESTEP_OPS_ROLE_PROBE_URL is not set"
    try:
        session.connection("roleprobe")
    except Unavailable as e:
        return f"the role-probe login is unavailable: {e}"
    return None


@dataclass
class Needs:
    """H3's query this sweep: the catalog's verdict per table/role pair (round trip 1)."""

    pairs: list[tuple[str, str]]
    privs: Query | None  # None: no criticalTables

    def first(self) -> list[Query]:
        return [self.privs] if self.privs else []

    def second(self, answers: Answers) -> list[Query]:
        return []


def needs(session: ProbeSession, heavy: bool = True) -> Needs:
    pairs = _pairs(session)
    privs = Query(Category.tables, "privileges", PRIVS_SQL, _privs_params(session, pairs))
    return Needs(pairs, privs if pairs else None)


def tables_read(session: ProbeSession) -> list[str]:
    """The tables H3 reads (the sweep looks at their locks in round trip 1)."""
    return [t.table for t in session.config.critical_tables]


def check_tables(session: ProbeSession, need: Needs, answers: Answers) -> CheckResult:
    """H3: judge each table/role pair from the catalog, and from a real read as the role.

    Each pair gets its own verdict in ``values["items"]``; the category is the worst of
    them, so one bad pair never hides the others.
    """
    res = CheckResult(Category.tables)
    pairs = need.pairs
    must_see = {(t.table, r) for t in session.config.critical_tables for r in t.must_see_rows}
    ledger = answers.locks
    with timed_result(res):
        if need.privs is None:
            return not_configured(res, "no criticalTables in the config")
        try:
            rows = answers.rows(need.privs)
        except DB_FAILURES as e:
            res.problem(Status.error, f"could not check: {reason(e)}")
            return res.finish("")
        if ledger.error:
            res.values["locks_error"] = ledger.error
        locks = ledger.held
        probe_off = _role_probe_state(session)
        probe = role_probe_login(session) or "the role-probe login"
        res.values["read_as_role"] = (
            f"catalog only ({probe_off})" if probe_off else f"SELECT as each role ({probe})"
        )
        read = {} if probe_off else _read_as_roles(session, answers, _to_read(rows, locks))
        items: list[dict[str, Any]] = []
        locked: dict[str, list[str]] = {}  # one line per locked table, not per pair
        for row in rows:
            t, r = row["t"], row["r"]
            item: dict[str, Any] = {"table": t, "role": r, "rls": row["rls"]}
            verdict: Verdict | tuple[Status, int] | None = _catalog_verdict(row)
            if verdict is None:
                item["rls_policy"] = bool(row["read_policy"]) if row["rls_applies"] else None
            no_rows = verdict is None and row["rls_applies"] and not row["read_policy"]
            if no_rows and (t, r) in must_see:
                verdict = (
                    Status.warning,
                    f"{r} reads no rows of {t}: RLS is on and no SELECT policy applies to {r}"
                    " (declared in mustSeeRows)",
                    "rls_no_policy",
                )
            elif verdict is None and (t, r) not in read and t in locks:  # a reader would wait
                verdict = (ledger.status(t), f"{r} on {t}: {locks[t]}", "table_locked")
            elif verdict is None and (probe_off or not row["switchable"]):
                why = probe_off or f"{probe} is not a member of {r}"
                item.update(status=Status.ok, verified="catalog")
                item["detail"] = (
                    f"{_select_note(row)}, USAGE on the schema, {_rls_note(row)}"
                    f" (catalog only: {why})"
                )
            elif verdict is None:
                verdict = read.get((t, r)) or (Status.error, f"{r} on {t}: not read", None)
                if verdict[0] is Status.ok:
                    n = verdict[1]
                    item.update(status=Status.ok, verified="select", rows_visible=n)
                    item["detail"] = f"read as {r} ({_select_note(row)}), {_rls_note(row)}" + (
                        " (0 rows visible: empty, or RLS filters)" if n == 0 else ""
                    )
            if verdict is not None and len(verdict) == 3 and verdict[0] is not Status.ok:
                status, text, finding = verdict  # a failure: (status, text, finding)
                item.update(status=status, detail=text)
                if finding:
                    item["finding"] = finding
                if finding == "table_locked":
                    locked.setdefault(t, []).append(r)
                else:
                    res.problem(status, text, finding)
            items.append(item)
        items += _rls_items(session, rows, res)
        for t, roles in locked.items():
            res.problem(
                ledger.status(t),
                f"{t} ({', '.join(roles)}): {locks.get(t, 'blocked by a lock')}",
                "table_locked",
            )
        res.values.update(
            pairs=len(pairs),
            readable=sum(1 for i in items if "role" in i and i["status"] is Status.ok),
            rows_visible={
                f"{i['role']}@{i['table']}": i["rows_visible"] for i in items if "rows_visible" in i
            },
            no_rls_policy=[
                f"{i['role']}@{i['table']}" for i in items if i.get("rls_policy") is False
            ],
            items=items,
        )
        res.finish(
            f"{len(pairs)} table/role pairs readable" + (" (catalog only)" if probe_off else "")
        )
    return res


def _rls_items(
    session: ProbeSession, rows: list[dict[str, Any]], res: CheckResult
) -> list[dict[str, Any]]:
    """Row-level security as declared (``criticalTables[].rls``): off where it must be on
    exposes every row to the API roles; on where declared off makes clients see none."""
    declared = {t.table: t.rls for t in session.config.critical_tables if t.rls is not None}
    actual = {r["t"]: r["rls"] for r in rows if r["table_exists"]}
    items = []
    for table, want in declared.items():
        if table not in actual:
            continue  # a missing table is already reported
        item: dict[str, Any] = {"table": table, "kind": "rls", "rls": actual[table]}
        if actual[table] == want:
            item.update(status=Status.ok, detail=f"RLS {'on' if want else 'off'} as declared")
        elif want:
            text = f"row-level security is OFF on {table} (declared on)"
            item.update(status=Status.critical, detail=text)
            res.problem(Status.critical, text, "rls_disabled")
        else:
            text = f"row-level security is ON on {table} (declared off)"
            item.update(status=Status.warning, detail=text)
            res.problem(Status.warning, text, "rls_enabled")
        items.append(item)
    return items


def _read_as_roles(
    session: ProbeSession, answers: Answers, pairs: list[tuple[str, str]]
) -> dict[tuple[str, str], Verdict | tuple[Status, int]]:
    """A real ``SELECT ... LIMIT 1`` as each role, on the role-probe login's connection:
    (ok, rows visible) or (status, text, finding).

    ``SET LOCAL ROLE`` (never plain ``SET ROLE``: it would leak to other clients under
    transaction pooling), all pairs in one read-only transaction and one round trip; if
    that fails, each pair runs alone (bounded in total), so one failure stays one item.
    0 visible rows is not an error: RLS filters silently.
    """
    queries = {(t, r): _read_query(t, r) for t, r in pairs}
    run_queries(session, list(queries.values()), answers)
    return {
        p: _read_verdict(session, answers.locks, p, answers.outcome(q)) for p, q in queries.items()
    }


def _read_query(table: str, role: str) -> Query:
    schema, name = split_name(table)
    return Query(
        Category.tables,
        f"{role} on {table}",
        sql.SQL("SELECT count(*) FROM (SELECT 1 FROM {} LIMIT 1) AS s").format(
            sql.Identifier(schema, name)
        ),
        target=ROLE_PROBE,
        as_role=role,
        reads=(table,),
    )


def _read_verdict(
    session: ProbeSession, ledger: LockLedger, pair: tuple[str, str], got: Any
) -> Verdict | tuple[Status, int]:
    table, role = pair
    if isinstance(got, Locked):
        return (
            ledger.status(got.table),
            f"{role} on {table}: {ledger.held[got.table]}",
            "table_locked",
        )
    if isinstance(got, NotRun):
        return (
            Status.error,
            f"{role} on {table}: not read (H3's {got.budget_ms:.0f} ms for re-reading "
            "pairs one by one was spent)",
            None,
        )
    if isinstance(got, psycopg.errors.InsufficientPrivilege):
        return Status.critical, f"{role} cannot read {table}: {reason(got)}", "select_failed"
    if isinstance(got, BaseException):  # timeout, connection lost: nothing is known
        return Status.error, f"{role} on {table}: could not read: {failure(session, got)}", None
    return Status.ok, int(got)
