"""Quarantine: rows removed by data cleaning are kept, with when and why, and can go back.

The quarantine lives in the monitored database (schema ``westep_quarantine`` by default,
never ``public``, whose event triggers react to DDL), one table per source table with the
source's columns followed by ``quarantine_id``, ``quarantined_at``, ``rule``, ``reason``
and ``trigger``; its comment names the source, so ``public."Step"`` and ``public.step``
never share one. Names are looked up as identifiers in the catalogs, never through
``to_regclass(text)`` (which folds case).

A ``DELETE`` does more than remove rows: ``ON DELETE CASCADE``/``SET NULL``/``SET DEFAULT``
change other tables, ``NO ACTION``/``RESTRICT`` make it fail, and DELETE triggers and rules
run arbitrary code. So before moving, every referencing foreign key is counted against
the rows to move, and DELETE triggers and rules are looked up: if anything would fire,
nothing moves and the refusal names what would have cascaded. A move is one
``WITH moved AS (DELETE ... RETURNING *) INSERT ...`` statement in one REPEATABLE READ
transaction, with row fingerprints (md5 over the rows) of the table, of the moved rows
and of every referencing table compared before and after: any mismatch rolls back.

One module over 400 lines on purpose: the move, its refusal checks (delete side effects,
row fingerprints), the listing and the restore all work on the one quarantine table
layout described above, and the safety argument reads in one file.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from westep_ops.config import IntegrityRule, qualified_name, split_name
from westep_ops.errors import WestepError
from westep_ops.integrity import violation_condition

EXTRA_COLUMNS = ("quarantine_id", "quarantined_at", "rule", "reason", "trigger")
COMMENT_PREFIX = "westep-ops quarantine of "

# pg_constraint.confdeltype
_ON_DELETE = {
    "a": "NO ACTION",
    "r": "RESTRICT",
    "c": "CASCADE",
    "n": "SET NULL",
    "d": "SET DEFAULT",
}


class MoveRefused(Exception):
    """Moving the rows would change or fail on something else: nothing was moved."""


@dataclass
class MoveOutcome:
    rule: str
    count: int  # rows breaking the rule
    moved: int  # rows moved (0 in a dry run or when refused)
    refused: str | None = None


def quarantine_name(table: str) -> str:
    """``public.step_logs`` -> ``public__step_logs`` (exact case; hashed when too long)."""
    schema, name = split_name(table)
    full = f"{schema}__{name}"
    if len(full.encode()) <= 63:
        return full
    digest = hashlib.md5(full.encode()).hexdigest()[:8]
    return full.encode()[:54].decode(errors="ignore") + "_" + digest


def _oid(conn: psycopg.Connection, schema: str, name: str) -> int | None:
    row = conn.execute(
        "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')",
        (schema, name),
    ).fetchone()
    return int(row[0]) if row else None


def _columns(conn: psycopg.Connection, schema: str, name: str) -> list[tuple[str, str, str]]:
    """(name, type, generated/identity flag) of the table's live columns, in order."""
    oid = _oid(conn, schema, name)
    if oid is None:
        raise WestepError(f"table {qualified_name(schema, name)} does not exist")
    rows = conn.execute(
        "SELECT attname::text, format_type(atttypid, atttypmod), attgenerated::text || attidentity::text"
        " FROM pg_attribute WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped"
        " ORDER BY attnum",
        (oid,),
    ).fetchall()
    return [tuple(r) for r in rows]


def _quarantine_source(conn: psycopg.Connection, qschema: str, qname: str) -> str | None:
    """The source table a quarantine table belongs to (from its comment), or None."""
    oid = _oid(conn, qschema, qname)
    if oid is None:
        return None
    (comment,) = conn.execute("SELECT obj_description(%s, 'pg_class')", (oid,)).fetchone() or (
        None,
    )
    return (comment or "").removeprefix(COMMENT_PREFIX) or None


def ensure_table(conn: psycopg.Connection, qschema: str, table: str) -> sql.Composed:
    """Create (or extend with new source columns) the quarantine table for ``table``."""
    schema, name = split_name(table)
    qname = quarantine_name(table)
    qtable = sql.Identifier(qschema, qname)
    source = _quarantine_source(conn, qschema, qname)
    if source is not None and split_name(source) != (schema, name):
        raise WestepError(
            f"{qschema}.{qname} already keeps rows of {source}, not {table}: refusing to mix them"
        )
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
            qtable, sql.Literal(COMMENT_PREFIX + qualified_name(schema, name))
        )
    )
    have = {c[0] for c in _columns(conn, qschema, qname)}
    for col, typ, _flag in _columns(conn, schema, name):
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
    order = ", ".join(rule.order_by or [])
    return f"duplicate of an older row on ({cols}), the first by ({order}) is kept"


FKS_SQL = """
SELECT con.conname::text, rn.nspname::text, rc.relname::text, con.confdeltype::text,
       ARRAY(SELECT a.attname::text FROM unnest(con.conkey) WITH ORDINALITY AS k(n, i)
             JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n ORDER BY k.i),
       ARRAY(SELECT a.attname::text FROM unnest(con.confkey) WITH ORDINALITY AS k(n, i)
             JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.n ORDER BY k.i)
FROM pg_constraint con
JOIN pg_class rc ON rc.oid = con.conrelid
JOIN pg_namespace rn ON rn.oid = rc.relnamespace
WHERE con.contype = 'f' AND con.confrelid = %s AND con.conparentid = 0
ORDER BY 2, 3, 1
"""

# User triggers firing on DELETE (tgtype bit 3), unless disabled; and DELETE rules.
DELETE_HOOKS_SQL = """
SELECT 'trigger ' || tgname FROM pg_trigger
WHERE tgrelid = %(oid)s AND NOT tgisinternal AND tgenabled <> 'D' AND (tgtype::int & 8) <> 0
UNION ALL
SELECT 'rule ' || rulename FROM pg_rewrite
WHERE ev_class = %(oid)s AND ev_type = '4' AND ev_enabled <> 'D'
ORDER BY 1
"""


@dataclass
class _ForeignKey:
    name: str
    schema: str
    table: str
    on_delete: str
    columns: list[str]
    ref_columns: list[str]

    @property
    def qualified(self) -> str:
        return qualified_name(self.schema, self.table)


def delete_side_effects(
    conn: psycopg.Connection, rule: IntegrityRule
) -> tuple[list[str], list[_ForeignKey]]:
    """What deleting the rows breaking ``rule`` would also do, and the referencing keys.

    Every referencing foreign key is counted against the rows to move: one with no
    referencing row does nothing (its table is still fingerprinted around the move).
    """
    schema, table = split_name(rule.table)
    oid = _oid(conn, schema, table)
    if oid is None:
        raise WestepError(f"table {rule.table} does not exist")
    src = sql.Identifier(schema, table)
    cond = violation_condition(rule)
    effects: list[str] = []
    fks = [_ForeignKey(*r) for r in conn.execute(FKS_SQL, (oid,)).fetchall()]
    for fk in fks:
        match = sql.SQL(" AND ").join(
            sql.SQL("x.{} = c.{}").format(sql.Identifier(a), sql.Identifier(b))
            for a, b in zip(fk.columns, fk.ref_columns, strict=True)
        )
        (n,) = conn.execute(
            sql.SQL(
                "SELECT count(*) FROM {} AS x WHERE EXISTS (SELECT 1 FROM {} AS c WHERE ({}) AND {})"
            ).format(sql.Identifier(fk.schema, fk.table), src, cond, match)
        ).fetchone() or (0,)
        if not n:
            continue
        what = _ON_DELETE.get(fk.on_delete, fk.on_delete)
        if fk.on_delete == "c":
            text = f"delete {n} rows of {fk.qualified}"
        elif fk.on_delete in ("n", "d"):
            text = f"{what} {', '.join(fk.columns)} in {n} rows of {fk.qualified}"
        else:
            text = f"fail: {n} rows of {fk.qualified} still reference them"
        effects.append(f"{text} (foreign key {fk.name} ON DELETE {what})")
    effects += [
        f"fire {hook} on {rule.table}"
        for (hook,) in conn.execute(DELETE_HOOKS_SQL, {"oid": oid}).fetchall()
    ]
    return effects, fks


def _fingerprint(
    conn: psycopg.Connection,
    table: sql.Composable,
    cols: list[str] | None = None,
    where: sql.Composable | None = None,
) -> tuple[int, str]:
    """(rows, md5 over the rows in a fixed order) of ``table`` (alias ``c``)."""
    row = (
        sql.SQL("ROW({})").format(
            sql.SQL(", ").join(sql.SQL("c.{}").format(sql.Identifier(c)) for c in cols)
        )
        if cols
        else sql.SQL("c")
    )
    got = conn.execute(
        sql.SQL(
            "SELECT count(*), coalesce(md5(string_agg(h, '' ORDER BY h)), '')"
            " FROM (SELECT md5({}::text) AS h FROM {} AS c WHERE {}) AS f"
        ).format(row, table, where or sql.SQL("true"))
    ).fetchone()
    assert got is not None
    return int(got[0]), str(got[1])


def _sample(conn: psycopg.Connection, rule: IntegrityRule) -> str:
    key = rule.key or rule.columns
    rows = conn.execute(
        sql.SQL("SELECT {} FROM {} AS c WHERE {} LIMIT 5").format(
            sql.SQL(", ").join(sql.SQL("c.{}").format(sql.Identifier(k)) for k in key),
            sql.Identifier(*split_name(rule.table)),
            violation_condition(rule),
        )
    ).fetchall()
    return f"{'/'.join(key)} = " + ", ".join("/".join(str(v) for v in r) for r in rows)


def count_violations(conn: psycopg.Connection, rule: IntegrityRule) -> int:
    (n,) = conn.execute(
        sql.SQL("SELECT count(*) FROM {} AS c WHERE {}").format(
            sql.Identifier(*split_name(rule.table)), violation_condition(rule)
        )
    ).fetchone() or (0,)
    return int(n)


def move_rule_violations(ctx: Any, conn: psycopg.Connection, rule: IntegrityRule) -> MoveOutcome:
    """Quarantine the rows breaking ``rule``, or say exactly why not (a dry run checks the
    same and moves nothing). Runs in the caller's transaction; the caller commits."""
    n = count_violations(conn, rule)
    if not n:
        return MoveOutcome(rule.name, 0, 0)
    effects, fks = delete_side_effects(conn, rule)
    if effects:
        why = (
            f"{rule.name}: refused to move {n} rows of {rule.table}: deleting them would "
            + "; ".join(effects)
            + ". Nothing moved: a person must decide what to do with them and their dependents"
        )
        ctx.notes.append(f"{rule.name}: {_sample(conn, rule)}")
        return MoveOutcome(rule.name, n, 0, why)
    qschema = ctx.config.repairs.quarantine_schema
    qname = quarantine_name(rule.table)
    if ctx.dry_run:
        source = _quarantine_source(conn, qschema, qname)
        if source is not None and split_name(source) != split_name(rule.table):
            raise WestepError(
                f"{qschema}.{qname} already keeps rows of {source}, not {rule.table}: refusing to mix them"
            )
        ctx.change(
            f"quarantine {n} rows of {rule.table} ({rule.name}: {_reason(rule)}); e.g. {_sample(conn, rule)}"
        )
        return MoveOutcome(rule.name, n, 0)
    schema, table = split_name(rule.table)
    src = sql.Identifier(schema, table)
    cond = violation_condition(rule)
    cols = [c[0] for c in _columns(conn, schema, table)]
    kept_before = _fingerprint(conn, src, cols, sql.SQL("NOT coalesce(({}), false)").format(cond))
    moving = _fingerprint(conn, src, cols, cond)
    others = {
        (fk.schema, fk.table)
        for fk in fks
        if (fk.schema, fk.table) != (schema, table)  # self-references: the kept rows cover them
    }
    others_before = {t: _fingerprint(conn, sql.Identifier(*t)) for t in sorted(others)}
    qtable = ensure_table(conn, qschema, rule.table)
    collist = sql.SQL(", ").join(map(sql.Identifier, cols))
    ids = [
        r[0]
        for r in conn.execute(
            sql.SQL(
                "WITH moved AS (DELETE FROM {src} AS c WHERE {cond} RETURNING c.*)"
                " INSERT INTO {q} ({cols}, rule, reason, trigger)"
                " SELECT {cols}, {rule}, {reason}, {trigger} FROM moved RETURNING quarantine_id"
            ).format(
                src=src,
                cond=cond,
                q=qtable,
                cols=collist,
                rule=sql.Literal(rule.name),
                reason=sql.Literal(_reason(rule)),
                trigger=sql.Literal(ctx.trigger[:500]),
            )
        ).fetchall()
    ]
    kept_after = _fingerprint(conn, src, cols)
    kept = _fingerprint(
        conn, qtable, cols, sql.SQL("c.quarantine_id = ANY({})").format(sql.Literal(ids))
    )
    mismatches = []
    if kept_after != kept_before:
        mismatches.append(
            f"{rule.table}: the rows left ({kept_after[0]}) are not the rows that should stay ({kept_before[0]})"
        )
    if kept != moving or len(ids) != n:
        mismatches.append(
            f"{len(ids)} rows deleted, {kept[0]} kept in the quarantine, {moving[0]} expected"
        )
    for t, fp in others_before.items():
        after = _fingerprint(conn, sql.Identifier(*t))
        if after != fp:
            mismatches.append(
                f"{qualified_name(*t)} changed during the move ({fp[0]} rows before, {after[0]} after)"
            )
    if mismatches:
        raise MoveRefused(f"{rule.name}: " + "; ".join(mismatches) + ": rolled back")
    ctx.change(
        f"quarantined {len(ids)} rows of {rule.table} ({rule.name}: {_reason(rule)}) into {qschema}.{qname}"
    )
    return MoveOutcome(rule.name, n, len(ids))


def list_quarantine(conn: psycopg.Connection, qschema: str) -> list[dict[str, Any]]:
    """Per quarantine table and rule: how many rows, oldest and newest."""
    tables = conn.execute(
        "SELECT c.relname::text, obj_description(c.oid, 'pg_class') FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relkind = 'r' ORDER BY 1",
        (qschema,),
    ).fetchall()
    out = []
    for relname, comment in tables:
        source = (comment or "").removeprefix(COMMENT_PREFIX) or relname.replace("__", ".", 1)
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
                    "quarantine_table": qualified_name(qschema, relname),
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
    schema, name = split_name(table)
    qname = quarantine_name(table)
    source = _quarantine_source(conn, qschema, qname)
    if source is None or split_name(source) != (schema, name):
        raise WestepError(f"no quarantine for {table} in schema {qschema}")
    src_cols = _columns(conn, schema, name)
    # Generated columns are recomputed by the server; identity values go back as they were.
    insertable = [c for c, _t, flag in src_cols if "s" not in flag]
    collist = sql.SQL(", ").join(map(sql.Identifier, insertable))
    conds: list[sql.Composable] = [sql.SQL("true")]
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
            ).format(q=q, where=where, cols=collist, src=sql.Identifier(schema, name))
        ).rowcount
    except psycopg.errors.UniqueViolation as e:
        conn.rollback()
        raise WestepError(
            f"cannot restore into {table}: a row with the same key is back already ({e.diag.message_detail})"
        ) from None
    except psycopg.errors.IntegrityError as e:  # e.g. the row's parent is gone: nothing restored
        conn.rollback()
        raise WestepError(
            f"cannot restore into {table}: {e.diag.message_primary} ({e.diag.message_detail})"
        ) from None
    return n
