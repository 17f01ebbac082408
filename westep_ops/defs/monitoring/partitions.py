"""Days as the team lives them: daily partitions in the configured time zone (Asia/Tokyo).

Today is a partition too (``end_offset=1``): what the monitor saw this morning shows in
the daily assets during the day (refreshed hourly and after incidents), marked in
progress, and the 00:30 run recomputes it once it is over. Because the last partition
is today, the 00:30 schedule names yesterday explicitly (Dagster's
``build_schedule_from_partitioned_job`` would pick the last one: today).
"""

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from dagster import DailyPartitionsDefinition

from westep_ops.defs import TIMEZONE

daily = DailyPartitionsDefinition(start_date="2026-01-01", timezone=TIMEZONE, end_offset=1)


def day_key(when: datetime, days_back: int = 0) -> str:
    """The daily partition key of ``when`` (minus ``days_back`` days) in the team's zone."""
    return (when.astimezone(ZoneInfo(TIMEZONE)) - timedelta(days=days_back)).strftime("%Y-%m-%d")


def partition_progress(partition_key: str, now: datetime) -> dict[str, object]:
    """Metadata saying whether a daily partition is still in progress, and as of when.

    ``in_progress`` is true while the day is not over in the team's zone (its figures
    will change); ``as_of`` is when the figures were computed (ISO 8601, team's zone).
    """
    local = now.astimezone(ZoneInfo(TIMEZONE))
    return {
        "in_progress": partition_key >= local.strftime("%Y-%m-%d"),
        "as_of": local.isoformat(timespec="seconds"),
    }
