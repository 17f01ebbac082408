"""R5 ``fix_data_integrity``: move rows breaking the opted-in integrity rules into
quarantine (the move itself is ``repairs/quarantine.py``)."""

from __future__ import annotations

import psycopg
from psycopg import sql

from westep_ops.config import Category, RepairAction
from westep_ops.errors import WestepError
from westep_ops.repairs.base import LEVEL_MANUAL, RepairContext, RepairFailed, repair
from westep_ops.repairs.quarantine import MoveRefused, count_violations, move_rule_violations


@repair(
    RepairAction.fix_data_integrity,
    "move rows breaking the rules that opted in (repair: quarantine) into quarantine;"
    " refuse when deleting them would cascade, set NULL, fail or fire a trigger or rule",
    (Category.integrity,),
)
def fix_data_integrity(ctx: RepairContext) -> str:
    rows = 0  # moved, or in a dry run the rows that would move
    refused: list[str] = []
    left: list[str] = []
    # The move reads whole tables for its fingerprints: the maintenance bound, not a
    # probe's; lock_timeout still keeps it from queueing behind other sessions.
    timeout_ms = int(ctx.config.repairs.maintenance_timeout_seconds * 1000)
    with ctx.db() as conn:
        # One snapshot per rule: the before/after fingerprints see only this move.
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        for rule in ctx.config.integrity_rules:
            conn.execute(
                sql.SQL("SET LOCAL statement_timeout = {}").format(sql.Literal(timeout_ms))
            )
            try:
                if rule.repair != "quarantine":
                    n = count_violations(conn, rule)
                    if n:
                        left.append(f"{rule.name}: {n} rows of {rule.table}")
                    conn.rollback()
                    continue
                out = move_rule_violations(ctx, conn, rule)
            except MoveRefused as e:
                conn.rollback()
                refused.append(str(e))
                continue
            except WestepError as e:
                conn.rollback()
                raise RepairFailed(f"{rule.name}: {e}", LEVEL_MANUAL) from None
            if out.refused:
                refused.append(out.refused)
                conn.rollback()
                continue
            rows += out.count if ctx.dry_run else out.moved
            if ctx.dry_run:
                conn.rollback()
            else:
                conn.commit()
    verb = "would quarantine" if ctx.dry_run else "quarantined"
    if left:
        ctx.notes.append(
            "report-only rules (repair: report), left for a person: " + "; ".join(left)
        )
    if refused:
        raise RepairFailed(
            (f"{verb} {rows} rows; " if rows else "") + " | ".join(refused), LEVEL_MANUAL
        )
    if rows:
        return f"{verb} {rows} rows"
    if left:
        return "no rule that may be cleaned has violations; report-only: " + "; ".join(left)
    return "no rows break the integrity rules"
