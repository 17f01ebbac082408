"""Where the monitored stack lives: connection strings and keys from the environment.

Names follow the seed and the Supabase/Prisma convention (``DATABASE_URL`` pooled through
pgbouncer, ``DIRECT_URL`` direct). The monitor and the repairs use different credentials:
probes only ever see the read-only monitor URLs (plus, if set, the optional role-probe
login ``WESTEP_OPS_ROLE_PROBE_URL``, which H3 uses only inside read-only transactions);
``WESTEP_OPS_REPAIR_URL`` and
``WESTEP_OPS_PGBOUNCER_REPAIR_URL`` are read only by repairs. Every secret read here is
registered with :mod:`westep_ops.redact` before anything can print it.

The environment is a pydantic-settings model whose fields are the variables, each
credential (every DSN, the anon and service role keys, the webhook URL) a ``SecretStr``:
``repr()``, ``str()``, ``model_dump()`` and ``model_dump_json()`` of an Environment show
``**********`` for them, so a logged or printed environment leaks nothing. The code reads
the lower-case attributes (``env.direct_url``: the plain string a driver needs).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, overload
from urllib.parse import urlsplit

from pydantic import SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

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


# The kinds whose whole value is a credential: held as SecretStr, so repr(), str() and
# model_dump() of an Environment show "**********" (a DSN carries its password).
_SECRET_KINDS = frozenset({"pg", "secret", "webhook"})
_NAME_OF = {attr: name for name, (attr, _kind, _what) in VARIABLES.items()}


class _Var:
    """The plain value of one variable, as the driver that uses it needs it (a credential's
    SecretStr revealed). Reading it is deliberate; printing the Environment never is."""

    def __init__(self, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> _Var: ...
    @overload
    def __get__(self, obj: Environment, owner: type | None = None) -> str | None: ...
    def __get__(self, obj: Environment | None, owner: type | None = None) -> _Var | str | None:
        if obj is None:
            return self
        value = getattr(obj, self.name)
        return value.get_secret_value() if isinstance(value, SecretStr) else value


class _PlainValues:
    """The lower-case accessors of :class:`Environment`. A plain base class, so pydantic
    takes none of them for a field (and its type checker plugin asks for no annotation)."""

    database_url = _Var("DATABASE_URL")
    direct_url = _Var("DIRECT_URL")
    pgbouncer_admin_url = _Var("PGBOUNCER_ADMIN_URL")
    role_probe_url = _Var("WESTEP_OPS_ROLE_PROBE_URL")
    repair_url = _Var("WESTEP_OPS_REPAIR_URL")
    pgbouncer_repair_url = _Var("WESTEP_OPS_PGBOUNCER_REPAIR_URL")
    storage_url = _Var("WESTEP_OPS_STORAGE_URL")
    supabase_url = _Var("NEXT_PUBLIC_SUPABASE_URL")
    app_url = _Var("WESTEP_OPS_APP_URL")
    metrics_url = _Var("WESTEP_OPS_METRICS_URL")
    anon_key = _Var("SUPABASE_ANON_KEY")
    service_role_key = _Var("SUPABASE_SERVICE_ROLE_KEY")
    webhook_url = _Var("WEBHOOK_URL")
    alert_channel = _Var("ALERT_CHANNEL")


class Environment(BaseSettings, _PlainValues):
    """The variables of :data:`VARIABLES`, read by pydantic-settings from the process
    environment (``Environment()``) or from a mapping (:meth:`from_env`).

    The fields are named as the variables; credentials (every DSN, the keys, the webhook
    URL) are ``SecretStr``. Code reads the lower-case attributes (``env.direct_url``),
    which give the plain string.
    """

    model_config = SettingsConfigDict(frozen=True, case_sensitive=True, extra="ignore")

    DATABASE_URL: SecretStr | None = None
    DIRECT_URL: SecretStr | None = None
    PGBOUNCER_ADMIN_URL: SecretStr | None = None
    WESTEP_OPS_ROLE_PROBE_URL: SecretStr | None = None
    WESTEP_OPS_REPAIR_URL: SecretStr | None = None
    WESTEP_OPS_PGBOUNCER_REPAIR_URL: SecretStr | None = None
    WESTEP_OPS_STORAGE_URL: SecretStr | None = None
    NEXT_PUBLIC_SUPABASE_URL: str | None = None
    WESTEP_OPS_APP_URL: str | None = None
    WESTEP_OPS_METRICS_URL: str | None = None
    SUPABASE_ANON_KEY: SecretStr | None = None
    SUPABASE_SERVICE_ROLE_KEY: SecretStr | None = None
    WEBHOOK_URL: SecretStr | None = None
    ALERT_CHANNEL: str | None = None
    DEBUG: bool = False

    @field_validator("*", mode="before")
    @classmethod
    def _checked(cls, raw: object, info: ValidationInfo) -> object:
        """Strip; empty is unset; check the shape and register the secret before anything
        can print it. A malformed value raises WestepError (one line), not a ValidationError."""
        name = info.field_name or ""
        if name == "DEBUG":
            if isinstance(raw, bool):
                return raw
            return str(raw).strip().lower() in ("1", "true", "yes")
        if not isinstance(raw, str):
            return raw
        raw = raw.strip()
        if not raw:
            return None
        _check(name, raw, VARIABLES[name][1])
        return raw

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Environment:
        """Read and check the variables; one clear error line for a malformed value.

        ``env`` given: only that mapping is read (not the process environment)."""
        if env is None:
            return cls()
        # Every field given (None when absent), so the process environment fills none.
        given: dict[str, Any] = {name: env.get(name) for name in cls.model_fields}
        return cls(**given)

    @property
    def debug(self) -> bool:
        return self.DEBUG

    @property
    def api_base(self) -> str | None:
        """The app's URL; the Supabase URL when the app is served from the same place."""
        return self.app_url or self.supabase_url

    def require(self, attr: str) -> str:
        value = getattr(self, attr)
        if not value:
            name = _NAME_OF[attr]
            raise WestepError(f"{name} is not set ({VARIABLES[name][2]})")
        return value

    def replace(self, **changes: str | None) -> Environment:
        """A copy with some attributes changed (``env.replace(storage_url=...)``), each new
        value checked and registered as if it had been read from the environment."""
        unknown = set(changes) - set(_NAME_OF)
        if unknown:
            raise TypeError(f"not an Environment attribute: {', '.join(sorted(unknown))}")
        values: dict[str, Any] = {
            name: changes[attr] if attr in changes else getattr(self, attr)
            for name, (attr, _kind, _what) in VARIABLES.items()
        }
        values["DEBUG"] = self.DEBUG
        return type(self)(**values)


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
