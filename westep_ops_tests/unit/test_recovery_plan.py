"""What recovery plans from findings, on constructed check results (no sandbox)."""

from __future__ import annotations

from westep_ops.config import Category, Config
from westep_ops.probes.base import CheckResult, Status
from westep_ops.repairs.recovery import plan_repairs


def _h1(*findings: str) -> CheckResult:
    r = CheckResult(Category.connection)
    for f in findings:
        r.problem(Status.critical, f"{f} seen", f)
    return r.finish("ok")


def test_postgresql_down_escalates_once_not_also_as_a_pgbouncer_auth_problem() -> None:
    # pg_down: both H1 paths fail; the pooled one because of PostgreSQL, not pgbouncer.
    plan, escalations = plan_repairs(
        [_h1("direct_connection_failed", "pooled_connection_failed")], None, Config()
    )
    assert plan == []
    assert [e.reason.split(" (")[0] for e in escalations] == [
        "PostgreSQL does not accept connections: start or fix the server"
    ]


def test_a_pooled_failure_alone_still_points_at_pgbouncer() -> None:
    _plan, escalations = plan_repairs([_h1("pooled_connection_failed")], None, Config())
    assert len(escalations) == 1 and "pgbouncer itself looks fine" in escalations[0].reason
