"""Dagster resources: where the monitored stack and the ops store are.

Each resource names the environment variable it reads and reads it when a run starts,
never at import: the UI and ``dagster definitions validate`` work without any secret,
and secrets never appear in resource config shown by the UI. Variables the CLI treats
as optional stay optional here (hosted Supabase has no pgbouncer admin console), and
every value passes through the same :meth:`Environment.from_env` as the CLI, with the
same validation and secret registration. Asset and repair code gets the plain
:class:`Environment` and :class:`Config` objects the CLI uses, so it is the same code.
"""

import os
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from dagster import ConfigurableResource
from pydantic import Field

from westep_ops.config import Config, load_config
from westep_ops.db import connect
from westep_ops.environment import Environment
from westep_ops.errors import WestepError


class EnvUrlResource(ConfigurableResource):
    """A URL read from the environment variable ``env_var`` when a run starts."""

    env_var: str = Field(description="environment variable holding the URL")

    def value(self) -> str | None:
        return os.environ.get(self.env_var) or None


class PostgresResource(EnvUrlResource):
    """One PostgreSQL endpoint (the target, direct or pooled, or the ops store)."""

    pooled: bool = Field(False, description="through transaction-mode pgbouncer")

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


class MonitoredStackResource(ConfigurableResource):
    """Everything a probe or repair needs: the target's endpoints and the config file."""

    direct_db: PostgresResource
    pooled_db: PostgresResource
    pgbouncer_admin: PgBouncerAdminResource
    http: HttpResource
    config_path: str | None = Field(None, description="config file; default as for the CLI")

    def environment(self) -> Environment:
        """The CLI's Environment, with this resource's variables mapped onto the standard names."""
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

    def config(self) -> Config:
        return load_config(self.config_path)


def default_resources() -> dict[str, ConfigurableResource]:
    return {
        "stack": MonitoredStackResource(
            direct_db=PostgresResource(env_var="DIRECT_URL"),
            pooled_db=PostgresResource(env_var="DATABASE_URL", pooled=True),
            pgbouncer_admin=PgBouncerAdminResource(env_var="PGBOUNCER_ADMIN_URL"),
            http=HttpResource(),
        ),
        "ops_storage": PostgresResource(env_var="WESTEP_OPS_STORAGE_URL"),
    }
