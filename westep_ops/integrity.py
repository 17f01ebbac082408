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
    # duplicates: every row but the first of its group (by key, else by physical order)
    order = sql.SQL(", ").join(sql.Identifier(k) for k in rule.key) if rule.key else sql.SQL("ctid")
    return sql.SQL(
        "c.ctid IN (SELECT ctid FROM (SELECT ctid, row_number() OVER (PARTITION BY {} ORDER BY {}) AS n"
        " FROM {}) AS d WHERE d.n > 1)"
    ).format(
        sql.SQL(", ").join(sql.Identifier(c) for c in rule.columns),
        order,
        sql.Identifier(schema, table),
    )


def count_sql(rule: IntegrityRule) -> sql.Composable:
    """A query counting the rows that break ``rule``."""
    return sql.SQL("SELECT count(*) FROM {} AS c WHERE {}").format(
        sql.Identifier(*split_name(rule.table)), violation_condition(rule)
    )
