"""Days as the team lives them: daily partitions in the configured time zone (Asia/Tokyo)."""

from dagster import DailyPartitionsDefinition, MonthlyPartitionsDefinition

from westep_ops.config import load_config

# The config file holds no secret, so reading it here keeps definitions secret-free.
TIMEZONE = load_config().timezone
daily = DailyPartitionsDefinition(start_date="2026-01-01", timezone=TIMEZONE)
# The month in progress is a partition too: a drill's figures show in this month's report.
monthly = MonthlyPartitionsDefinition(start_date="2026-01-01", timezone=TIMEZONE, end_offset=1)
