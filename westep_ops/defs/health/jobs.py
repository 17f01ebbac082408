"""Connectivity as a Dagster job: the first thing an on-call engineer runs from the UI."""

from dagster import Failure, MetadataValue, OpExecutionContext, job, op

from westep_ops.probes.connection import test_connections
from westep_ops.redact import redact
from westep_ops.resources import (
    HttpResource,
    PgBouncerAdminResource,
    PostgresResource,
    WestepConfigResource,
    environment_from,
)


@op(
    description="Reach the target directly, through pgbouncer, its admin console and the ops store."
)
def test_connection(
    context: OpExecutionContext,
    direct_db: PostgresResource,
    pooled_db: PostgresResource,
    pgbouncer_admin: PgBouncerAdminResource,
    ops_storage: PostgresResource,
    http: HttpResource,
    westep_config: WestepConfigResource,
) -> None:
    env = environment_from(direct_db, pooled_db, pgbouncer_admin, ops_storage, http)
    results = test_connections(env, westep_config.load())
    table = "| target | ok | connect ms | query ms | detail |\n|---|---|---|---|---|\n" + "\n".join(
        f"| {r.target} | {'yes' if r.ok else 'NO'} | {r.connect_ms or ''} | {r.query_ms or ''} "
        f"| {redact(r.detail)} |"
        for r in results
    )
    context.log.info(table)
    failed = [r for r in results if not r.ok]
    if failed:
        raise Failure(
            description="; ".join(f"{r.target}: {redact(r.detail)}" for r in failed),
            metadata={"results": MetadataValue.md(table)},
        )


@job(
    description="Check that every part of the monitored stack answers (westep-ops test-connection)."
)
def test_connection_job() -> None:
    test_connection()
