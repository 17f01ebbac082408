"""The daily assets as one job: run for yesterday at 00:30, for today every hour and when
an incident opens or closes (those runs carry ``IN_PROGRESS_TAG``)."""

from dagster import AssetSelection, define_asset_job

IN_PROGRESS_TAG = "westep-ops/in-progress"

daily_monitoring_job = define_asset_job(
    "daily_monitoring_job",
    selection=AssetSelection.assets(
        "health_samples", "performance_metrics", "incidents", "diagnosis_report"
    ),
    description="The daily assets of one day (yesterday at 00:30, today hourly),"
    " recomputed from the monitoring history.",
)
