"""R3 ``fix_table_permissions``: give back the privileges H3 found missing, as the owner."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg import sql

from westep_ops.config import Category, RepairAction, split_name
from westep_ops.db import dict_rows
from westep_ops.repairs.base import LEVEL_MANUAL, RepairContext, RepairFailed, repair

# Names are matched in pg_namespace/pg_class (never to_regclass(text), which folds case).
# ``owner`` is who the GRANT runs as; ``can_become`` whether the repair login may SET ROLE
# to it (membership; a superuser always may).
TABLE_PRIVS_SQL = """
SELECT x.t, x.r, x.p, c.oid IS NOT NULL AS table_exists, ro.oid IS NOT NULL AS role_exists,
       CASE WHEN c.oid IS NOT NULL AND ro.oid IS NOT NULL
            THEN has_table_privilege(ro.oid, c.oid, x.p) END AS granted,
       CASE WHEN n.oid IS NOT NULL AND ro.oid IS NOT NULL
            THEN has_schema_privilege(ro.oid, n.oid, 'USAGE') END AS schema_usage,
       pg_get_userbyid(c.relowner)::text AS owner,
       CASE WHEN c.oid IS NOT NULL THEN pg_has_role(session_user, c.relowner, 'MEMBER') END
            AS can_become,
       pg_get_userbyid(n.nspowner)::text AS schema_owner,
       CASE WHEN n.oid IS NOT NULL THEN pg_has_role(session_user, n.nspowner, 'MEMBER') END
            AS can_become_schema_owner
FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[])
     WITH ORDINALITY AS x(t, s, n, r, p, i)
LEFT JOIN pg_namespace n ON n.nspname = x.s
LEFT JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = x.n
     AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
LEFT JOIN pg_roles ro ON ro.rolname = x.r
ORDER BY x.i
"""


def _privilege_rows(conn: Any, triples: Sequence[tuple[str, str, str]]) -> list[dict[str, Any]]:
    if not triples:
        return []
    names = [split_name(t) for t, _, _ in triples]
    return dict_rows(
        conn,
        TABLE_PRIVS_SQL,
        (
            [t for t, _, _ in triples],
            [s for s, _ in names],
            [n for _, n in names],
            [r for _, r, _ in triples],
            [p for _, _, p in triples],
        ),
    )


def missing_grants(ctx: RepairContext, conn: Any) -> list[tuple[str, str, str]]:
    """Declared (table, role, privilege) triples that the database does not grant."""
    triples = [(g.table, g.role, p) for g in ctx.config.grants for p in g.privileges]
    return [
        (r["t"], r["r"], r["p"])
        for r in _privilege_rows(conn, triples)
        if r["table_exists"] and r["role_exists"] and not r["granted"]
    ]


def _found_pairs(ctx: RepairContext) -> list[tuple[str, str]]:
    """The table/role pairs H3 judges: those the failing check named, else all of them."""
    pairs = [(t.table, r) for t in ctx.config.critical_tables for r in t.roles]
    if ctx.found is not None:
        named = set(ctx.found)
        pairs = [p for p in pairs if p in named]
    return pairs


@repair(
    RepairAction.fix_table_permissions,
    "give back what H3 found missing (SELECT, schema USAGE for a critical table's roles), as"
    " the owner; every declared grant only when a person asks (--all-declared)",
    (Category.tables,),
)
def fix_table_permissions(ctx: RepairContext) -> str:
    """Grant only what the failing check found missing: a role that must read a critical
    table and cannot gets SELECT (and USAGE on the schema) back. The rest of the declared
    drift is reported, and granted only with ``all_declared`` (a person's explicit
    request). Every GRANT runs as the object's owner (``SET LOCAL ROLE``), so no second
    grantor is left that a later REVOKE by the owner would not remove."""
    with ctx.db() as conn:
        found = _privilege_rows(conn, [(t, r, "SELECT") for t, r in _found_pairs(ctx)])
        declared = missing_grants(ctx, conn)
        # (object kind, schema-qualified name or schema, role, privilege, owner, can become)
        todo: dict[tuple[str, str, str, str], tuple[str, bool]] = {}
        for row in found:
            if not (row["table_exists"] and row["role_exists"]):
                continue  # H3 escalates a missing table or role; no grant brings it back
            if not row["schema_usage"]:
                schema = split_name(row["t"])[0]
                todo[("schema", schema, row["r"], "USAGE")] = (
                    row["schema_owner"],
                    row["can_become_schema_owner"],
                )
            if not row["granted"]:
                todo[("table", row["t"], row["r"], "SELECT")] = (row["owner"], row["can_become"])
        if ctx.all_declared and declared:
            for row in _privilege_rows(conn, declared):
                todo[("table", row["t"], row["r"], row["p"])] = (row["owner"], row["can_become"])
        left = [
            d for d in declared if ("table", d[0], d[1], d[2]) not in todo
        ]  # drift nobody asked for
        refused = _grant_as_owners(ctx, conn, todo)
        conn.commit()
    if left:
        ctx.notes.append(
            "declared but not granted (drift the check did not find broken): "
            + ", ".join(f"{p} on {t} to {r}" for t, r, p in left)
            + "; a person applies it with: westep-ops repair fix_table_permissions --all-declared"
        )
    if refused:
        raise RepairFailed(
            "cannot grant as the owner (the repair login may not SET ROLE to it), so nothing"
            " was granted as another grantor; a person must run as the owner: "
            + "; ".join(refused),
            LEVEL_MANUAL,
        )
    n = len(todo)
    if not n:
        return "nothing the checks need is missing" + (
            f" ({len(left)} declared privileges left for --all-declared)" if left else ""
        )
    verb = "would grant" if ctx.dry_run else "granted"
    return f"{verb} {n} missing privileges as the owners" + (
        f"; {len(left)} other declared privileges reported, not granted" if left else ""
    )


def _grant_as_owners(
    ctx: RepairContext, conn: Any, todo: dict[tuple[str, str, str, str], tuple[str, bool]]
) -> list[str]:
    """GRANT each privilege as its object's owner; returns those the login could not."""
    refused: list[str] = []
    for (kind, name, role, priv), (owner, can_become) in todo.items():
        target: sql.Composable
        if kind == "schema":
            target = sql.SQL("SCHEMA {}").format(sql.Identifier(name))
        else:
            target = sql.Identifier(*split_name(name))
        stmt = sql.SQL("GRANT {} ON {} TO {}").format(sql.SQL(priv), target, sql.Identifier(role))
        if not can_become:
            refused.append(f"{stmt.as_string(conn)} (owner {owner})")
            continue
        if not ctx.dry_run:
            conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(owner)))
        ctx.apply(conn, stmt)
        if not ctx.dry_run:
            conn.execute("RESET ROLE")
    owners = sorted({o for (o, ok) in todo.values() if ok})
    if owners and len(refused) < len(todo):
        verb = "would grant" if ctx.dry_run else "granted"
        ctx.notes.append(f"{verb} as the owner: {', '.join(owners)}")
    return refused
