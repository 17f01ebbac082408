"""``westep-ops config init``: a starting config written from what the target has now.

A config written from the README alone guesses (and a wrong guess pages someone: the old
default role ``authenticator`` gave a false H6 CRITICAL on a stack without PostgREST).
This module asks the target instead, read-only, with the monitor's own DIRECT_URL:

- the tables of the exposed schemas become ``criticalTables``, each with the roles that
  can read it now, and its RLS state (``rls``);
- the API roles' current table grants become the declared ``grants`` (R3 re-applies
  exactly these);
- columns named ``<x>_id`` with no foreign key, whose referenced table exists (``x``,
  ``xs``, ``xes``, ``xies``; its ``id`` of the same type), become ``orphans`` rules;
  columns covered by a declared foreign key need none;
- the realtime publication and its tables become ``realtime``;
- Supabase (schema ``auth`` and the API roles present) gets an ``auth`` section; plain
  PostgreSQL gets none, so H6 says "not configured";
- endpoints only for URLs the environment has, and only those that answer 200 now.

What is written is validated with the same model as every config, so it always loads.

One module over 400 lines on purpose: one read-only discovery pass, each config
section's query and its translation into config side by side, in the order the list
above gives.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import psycopg

from westep_ops.config import (
    _IDENT,
    Config,
    parse_config,
    qualified_name,
    quote_part,
    read_json_file,
    split_name,
)
from westep_ops.db import admin_show, connect, describe_error, dict_rows
from westep_ops.environment import Environment
from westep_ops.errors import WestepError

API_ROLES = ("anon", "authenticated", "service_role")
PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
PUBLICATION = "supabase_realtime"
MAX_REST_PROBES = 10  # tables tried for a REST endpoint that answers (each bounded)

TABLES_SQL = """
SELECT n.nspname AS schema, c.relname AS name, c.relrowsecurity AS rls, c.oid
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = ANY(%(schemas)s) AND c.relkind IN ('r', 'p') AND NOT c.relispartition
ORDER BY 1, 2
"""

# Direct grants (aclexplode of relacl), what R3 can re-apply; roles by name.
GRANTS_SQL = """
SELECT c.oid, r.rolname AS role, a.privilege_type AS privilege
FROM pg_class c, aclexplode(c.relacl) AS a
JOIN pg_roles r ON r.oid = a.grantee
WHERE c.oid = ANY(%(oids)s) AND r.rolname = ANY(%(roles)s)
ORDER BY 1, 2, 3
"""

READERS_SQL = """
SELECT c.oid, r.rolname AS role
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace, pg_roles r
WHERE c.oid = ANY(%(oids)s) AND r.rolname = ANY(%(roles)s)
  AND has_table_privilege(r.oid, c.oid, 'SELECT') AND has_schema_privilege(r.oid, n.oid, 'USAGE')
ORDER BY 1, 2
"""

# Roles other than the owner that hold grants on these tables (plain PostgreSQL: the app's).
GRANTEES_SQL = """
SELECT DISTINCT r.rolname
FROM pg_class c, aclexplode(c.relacl) AS a
JOIN pg_roles r ON r.oid = a.grantee
WHERE c.oid = ANY(%(oids)s) AND a.grantee <> c.relowner AND NOT r.rolsuper
  AND r.rolname <> session_user AND r.rolname NOT LIKE 'pg\\_%%'
ORDER BY 1
"""

# <x>_id (and Prisma's <x>Id) columns not covered by any foreign key of their table.
CANDIDATES_SQL = """
SELECT c.oid, n.nspname AS schema, c.relname AS name, a.attname AS column, a.atttypid AS type,
       ARRAY(SELECT k.attname::text FROM pg_index i
             JOIN pg_attribute k ON k.attrelid = i.indrelid AND k.attnum = ANY(i.indkey)
             WHERE i.indrelid = c.oid AND i.indisprimary ORDER BY k.attnum) AS pkey
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE c.oid = ANY(%(oids)s) AND a.attname ~ '^([a-z0-9_]+_id|[a-z][A-Za-z0-9]*[a-z0-9]Id)$'
  AND NOT EXISTS (SELECT 1 FROM pg_constraint k
                  WHERE k.conrelid = c.oid AND k.contype = 'f' AND a.attnum = ANY(k.conkey))
ORDER BY 2, 3, a.attnum
"""

# Possible referenced tables: schema.name with an "id" column, and its type.
TARGETS_SQL = """
SELECT n.nspname AS schema, c.relname AS name, a.atttypid AS type,
       has_table_privilege(c.oid, 'SELECT') AND has_schema_privilege(n.oid, 'USAGE') AS readable
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'id' AND NOT a.attisdropped
WHERE n.nspname = ANY(%(schemas)s) AND c.relkind IN ('r', 'p')
"""

PUBLICATIONS_SQL = """
SELECT p.pubname,
       coalesce((SELECT json_agg(json_build_array(t.schemaname, t.tablename)
                          ORDER BY t.schemaname, t.tablename)
                 FROM pg_publication_tables t WHERE t.pubname = p.pubname), '[]') AS tables
FROM pg_publication p ORDER BY 1
"""

TARGET_SQL = """
SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'auth') AS auth_schema,
       EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = 'auth' AND c.relname = 'users') AS auth_users,
       ARRAY(SELECT rolname::text FROM pg_roles WHERE rolname = ANY(%(api)s) ORDER BY 1) AS api_roles,
       EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticator') AS authenticator,
       current_setting('server_version') AS version, current_database() AS database
"""


@dataclass
class Discovery:
    """What config init found, and the notes it prints about it."""

    config: dict[str, Any]
    flavour: str  # "supabase" or "postgresql"
    notes: list[str] = field(default_factory=list)

    def summary(self) -> list[str]:
        c = self.config
        rt = c.get("realtime")
        lines = [
            f"target: {self.flavour}",
            f"{len(c.get('criticalTables', []))} critical tables, {len(c.get('grants', []))} "
            f"grants, {len(c.get('integrityRules', []))} integrity rules (orphans), "
            f"{len(c.get('endpoints', []))} endpoints",
            f"realtime: {rt['publication']} with {len(rt['tables'])} tables"
            if rt
            else "realtime: not configured (no publication on the target)",
            "auth: schema auth, roles " + ", ".join(c["auth"]["roles"])
            if "auth" in c
            else "auth: not configured (plain PostgreSQL: no auth schema or API roles)",
        ]
        return lines + self.notes


def _plural_candidates(stem: str) -> list[str]:
    out = [stem, stem + "s", stem + "es"]
    if stem.endswith("y"):
        out.append(stem[:-1] + "ies")
    return out


def _rule_name(table: str, column: str) -> str:
    # A plain identifier whatever the table is called ("step log" -> step_log_...).
    name = re.sub(r"[^A-Za-z0-9_$]", "_", f"{table}_{column}_orphans")
    name = name if _IDENT.match(name[:1] or "x") else "r_" + name
    return name[:63]


def discover(
    conn: psycopg.Connection,
    env: Environment,
    schemas: list[str],
    http: httpx.Client | None = None,
) -> Discovery:
    """Read the target (read-only) and build the starting config as JSON-ready data."""
    (target,) = dict_rows(conn, TARGET_SQL, {"api": list(API_ROLES)})
    supabase = target["auth_schema"] and set(target["api_roles"]) == set(API_ROLES)
    flavour = "supabase" if supabase else "postgresql"
    notes: list[str] = []
    tables = dict_rows(conn, TABLES_SQL, {"schemas": schemas})
    # Exact catalog names, quoted where the config needs it (public."step log"); mixed
    # case such as Prisma's public.Step is exact as it is.
    qualified = {t["oid"]: qualified_name(t["schema"], t["name"]) for t in tables}
    plain = tables
    oids = [t["oid"] for t in plain]
    if supabase:
        roles = list(API_ROLES)
    else:
        roles = [r for (r,) in conn.execute(GRANTEES_SQL, {"oids": oids}).fetchall()]
        roles = [r for r in roles if _IDENT.match(r)]
    readers: dict[int, list[str]] = {}
    for row in dict_rows(conn, READERS_SQL, {"oids": oids, "roles": roles}):
        readers.setdefault(row["oid"], []).append(row["role"])
    grants: dict[tuple[int, str], list[str]] = {}
    for row in dict_rows(conn, GRANTS_SQL, {"oids": oids, "roles": roles}):
        if row["privilege"] in PRIVILEGES:
            grants.setdefault((row["oid"], row["role"]), []).append(row["privilege"])

    config: dict[str, Any] = {}
    if env.database_url:
        db = urlsplit(env.database_url).path.lstrip("/")
        if db and _IDENT.match(db):
            config["databaseName"] = db  # pgbouncer's name for the pool
    critical = []
    for t in plain:
        entry: dict[str, Any] = {"table": qualified[t["oid"]]}
        if readers.get(t["oid"]):
            entry["roles"] = readers[t["oid"]]
            entry["rls"] = bool(t["rls"])
            critical.append(entry)
        else:
            notes.append(f"{qualified[t['oid']]}: no role of {roles or '(none)'} can read it now")
    config["criticalTables"] = critical
    config["grants"] = [
        {"table": qualified[oid], "role": role, "privileges": [p for p in PRIVILEGES if p in privs]}
        for (oid, role), privs in sorted(
            grants.items(), key=lambda kv: (qualified[kv[0][0]], kv[0][1])
        )
    ]
    config["integrityRules"] = _orphan_rules(conn, oids, schemas, supabase, notes)
    config["endpoints"] = _endpoints(env, critical, readers, http, notes)

    pubs = {
        p["pubname"]: [qualified_name(s, n) for s, n in p["tables"]]
        for p in dict_rows(conn, PUBLICATIONS_SQL)
    }
    pub = PUBLICATION if PUBLICATION in pubs else (next(iter(pubs)) if len(pubs) == 1 else None)
    if pub is not None and _IDENT.match(pub):
        config["realtime"] = {"publication": pub, "tables": pubs[pub]}
    elif len(pubs) > 1:
        notes.append(f"realtime: several publications ({', '.join(pubs)}), none chosen")
    pool = _pool(conn, env, config.get("databaseName") or target["database"], notes)
    if pool:
        config["pool"] = pool
    if supabase:
        auth_roles = list(API_ROLES) + (["authenticator"] if target["authenticator"] else [])
        config["auth"] = {
            "schema": "auth",
            "tables": ["auth.users"] if target["auth_users"] else [],
            "roles": auth_roles,
            "apiRoles": list(API_ROLES),
        }
    return Discovery(config, flavour, notes)


# Server sessions of the app's pooler, told apart by their application_name.
POOLER_SQL = """
SELECT DISTINCT usename::text AS login FROM pg_stat_activity
WHERE usename IS NOT NULL AND usename <> session_user AND pid <> pg_backend_pid()
  AND (application_name ILIKE '%supavisor%' OR application_name ILIKE '%pgbouncer%')
ORDER BY 1
"""


def _pool(
    conn: psycopg.Connection, env: Environment, database: str, notes: list[str]
) -> dict[str, Any]:
    """pool.appUsers and pool.size, for H2 without an admin console: the logins of the
    pooler's server sessions (by application_name, and pgbouncer's SHOW SERVERS when
    its console is configured), never the monitor's own."""
    logins = {r["login"] for r in dict_rows(conn, POOLER_SQL)}
    size = None
    mine = {conn.info.user}
    try:
        if env.database_url:
            mine.add(str(psycopg.conninfo.conninfo_to_dict(env.database_url).get("user")))
    except psycopg.ProgrammingError:
        pass
    if env.pgbouncer_admin_url:
        try:
            with connect(env.pgbouncer_admin_url, admin_console=True) as admin:
                servers = admin_show(admin, "servers")
                dbs = admin_show(admin, "databases")
            logins |= {r["user"] for r in servers if r.get("database") == database}
            size = next((int(d["pool_size"]) for d in dbs if d.get("name") == database), None)
        except psycopg.Error as e:
            notes.append(f"pool: pgbouncer admin console not read: {describe_error(e)}")
    logins = {u for u in logins - mine if _IDENT.match(u)}
    if not logins:
        notes.append(
            "pool: no pooler server sessions seen: set pool.appUsers and pool.size by hand"
            " (H2 says 'app pool not watched' until then, unless PGBOUNCER_ADMIN_URL or"
            " WESTEP_OPS_METRICS_URL is set)"
        )
        return {}
    out: dict[str, Any] = {"appUsers": sorted(logins)}
    if size:
        out["size"] = size
    else:
        notes.append("pool: set pool.size to the pooler's pool size per login")
    return out


def _orphan_rules(
    conn: psycopg.Connection,
    oids: list[int],
    schemas: list[str],
    supabase: bool,
    notes: list[str],
) -> list[dict[str, Any]]:
    search = list(dict.fromkeys([*schemas, *(["auth"] if supabase else [])]))
    targets = {
        (t["schema"], t["name"]): t for t in dict_rows(conn, TARGETS_SQL, {"schemas": search})
    }
    rules: list[dict[str, Any]] = []
    for c in dict_rows(conn, CANDIDATES_SQL, {"oids": oids}):
        col = c["column"]
        stem = col[: -len("_id")] if col.endswith("_id") else col[: -len("Id")]
        # Prisma names models in PascalCase: stepId -> public."Step"
        names = _plural_candidates(stem)
        names += [n[:1].upper() + n[1:] for n in names]
        # The same schema first, then the other exposed ones, then auth (user_id -> auth.users).
        order = [c["schema"], *(s for s in search if s != c["schema"])]
        ref = next(
            (
                targets[(s, n)]
                for s in order
                for n in names
                if (s, n) in targets and (s, n) != (c["schema"], c["name"])
            ),
            None,
        )
        if ref is None:
            continue
        where = f"{c['schema']}.{c['name']}.{c['column']}"
        refname = qualified_name(ref["schema"], ref["name"])
        if ref["type"] != c["type"]:
            notes.append(f"{where}: not checked against {refname}.id (different types)")
            continue
        if not ref["readable"]:
            notes.append(
                f"{where}: not checked against {refname}.id (the monitoring login cannot read it)"
            )
            continue
        rule = {
            "name": _rule_name(c["name"], c["column"]),
            "kind": "orphans",
            "table": qualified_name(c["schema"], c["name"]),
            "columns": [quote_part(c["column"])],
            "references": refname,
            "referencedColumns": ["id"],
        }
        if c["pkey"]:
            rule["key"] = [quote_part(k) for k in c["pkey"]]  # diagnosis samples by key
        rules.append(rule)
    return rules


def _endpoints(
    env: Environment,
    critical: list[dict[str, Any]],
    readers: dict[int, list[str]],
    http: httpx.Client | None,
    notes: list[str],
) -> list[dict[str, Any]]:
    """Endpoints for the URLs the environment has, kept only if they answer 200 now."""
    if http is None:
        return []
    out: list[dict[str, Any]] = []
    if env.app_url:
        url = env.app_url.rstrip("/") + "/api/health"
        if _answers(http, url, {}):
            out.append({"name": "api_health", "base": "app", "path": "/api/health"})
        else:
            notes.append(
                "WESTEP_OPS_APP_URL is set but /api/health does not answer 200: no app endpoint"
            )
    if env.supabase_url:
        # As H7 probes it: the anon key (the client's view, grants and RLS apply), as
        # supabase-js sends it; the service role only when there is no anon key.
        key = env.anon_key or env.service_role_key
        headers = {"apikey": key, "Authorization": f"Bearer {key}"} if key else {}
        anon_tables = [t["table"] for t in critical if "anon" in t["roles"]]
        for table in anon_tables[:MAX_REST_PROBES]:
            schema, name = split_name(table)
            if schema != "public":
                continue
            path = f"/rest/v1/{quote(name, safe='')}?limit=1"
            if _answers(http, env.supabase_url.rstrip("/") + path, headers):
                out.append(
                    {
                        "name": re.sub(r"[^A-Za-z0-9_$]", "_", f"rest_{name}")[:63],
                        "base": "supabase",
                        "path": path,
                    }
                )
                break
        else:
            notes.append("no REST endpoint answered 200 for a table anon reads: none configured")
    return out


def _answers(http: httpx.Client, url: str, headers: dict[str, str]) -> bool:
    try:
        return http.get(url, headers=headers).status_code == 200
    except httpx.HTTPError:
        return False


def init_config(
    env: Environment,
    output: Path,
    *,
    force: bool = False,
    schemas: list[str] | None = None,
    timeouts: Any = None,
) -> Discovery:
    """Connect read-only with DIRECT_URL, discover, validate and write ``output``.

    Refuses (exit 2) to overwrite an existing file unless ``force``.
    """
    if output.exists() and not force:
        raise WestepError(f"{output} already exists (use --force to overwrite it)")
    found = discover_target(env, schemas, timeouts)
    _write(output, json.dumps(found.config, indent=2) + "\n", force)
    return found


def init_target(
    config_file: Path,
    name: str,
    environ: Mapping[str, str],
    *,
    schemas: list[str] | None = None,
) -> Discovery:
    """``config init --target NAME``: discover with that target's own variables and write
    the sections found into its ``overrides`` in ``config_file`` (sections it already
    overrides and the discovery does not produce are kept; the rest of the file is kept
    as data, re-indented). The target must already be in the file with its ``env`` or
    ``secretsFile``: that is where its connection strings come from."""
    from westep_ops.targets import resolve_target

    data = read_json_file(config_file)
    config = parse_config(data, str(config_file))
    assert isinstance(data, dict)  # parse_config refused anything else
    entries = data.get("targets") or []
    entry = next((t for t in entries if isinstance(t, dict) and t.get("name") == name), None)
    spec = next((t for t in config.targets if t.name == name), None)
    if entry is None or spec is None:
        raise WestepError(
            f"target {name} is not in {config_file}: add"
            f' {{"name": "{name}", "env": {{"DIRECT_URL": "<VARIABLE NAME>", ...}}}}'
            " to its targets first (the config names where the connection strings are)"
        )
    target = resolve_target(config, spec, environ, config_file.resolve().parent)
    if target.environment.direct_url is None:
        source = target.sources["DIRECT_URL"].describe()
        raise WestepError(f"target {name}: DIRECT_URL is not set (from {source})")
    found = discover_target(target.environment, schemas, target.config.monitoring.timeouts)
    entry["overrides"] = {**(entry.get("overrides") or {}), **found.config}
    parse_config(data, f"{config_file} with the discovered sections")  # what is written loads
    _write(config_file, json.dumps(data, indent=2) + "\n", True)
    return found


def discover_target(env: Environment, schemas: list[str] | None, timeouts: Any) -> Discovery:
    """Connect read-only with the environment's DIRECT_URL and discover a config (validated)."""
    dsn = env.require("direct_url")
    t = timeouts or Config().monitoring.timeouts
    try:
        conn = connect(
            dsn,
            connect_timeout_ms=t.connect,
            statement_timeout_ms=t.statement,
            lock_timeout_ms=t.lock,
            autocommit=False,
            application_name="westep-ops-config-init",
        )
    except psycopg.Error as e:
        raise WestepError(f"cannot connect with DIRECT_URL: {describe_error(e)}", 1) from None
    try:
        conn.read_only = True  # every transaction of this connection is READ ONLY
        with httpx.Client(timeout=t.http / 1000, follow_redirects=False, trust_env=False) as http:
            found = discover(conn, env, schemas or ["public"], http)
        conn.rollback()
    except psycopg.Error as e:
        raise WestepError(f"could not read the target: {describe_error(e)}", 1) from None
    finally:
        conn.close()
    parse_config(found.config, "the discovered config")  # what is written always loads
    return found


def _write(path: Path, text: str, force: bool) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        if force:
            tmp.replace(path)
        else:
            try:
                os.link(tmp, path)  # fails if the file appeared meanwhile: never overwrite
            except FileExistsError:
                raise WestepError(f"{path} already exists (use --force to overwrite it)") from None
    except OSError as e:
        raise WestepError(f"cannot write {path}: {e.strerror or type(e).__name__}") from None
    finally:
        tmp.unlink(missing_ok=True)
