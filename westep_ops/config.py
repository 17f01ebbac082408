"""westep-ops configuration: the seed's ``monitoring`` keys plus what the checks need.

Loaded from JSON (``WESTEP_OPS_CONFIG`` or ``./westep-ops.json``) and validated with
pydantic, so a typo or a wrong type is one line naming the key instead of a crash hours
later inside a probe. Unknown keys are rejected for the same reason. Identifiers (tables,
columns, roles) are exact, case-sensitive catalog names (Prisma's ``public.Step`` is the
table ``Step``, never folded to ``step``); a part holding anything but letters, digits,
``_`` and ``$`` is written in double quotes (``public."Step Log"``, ``""`` for a quote).
Every use composes them with ``psycopg.sql.Identifier`` or matches them in the catalogs,
never through ``to_regclass(text)``, which folds case.

Values are refused where they are written, not where they fail: types are strict (``true``
is not a count, ``"yes"`` is not a boolean, ``3.0`` is not a count of milliseconds), every
float is finite (JSON's ``1e999`` parses to infinity), every number has an upper bound
that PostgreSQL, ``timedelta`` and ``time.sleep`` accept and that a sane monitor needs,
no string holds a control character, and the file's shape is checked (nesting depth,
duplicate keys) before pydantic sees it.

One module over 400 lines on purpose: the whole config schema in one place, so the JSON
file's shape reads top to bottom (identifiers, then each section's model, then loading).
"""

from __future__ import annotations

import json
import os
import re
import unicodedata
import zoneinfo
from collections import Counter
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from westep_ops.errors import WestepError

DEFAULT_CONFIG_FILE = "westep-ops.json"
CONFIG_ENV = "WESTEP_OPS_CONFIG"

# \Z, not $: "$" also matches before a trailing newline ("profiles\n" passed).
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}\Z")
_IDENT_PART = re.compile(r"[A-Za-z_][A-Za-z0-9_$]{0,62}(?![A-Za-z0-9_$])")

# Upper bounds (documented in the README's Configuration section). A probe or repair
# timeout over 10 minutes is a mistake (a sweep would outlast any sane interval);
# PostgreSQL itself takes at most INT_MAX ms. An interval over a day is not monitoring,
# and the bound keeps timedelta/time.sleep far from overflow.
MAX_PROBE_TIMEOUT_MS = 600_000
MAX_INTERVAL_MS = 86_400_000
MAX_SECONDS = 86_400  # ages and maintenance bounds given in seconds
MAX_SAMPLES = 100  # consecutive samples in hysteresis settings
MAX_DEPTH = 20  # nesting of the config file; the real shape needs 6


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


def _has_control(text: str) -> bool:
    return any(unicodedata.category(c) == "Cc" for c in text)


def _ident(value: str) -> str:
    """A column or role name: exact; quotes allowed (and removed) around any other name."""
    (name,) = _parts(value, 1)
    return name


def _parts(value: str, count: int) -> list[str]:
    """Split ``value`` into ``count`` dot-separated identifiers, unquoting quoted ones."""
    if value != value.strip() or _has_control(value):
        raise ValueError(
            f"{value!r} is not a SQL identifier (surrounding whitespace or a control character)"
        )
    parts: list[str] = []
    i = 0
    while True:
        if value.startswith('"', i):
            j, buf = i + 1, []
            while True:
                k = value.find('"', j)
                if k < 0:
                    raise ValueError(f"{value!r}: unterminated quoted identifier")
                buf.append(value[j:k])
                if value.startswith('"', k + 1):  # "" inside quotes is one quote
                    buf.append('"')
                    j = k + 2
                    continue
                i = k + 1
                break
            name = "".join(buf)
            if not name or len(name.encode()) > 63:
                raise ValueError(f"{value!r}: a quoted identifier must have 1-63 bytes")
        else:
            m = _IDENT_PART.match(value, i)
            if not m:
                raise ValueError(
                    f"{value!r} is not a SQL identifier ([A-Za-z_][A-Za-z0-9_$]*, or in "
                    'double quotes, e.g. public."Step")'
                )
            name, i = m.group(0), m.end()
        parts.append(name)
        if i == len(value):
            break
        if value[i] != ".":
            raise ValueError(
                f"{value!r} is not a SQL identifier ([A-Za-z_][A-Za-z0-9_$]*, or in "
                'double quotes, e.g. public."Step")'
            )
        if len(parts) >= count:
            break
        i += 1
    if len(parts) != count or i != len(value):
        if count == 2:
            raise ValueError(f"{value!r} must be schema-qualified, like public.profiles")
        raise ValueError(f"{value!r} is not a single SQL identifier")
    return parts


def quote_part(name: str) -> str:
    """``Step`` -> ``Step``; ``step log`` -> ``"step log"`` (the config's spelling)."""
    return name if _IDENT.match(name) else '"' + name.replace('"', '""') + '"'


def qualified_name(schema: str, name: str) -> str:
    """The config's canonical spelling of ``schema.name`` (quotes only where needed)."""
    return f"{quote_part(schema)}.{quote_part(name)}"


def _qualified(value: str) -> str:
    return qualified_name(*_parts(value, 2))


Ident = Annotated[str, AfterValidator(_ident)]
QualifiedName = Annotated[str, AfterValidator(_qualified)]
# The models are strict, and a strict enum wants an enum instance; JSON gives its value.
CategoryName = Annotated[Category, Strict(False)]
ActionName = Annotated[RepairAction, Strict(False)]
UrlPath = Annotated[str, Field(pattern=r"^/[^\s\x00-\x1f\x7f]*$", max_length=2000)]


def split_name(qualified: str) -> tuple[str, str]:
    """``"public.steps"`` -> ``("public", "steps")``; ``'public."Step"'`` -> ``("public", "Step")``.

    The parts are exact catalog names, for ``sql.Identifier(*parts)`` or for matching
    ``pg_namespace.nspname`` / ``pg_class.relname`` (names are validated at load time).
    """
    schema, name = _parts(qualified, 2)
    return schema, name


class _Model(BaseModel):
    # strict: no coercion (true -> 1, "yes" -> True, 3.5 -> int refused); floats finite.
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        strict=True,
        allow_inf_nan=False,
    )


StrictModel = _Model  # the same rules for other JSON inputs (what-if thresholds files)


class Intervals(_Model):
    """Milliseconds, as in the seed's config."""

    health: int = Field(300_000, ge=1_000, le=MAX_INTERVAL_MS)
    performance: int = Field(60_000, ge=1_000, le=MAX_INTERVAL_MS)


class Thresholds(_Model):
    response_time: float = Field(
        2000, gt=0, le=MAX_PROBE_TIMEOUT_MS, description="ms; API and DB latency budget"
    )
    error_rate: float = Field(0.05, ge=0, le=1)
    # Transaction pooling is built for many more clients than servers: under normal load
    # every server is busy and clients queue for milliseconds. Only a long wait, or a
    # queue far deeper than any pool serves in a moment, means users feel it.
    pool_waiting_clients: int = Field(
        50,
        ge=1,
        le=100_000,
        description="clients queued at once that warn (a queue this deep is felt)",
    )
    pool_max_wait_seconds: float = Field(
        5,
        gt=0,
        le=3600,
        description="critical when the oldest client now waiting has waited this long, or when"
        " every server of a pool has been busy this long (no server freed: cannot serve)",
    )
    connection_usage: float = Field(0.8, gt=0, le=1, description="backends/max_connections")
    idle_in_transaction_seconds: float = Field(60, gt=0, le=MAX_SECONDS)
    dead_tuple_ratio: float = Field(0.2, gt=0, le=100, description="dead / live tuples")
    replication_lag_bytes: int = Field(64 * 1024 * 1024, gt=0, le=2**40)


class Timeouts(_Model):
    """Every probe and repair is bounded by these (milliseconds)."""

    connect: int = Field(3000, ge=100, le=MAX_PROBE_TIMEOUT_MS)
    statement: int = Field(5000, ge=100, le=MAX_PROBE_TIMEOUT_MS)
    lock: int = Field(2000, ge=100, le=MAX_PROBE_TIMEOUT_MS)
    http: int = Field(5000, ge=100, le=MAX_PROBE_TIMEOUT_MS)


class AutoRecovery(_Model):
    enabled: bool = True
    max_attempts_per_hour: int = Field(3, ge=0, le=60, description="more is a repair loop")
    actions: dict[CategoryName, list[ActionName]] = Field(
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


class Terminate(_Model):
    """Whose sessions ``restore_db_connection`` may end. Replication, backups, Supabase's
    own services and westep-ops itself are never terminated, whatever is listed here."""

    only_roles: list[Ident] = Field(
        default_factory=list,
        description="if set, only sessions of these logins may be terminated",
    )
    never_roles: list[Ident] = Field(
        default_factory=list,
        description="sessions of these logins are never terminated (escalated instead)",
    )
    on_connections_high: bool = Field(
        False,
        description="let the connections-in-use warning trigger restore_db_connection"
        " (off: a busy server is not a stuck one)",
    )


class Repairs(_Model):
    terminate: Terminate = Terminate()
    stuck_query_seconds: float = Field(
        300,
        gt=0,
        le=MAX_SECONDS,
        description="a query older than this that pins a pool server or blocks others is stuck",
    )
    quarantine_schema: Ident = "westep_quarantine"
    maintenance_timeout_seconds: float = Field(
        600,
        gt=0,
        le=MAX_SECONDS,
        description="statement_timeout for VACUUM/ANALYZE (longer than a probe's)",
    )


class Alerting(_Model):
    """Hysteresis and dedup, like Gatus's thresholds and Alertmanager's repeat interval."""

    failure_threshold: int = Field(
        2, ge=1, le=MAX_SAMPLES, description="failing samples that open an incident"
    )
    success_threshold: int = Field(
        2, ge=1, le=MAX_SAMPLES, description="passing samples that close it"
    )
    confirm_delay_seconds: float = Field(
        5, ge=0, le=30, description="re-probe this soon after a first failure"
    )
    reminder_minutes: float = Field(
        60, gt=0, le=7 * 24 * 60, description="re-notify an open incident at most this often"
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
    rls: bool | None = Field(
        None, description="row-level security must be on (true) or off (false); null: not checked"
    )
    must_see_rows: list[Ident] = Field(
        default_factory=list,
        description="roles (of 'roles') that must see rows: RLS on with no SELECT policy for"
        " them is a warning; for the others it is by design and only reported",
    )

    @model_validator(mode="after")
    def _must_see_rows_listed(self) -> CriticalTable:
        extra = [r for r in self.must_see_rows if r not in self.roles]
        if extra:
            raise ValueError(f"mustSeeRows names roles not in 'roles': {', '.join(extra)}")
        return self


Privilege = Literal["SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER"]


class Grant(_Model):
    table: QualifiedName
    role: Ident
    privileges: list[Privilege] = Field(min_length=1)

    @field_validator("privileges", mode="before")
    @classmethod
    def _upper(cls, v: object) -> object:
        return [p.upper() if isinstance(p, str) else p for p in v] if isinstance(v, list) else v


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
    repair: Literal["report", "quarantine"] = Field(
        "report",
        description="report: H4/D3 report the rows and a person decides (default);"
        " quarantine: fix_data_integrity may move them into the quarantine",
    )
    order_by: list[Ident] | None = Field(
        None,
        min_length=1,
        max_length=32,
        description="duplicates: the row kept is the first by these columns (ascending,"
        " e.g. created_at, id): the oldest; required for repair quarantine",
    )

    @model_validator(mode="after")
    def _shape(self) -> IntegrityRule:
        if self.kind == "orphans":
            if not self.references:
                raise ValueError("an orphans rule needs 'references'")
            ref_cols = self.referenced_columns or ["id"]
            if len(ref_cols) != len(self.columns):
                raise ValueError("'columns' and 'referencedColumns' must have the same length")
        if self.order_by and self.kind != "duplicates":
            raise ValueError("'orderBy' applies to duplicates rules only")
        if self.kind == "duplicates" and self.repair == "quarantine" and not self.order_by:
            # Without an order the kept row would be arbitrary: such a rule stays report-only.
            raise ValueError(
                "a duplicates rule with repair 'quarantine' needs 'orderBy' (which row to keep,"
                ' e.g. ["created_at", "id"] keeps the oldest)'
            )
        return self


class Endpoint(_Model):
    name: Ident
    base: Literal["app", "supabase"] = "app"
    path: UrlPath
    method: Literal["GET", "HEAD"] = "GET"
    auth: Literal["anon", "service_role", "none"] | None = Field(
        None,
        description="which Supabase key to send (apikey + Authorization: Bearer, as supabase-js):"
        " anon by default for base supabase, so grants and RLS apply as for the app's clients;"
        " service_role only for endpoints that need it; none by default for base app",
    )
    expect_status: int = Field(200, ge=100, le=599)
    latency_budget_ms: float | None = Field(
        None, gt=0, le=MAX_PROBE_TIMEOUT_MS, description="defaults to responseTime"
    )


class Realtime(_Model):
    """H5. A ``realtime`` section in the file makes the publication required (critical when
    it is missing); without one, H5 checks the default publication only if the target has
    it, and otherwise says "not configured" (plain PostgreSQL has no realtime)."""

    required: bool = Field(
        True, description="the publication must exist; false: not configured when it is absent"
    )
    publication: Ident = "supabase_realtime"
    tables: list[QualifiedName] = Field(default_factory=list)
    notify_channel: Ident = "westep_ops_probe"


class Auth(_Model):
    """H6. An ``auth`` section in the file makes the auth schema required; without one, H6
    checks these defaults only if the target has the schema, and otherwise says "not
    configured". ``authenticator`` is not a default role: stacks without PostgREST lack it
    (when it exists, H6 checks that it can switch to ``apiRoles``)."""

    required: bool = Field(
        True, description="the auth schema must exist; false: not configured when it is absent"
    )
    schema_name: Ident = Field("auth", alias="schema")
    tables: list[QualifiedName] = Field(default_factory=lambda: ["auth.users"])
    roles: list[Ident] = Field(
        default_factory=lambda: ["anon", "authenticated", "service_role"],
        description="roles that must exist",
    )
    api_roles: list[Ident] = Field(
        default_factory=lambda: ["anon", "authenticated", "service_role"],
        description="roles that need USAGE on the auth schema and that authenticator switches to",
    )
    health_path: UrlPath = "/auth/v1/health"


SilenceCategory = Literal[
    "connection", "pool", "tables", "integrity", "realtime", "auth", "api", "performance"
]


class MaintenanceWindow(_Model):
    """A recurring window (cron in ``timezone``) during which categories are silenced."""

    name: str = Field(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f]+$")
    cron: str = Field(
        min_length=9, max_length=200, description="5-field cron: minute hour dom month dow"
    )
    duration_minutes: int = Field(ge=1, le=7 * 24 * 60)
    categories: list[SilenceCategory] = Field(min_length=1, max_length=8)

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str) -> str:
        from croniter import croniter

        # Five fields only: croniter also takes seconds and years, which a window never needs.
        if len(v.split()) != 5 or not croniter.is_valid(v):
            raise ValueError(f"{v!r} is not a 5-field cron expression (e.g. '0 3 * * 0')")
        return v


class SlaTargets(_Model):
    """The monthly report's targets (the seed's values by default)."""

    availability: float = Field(0.999, ge=0, le=1, description="up / measured time, at least")
    mean_response_ms: float = Field(2000, gt=0, le=MAX_PROBE_TIMEOUT_MS, description="under")
    error_rate: float = Field(0.01, ge=0, le=1, description="failed / API requests, under")
    detection_seconds: float = Field(
        300, gt=0, le=MAX_SECONDS, description="mean detection (upper bound), under"
    )
    recovery_seconds: float = Field(900, gt=0, le=MAX_SECONDS, description="mean recovery, under")
    auto_recovery_success: float = Field(0.8, ge=0, le=1, description="at least")
    alert_precision: float = Field(0.95, ge=0, le=1, description="true / judged alerts, at least")
    false_positive_rate: float = Field(0.05, ge=0, le=1, description="false / judged, under")
    coverage: float = Field(1.0, ge=0, le=1, description="share of time watched, at least")


class Sla(_Model):
    exclude_maintenance: bool = Field(
        False,
        description="leave maintenance-window time out of availability (it is shown apart anyway)",
    )
    min_measured_share: float = Field(
        0.9,
        ge=0,
        le=1,
        description="below this share of measured time, availability is 'insufficient data'",
    )
    targets: SlaTargets = SlaTargets()


TARGET_NAME = r"^[A-Za-z][A-Za-z0-9_-]{0,62}$"  # pydantic: Rust regex, "$" is the end
# The one target of a config without a ``targets`` list (and of rows written before fleets).
DEFAULT_TARGET = "default"
ENV_VAR_NAME = re.compile(r"^[A-Z_][A-Z0-9_]{0,127}\Z")
TagKey = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_.-]{0,62}$")]
TagValue = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")]
# What a secret looks like, so that one pasted into the config is refused, never loaded:
# a URL with a password, a JWT (Supabase's anon and service role keys), Supabase's keys.
_SECRET_LIKE = re.compile(
    r"[A-Za-z][A-Za-z0-9+.-]*://[^/@\s:]*:[^@/\s]+@"
    r"|eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"
    r"|\b(?:sb_secret_|sb_publishable_|sbp_)[A-Za-z0-9_-]{8,}"
)


class Target(_Model):
    """One monitored stack of a fleet (``targets`` in the file).

    ``env`` maps each variable westep-ops reads (``DIRECT_URL``, ``DATABASE_URL``, ...)
    to the NAME of the environment variable that holds this target's value
    (``STAGING_DIRECT_URL``); ``secretsFile`` is a file of ``KEY=VALUE`` lines under the
    standard names. Neither holds a secret: the config names where secrets are, never
    what they are. ``overrides`` holds any section of the config for this target only:
    objects are merged key by key into the shared ones, lists replace them.
    """

    name: str = Field(pattern=TARGET_NAME, description="unique; letters, digits, _ and -")
    env: dict[str, str] = Field(
        default_factory=dict, description="variable -> environment variable holding it"
    )
    secrets_file: str | None = Field(
        None, min_length=1, max_length=4096, pattern=r"^[^\x00-\x1f\x7f]+$"
    )
    tags: dict[TagKey, TagValue] = Field(default_factory=dict, max_length=50)
    overrides: Config | None = None

    @field_validator("env")
    @classmethod
    def _known_variables(cls, v: dict[str, str]) -> dict[str, str]:
        from westep_ops.environment import VARIABLES

        unknown = sorted(set(v) - set(VARIABLES))
        if unknown:
            raise ValueError(
                f"not a westep-ops variable: {', '.join(unknown)} (known: DATABASE_URL,"
                " DIRECT_URL, PGBOUNCER_ADMIN_URL, ... see the README's Environment variables)"
            )
        return v

    @model_validator(mode="after")
    def _shape(self) -> Target:
        if not self.env and self.secrets_file is None:
            raise ValueError(
                "a target needs 'env' (variable -> environment variable name) or 'secretsFile'"
            )
        if self.overrides is not None and "targets" in self.overrides.model_fields_set:
            raise ValueError("'overrides' cannot hold targets (targets do not nest)")
        return self


class Config(_Model):
    monitoring: Monitoring = Monitoring()
    timezone: str = "Asia/Tokyo"
    database_name: Ident = Field("postgres", description="pgbouncer database name (pools)")
    critical_tables: list[CriticalTable] = Field(default_factory=list)
    grants: list[Grant] = Field(default_factory=list)
    integrity_rules: list[IntegrityRule] = Field(default_factory=list)
    endpoints: list[Endpoint] = Field(default_factory=list)
    # No section in the file: checked only where the target has them (see Realtime, Auth).
    realtime: Realtime = Realtime(required=False)
    auth: Auth = Auth(required=False)
    repairs: Repairs = Repairs()
    pool: Pool = Pool()
    report_language: Literal["en", "ja"] = "en"
    maintenance_windows: list[MaintenanceWindow] = Field(default_factory=list, max_length=50)
    sla: Sla = Sla()
    targets: list[Target] = Field(
        default_factory=list,
        max_length=1000,
        description="the fleet; none: one target named 'default' (today's environment)",
    )

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            zoneinfo.ZoneInfo(v)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):  # "Asia": a directory
            raise ValueError(f"unknown time zone {v!r}") from None
        return v

    @model_validator(mode="after")
    def _unique_rule_names(self) -> Config:
        names = [r.name for r in self.integrity_rules]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"integrity rule names must be unique: {', '.join(dupes)}")
        windows = [w.name for w in self.maintenance_windows]
        if len(set(windows)) != len(windows):
            raise ValueError("maintenance window names must be unique")
        targets = [t.name for t in self.targets]
        dupes = sorted({n for n in targets if targets.count(n) > 1})
        if dupes:
            raise ValueError(f"target names must be unique: {', '.join(dupes)}")
        for i, target in enumerate(self.targets):
            try:
                target_config(self, target)
            except WestepError as e:  # the merged sections break a rule across sections
                raise ValueError(f"targets[{i}] ({target.name}): {e}") from None
        return self


Target.model_rebuild()


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``: objects merged key by key, anything else replaced."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def target_config(config: Config, target: Target) -> Config:
    """The effective config of one target: the shared sections with its overrides.

    Only what the file sets is merged (defaults stay defaults, so a ``realtime`` section
    set for one target makes the publication required for that target only); objects
    merge key by key, lists replace. The result has no ``targets``.
    """
    base = config.model_dump(by_alias=True, exclude_unset=True, exclude={"targets"}, mode="json")
    over = (
        target.overrides.model_dump(by_alias=True, exclude_unset=True, mode="json")
        if target.overrides is not None
        else {}
    )
    try:
        return Config.model_validate(_deep_merge(base, over))
    except ValidationError as e:
        raise WestepError(describe_validation_error(e, "the merged sections")) from None


def _loc(loc: tuple[object, ...]) -> str:
    out = ""
    for part in loc:
        if part == "[key]":  # a bad dict key: the path already ends with it
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def describe_validation_error(err: ValidationError, source: str, what: str = "config error") -> str:
    """First problem as one line naming the key, with a count of the rest."""
    errors = err.errors(include_url=False)
    first = errors[0]
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "missing":
        msg = "required key is missing"
    elif first["type"] == "extra_forbidden":
        msg = "unknown key"
    line = f"{what} in {source}: {_loc(first['loc'])}: {msg}"
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


class _Object(dict[str, Any]):
    """A JSON object that remembers the keys it was given twice (the last one wins)."""

    duplicates: list[str]


def _object_pairs(pairs: list[tuple[str, object]]) -> _Object:
    obj = _Object(pairs)
    obj.duplicates = [k for k, n in Counter(k for k, _ in pairs).items() if n > 1]
    return obj


def check_shape(data: object, source: str, what: str = "config error") -> None:
    """Refuse what pydantic cannot see or cannot survive, naming the key.

    Nesting deeper than :data:`MAX_DEPTH` (pydantic and ``json.dumps`` recurse), a key
    given twice (JSON keeps the last one silently), and control characters in any key or
    string (a trailing newline turns a name into another name).
    """
    stack: list[tuple[object, tuple[object, ...]]] = [(data, ())]
    while stack:
        node, loc = stack.pop()
        if len(loc) > MAX_DEPTH:
            shown = _loc(loc[:4]) + "..."
            raise WestepError(f"{what} in {source}: {shown}: nested deeper than {MAX_DEPTH} levels")
        if isinstance(node, dict):
            for k in getattr(node, "duplicates", ()):
                raise WestepError(f"{what} in {source}: {_loc((*loc, k))}: key given twice")
            for k, v in node.items():
                if _has_control(k):
                    raise WestepError(
                        f"{what} in {source}: {_loc(loc)}: key {k!r} has a control character"
                    )
                stack.append((v, (*loc, k)))
        elif isinstance(node, list):
            stack.extend((v, (*loc, i)) for i, v in enumerate(node))
        elif isinstance(node, str) and _has_control(node):
            raise WestepError(
                f"{what} in {source}: {_loc(loc)}: control character in {node[:60]!r}"
            )


def read_json_file(path: Path, what: str = "config error") -> object:
    """Read and parse a JSON file; every failure is one :class:`WestepError` line.

    Keys given twice are remembered for :func:`check_shape`, which callers run next.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise WestepError(f"{what}: {path}: file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        reason = getattr(e, "strerror", None) or type(e).__name__
        raise WestepError(f"{what}: {path}: cannot read ({reason})") from None
    try:
        data = json.loads(text, object_pairs_hook=_object_pairs)
    except json.JSONDecodeError as e:
        raise WestepError(
            f"{what} in {path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}"
        ) from None
    except RecursionError:
        raise WestepError(
            f"{what} in {path}: nested deeper than {MAX_DEPTH} levels (JSON too deep to parse)"
        ) from None
    except ValueError as e:  # an integer literal of more than 4300 digits
        raise WestepError(f"{what} in {path}: invalid JSON: {str(e).split(':')[0]}") from None
    return data


def parse_config(data: object, source: str = "config") -> Config:
    """Validate already-parsed JSON; raise :class:`WestepError` with one line on failure."""
    if not isinstance(data, dict):
        raise WestepError(f"config error in {source}: the top level must be a JSON object")
    check_shape(data, source)
    _refuse_secrets_in_targets(data.get("targets"), source)
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise WestepError(describe_validation_error(e, source)) from None


def _refuse_secrets_in_targets(targets: object, source: str) -> None:
    """Refuse a secret written into ``targets`` before pydantic sees it (its errors quote
    short inputs): an ``env`` value that is not a variable name, or any string that looks
    like a password-bearing URL or a key. The line names the key, never the value."""
    if not isinstance(targets, list):
        return
    stack: list[tuple[object, tuple[object, ...]]] = [
        (t, ("targets", i)) for i, t in enumerate(targets)
    ]
    while stack:
        node, loc = stack.pop()
        if isinstance(node, dict):
            stack.extend((v, (*loc, k)) for k, v in node.items())
            env = node.get("env") if len(loc) == 2 else None
            if isinstance(env, dict):
                for key, value in env.items():
                    if isinstance(value, str) and not ENV_VAR_NAME.match(value):
                        raise WestepError(
                            f"config error in {source}: {_loc((*loc, 'env', key))}: must be the"
                            " NAME of an environment variable (A-Z, 0-9, _; e.g."
                            " STAGING_DIRECT_URL), never the value itself (not shown)"
                        )
        elif isinstance(node, list):
            stack.extend((v, (*loc, i)) for i, v in enumerate(node))
        elif isinstance(node, str) and _SECRET_LIKE.search(node):
            raise WestepError(
                f"config error in {source}: {_loc(loc)}: looks like a connection string with a"
                " password or a key: secrets never go in the config; put it in the environment"
                " or a secretsFile and name it in the target's 'env' (the value is not shown)"
            )


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Load and validate the config; built-in defaults when no file is configured."""
    p = config_path(path)
    if p is None:
        return Config()
    return parse_config(read_json_file(p), str(p))
