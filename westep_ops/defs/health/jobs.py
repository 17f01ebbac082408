"""The health domain's jobs: connectivity (the first thing an on-call engineer runs from
the UI) and the morning sweep of ``health_check``."""

from dagster import (
    AssetSelection,
    Failure,
    MetadataValue,
    OpExecutionContext,
    define_asset_job,
    job,
    op,
)

from westep_ops.probes.connection import test_connections
from westep_ops.redact import redact
from westep_ops.resources import MonitoredStackResource, PostgresResource


@op(
    description="Reach each target directly, through pgbouncer, its admin console, and the ops store."
)
def test_connection(
    context: OpExecutionContext, stack: MonitoredStackResource, ops_storage: PostgresResource
) -> None:
    rows, failed = [], []
    for target in stack.target_names():
        env = stack.environment(target)
        if ops_storage.value():
            env = env.replace(storage_url=ops_storage.value())
        for r in test_connections(env, stack.config(target)):
            rows.append(
                f"| {target} | {r.target} | {'yes' if r.ok else 'skipped' if r.skipped else 'NO'}"
                f" | {r.connect_ms or ''} | {r.query_ms or ''} | {redact(r.detail)} |"
            )
            if not r.passed:
                failed.append(f"{target} {r.target}: {redact(r.detail)}")
    table = (
        "| target | endpoint | ok | connect ms | query ms | detail |\n|---|---|---|---|---|---|\n"
        + "\n".join(rows)
    )
    context.log.info(table)
    if failed:
        raise Failure(description="; ".join(failed), metadata={"results": MetadataValue.md(table)})


@job(
    description="Check that every part of the monitored stack answers (westep-ops test-connection)."
)
def test_connection_job() -> None:
    test_connection()


health_check_job = define_asset_job(
    "health_check_job",
    selection=AssetSelection.assets("health_check"),
    description="09:00: the morning health check (H1-H7 as asset checks).",
)
