"""What "a row breaking an integrity rule" means, once, for the check and the repair.

H4 counts with :func:`count_sql` exactly the rows that ``fix_data_integrity`` would move
with :func:`violation_condition`, so a green H4 after a repair is not a coincidence.
"""

from __future__ import annotations

from psycopg import sql

from westep_ops.config import IntegrityRule, split_name


def violation_condition(rule: IntegrityRule) -> sql.Composable:
    """WHERE condition (on alias ``c``) selecting the rows that break ``rule``."""
    schema, table = split_name(rule.table)
    if rule.kind == "orphans":
        rschema, rtable = split_name(rule.references or "")
        ref_cols = rule.referenced_columns or ["id"]
        match = sql.SQL(" AND ").join(
            sql.SQL("r.{} = c.{}").format(sql.Identifier(rc), sql.Identifier(cc))
            for rc, cc in zip(ref_cols, rule.columns, strict=True)
        )
        not_null = sql.SQL(" AND ").join(
            sql.SQL("c.{} IS NOT NULL").format(sql.Identifier(c)) for c in rule.columns
        )
        return sql.SQL("{} AND NOT EXISTS (SELECT 1 FROM {} AS r WHERE {})").format(
            not_null, sql.Identifier(rschema, rtable), match
        )
    if rule.kind == "not_null":
        return sql.SQL(" OR ").join(
            sql.SQL("c.{} IS NULL").format(sql.Identifier(c)) for c in rule.columns
        )
    # duplicates: every row but the first of its group. UNIQUE semantics: a row with a NULL
    # in the columns duplicates nothing. The first is the oldest by ``orderBy``; without
    # one the count is the same whichever row is kept, and R5 refuses to choose.
    cols = sql.SQL(", ").join(sql.Identifier(c) for c in rule.columns)
    all_set = sql.SQL(" AND ").join(
        sql.SQL("{} IS NOT NULL").format(sql.Identifier(c)) for c in rule.columns
    )
    order = (
        sql.SQL(", ").join([*(sql.Identifier(k) for k in rule.order_by), sql.SQL("ctid")])
        if rule.order_by
        else sql.SQL("ctid")
    )
    return sql.SQL(
        "c.ctid IN (SELECT ctid FROM (SELECT ctid, row_number() OVER (PARTITION BY {} ORDER BY {}) AS n"
        " FROM {} WHERE {}) AS d WHERE d.n > 1)"
    ).format(cols, order, sql.Identifier(schema, table), all_set)


def count_sql(rule: IntegrityRule) -> sql.Composable:
    """A query counting the rows that break ``rule``."""
    return sql.SQL("SELECT count(*) FROM {} AS c WHERE {}").format(
        sql.Identifier(*split_name(rule.table)), violation_condition(rule)
    )
