"""The monthly SLA report as an asset: the seed's analyze-monthly-trends.py, on schedule."""

import base64
from pathlib import Path

from dagster import AssetExecutionContext, Config, MaterializeResult, MetadataValue, asset
from pydantic import Field

from westep_ops.defs import owners
from westep_ops.defs.monitoring.assets import health_samples, incidents, performance_metrics
from westep_ops.defs.monitoring.partitions import monthly
from westep_ops.lib.sla import TARGETS
from westep_ops.lib.sla_report import fmt
from westep_ops.monitoring import sla
from westep_ops.monitoring.history import HistoryStore
from westep_ops.resources import MonitoredStackResource, PostgresResource


class SlaReportConfig(Config):
    lang: str | None = Field(None, description="en or ja (default: the config's reportLanguage)")
    thresholds: str | None = Field(
        None, description="JSON file of alternative alert settings (what-if)"
    )
    reports_dir: str = "reports"


@asset(
    partitions_def=monthly,
    deps=[health_samples, performance_metrics, incidents],
    group_name="sla",
    owners=owners(),
    kinds={"pandas", "markdown"},
    description="The month's SLA figures against their targets and the month before, with charts.",
)
def monthly_sla_report(
    context: AssetExecutionContext,
    config: SlaReportConfig,
    stack: MonitoredStackResource,
    ops_storage: PostgresResource,
) -> MaterializeResult:
    cfg = stack.config()
    store = HistoryStore(ops_storage.value())
    try:
        report = sla.build(
            store,
            cfg,
            context.partition_key[:7],
            lang=config.lang or cfg.report_language,
            thresholds=config.thresholds,
            reports_dir=Path(config.reports_dir),
        )
    finally:
        store.close()
    f = report.figures
    verdicts = f.verdicts()
    chart = report.path.parent / report.charts.get("availability", "")
    metadata = {
        "report": MetadataValue.path(str(report.path)),
        "targets_met": f"{sum(v for v in verdicts.values() if v)} of {sum(v is not None for v in verdicts.values())}",
        **{key: fmt(key, getattr(f, key)) for key in TARGETS},
        "incidents": f.incidents,
        "alerts": f.alerts,
    }
    if chart.is_file():
        metadata["availability_chart"] = MetadataValue.md(
            "![availability](data:image/png;base64,"
            + base64.b64encode(chart.read_bytes()).decode()
            + ")"
        )
    context.log.info(f"{report.path}: {metadata['targets_met']} targets met")
    return MaterializeResult(metadata=metadata)
