"""Quarantine: rows removed by data cleaning are kept, with when and why, and can go back.

The quarantine lives in the monitored database (schema ``westep_quarantine`` by default,
never ``public``, whose event triggers react to DDL), one table per source table with the
source's columns followed by ``quarantine_id``, ``quarantined_at``, ``rule``, ``reason``
and ``trigger``. Moving is one ``WITH moved AS (DELETE ... RETURNING *) INSERT ...``
statement inside one transaction, checked by counting the source before and after: a row
is never deleted without being kept. Restoring is the same statement the other way.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from westep_ops.config import IntegrityRule, split_name
from westep_ops.errors import WestepError
from westep_ops.integrity import violation_condition

EXTRA_COLUMNS = ("quarantine_id", "quarantined_at", "rule", "reason", "trigger")


def quarantine_name(table: str) -> str:
    schema, name = split_name(table)
    return f"{schema}__{name}"[:63]


def _columns(conn: psycopg.Connection, table: str) -> list[tuple[str, str, str]]:
    """(name, type, generated/identity flag) of ``table``'s live columns, in order."""
    rows = conn.execute(
        "SELECT attname, format_type(atttypid, atttypmod), attgenerated::text || attidentity::text"
        " FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped"
        " ORDER BY attnum",
        (table,),
    ).fetchall()
    if not rows:
        raise WestepError(f"table {table} does not exist")
    return [tuple(r) for r in rows]  # type: ignore[misc]


def ensure_table(conn: psycopg.Connection, qschema: str, table: str) -> sql.Composed:
    """Create (or extend with new source columns) the quarantine table for ``table``."""
    schema, name = split_name(table)
    qtable = sql.Identifier(qschema, quarantine_name(table))
    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(qschema)))
    conn.execute(
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (LIKE {},"
            " quarantine_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
            " quarantined_at timestamptz NOT NULL DEFAULT now(),"
            " rule text NOT NULL, reason text NOT NULL, trigger text)"
        ).format(qtable, sql.Identifier(schema, name))
    )
    conn.execute(
        sql.SQL("COMMENT ON TABLE {} IS {}").format(
            qtable, sql.Literal(f"westep-ops quarantine of {table}")
        )
    )
    have = {c[0] for c in _columns(conn, f"{qschema}.{quarantine_name(table)}")}
    for col, typ, _flag in _columns(conn, table):
        if col not in have:  # the source gained a column since the quarantine was made
            conn.execute(
                sql.SQL("ALTER TABLE {} ADD COLUMN {} {}").format(
                    qtable, sql.Identifier(col), sql.SQL(typ)
                )
            )
    return qtable  # type: ignore[return-value]


def _reason(rule: IntegrityRule) -> str:
    cols = ", ".join(rule.columns)
    if rule.kind == "orphans":
        return f"{cols} has no match in {rule.references}"
    if rule.kind == "not_null":
        return f"NULL in required column(s) {cols}"
    return f"duplicate of an earlier row on ({cols})"


def _count(conn: psycopg.Connection, table: str) -> int:
    (n,) = conn.execute(
        sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(*split_name(table)))
    ).fetchone() or (0,)
    return int(n)


def move_rule_violations(ctx: Any, conn: psycopg.Connection, rule: IntegrityRule) -> int:
    """Quarantine the rows breaking ``rule`` (or, in a dry run, count and sample them)."""
    schema, table = split_name(rule.table)
    src = sql.Identifier(schema, table)
    cond = violation_condition(rule)
    key = rule.key or rule.columns
    if ctx.dry_run:
        (n,) = conn.execute(
            sql.SQL("SELECT count(*) FROM {} AS c WHERE {}").format(src, cond)
        ).fetchone() or (0,)
        if n:
            sample = conn.execute(
                sql.SQL("SELECT {} FROM {} AS c WHERE {} LIMIT 5").format(
                    sql.SQL(", ").join(sql.SQL("c.{}").format(sql.Identifier(k)) for k in key),
                    src,
                    cond,
                )
            ).fetchall()
            keys = ", ".join("/".join(str(v) for v in r) for r in sample)
            ctx.change(
                f"quarantine {n} rows of {rule.table} ({rule.name}); e.g. {'/'.join(key)} = {keys}"
            )
        return int(n)
    qschema = ctx.config.repairs.quarantine_schema
    qtable = ensure_table(conn, qschema, rule.table)
    cols = [c[0] for c in _columns(conn, rule.table)]
    collist = sql.SQL(", ").join(map(sql.Identifier, cols))
    before = _count(conn, rule.table)
    moved = conn.execute(
        sql.SQL(
            "WITH moved AS (DELETE FROM {src} AS c WHERE {cond} RETURNING c.*)"
            " INSERT INTO {q} ({cols}, rule, reason, trigger) SELECT {cols}, {rule}, {reason}, {trigger} FROM moved"
        ).format(
            src=src,
            cond=cond,
            q=qtable,
            cols=collist,
            rule=sql.Literal(rule.name),
            reason=sql.Literal(_reason(rule)),
            trigger=sql.Literal(ctx.trigger),
        )
    ).rowcount
    after = _count(conn, rule.table)
    if before != after + moved:
        raise WestepError(
            f"{rule.table}: {before} rows before, {after} after, {moved} quarantined: refusing to commit"
        )
    if moved:
        ctx.change(
            f"quarantined {moved} rows of {rule.table} ({rule.name}: {_reason(rule)}) into {qschema}.{quarantine_name(rule.table)}"
        )
    return moved


def list_quarantine(conn: psycopg.Connection, qschema: str) -> list[dict[str, Any]]:
    """Per quarantine table and rule: how many rows, oldest and newest."""
    tables = conn.execute(
        "SELECT c.relname, obj_description(c.oid) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relkind = 'r' ORDER BY 1",
        (qschema,),
    ).fetchall()
    out = []
    for relname, comment in tables:
        source = (comment or "").removeprefix("westep-ops quarantine of ") or relname.replace(
            "__", ".", 1
        )
        for rule, n, first, last in conn.execute(
            sql.SQL(
                "SELECT rule, count(*), min(quarantined_at), max(quarantined_at) FROM {} GROUP BY rule ORDER BY rule"
            ).format(sql.Identifier(qschema, relname))
        ):
            out.append(
                {
                    "table": source,
                    "rule": rule,
                    "rows": n,
                    "first": first,
                    "last": last,
                    "quarantine_table": f"{qschema}.{relname}",
                }
            )
    return out


def restore(
    conn: psycopg.Connection,
    qschema: str,
    table: str,
    *,
    rule: str | None = None,
    ids: list[int] | None = None,
    dry_run: bool = False,
) -> int:
    """Put quarantined rows of ``table`` back, exactly as they were; returns how many."""
    qname = quarantine_name(table)
    if not conn.execute("SELECT to_regclass(%s)", (f"{qschema}.{qname}",)).fetchone()[0]:  # type: ignore[index]
        raise WestepError(f"no quarantine for {table} in schema {qschema}")
    src_cols = _columns(conn, table)
    # Generated columns are recomputed by the server; identity values go back as they were.
    insertable = [c for c, _t, flag in src_cols if "s" not in flag]
    collist = sql.SQL(", ").join(map(sql.Identifier, insertable))
    conds = [sql.SQL("true")]
    if rule:
        conds.append(sql.SQL("rule = {}").format(sql.Literal(rule)))
    if ids:
        conds.append(sql.SQL("quarantine_id = ANY({})").format(sql.Literal(ids)))
    where = sql.SQL(" AND ").join(conds)
    q = sql.Identifier(qschema, qname)
    if dry_run:
        (n,) = conn.execute(
            sql.SQL("SELECT count(*) FROM {} WHERE {}").format(q, where)
        ).fetchone() or (0,)
        return int(n)
    try:
        n = conn.execute(
            sql.SQL(
                "WITH back AS (DELETE FROM {q} WHERE {where} RETURNING {cols})"
                " INSERT INTO {src} ({cols}) OVERRIDING SYSTEM VALUE SELECT {cols} FROM back"
            ).format(q=q, where=where, cols=collist, src=sql.Identifier(*split_name(table)))
        ).rowcount
    except psycopg.errors.UniqueViolation as e:
        conn.rollback()
        raise WestepError(
            f"cannot restore into {table}: a row with the same key is back already ({e.diag.message_detail})"
        ) from None
    return n
