"""The monthly SLA report as a job (one month's partition per run)."""

from dagster import AssetSelection, define_asset_job

monthly_sla_job = define_asset_job(
    "monthly_sla_job",
    selection=AssetSelection.assets("monthly_sla_report"),
    description="One month's SLA report (last month's on the 1st).",
)
