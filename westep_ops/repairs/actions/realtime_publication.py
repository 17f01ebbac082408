"""``restore_realtime_publication``: recreate the realtime publication or add back the
declared tables."""

from __future__ import annotations

from psycopg import sql

from westep_ops.config import Category, RepairAction, split_name
from westep_ops.repairs.actions.common import unless_silenced
from westep_ops.repairs.base import RepairContext, repair


@repair(
    RepairAction.restore_realtime_publication,
    "recreate the realtime publication or add back the declared tables",
    (Category.realtime,),
)
def restore_realtime_publication(ctx: RepairContext) -> str:
    unless_silenced(ctx, Category.realtime)
    rt = ctx.config.realtime
    pub = sql.Identifier(rt.publication)
    with ctx.db() as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_publication WHERE pubname = %s", (rt.publication,)
        ).fetchone()
        present = {
            r[0]
            for r in conn.execute(
                "SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = %s",
                (rt.publication,),
            )
        }
        missing = [t for t in rt.tables if t not in present]
        tables = sql.SQL(", ").join(sql.Identifier(*split_name(t)) for t in missing)
        if not exists:
            stmt = (
                sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(pub, tables)
                if missing
                else sql.SQL("CREATE PUBLICATION {}").format(pub)
            )
        elif missing:
            stmt = sql.SQL("ALTER PUBLICATION {} ADD TABLE {}").format(pub, tables)
        else:
            return f"publication {rt.publication} holds every declared table"
        ctx.apply(conn, stmt)
        conn.commit()
    return f"{'would restore' if ctx.dry_run else 'restored'} publication {rt.publication} ({len(missing)} tables)"
