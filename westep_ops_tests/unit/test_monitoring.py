"""Log rotation and the monitoring schedules' timing, without a sandbox."""

from __future__ import annotations

import tarfile
from datetime import UTC, datetime
from pathlib import Path

from westep_ops.monitoring.rotation import rotate_logs


def test_log_rotation_keeps_every_files_content(tmp_path: Path) -> None:
    old = {
        "monitoring-alerts-2026-11-20.log": "a\n",
        "monitoring-events-2026-11-20.json": '{"x": 1}\n',
        "diagnosis-report-2026-11-21.md": "# r\n",
    }
    keep = {"monitoring-alerts-2026-11-28.log": "today\n", "repair-attempts.jsonl": "{}\n"}
    for name, text in {**old, **keep}.items():
        (tmp_path / name).write_text(text)
    r = rotate_logs(tmp_path, "2026-11-28")
    assert r.archive == tmp_path / "logs-2026-11-28.tar.gz" and sorted(r.files) == sorted(old)
    with tarfile.open(r.archive) as tar:
        assert {m.name: tar.extractfile(m).read().decode() for m in tar.getmembers()} == old  # type: ignore[union-attr]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*keep, "logs-2026-11-28.tar.gz"])


def test_schedules_fire_in_tokyo_time() -> None:
    from dagster import build_schedule_context

    from westep_ops.definitions import defs

    morning = defs.get_schedule_def("morning_health_check_schedule")
    at_nine = datetime(2026, 11, 30, 0, 0, tzinfo=UTC)  # 09:00 in Tokyo
    with build_schedule_context(
        scheduled_execution_time=at_nine, repository_def=defs.get_repository_def()
    ) as ctx:
        requests = list(morning.evaluate_tick(ctx).run_requests or [])
    # one sweep per target's partition
    assert [(r.partition_key, r.run_key) for r in requests] == [
        ("default", "morning-2026-11-30-default")
    ]
    assert morning.cron_schedule == "0 9 * * *" and morning.execution_timezone == "Asia/Tokyo"
    weekly = defs.get_schedule_def("weekly_maintenance_schedule")
    assert weekly.cron_schedule == "0 3 * * 0"


def test_monthly_schedule_asks_for_last_month() -> None:
    from dagster import build_schedule_context

    from westep_ops.definitions import defs

    sched = defs.get_schedule_def("monthly_sla_schedule")
    first = datetime(2026, 11, 30, 17, 0, tzinfo=UTC)  # 2026-12-01 02:00 in Tokyo
    with build_schedule_context(
        scheduled_execution_time=first, repository_def=defs.get_repository_def()
    ) as ctx:
        (request,) = sched.evaluate_tick(ctx).run_requests or []
    assert request.partition_key == "2026-11-01|default"
