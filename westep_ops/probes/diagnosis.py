"""Diagnosis D1-D4 (the seed's auto-diagnose.ts): deeper than a health check, still read-only.

- D1 connection performance: several connect + ``SELECT 1`` samples, direct vs pooled, and
  pgbouncer's own average wait;
- D2 permissions: declared grants vs what the database grants (a diff), and RLS per table
  (RLS off on a table the API can read is how data leaks);
- D3 integrity: each rule's count with a few sample keys;
- D4 realtime: publication vs declared tables, slots and their lag, replication settings.

Everything runs with the monitor's read-only login. The Markdown report starts with the
verdict; ``--json`` prints the same data.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
from psycopg import sql

from westep_ops.config import Config, split_name
from westep_ops.db import connect
from westep_ops.environment import Environment
from westep_ops.integrity import violation_condition
from westep_ops.probes.base import CheckResult, Status
from westep_ops.probes.health import (
    DB_FAILURES,
    admin_show,
    integrity_rule_sql,
    reason,
    run_health_check,
)
from westep_ops.probes.performance import PerformanceMonitor
from westep_ops.probes.session import ProbeSession
from westep_ops.redact import redact
from westep_ops.store import log_dir

SAMPLES = 5


@dataclass
class Diagnosis:
    at: str
    verdict: str = ""
    problems: list[str] = field(default_factory=list)
    health: list[dict[str, Any]] = field(default_factory=list)
    performance: str = ""
    d1_connection: dict[str, Any] = field(default_factory=dict)
    d2_permissions: dict[str, Any] = field(default_factory=dict)
    d3_integrity: list[dict[str, Any]] = field(default_factory=list)
    d4_realtime: dict[str, Any] = field(default_factory=dict)
    report: str = ""
    target: str | None = None  # the fleet target diagnosed (None: the one target)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _timings(values: list[float]) -> dict[str, float]:
    return {
        "min": round(min(values), 2),
        "p50": round(statistics.median(values), 2),
        "max": round(max(values), 2),
    }


def d1_connection(env: Environment, config: Config, session: ProbeSession) -> dict[str, Any]:
    """Connect + SELECT 1 several times, directly and through the pool, fresh each time."""
    t = config.monitoring.timeouts
    out: dict[str, Any] = {}
    for target, dsn in (("direct", env.direct_url), ("pooled", env.database_url)):
        if not dsn:
            out[target] = {"error": "not configured"}
            continue
        conns, queries, errors = [], [], []
        db = session.admin_shown("databases")
        if (
            target == "pooled"
            and db
            and any(d.get("paused") for d in db if d.get("name") == config.database_name)
        ):
            out[target] = {"error": "pool paused: not sampled (it would only wait)"}
            continue
        for _ in range(SAMPLES):
            t0 = time.perf_counter()
            try:
                with connect(
                    dsn,
                    connect_timeout_ms=t.connect,
                    statement_timeout_ms=t.statement,
                    pooled=target == "pooled",
                    application_name="westep-ops-diagnose",
                ) as c:
                    t1 = time.perf_counter()
                    c.execute("SELECT 1")
                    queries.append((time.perf_counter() - t1) * 1000)
                conns.append((t1 - t0) * 1000)
            except psycopg.Error as e:
                errors.append(reason(e))
        out[target] = {"samples": SAMPLES, "failures": len(errors)}
        if conns:
            out[target].update(connect_ms=_timings(conns), query_ms=_timings(queries))
        if errors:
            out[target]["error"] = errors[0]
    if session.configured("admin"):
        try:
            stats = next(
                (s for s in admin_show(session, "stats") if s["database"] == config.database_name),
                None,
            )
            if stats:
                out["pgbouncer_avg_wait_us"] = stats["avg_wait_time"]
                out["pgbouncer_avg_xact_us"] = stats["avg_xact_time"]
        except DB_FAILURES as e:
            out["pgbouncer_error"] = reason(e)
    return out


def d2_permissions(config: Config, session: ProbeSession) -> dict[str, Any]:
    triples = [(g.table, g.role, p) for g in config.grants for p in g.privileges]
    tables = sorted({g.table for g in config.grants} | {t.table for t in config.critical_tables})
    out: dict[str, Any] = {"declared": len(triples), "missing": [], "rls": []}
    if triples:
        # Names are matched in the catalogs as exact identifiers: to_regclass(text) folds
        # case (public."Step") and raises without USAGE on the schema.
        parts = [split_name(x[0]) for x in triples]
        rows = session.run(
            "direct",
            "SELECT x.t, x.r, x.p, c.oid IS NOT NULL AS table_exists,"
            " EXISTS (SELECT 1 FROM pg_roles WHERE rolname = x.r) AS role_exists,"
            " CASE WHEN c.oid IS NOT NULL AND EXISTS (SELECT 1 FROM pg_roles WHERE rolname = x.r)"
            "      THEN has_table_privilege(x.r, c.oid, x.p) END AS granted"
            " FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[]) AS x(t, s, n, r, p)"
            " LEFT JOIN pg_namespace ns ON ns.nspname = x.s"
            " LEFT JOIN pg_class c ON c.relnamespace = ns.oid AND c.relname = x.n"
            "      AND c.relkind IN ('r', 'p', 'v', 'm', 'f')",
            (
                [x[0] for x in triples],
                [p[0] for p in parts],
                [p[1] for p in parts],
                [x[1] for x in triples],
                [x[2] for x in triples],
            ),
            dicts=True,
        )
        out["missing"] = [
            {
                "table": r["t"],
                "role": r["r"],
                "privilege": r["p"],
                "why": "table missing"
                if not r["table_exists"]
                else "role missing"
                if not r["role_exists"]
                else "not granted",
            }
            for r in rows
            if not r["granted"]
        ]
    if tables:
        out["rls"] = session.run(
            "direct",
            "SELECT t AS table, c.relrowsecurity AS rls, (SELECT count(*) FROM pg_policy WHERE polrelid = c.oid) AS policies,"
            " EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon') AND has_table_privilege('anon', c.oid, 'SELECT') AS anon_can_select"
            " FROM unnest(%s::text[], %s::text[], %s::text[]) AS x(t, s, n)"
            " JOIN pg_namespace ns ON ns.nspname = x.s"
            " JOIN pg_class c ON c.relnamespace = ns.oid AND c.relname = x.n",
            (tables, [split_name(t)[0] for t in tables], [split_name(t)[1] for t in tables]),
            dicts=True,
        )
    return out


def d3_integrity(config: Config, session: ProbeSession) -> list[dict[str, Any]]:
    out = []
    st = int(config.monitoring.timeouts.statement)
    for rule in config.integrity_rules:
        key = rule.key or rule.columns
        entry: dict[str, Any] = {
            "rule": rule.name,
            "kind": rule.kind,
            "table": rule.table,
            "repair": rule.repair,
        }
        try:
            (count,) = session.run("direct", integrity_rule_sql(rule), deadline_ms=st + 1000)[0]
            entry["count"] = int(count)
            if count:
                schema, table = split_name(rule.table)
                rows = session.run(
                    "direct",
                    sql.SQL("SELECT {} FROM {} AS c WHERE {} LIMIT 5").format(
                        sql.SQL(", ").join(sql.SQL("c.{}").format(sql.Identifier(k)) for k in key),
                        sql.Identifier(schema, table),
                        violation_condition(rule),
                    ),
                )
                entry["sample_keys"] = {"/".join(key): ["/".join(str(v) for v in r) for r in rows]}
        except DB_FAILURES as e:
            entry["error"] = reason(e)
        out.append(entry)
    return out


def d4_realtime(config: Config, session: ProbeSession, health: list[CheckResult]) -> dict[str, Any]:
    rt = next((r for r in health if r.category.value == "realtime"), None)
    v = rt.values if rt else {}
    settings = dict(
        session.run(
            "direct",
            "SELECT name, setting FROM pg_settings WHERE name IN ('wal_level', 'max_replication_slots', 'max_wal_senders')",
        )
    )
    return {
        "publication": config.realtime.publication,
        "exists": v.get("publication"),
        "declared_tables": config.realtime.tables,
        "missing_tables": sorted(
            set(config.realtime.tables) - set(v.get("publication_tables") or [])
        ),
        "extra_tables": sorted(
            set(v.get("publication_tables") or []) - set(config.realtime.tables)
        ),
        "slots": v.get("slots", []),
        "notify_ms": v.get("notify_ms"),
        "settings": settings,
    }


def diagnose(env: Environment, config: Config, *, target: str | None = None) -> Diagnosis:
    """D1-D4 and the report file; with ``target`` (a fleet) the file name and the report's
    title carry it: ``diagnosis-report-<target>-YYYY-MM-DD.md``."""
    tz = ZoneInfo(config.timezone)
    now = datetime.now(tz)
    diag = Diagnosis(at=now.isoformat(timespec="seconds"), target=target)
    monitor = PerformanceMonitor()
    with ProbeSession(env, config) as session:
        health = run_health_check(session)
        monitor.sample(session, health)
        diag.health = [
            {"check": r.name, "status": r.status.value, "summary": redact(r.summary)}
            for r in health
        ]
        diag.performance = monitor.summary()
        diag.d1_connection = d1_connection(env, config, session)
        for name, fn in (
            ("d2", lambda: d2_permissions(config, session)),
            ("d3", lambda: d3_integrity(config, session)),
            ("d4", lambda: d4_realtime(config, session, health)),
        ):
            try:
                value = fn()
            except DB_FAILURES as e:
                value = {"error": reason(e)} if name != "d3" else [{"error": reason(e)}]
            setattr(
                diag,
                {"d2": "d2_permissions", "d3": "d3_integrity", "d4": "d4_realtime"}[name],
                value,
            )
    diag.problems = [
        f"{h['check']}: {h['summary']}"
        for h in diag.health
        if h["status"] not in (Status.ok.value, Status.not_configured.value)
    ]
    latest = monitor.latest()
    if latest and latest.problems:
        diag.problems += [f"performance: {p}" for p in latest.problems]
    for m in (
        diag.d2_permissions.get("missing", []) if isinstance(diag.d2_permissions, dict) else []
    ):
        diag.problems.append(
            f"grant missing: {m['privilege']} on {m['table']} to {m['role']} ({m['why']})"
        )
    for t in diag.d2_permissions.get("rls", []) if isinstance(diag.d2_permissions, dict) else []:
        if not t["rls"] and t["anon_can_select"]:
            diag.problems.append(
                f"RLS is off on {t['table']}, which anon can read: every row is public"
            )
    diag.problems = list(dict.fromkeys(diag.problems))
    diag.verdict = (
        "HEALTHY: no problem found"
        if not diag.problems
        else f"{len(diag.problems)} PROBLEM(S) FOUND"
    )
    named = f"{target}-" if target else ""
    path = log_dir() / f"diagnosis-report-{named}{now.strftime('%Y-%m-%d')}.md"
    diag.report = str(path)
    path.write_text(render_markdown(diag), encoding="utf-8")
    return diag


def render_markdown(d: Diagnosis) -> str:
    title = f"# Diagnosis of {d.target} {d.at}" if d.target else f"# Diagnosis {d.at}"
    out = [title, "", f"**Verdict: {d.verdict}**", ""]
    if d.problems:
        out += [f"- {redact(p)}" for p in d.problems] + [""]
    out += ["## Health", "", "| check | status | summary |", "|---|---|---|"]
    out += [f"| {h['check']} | {h['status']} | {h['summary']} |" for h in d.health]
    out += ["", "## Performance", "", d.performance, "", "## D1 connection performance", ""]
    for target in ("direct", "pooled"):
        v = d.d1_connection.get(target, {})
        if "connect_ms" in v:
            out.append(
                f"- {target}: connect p50 {v['connect_ms']['p50']} ms (min {v['connect_ms']['min']}, max "
                f"{v['connect_ms']['max']}), SELECT 1 p50 {v['query_ms']['p50']} ms over {v['samples']} samples"
                + (f", {v['failures']} failed: {v.get('error')}" if v.get("failures") else "")
            )
        else:
            out.append(f"- {target}: {v.get('error', 'not measured')}")
    if "pgbouncer_avg_wait_us" in d.d1_connection:
        out.append(
            f"- pgbouncer average wait for a server: {d.d1_connection['pgbouncer_avg_wait_us']} µs"
        )
    out += ["", "## D2 permissions (declared vs actual)", ""]
    p = d.d2_permissions
    if isinstance(p, dict) and "error" not in p:
        out.append(f"{p['declared']} declared privileges, {len(p['missing'])} missing.")
        out += [
            f"- MISSING {m['privilege']} on {m['table']} to {m['role']} ({m['why']})"
            for m in p["missing"]
        ]
        out += ["", "| table | RLS | policies | anon can SELECT |", "|---|---|---|---|"]
        out += [
            f"| {t['table']} | {'on' if t['rls'] else 'OFF'} | {t['policies']} | {t['anon_can_select']} |"
            for t in p["rls"]
        ]
    else:
        out.append(f"not measured: {p.get('error') if isinstance(p, dict) else p}")
    out += [
        "",
        "## D3 data integrity",
        "",
        "| rule | table | rows | cleaning | sample keys |",
        "|---|---|---|---|---|",
    ]
    for r in d.d3_integrity:
        keys = "; ".join(f"{k} = {', '.join(v)}" for k, v in (r.get("sample_keys") or {}).items())
        out.append(
            f"| {r.get('rule', '-')} | {r.get('table', '-')} | {r.get('count', r.get('error'))}"
            f" | {'quarantine (R5)' if r.get('repair') == 'quarantine' else 'report only'} | {keys or '-'} |"
        )
    out += ["", "## D4 realtime", ""]
    rt = d.d4_realtime
    if "error" in rt:
        out.append(f"not measured: {rt['error']}")
    else:
        out += [
            f"- publication {rt['publication']}: {'present' if rt['exists'] else 'MISSING'}; "
            f"missing tables: {', '.join(rt['missing_tables']) or 'none'}; extra: {', '.join(rt['extra_tables']) or 'none'}",
            f"- slots: {len(rt['slots'])}"
            + "".join(
                f"; {s['name']} ({'active' if s['active'] else 'inactive'}, lag {s.get('lag_bytes')} B)"
                for s in rt["slots"]
            ),
            f"- LISTEN/NOTIFY round trip: {rt['notify_ms']} ms",
            "- settings: " + ", ".join(f"{k}={v}" for k, v in sorted(rt["settings"].items())),
        ]
    return "\n".join(out) + "\n"
