"""Days as the team lives them, per target: daily partitions in the configured time zone
(Asia/Tokyo) crossed with the fleet's targets.

The daily assets are partitioned by ``date`` x ``target`` (a ``MultiPartitionsDefinition``;
its keys read ``2026-12-06|staging``), so a backfill can re-analyze one target's week or
the whole fleet's day, and each target's day has its own figures. The target keys are
the config's target names when the definitions load (``default`` without a list).

Today is a partition too (``end_offset=1`` on the date dimension): what the monitor saw
this morning shows in the daily assets during the day (refreshed hourly and after
incidents), marked in progress, and the 00:30 run recomputes it once it is over. Because
the last partition is today, the 00:30 schedule names yesterday explicitly.
"""

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from dagster import (
    DailyPartitionsDefinition,
    MultiPartitionKey,
    MultiPartitionsDefinition,
)

from westep_ops.defs import TARGETS, TIMEZONE, target_partitions

DATE = "date"
TARGET = "target"
daily = DailyPartitionsDefinition(start_date="2026-01-01", timezone=TIMEZONE, end_offset=1)
targets = target_partitions
daily_by_target = MultiPartitionsDefinition({DATE: daily, TARGET: targets})

# Dagster's tags for a run over a partition range (what a single-run backfill sets).
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


def day_key(when: datetime, days_back: int = 0) -> str:
    """The daily partition key of ``when`` (minus ``days_back`` days) in the team's zone."""
    return (when.astimezone(ZoneInfo(TIMEZONE)) - timedelta(days=days_back)).strftime("%Y-%m-%d")


def key(day: str, target: str, time_dimension: str = DATE) -> MultiPartitionKey:
    """The multi-partition key of ``target``'s ``day`` (or month, with ``time_dimension``)."""
    return MultiPartitionKey({time_dimension: day, TARGET: target})


def split(partition_key: str, time_dimension: str = DATE) -> tuple[str, str]:
    """``2026-12-06|staging`` -> (``2026-12-06``, ``staging``), whatever the object."""
    if isinstance(partition_key, MultiPartitionKey):
        dims = partition_key.keys_by_dimension
        return dims[time_dimension], dims[TARGET]
    # dimensions are ordered by name: date|target and month|target alike
    time_key, _, target = str(partition_key).partition("|")
    return time_key, target


def fleet_range_tags(day: str, names: list[str] | None = None) -> dict[str, str]:
    """Tags of one run over ``day`` for every target (first .. last in the definition's
    order): the whole fleet's day in one run, as a single-run backfill would run it."""
    names = names or TARGETS
    return {RANGE_START_TAG: str(key(day, names[0])), RANGE_END_TAG: str(key(day, names[-1]))}


def partition_progress(partition_key: str, now: datetime) -> dict[str, object]:
    """Metadata saying whether a daily partition is still in progress, and as of when.

    ``in_progress`` is true while the day is not over in the team's zone (its figures
    will change); ``as_of`` is when the figures were computed (ISO 8601, team's zone).
    ``partition_key`` is the day (``2026-12-06``) or a day x target key.
    """
    day = split(partition_key)[0]
    local = now.astimezone(ZoneInfo(TIMEZONE))
    return {
        "in_progress": day >= local.strftime("%Y-%m-%d"),
        "as_of": local.isoformat(timespec="seconds"),
    }
