"""Pool figures from a Prometheus-format metrics endpoint (hosted Supabase).

Hosted Supabase has no pgbouncer admin console; its privileged metrics endpoint
(``/customer/v1/privileged/metrics``, basic auth ``service_role`` + the service role key)
exposes pgbouncer_exporter's ``pgbouncer_*`` series for the dedicated pooler, and
Supavisor exposes ``supavisor_*`` series. We read what is there and say which it was.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families


@dataclass
class PoolMetrics:
    flavour: str
    client_active: float | None = None
    client_waiting: float | None = None
    server_active: float | None = None
    server_idle: float | None = None
    pool_size: float | None = None
    max_wait_s: float | None = None
    paused: bool = False
    join_failures: float | None = None
    checkout_ms_mean: float | None = None

    def as_values(self) -> dict[str, object]:
        return {f"metrics_{k}": v for k, v in asdict(self).items() if v is not None}


def fetch_pool_metrics(
    client: httpx.Client, url: str, key: str | None, database: str
) -> PoolMetrics:
    """Scrape ``url`` and sum the pool series for ``database``; ValueError with a reason."""
    auth = ("service_role", key) if key else None
    try:
        r = client.get(url, auth=auth)
    except httpx.HTTPError as e:
        raise ValueError(f"unreachable ({type(e).__name__})") from None
    if r.status_code in (401, 403):
        raise ValueError(f"HTTP {r.status_code}: check SUPABASE_SERVICE_ROLE_KEY")
    if r.status_code != 200:
        raise ValueError(f"HTTP {r.status_code}")
    return parse_pool_metrics(r.text, database)


def parse_pool_metrics(text: str, database: str) -> PoolMetrics:
    try:
        families = list(text_string_to_metric_families(text))
    except ValueError as e:
        raise ValueError(f"not a Prometheus exposition ({e})") from None
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for fam in families:
        for s in fam.samples:
            samples.setdefault(s.name, []).append((s.labels, s.value))

    def total(name: str, by_db: bool = True) -> float | None:
        rows = samples.get(name)
        if rows is None:
            return None
        keep = [
            v for labels, v in rows if not by_db or labels.get("database", database) == database
        ]
        return sum(keep) if keep else None

    def maximum(name: str) -> float | None:
        rows = [
            v for labels, v in samples.get(name, []) if labels.get("database", database) == database
        ]
        return max(rows) if rows else None

    if any(n.startswith("pgbouncer_pools_") for n in samples):
        paused = [
            v
            for labels, v in samples.get("pgbouncer_databases_paused", [])
            if labels.get("name", labels.get("database")) == database
        ]
        sizes = [
            v
            for labels, v in samples.get("pgbouncer_databases_pool_size", [])
            if labels.get("name", labels.get("database")) == database
        ]
        return PoolMetrics(
            flavour="pgbouncer",
            client_active=total("pgbouncer_pools_client_active_connections"),
            client_waiting=total("pgbouncer_pools_client_waiting_connections"),
            server_active=total("pgbouncer_pools_server_active_connections"),
            server_idle=total("pgbouncer_pools_server_idle_connections"),
            pool_size=max(sizes) if sizes else None,
            max_wait_s=maximum("pgbouncer_pools_client_maxwait_seconds"),
            paused=any(v > 0 for v in paused),
        )
    if any(n.startswith("supavisor_") for n in samples):
        count = total("supavisor_pool_checkout_duration_count", by_db=False)
        dur = total("supavisor_pool_checkout_duration_sum", by_db=False)
        return PoolMetrics(
            flavour="supavisor",
            client_active=total("supavisor_connections_active", by_db=False),
            join_failures=total("supavisor_client_joins_fail_total", by_db=False)
            or total("supavisor_client_joins_fail", by_db=False),
            checkout_ms_mean=(dur / count) if dur is not None and count else None,
        )
    raise ValueError("no pgbouncer_* or supavisor_* series in the exposition")
