"""The engine's planning on constructed observations: what is repaired, escalated or blinded."""

from __future__ import annotations

from pathlib import Path

from westep_ops.config import Category, load_config
from westep_ops.monitoring.engine import Monitor, Observation, observations
from westep_ops.probes.base import MONITOR_MISCONFIGURED, CheckResult, Status
from westep_ops.probes.performance import PerformanceSample
from westep_ops.repairs.recovery import plan_repairs
from westep_ops_tests.helpers import write_config


def _obs(category: Category, *problems: tuple[Status, str]) -> Observation:
    r = CheckResult(category)
    for status, finding in problems:
        r.problem(status, f"{category.value}: {finding}", finding)
    r.finish("ok")
    if category is Category.connection and not any(
        f == "direct_connection_failed" for _, f in problems
    ):
        r.values["direct_ms"] = 1.0  # the direct login worked
    return Observation(category.value, r.status.value, r.summary, result=r)


# -- M3: clients queued a moment are load: no plan, no incident ---------------------------
def test_pool_queue_plans_no_repair_and_escalates_nothing(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path / "c.json"))
    queue = _obs(Category.pool, (Status.warning, "pool_queue")).result
    assert queue is not None and queue.status is Status.warning  # still shown as a warning
    assert plan_repairs([queue], None, config) == ([], [])
    # a pool that cannot serve still gets its repair
    wait = _obs(Category.pool, (Status.warning, "pool_queue"), (Status.critical, "pool_wait"))
    plan, _ = plan_repairs([wait.result], None, config)  # type: ignore[list-item]
    assert [p.action.value for p in plan] == ["restore_connection_pool"]


# -- M4: only the monitor's refused login blinds the performance sample ------------------
def _perf() -> PerformanceSample:
    return PerformanceSample(at=0.0, status="warning", problems=["mean API latency 3000 ms"])


def test_an_erroring_cheap_check_does_not_mute_performance() -> None:
    h7 = CheckResult(Category.api)
    h7.problem(Status.error, "SUPABASE_ANON_KEY is not set")
    h7.finish("ok")
    h1 = _obs(Category.connection).result
    perf = next(o for o in observations([h1, h7], _perf()) if o.category == "performance")  # type: ignore[list-item]
    assert perf.failing and perf.suspected_cause is None


def test_a_refused_monitor_login_blinds_the_performance_sample() -> None:
    h1 = CheckResult(Category.connection)
    h1.problem(Status.error, "direct: password authentication failed", MONITOR_MISCONFIGURED)
    h1.values["direct_error"] = "password authentication failed"
    h1.finish("ok")
    perf = next(o for o in observations([h1], _perf()) if o.category == "performance")
    assert perf.suspected_cause == "connection"


# -- M2: no repair while the monitor's own login is refused ------------------------------
def test_the_engine_plans_no_repair_while_h1_is_refused(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path / "c.json"))
    h1 = CheckResult(Category.connection)
    h1.problem(Status.error, "direct: password authentication failed", MONITOR_MISCONFIGURED)
    h1.values["direct_error"] = "password authentication failed"
    h1.finish("ok")
    paused = _obs(Category.pool, (Status.critical, "pool_paused"))
    m = Monitor.__new__(Monitor)  # the planner only: no probes, no history
    m.config = config
    m._refused = []  # noqa: SLF001
    assert [p.action.value for p in m._plan_for(paused)[0]] == ["restore_connection_pool"]  # noqa: SLF001
    m._refused = [h1]  # noqa: SLF001
    plan, escalations = m._plan_for(paused)  # noqa: SLF001
    assert plan == []
    assert [e.category for e in escalations] == ["pool"]
    assert "misconfigured" in escalations[0].reason
