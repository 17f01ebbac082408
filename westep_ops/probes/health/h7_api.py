"""H7: each configured HTTP endpoint answers with the expected status within budget.

Also the HTTP probe H6 uses for the auth service's health endpoint. Runs in the sweep's
HTTP lane, overlapping the database probes; no database query.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from westep_ops.config import Category, Endpoint
from westep_ops.probes.base import MONITOR_MISCONFIGURED, CheckResult, Status, timed_result
from westep_ops.probes.health.common import ms_since, not_configured
from westep_ops.probes.session import ProbeSession
from westep_ops.redact import redact


def url(session: ProbeSession, base: str, path: str) -> str | None:
    root = session.env.api_base if base == "app" else session.env.supabase_url
    return (root.rstrip("/") + path) if root else None


def http_probe(
    session: ProbeSession,
    name: str,
    url: str | None,
    expect: int,
    budget: float | None,
    method: str = "GET",
    base: str = "supabase",
    auth: str | None = None,
) -> dict[str, Any]:
    """One HTTP request, judged by status and latency.

    ``auth`` names the Supabase key to send ("anon", "service_role" or "none"); None
    (the auth health endpoint) sends the anon key, else the service key, to Supabase.
    """
    out: dict[str, Any] = {"name": name, "ok": False, "status": None, "ms": None}
    if not url:
        out["error"] = "not configured (no base URL)"
        out["unconfigured"] = True
        return out
    key, missing = _api_key(session, base, auth)
    if missing:
        out["error"] = f"not configured ({missing} is not set)"
        out["unconfigured"] = True
        return out
    # As supabase-js sends it: the gateway wants the apikey, PostgREST reads the role
    # from the bearer JWT.
    headers = {"apikey": key, "Authorization": f"Bearer {key}"} if key else {}
    out["auth"] = "none" if not key else "anon" if key == session.env.anon_key else "service_role"
    t0 = time.perf_counter()
    try:
        r = session.http().request(method, url, headers=headers)
    except httpx.TimeoutException:
        out.update(ms=ms_since(t0), error=f"timed out after {session.timeouts.http} ms")
        return out
    except httpx.HTTPError as e:
        text = str(e).lower()
        reason = "connection refused" if "refused" in text else type(e).__name__
        out.update(ms=ms_since(t0), error=reason)
        return out
    out.update(status=r.status_code, ms=ms_since(t0))
    if r.status_code != expect:
        out["error"] = f"HTTP {r.status_code} (expected {expect})" + _message(r)
        if key and r.status_code == 401 and _key_rejected(r):
            # The gateway refused the key itself: the monitor's key is wrong, not the API.
            which = (
                "SUPABASE_ANON_KEY" if key == session.env.anon_key else "SUPABASE_SERVICE_ROLE_KEY"
            )
            out["refused"] = f"{which} is not accepted (HTTP 401 Invalid API key)"
            out["unconfigured"] = True  # not a measurement of the API: P2 leaves it out
        return out
    out["ok"] = True
    if budget is not None and out["ms"] > budget:
        out["slow"] = True
    return out


def _api_key(session: ProbeSession, base: str, auth: str | None) -> tuple[str | None, str | None]:
    """(the key to send, or None; the variable that must be set but is not, or None)."""
    env = session.env
    if auth is None:
        return (env.anon_key or env.service_role_key if base == "supabase" else None), None
    if auth == "anon":
        return env.anon_key, (None if env.anon_key else "SUPABASE_ANON_KEY")
    if auth == "service_role":
        return env.service_role_key, (None if env.service_role_key else "SUPABASE_SERVICE_ROLE_KEY")
    return None, None


def _message(r: httpx.Response) -> str:
    """': <message>' from a JSON error body (PostgREST, GoTrue), so the line says why."""
    try:
        body = r.json()
    except ValueError:
        return ""
    message = body.get("message") if isinstance(body, dict) else None
    return f": {redact(' '.join(str(message).split())[:200])}" if message else ""


def _key_rejected(r: httpx.Response) -> bool:
    """Supabase's gateway answers a wrong key with 401 "Invalid API key" (PostgREST's own
    401 for a missing grant carries an SQLSTATE code instead)."""
    try:
        body = r.json()
    except ValueError:
        return False
    message = str(body.get("message", "")).lower() if isinstance(body, dict) else ""
    return "invalid api key" in message or "no api key" in message


def check_api(session: ProbeSession) -> CheckResult:
    """H7: each configured HTTP endpoint answers with the expected status within budget."""
    cfg = session.config
    res = CheckResult(
        Category.api, thresholds={"responseTime_ms": cfg.monitoring.thresholds.response_time}
    )
    with timed_result(res):
        if not cfg.endpoints:
            return not_configured(res, "no endpoints in the config")
        results = [_endpoint(session, ep) for ep in cfg.endpoints]
        res.values["endpoints"] = results
        for r, ep in zip(results, cfg.endpoints, strict=True):
            if r.get("refused"):
                res.problem(
                    Status.error,
                    f"monitoring is misconfigured: {ep.name}: {r['refused']}",
                    MONITOR_MISCONFIGURED,
                )
            elif r.get("unconfigured"):
                res.problem(Status.error, f"{ep.name}: {r['error']}")
            elif not r["ok"]:
                res.problem(Status.critical, f"{ep.name}: {r['error']}", "endpoint_down")
            elif r.get("slow"):
                budget = ep.latency_budget_ms or cfg.monitoring.thresholds.response_time
                res.problem(
                    Status.warning,
                    f"{ep.name}: {r['ms']:.0f} ms > {budget:.0f} ms",
                    "endpoint_slow",
                )
        res.finish(
            ", ".join(
                f"{r['name']} {r['status']} {r['ms']} ms"
                + (f" as {r['auth']}" if r.get("auth", "none") != "none" else "")
                for r in results
            )
        )
    return res


def _endpoint(session: ProbeSession, ep: Endpoint) -> dict[str, Any]:
    budget = ep.latency_budget_ms or session.config.monitoring.thresholds.response_time
    # Probe as the app's clients do: Supabase endpoints with the anon key (grants and RLS
    # apply), the service role only where configured; the app gets no Supabase key.
    auth = ep.auth or ("anon" if ep.base == "supabase" else "none")
    return http_probe(
        session,
        ep.name,
        url(session, ep.base, ep.path),
        ep.expect_status,
        budget,
        ep.method,
        ep.base,
        auth,
    )
