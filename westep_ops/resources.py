"""Dagster resources: where the monitored stack and the ops store are.

Each is a ``ConfigurableResource`` built from ``EnvVar``s, which Dagster resolves when a
run starts, not when the definitions load: the UI and ``dagster definitions validate``
work without any secret, and a run without one fails with Dagster's clear message
naming the missing variable. The resources hand out the same plain objects the CLI uses
(:class:`~westep_ops.environment.Environment`, :class:`~westep_ops.config.Config`), so
asset code and CLI code are the same code.
"""

from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import psycopg
from dagster import ConfigurableResource, EnvVar
from pydantic import Field

from westep_ops.config import Config, load_config
from westep_ops.db import connect
from westep_ops.environment import Environment


class PostgresResource(ConfigurableResource):
    """One PostgreSQL endpoint: the target (direct or pooled) or the ops store."""

    url: str = Field(description="postgresql:// URL (from the environment)")
    pooled: bool = Field(False, description="through transaction-mode pgbouncer")
    connect_timeout_ms: int = 3000
    statement_timeout_ms: int = 5000

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        conn = connect(
            self.url,
            connect_timeout_ms=self.connect_timeout_ms,
            statement_timeout_ms=self.statement_timeout_ms,
            pooled=self.pooled,
        )
        try:
            yield conn
        finally:
            conn.close()


class PgBouncerAdminResource(ConfigurableResource):
    """pgbouncer's admin console (``SHOW`` only for the monitor)."""

    url: str
    connect_timeout_ms: int = 3000

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        conn = connect(self.url, connect_timeout_ms=self.connect_timeout_ms, admin_console=True)
        try:
            yield conn
        finally:
            conn.close()


class HttpResource(ConfigurableResource):
    """The app and the Supabase project over HTTP."""

    app_url: str
    supabase_url: str
    timeout_ms: int = 5000

    def client(self) -> httpx.Client:
        return httpx.Client(timeout=self.timeout_ms / 1000, follow_redirects=False)


class WestepConfigResource(ConfigurableResource):
    """The westep-ops JSON config (same file and defaults as the CLI)."""

    path: str | None = Field(None, description="config file; default as for the CLI")

    def load(self) -> Config:
        return load_config(self.path)


def environment_from(
    direct: PostgresResource,
    pooled: PostgresResource,
    pgbouncer_admin: PgBouncerAdminResource,
    ops_storage: PostgresResource,
    http: HttpResource,
) -> Environment:
    """The plain :class:`Environment` the probes take, assembled from resources."""
    return Environment(
        direct_url=direct.url,
        database_url=pooled.url,
        pgbouncer_admin_url=pgbouncer_admin.url,
        storage_url=ops_storage.url,
        app_url=http.app_url,
        supabase_url=http.supabase_url,
    )


def default_resources() -> dict[str, ConfigurableResource]:
    return {
        "direct_db": PostgresResource(url=EnvVar("DIRECT_URL")),
        "pooled_db": PostgresResource(url=EnvVar("DATABASE_URL"), pooled=True),
        "pgbouncer_admin": PgBouncerAdminResource(url=EnvVar("PGBOUNCER_ADMIN_URL")),
        "ops_storage": PostgresResource(url=EnvVar("WESTEP_OPS_STORAGE_URL")),
        "http": HttpResource(
            app_url=EnvVar("WESTEP_OPS_APP_URL"), supabase_url=EnvVar("NEXT_PUBLIC_SUPABASE_URL")
        ),
        "westep_config": WestepConfigResource(),
    }
