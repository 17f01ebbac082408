"""R4 ``repair_auth``: the API roles' USAGE on the auth schema and authenticator's
memberships."""

from __future__ import annotations

from psycopg import sql

from westep_ops.config import Category, RepairAction
from westep_ops.repairs.base import LEVEL_EXTERNAL, RepairContext, RepairFailed, repair


@repair(
    RepairAction.repair_auth,
    "give the API roles USAGE on the auth schema and let authenticator switch to them again",
    (Category.auth,),
)
def repair_auth(ctx: RepairContext) -> str:
    a = ctx.config.auth
    with ctx.db() as conn:
        row = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = %(s)s),"
            " ARRAY(SELECT r FROM unnest(%(api)s::text[]) r WHERE EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r)"
            "       AND NOT has_schema_privilege(r, %(s)s, 'USAGE')),"
            " ARRAY(SELECT r FROM unnest(%(api)s::text[]) r WHERE EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r)"
            "       AND EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticator')"
            "       AND NOT pg_has_role('authenticator', r, 'MEMBER'))",
            {"s": a.schema_name, "api": a.api_roles},
        ).fetchone()
        assert row is not None
        exists, no_usage, not_member = row
        if not exists:
            raise RepairFailed(
                f"schema {a.schema_name} is missing: restore the auth service's schema (Supabase support, level 3)",
                LEVEL_EXTERNAL,
            )
        stmts = [
            sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(
                sql.Identifier(a.schema_name), sql.Identifier(r)
            )
            for r in no_usage
        ] + [sql.SQL("GRANT {} TO authenticator").format(sql.Identifier(r)) for r in not_member]
        for stmt in stmts:
            ctx.apply(conn, stmt)
        conn.commit()
    if not stmts:
        return "auth schema usage and role memberships are in place"
    return f"{'would apply' if ctx.dry_run else 'applied'} {len(stmts)} auth grants"
