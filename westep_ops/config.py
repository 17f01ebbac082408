"""westep-ops configuration: the seed's ``monitoring`` keys plus what the checks need.

Loaded from JSON (``WESTEP_OPS_CONFIG`` or ``./westep-ops.json``) and validated with
pydantic, so a typo or a wrong type is one line naming the key instead of a crash hours
later inside a probe. Unknown keys are rejected for the same reason. Identifiers (tables,
columns, roles) must be plain SQL names: we compose SQL with ``psycopg.sql.Identifier``
anyway, but a hostile-looking name in config is a mistake worth stopping at load time.
"""

from __future__ import annotations

import json
import os
import re
import zoneinfo
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from westep_ops.errors import WestepError

DEFAULT_CONFIG_FILE = "westep-ops.json"
CONFIG_ENV = "WESTEP_OPS_CONFIG"

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$")


class RepairAction(StrEnum):
    """Repair actions by the seed's names, plus the realtime repair the seed lacks."""

    restore_db_connection = "restore_db_connection"
    restore_connection_pool = "restore_connection_pool"
    fix_table_permissions = "fix_table_permissions"
    repair_auth = "repair_auth"
    fix_data_integrity = "fix_data_integrity"
    optimize_performance = "optimize_performance"
    restore_realtime_publication = "restore_realtime_publication"


class Category(StrEnum):
    """Health-check categories H1-H7."""

    connection = "connection"  # H1
    pool = "pool"  # H2
    tables = "tables"  # H3
    integrity = "integrity"  # H4
    realtime = "realtime"  # H5
    auth = "auth"  # H6
    api = "api"  # H7


def _ident(value: str) -> str:
    if not _IDENT.match(value):
        raise ValueError(f"{value!r} is not a plain SQL identifier ([A-Za-z_][A-Za-z0-9_$]*)")
    return value


def _qualified(value: str) -> str:
    parts = value.split(".")
    if len(parts) != 2:
        raise ValueError(f"{value!r} must be schema-qualified, like public.profiles")
    for p in parts:
        _ident(p)
    return value


Ident = Annotated[str, AfterValidator(_ident)]
QualifiedName = Annotated[str, AfterValidator(_qualified)]


def split_name(qualified: str) -> tuple[str, str]:
    """``"public.steps"`` -> ``("public", "steps")`` (names are validated at load time)."""
    schema, _, name = qualified.partition(".")
    return schema, name


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class Intervals(_Model):
    """Milliseconds, as in the seed's config."""

    health: int = Field(300_000, ge=1_000)
    performance: int = Field(60_000, ge=1_000)


class Thresholds(_Model):
    response_time: float = Field(2000, gt=0, description="ms; API and DB latency budget")
    error_rate: float = Field(0.05, ge=0, le=1)
    # Transaction pooling is built for many more clients than servers: under normal load
    # every server is busy and clients queue for milliseconds. Only a long wait, or a
    # queue far deeper than any pool serves in a moment, means users feel it.
    pool_waiting_clients: int = Field(
        50, ge=1, description="clients queued at once that warn (a queue this deep is felt)"
    )
    pool_max_wait_seconds: float = Field(
        5,
        gt=0,
        description="critical when the oldest client now waiting has waited this long, or when"
        " every server of a pool has been busy this long (no server freed: cannot serve)",
    )
    connection_usage: float = Field(0.8, gt=0, le=1, description="backends/max_connections")
    idle_in_transaction_seconds: float = Field(60, gt=0)
    dead_tuple_ratio: float = Field(0.2, gt=0)
    replication_lag_bytes: int = Field(64 * 1024 * 1024, gt=0)


class Timeouts(_Model):
    """Every probe and repair is bounded by these (milliseconds)."""

    connect: int = Field(3000, ge=100)
    statement: int = Field(5000, ge=100)
    lock: int = Field(2000, ge=100)
    http: int = Field(5000, ge=100)


class AutoRecovery(_Model):
    enabled: bool = True
    max_attempts_per_hour: int = Field(3, ge=0)
    actions: dict[Category, list[RepairAction]] = Field(
        default_factory=lambda: {
            Category.connection: [RepairAction.restore_db_connection],
            Category.pool: [RepairAction.restore_connection_pool],
            Category.tables: [RepairAction.fix_table_permissions],
            Category.integrity: [RepairAction.fix_data_integrity],
            Category.realtime: [RepairAction.restore_realtime_publication],
            Category.auth: [RepairAction.repair_auth],
        },
        description="which repairs a failing category calls for",
    )


class Repairs(_Model):
    stuck_query_seconds: float = Field(
        300,
        gt=0,
        description="a query older than this that pins a pool server or blocks others is stuck",
    )
    quarantine_schema: Ident = "westep_quarantine"
    maintenance_timeout_seconds: float = Field(
        600, gt=0, description="statement_timeout for VACUUM/ANALYZE (longer than a probe's)"
    )


class Alerting(_Model):
    """Hysteresis and dedup, like Gatus's thresholds and Alertmanager's repeat interval."""

    failure_threshold: int = Field(2, ge=1, description="failing samples that open an incident")
    success_threshold: int = Field(2, ge=1, description="passing samples that close it")
    confirm_delay_seconds: float = Field(
        5, ge=0, le=30, description="re-probe this soon after a first failure"
    )
    reminder_minutes: float = Field(
        60, gt=0, description="re-notify an open incident at most this often"
    )
    group_grace_intervals: int = Field(
        3,
        ge=0,
        le=100,
        description="cheap-probe intervals after an incident closes during which the"
        " failures it explains (an outage's tail) open nothing of their own",
    )


class Pool(_Model):
    """The app's pooler as PostgreSQL sees it, for targets without an admin console.

    Pools are per (database, user): the pooler's server connections to PostgreSQL log in
    as the app's login (``appUsers``), optionally told apart by ``applicationNames``
    (Supavisor sets ``Supavisor``). ``size`` is the pool size of each such login
    (pgbouncer's ``default_pool_size``; on Supabase, the dashboard's pool size).
    """

    app_users: list[Ident] = Field(
        default_factory=list, description="logins the app's pooler uses for its servers"
    )
    application_names: list[str] = Field(
        default_factory=list,
        description="if set, only server sessions with these application_name values count",
    )
    size: int | None = Field(
        None, ge=1, le=100_000, description="server connections per pool login"
    )

    @field_validator("application_names")
    @classmethod
    def _printable(cls, v: list[str]) -> list[str]:
        for name in v:
            if not name or not name.isprintable() or len(name) > 63:
                raise ValueError(f"{name!r} is not a valid application_name")
        return v


class Monitoring(_Model):
    intervals: Intervals = Intervals()
    alerting: Alerting = Alerting()
    thresholds: Thresholds = Thresholds()
    timeouts: Timeouts = Timeouts()
    auto_recovery: AutoRecovery = AutoRecovery()


class CriticalTable(_Model):
    table: QualifiedName
    roles: list[Ident] = Field(min_length=1, description="roles that must be able to read it")


Privilege = Literal["SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER"]


class Grant(_Model):
    table: QualifiedName
    role: Ident
    privileges: list[Privilege] = Field(min_length=1)

    @field_validator("privileges", mode="before")
    @classmethod
    def _upper(cls, v: object) -> object:
        return [p.upper() for p in v] if isinstance(v, list) else v


class IntegrityRule(_Model):
    """One data-integrity rule. ``kind`` decides which of the other fields are needed."""

    name: Ident
    kind: Literal["orphans", "not_null", "duplicates"]
    table: QualifiedName
    columns: list[Ident] = Field(min_length=1)
    references: QualifiedName | None = None
    referenced_columns: list[Ident] | None = None
    key: list[Ident] | None = Field(None, description="columns that identify a row (samples)")
    severity: Literal["warning", "critical"] = "warning"

    @model_validator(mode="after")
    def _shape(self) -> IntegrityRule:
        if self.kind == "orphans":
            if not self.references:
                raise ValueError("an orphans rule needs 'references'")
            ref_cols = self.referenced_columns or ["id"]
            if len(ref_cols) != len(self.columns):
                raise ValueError("'columns' and 'referencedColumns' must have the same length")
        return self


class Endpoint(_Model):
    name: Ident
    base: Literal["app", "supabase"] = "app"
    path: str = Field(pattern=r"^/[^\s]*$")
    method: Literal["GET", "HEAD"] = "GET"
    expect_status: int = Field(200, ge=100, le=599)
    latency_budget_ms: float | None = Field(None, gt=0, description="defaults to responseTime")


class Realtime(_Model):
    publication: Ident = "supabase_realtime"
    tables: list[QualifiedName] = Field(default_factory=list)
    notify_channel: Ident = "westep_ops_probe"


class Auth(_Model):
    schema_name: Ident = Field("auth", alias="schema")
    tables: list[QualifiedName] = Field(default_factory=lambda: ["auth.users"])
    roles: list[Ident] = Field(
        default_factory=lambda: ["anon", "authenticated", "service_role", "authenticator"]
    )
    api_roles: list[Ident] = Field(
        default_factory=lambda: ["anon", "authenticated", "service_role"],
        description="roles that need USAGE on the auth schema and that authenticator switches to",
    )
    health_path: str = Field("/auth/v1/health", pattern=r"^/[^\s]*$")


class Config(_Model):
    monitoring: Monitoring = Monitoring()
    timezone: str = "Asia/Tokyo"
    database_name: Ident = Field("postgres", description="pgbouncer database name (pools)")
    critical_tables: list[CriticalTable] = Field(default_factory=list)
    grants: list[Grant] = Field(default_factory=list)
    integrity_rules: list[IntegrityRule] = Field(default_factory=list)
    endpoints: list[Endpoint] = Field(default_factory=list)
    realtime: Realtime = Realtime()
    auth: Auth = Auth()
    repairs: Repairs = Repairs()
    pool: Pool = Pool()
    report_language: Literal["en", "ja"] = "en"

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            zoneinfo.ZoneInfo(v)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r}") from None
        return v

    @model_validator(mode="after")
    def _unique_rule_names(self) -> Config:
        names = [r.name for r in self.integrity_rules]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"integrity rule names must be unique: {', '.join(dupes)}")
        return self


def _loc(loc: tuple[object, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def describe_validation_error(err: ValidationError, source: str) -> str:
    """First problem as one line naming the key, with a count of the rest."""
    errors = err.errors(include_url=False)
    first = errors[0]
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "missing":
        msg = "required key is missing"
    elif first["type"] == "extra_forbidden":
        msg = "unknown key"
    line = f"config error in {source}: {_loc(first['loc'])}: {msg}"
    if first["type"] not in ("missing", "extra_forbidden") and "input" in first:
        shown = json.dumps(first["input"], default=str)
        if len(shown) <= 60:
            line += f" (got {shown})"
    if len(errors) > 1:
        line += f" (+{len(errors) - 1} more)"
    return line


def config_path(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """The config file to read: explicit path, ``$WESTEP_OPS_CONFIG``, ``./westep-ops.json``."""
    if explicit:
        return Path(explicit)
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    default = Path(DEFAULT_CONFIG_FILE)
    return default if default.exists() else None


def parse_config(data: object, source: str = "config") -> Config:
    """Validate already-parsed JSON; raise :class:`WestepError` with one line on failure."""
    if not isinstance(data, dict):
        raise WestepError(f"config error in {source}: the top level must be a JSON object")
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise WestepError(describe_validation_error(e, source)) from None


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Load and validate the config; built-in defaults when no file is configured."""
    p = config_path(path)
    if p is None:
        return Config()
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise WestepError(f"config error: {p}: file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        reason = getattr(e, "strerror", None) or type(e).__name__
        raise WestepError(f"config error: {p}: cannot read ({reason})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise WestepError(
            f"config error in {p}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}"
        ) from None
    return parse_config(data, str(p))
