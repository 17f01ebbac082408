"""Today in the Dagster UI, repair runs that say what they did, tables without ``nan``.

Schedules are evaluated with ``build_schedule_context`` at a given time, no database;
today's partition materialized on the sandbox is in ``integration/test_dagster_today.py``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pandas as pd
import pytest
from dagster import (
    DagsterInstance,
    RepositoryDefinition,
    ScheduleDefinition,
    build_schedule_context,
)

from westep_ops.defs.monitoring.jobs import IN_PROGRESS_TAG
from westep_ops.defs.monitoring.partitions import daily, partition_progress
from westep_ops.defs.monitoring.sensors import incident_refreshes
from westep_ops.defs.repairs.jobs import repair_trigger
from westep_ops.monitoring.daily_report import markdown_table
from westep_ops.monitoring.feed import Feed, FeedCursor, TargetFeed
from westep_ops.monitoring.rotation import Rotation

TOKYO = ZoneInfo("Asia/Tokyo")


def _repo() -> RepositoryDefinition:
    from westep_ops.definitions import defs

    return defs.get_repository_def()


def _schedule(name: str) -> ScheduleDefinition:
    from westep_ops.definitions import defs

    return defs.get_schedule_def(name)


def test_today_is_a_partition() -> None:
    keys = daily.get_partition_keys(current_time=datetime(2026, 12, 6, 0, 5, tzinfo=TOKYO))
    assert keys[-2:] == ["2026-12-05", "2026-12-06"]


def test_hourly_refresh_requests_today_in_progress() -> None:
    at = datetime(2026, 12, 6, 10, 15, tzinfo=TOKYO)
    with DagsterInstance.ephemeral() as instance:
        data = _schedule("today_refresh_schedule").evaluate_tick(
            build_schedule_context(
                instance=instance, scheduled_execution_time=at, repository_def=_repo()
            )
        )
    (req,) = data.run_requests or []
    # the whole fleet's today in one run: a range over the targets' partitions
    assert req.partition_key_range is not None
    assert (req.partition_key_range.start, req.partition_key_range.end) == (
        "2026-12-06|default",
        "2026-12-06|default",
    )
    assert req.run_key == "today-2026-12-06-10"
    assert req.tags[IN_PROGRESS_TAG] == "true"


def test_0030_run_is_for_yesterday_not_the_new_day() -> None:
    # build_schedule_from_partitioned_job would pick the last partition: today.
    at = datetime(2026, 12, 6, 0, 30, tzinfo=TOKYO)
    with DagsterInstance.ephemeral() as instance:
        data = _schedule("daily_assets_schedule").evaluate_tick(
            build_schedule_context(
                instance=instance, scheduled_execution_time=at, repository_def=_repo()
            )
        )
    (req,) = data.run_requests or []
    assert req.partition_key_range is not None
    assert req.partition_key_range.start == "2026-12-05|default"
    assert req.run_key == "daily-2026-12-05"
    assert IN_PROGRESS_TAG not in req.tags


def test_partition_progress_in_the_team_zone() -> None:
    # 16:00 UTC on the 5th is already the 6th in Tokyo.
    now = datetime(2026, 12, 5, 16, 0, tzinfo=UTC)
    assert partition_progress("2026-12-06", now) == {
        "in_progress": True,
        "as_of": "2026-12-06T01:00:00+09:00",
    }
    assert partition_progress("2026-12-05", now)["in_progress"] is False


def test_an_incident_that_opens_or_closes_refreshes_today() -> None:
    feed = Feed(
        FeedCursor(),
        FeedCursor(),
        {
            "default": TargetFeed("default", opened=[7], closed=[5]),
            "elsewhere": TargetFeed("elsewhere", opened=[8]),  # not in these definitions
        },
        more=False,
    )
    reqs = incident_refreshes(feed, datetime(2026, 12, 6, 3, 0, tzinfo=UTC))
    # one refresh of the target's today per tick, however many incidents opened or closed
    assert [(r.job_name, r.partition_key, r.run_key) for r in reqs] == [
        (
            "daily_monitoring_job",
            "2026-12-06|default",
            "today-2026-12-06-default-incidents-5,7-030000",
        ),
    ]
    quiet = Feed(FeedCursor(), FeedCursor(), {"default": TargetFeed("default")}, more=False)
    assert incident_refreshes(quiet, datetime.now(UTC)) == []


def test_a_person_s_repair_run_is_recorded_as_manual() -> None:
    sensor = {"dagster/sensor_name": "monitoring_sensor"}
    assert repair_trigger("incident #3", sensor, "abcdef123456") == "incident #3"
    rerun = {**sensor, "dagster/parent_run_id": "x"}
    assert repair_trigger("incident #3", rerun, "abcdef123456") == (
        "manual (Dagster run abcdef12, incident #3)"
    )
    assert repair_trigger("dagster", {}, "abcdef123456").startswith("manual")


def test_incidents_table_has_empty_cells_not_nan() -> None:
    frame = pd.DataFrame(
        {
            "id": [1, 2],
            "recover_s": [12.5, float("nan")],
            "recovered_by": [None, "auto:x"],
            "escalation": pd.array([None, 2], dtype="Int64"),
            "started_at": [pd.Timestamp("2026-12-06", tz="UTC"), pd.NaT],
        }
    )
    text = markdown_table(frame)
    assert "nan" not in text.lower() and "NaT" not in text and "<NA>" not in text
    assert "12.5" in text and "auto:x" in text


def test_rotation_names_the_archived_daily_reports(tmp_path: Path) -> None:
    r = Rotation(tmp_path / "logs-2026-12-06.tar.gz", ["daily-report-2026-11-30.md", "x.log"])
    assert r.daily_reports() == {"2026-11-30": "daily-report-2026-11-30.md"}


def test_owners_are_configurable(monkeypatch: pytest.MonkeyPatch) -> None:
    from westep_ops.defs import owners as read_owners

    monkeypatch.delenv("WESTEP_OPS_DAGSTER_OWNERS", raising=False)
    assert read_owners() == ["team:on-call"]
    monkeypatch.setenv("WESTEP_OPS_DAGSTER_OWNERS", "team:db-ops, alice@example.com")
    assert read_owners() == ["team:db-ops", "alice@example.com"]
    monkeypatch.setenv("WESTEP_OPS_DAGSTER_OWNERS", "nobody")
    with pytest.raises(ValueError, match="neither an e-mail nor team:NAME"):
        read_owners()
