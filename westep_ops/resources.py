"""Dagster resources: where the monitored stack and the ops store are.

The monitored stack is a fleet: every method of :class:`MonitoredStackResource` takes a
target name (the config's ``targets``; ``default`` without a list) and resolves that
target's environment and effective config through :mod:`westep_ops.targets`.

Each resource names the environment variable it reads and reads it when a run starts,
never at import: the UI and ``dagster definitions validate`` work without any secret,
and secrets never appear in resource config shown by the UI. Variables the CLI treats
as optional stay optional here (hosted Supabase has no pgbouncer admin console), and
every value passes through the same :meth:`Environment.from_env` as the CLI, with the
same validation and secret registration. Asset and repair code gets the plain
:class:`Environment` and :class:`Config` objects the CLI uses, so it is the same code.

As in Dagster's ``project_fully_featured`` (``HNClient`` / ``HNSnapshotClient``), the
monitored stack is an abstract resource with two implementations: ``LiveStackResource``
(the real stack, from the environment) and ``OfflineStackResource`` (a fixed environment
and config and canned H1-H7 results, no network), so the same asset and sensor code is
unit-tested without a sandbox. Definitions always use the live one.
"""

import json
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from dagster import ConfigurableResource
from pydantic import Field

from westep_ops.config import Category, Config, load_config, parse_config, target_config
from westep_ops.db import connect
from westep_ops.environment import Environment
from westep_ops.errors import WestepError
from westep_ops.probes.base import CheckResult, Status
from westep_ops.targets import DEFAULT_TARGET, resolve_target, select, target_specs


class EnvUrlResource(ConfigurableResource):
    """A URL read from the environment variable ``env_var`` when a run starts."""

    env_var: str = Field(description="environment variable holding the URL")

    def value(self) -> str | None:
        return os.environ.get(self.env_var) or None


class PostgresResource(EnvUrlResource):
    """One PostgreSQL endpoint (the target, direct or pooled, or the ops store)."""

    pooled: bool = Field(default=False, description="through transaction-mode pgbouncer")

    @contextmanager
    def connection(
        self, *, connect_timeout_ms: int = 3000, statement_timeout_ms: int = 5000
    ) -> Iterator[psycopg.Connection]:
        dsn = self.value()
        if not dsn:
            raise WestepError(f"{self.env_var} is not set")
        conn = connect(
            dsn,
            connect_timeout_ms=connect_timeout_ms,
            statement_timeout_ms=statement_timeout_ms,
            pooled=self.pooled,
        )
        try:
            yield conn
        finally:
            conn.close()


class PgBouncerAdminResource(EnvUrlResource):
    """pgbouncer's admin console (``SHOW`` only for the monitor); optional."""


class HttpResource(ConfigurableResource):
    """The app and the Supabase project over HTTP (URLs from the environment)."""

    app_env_var: str = "WESTEP_OPS_APP_URL"
    supabase_env_var: str = "NEXT_PUBLIC_SUPABASE_URL"


class MonitoredStackResource(ConfigurableResource, ABC):
    """What assets, jobs and sensors need of the monitored fleet: each target's
    environment and effective config, and one H1-H7 health sweep of a target (live or
    offline). ``target`` is a name of the config's ``targets`` (``default`` without one)."""

    @abstractmethod
    def fleet_config(self) -> Config:
        """The validated westep-ops config as loaded (shared sections, the targets list)."""

    def target_names(self) -> list[str]:
        """The config's target names, in its order (``default`` without a targets list)."""
        return [t.name for t in target_specs(self.fleet_config())]

    @abstractmethod
    def environment(self, target: str = DEFAULT_TARGET) -> Environment:
        """The CLI's Environment of ``target``: where its endpoints are."""

    def config(self, target: str | None = None) -> Config:
        """``target``'s effective config (shared sections with its overrides); with no
        target, the config as loaded."""
        cfg = self.fleet_config()
        if target is None or not cfg.targets:
            if target not in (None, DEFAULT_TARGET):
                select(target_specs(cfg), [target])  # one clear error: unknown target
            return cfg
        return target_config(cfg, select(cfg.targets, [target])[0])

    @abstractmethod
    def health_check(self, target: str = DEFAULT_TARGET) -> list[CheckResult]:
        """One health sweep of ``target``, H1-H7, in category order."""


class LiveStackResource(MonitoredStackResource):
    """The real fleet: the config file and each target's variables (without a targets
    list, the one target ``default`` reads this resource's variables, as before)."""

    direct_db: PostgresResource
    pooled_db: PostgresResource
    pgbouncer_admin: PgBouncerAdminResource
    http: HttpResource
    config_path: str | None = Field(default=None, description="config file; default as for the CLI")

    def environment(self, target: str = DEFAULT_TARGET) -> Environment:
        """The CLI's Environment of ``target``; for the one ``default`` target, this
        resource's variables mapped onto the standard names."""
        cfg = self.fleet_config()
        if cfg.targets:
            spec = select(cfg.targets, [target])[0]
            return resolve_target(cfg, spec).environment
        select(target_specs(cfg), [target])  # one clear error: unknown target
        env = dict(os.environ)
        for standard, source in (
            ("DIRECT_URL", self.direct_db.env_var),
            ("DATABASE_URL", self.pooled_db.env_var),
            ("PGBOUNCER_ADMIN_URL", self.pgbouncer_admin.env_var),
            ("WESTEP_OPS_APP_URL", self.http.app_env_var),
            ("NEXT_PUBLIC_SUPABASE_URL", self.http.supabase_env_var),
        ):
            env[standard] = os.environ.get(source, "")
        return Environment.from_env(env)

    def fleet_config(self) -> Config:
        return load_config(self.config_path)

    def health_check(self, target: str = DEFAULT_TARGET) -> list[CheckResult]:
        from westep_ops.probes.health import run_health_check  # heavy; only when a run sweeps
        from westep_ops.probes.session import ProbeSession

        with ProbeSession(self.environment(target), self.config(target)) as session:
            return run_health_check(session)


# Port 1 refuses at once: an offline test that reaches for the network fails fast and
# loudly instead of probing something. No value here is a secret.
OFFLINE_ENV = {
    "DIRECT_URL": "postgresql://westep_monitor:offline@127.0.0.1:1/postgres",
    "DATABASE_URL": "postgresql://westep_monitor:offline@127.0.0.1:1/postgres",
    "WESTEP_OPS_APP_URL": "http://127.0.0.1:1",
    "NEXT_PUBLIC_SUPABASE_URL": "http://127.0.0.1:1",
}


class OfflineStackResource(MonitoredStackResource):
    """A stack that is never contacted: a fixed environment, the built-in default config
    (or ``config_json``), and canned health results (``ok`` unless ``statuses`` says
    otherwise), for unit tests of asset and sensor wiring."""

    statuses: dict[str, str] = Field(
        default_factory=dict, description="category -> canned status (ok when not named)"
    )
    config_json: str = Field("{}", description="config as JSON text; {}: the built-in defaults")

    def environment(self, target: str = DEFAULT_TARGET) -> Environment:
        select(target_specs(self.fleet_config()), [target])  # one clear error: unknown target
        return Environment.from_env(OFFLINE_ENV)

    def fleet_config(self) -> Config:
        return parse_config(json.loads(self.config_json), "offline config")

    def health_check(self, target: str = DEFAULT_TARGET) -> list[CheckResult]:
        self.environment(target)
        unknown = set(self.statuses) - {c.value for c in Category}
        if unknown:
            raise WestepError(f"offline stack: unknown categories {sorted(unknown)}")
        results = []
        for category in Category:
            status = Status(self.statuses.get(category.value, Status.ok.value))
            results.append(
                CheckResult(
                    category,
                    status=status,
                    summary=f"offline: canned {status.value}",
                    source="offline",
                )
            )
        return results


def default_resources() -> dict[str, ConfigurableResource]:
    return {
        "stack": LiveStackResource(
            direct_db=PostgresResource(env_var="DIRECT_URL"),
            pooled_db=PostgresResource(env_var="DATABASE_URL", pooled=True),
            pgbouncer_admin=PgBouncerAdminResource(env_var="PGBOUNCER_ADMIN_URL"),
            http=HttpResource(),
        ),
        "ops_storage": PostgresResource(env_var="WESTEP_OPS_STORAGE_URL"),
    }
