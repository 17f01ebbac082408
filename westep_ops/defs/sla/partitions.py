"""Months as the team lives them: monthly partitions in the configured time zone.

The month in progress is a partition too (``end_offset=1``): a drill's figures show in
this month's report before the month is over.
"""

from dagster import MonthlyPartitionsDefinition

from westep_ops.defs import TIMEZONE

monthly = MonthlyPartitionsDefinition(start_date="2026-01-01", timezone=TIMEZONE, end_offset=1)
