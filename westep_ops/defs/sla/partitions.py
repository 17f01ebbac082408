"""Months as the team lives them, per target: monthly partitions in the configured time
zone crossed with the fleet's targets (keys read ``2026-12-01|staging``).

The month in progress is a partition too (``end_offset=1`` on the month dimension): a
drill's figures show in this month's report before the month is over.
"""

from dagster import MonthlyPartitionsDefinition, MultiPartitionsDefinition

from westep_ops.defs import TIMEZONE, target_partitions

MONTH = "month"
monthly = MonthlyPartitionsDefinition(start_date="2026-01-01", timezone=TIMEZONE, end_offset=1)
monthly_by_target = MultiPartitionsDefinition({MONTH: monthly, "target": target_partitions})
