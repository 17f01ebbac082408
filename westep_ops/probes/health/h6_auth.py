"""H6: auth schema, tables and roles in the database; the auth service's health endpoint.

Declares one catalog query for round trip 1; the endpoint is probed in the sweep's HTTP
lane (:func:`auth_endpoint`) and handed to the verdict.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from westep_ops.config import Auth, Category
from westep_ops.probes.base import CheckResult, Status, timed_result
from westep_ops.probes.health.batch import Answers
from westep_ops.probes.health.common import DB_FAILURES, names_params, not_configured, reason
from westep_ops.probes.health.h7_api import http_probe, url
from westep_ops.probes.health.query import Query
from westep_ops.probes.session import ProbeSession

# Tables are matched in pg_namespace/pg_class (to_regclass raises without USAGE on auth).
AUTH_SQL = """
SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = %(schema)s) AS schema_exists,
       ARRAY(SELECT x.s || '.' || x.t FROM unnest(%(tschemas)s::text[], %(tnames)s::text[]) AS x(s, t)
             WHERE NOT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                               WHERE n.nspname = x.s AND c.relname = x.t)) AS missing_tables,
       ARRAY(SELECT r FROM unnest(%(roles)s::text[]) AS r
             WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r)) AS missing_roles,
       ARRAY(SELECT r FROM unnest(%(api)s::text[]) AS r
             WHERE EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r)
               AND EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = %(schema)s)
               AND NOT has_schema_privilege(r, %(schema)s, 'USAGE')) AS no_usage,
       ARRAY(SELECT r FROM unnest(%(api)s::text[]) AS r
             WHERE EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r)
               AND EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticator')
               AND NOT pg_has_role('authenticator', r, 'MEMBER')) AS not_switchable
"""


def _auth_params(a: Auth) -> dict[str, Any]:
    schemas, names = names_params(a.tables)
    return {
        "schema": a.schema_name,
        "tschemas": schemas,
        "tnames": names,
        "roles": a.roles,
        "api": a.api_roles,
    }


# column of AUTH_SQL -> what its non-empty list means, and the finding it raises
AUTH_PROBLEMS = (
    ("missing_tables", "missing tables", "auth_table_missing"),
    ("missing_roles", "missing roles", "auth_role_missing"),
    ("no_usage", "no USAGE on {schema}", "auth_usage_missing"),
    ("not_switchable", "authenticator cannot switch to", "auth_membership_missing"),
)


def auth_endpoint(session: ProbeSession) -> dict[str, Any] | str:
    """The auth service's health endpoint (the HTTP part of H6)."""
    if not session.env.supabase_url:
        return "not checked (NEXT_PUBLIC_SUPABASE_URL not set)"
    path = session.config.auth.health_path
    return http_probe(session, "auth_health", url(session, "supabase", path), 200, None)


@dataclass
class Needs:
    """H6's query this sweep: the auth schema's catalog (round trip 1)."""

    catalog: Query

    def first(self) -> list[Query]:
        return [self.catalog]

    def second(self, answers: Answers) -> list[Query]:
        return []


def needs(session: ProbeSession, heavy: bool = True) -> Needs:
    return Needs(Query(Category.auth, "auth catalog", AUTH_SQL, _auth_params(session.config.auth)))


def check_auth(
    session: ProbeSession, need: Needs, answers: Answers, ep: dict[str, Any] | str
) -> CheckResult:
    """H6's verdict from the catalog's answer and the endpoint ``ep`` (probed in the HTTP lane)."""
    a = session.config.auth
    res = CheckResult(Category.auth)
    with timed_result(res):
        try:
            (row,) = answers.rows(need.catalog)
            if not row["schema_exists"] and not a.required:
                res.values["schema_exists"] = False
                if not (isinstance(ep, dict) and not ep["ok"]):
                    return not_configured(
                        res,
                        f"no auth section in the config and no schema {a.schema_name} on the "
                        "target",
                    )
                row = {}  # only the endpoint (it is configured and failing) is judged below
            res.values.update(row)
            if row and not row["schema_exists"]:
                res.problem(
                    Status.critical, f"schema {a.schema_name} does not exist", "auth_schema_missing"
                )
            for key, text, finding in AUTH_PROBLEMS if row else ():
                if row[key]:
                    what = text.format(schema=a.schema_name)
                    res.problem(Status.critical, f"{what}: {', '.join(row[key])}", finding)
        except DB_FAILURES as e:
            res.problem(Status.error, f"could not check the auth schema: {reason(e)}")
        res.values["health_endpoint"] = ep
        if isinstance(ep, dict) and not ep["ok"]:
            res.problem(
                Status.critical, f"auth health endpoint: {ep['error']}", "auth_endpoint_down"
            )
        ms = ep["ms"] if isinstance(ep, dict) else "-"
        res.finish(
            f"schema, {len(a.tables)} tables and {len(a.roles)} roles present; endpoint {ms} ms"
        )
    return res
