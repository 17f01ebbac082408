"""Where the monitored stack lives: connection strings and keys from the environment.

Names follow the seed and the Supabase/Prisma convention (``DATABASE_URL`` pooled through
pgbouncer, ``DIRECT_URL`` direct). The monitor and the repairs use different credentials:
probes only ever see the read-only monitor URLs (plus, if set, the optional role-probe
login ``WESTEP_OPS_ROLE_PROBE_URL``, which H3 uses only inside read-only transactions);
``WESTEP_OPS_REPAIR_URL`` and
``WESTEP_OPS_PGBOUNCER_REPAIR_URL`` are read only by repairs. Every secret read here is
registered with :mod:`westep_ops.redact` before anything can print it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from westep_ops.errors import WestepError
from westep_ops.redact import register_secret, register_url

# env name -> (attribute, kind, what it is)
VARIABLES: dict[str, tuple[str, str, str]] = {
    "DATABASE_URL": ("database_url", "pg", "pooled connection through pgbouncer (monitor role)"),
    "DIRECT_URL": ("direct_url", "pg", "direct PostgreSQL connection (monitor role)"),
    "PGBOUNCER_ADMIN_URL": ("pgbouncer_admin_url", "pg", "pgbouncer admin console (SHOW only)"),
    "WESTEP_OPS_ROLE_PROBE_URL": (
        "role_probe_url",
        "pg",
        "optional direct login that is a member of the API roles (so write-capable): H3 reads"
        " as each role with it, only in BEGIN READ ONLY; SET LOCAL ROLE ...; ROLLBACK",
    ),
    "WESTEP_OPS_REPAIR_URL": ("repair_url", "pg", "privileged direct connection, repairs only"),
    "WESTEP_OPS_PGBOUNCER_REPAIR_URL": (
        "pgbouncer_repair_url",
        "pg",
        "pgbouncer admin console user allowed PAUSE/RESUME/RECONNECT, repairs only",
    ),
    "WESTEP_OPS_STORAGE_URL": ("storage_url", "pg", "ops PostgreSQL: Dagster + monitoring history"),
    "NEXT_PUBLIC_SUPABASE_URL": ("supabase_url", "http", "Supabase project (auth, REST) URL"),
    "WESTEP_OPS_APP_URL": ("app_url", "http", "the app's base URL (/api/health)"),
    "WESTEP_OPS_METRICS_URL": ("metrics_url", "http", "Prometheus metrics endpoint (hosted)"),
    "SUPABASE_ANON_KEY": (
        "anon_key",
        "secret",
        "Supabase anon key: what the API probe sends, as the app's clients do",
    ),
    "SUPABASE_SERVICE_ROLE_KEY": (
        "service_role_key",
        "secret",
        "Supabase service role key (only for endpoints configured with auth service_role)",
    ),
    "WEBHOOK_URL": ("webhook_url", "webhook", "Slack incoming webhook URL"),
    "ALERT_CHANNEL": ("alert_channel", "text", "Slack channel, e.g. #westep-alerts"),
}


@dataclass(frozen=True)
class Environment:
    database_url: str | None = None
    direct_url: str | None = None
    pgbouncer_admin_url: str | None = None
    role_probe_url: str | None = None
    repair_url: str | None = None
    pgbouncer_repair_url: str | None = None
    storage_url: str | None = None
    supabase_url: str | None = None
    app_url: str | None = None
    metrics_url: str | None = None
    anon_key: str | None = None
    service_role_key: str | None = None
    webhook_url: str | None = None
    alert_channel: str | None = None
    debug: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Environment:
        """Read and check the variables; one clear error line for a malformed value."""
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for name, (attr, kind, _what) in VARIABLES.items():
            raw = env.get(name, "").strip()
            if not raw:
                continue
            _check(name, raw, kind)
            values[attr] = raw
        values["debug"] = env.get("DEBUG", "").lower() in ("1", "true", "yes")
        return cls(**values)  # type: ignore[arg-type]

    @property
    def api_base(self) -> str | None:
        """The app's URL; the Supabase URL when the app is served from the same place."""
        return self.app_url or self.supabase_url

    def require(self, attr: str) -> str:
        value = getattr(self, attr)
        if not value:
            name = next(n for n, (a, _k, _w) in VARIABLES.items() if a == attr)
            raise WestepError(f"{name} is not set ({VARIABLES[name][2]})")
        return value


def _check(name: str, raw: str, kind: str) -> None:
    if kind == "secret":
        register_secret(raw)
        return
    if kind == "text":
        return
    if kind == "webhook":
        # The whole webhook URL is the secret: never show any of it.
        register_secret(raw)
        parts = urlsplit(raw)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise WestepError(f"{name} is not a valid http(s) URL")
        return
    register_url(raw)
    try:
        parts = urlsplit(raw)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise WestepError(f"{name} is not a valid URL (bad host or port)") from None
    if kind == "pg":
        if parts.scheme not in ("postgres", "postgresql"):
            raise WestepError(f"{name} must be a postgresql:// URL (got scheme {parts.scheme!r})")
        if not parts.hostname:
            raise WestepError(f"{name} has no host")
    elif kind == "http":
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise WestepError(f"{name} must be an http(s):// URL")
