"""The monthly SLA report as an asset: the seed's analyze-monthly-trends.py, on schedule.

Its metadata is what the Dagster UI shows: the four charts (small inline PNGs plus the
files' paths) and every figure as a number, so the Plots tab draws each figure's trend
across the monthly partitions. A figure that was not measured is left out, never 0.
"""

import base64
import io
import math
from pathlib import Path
from typing import Any

from dagster import AssetExecutionContext, Config, MaterializeResult, MetadataValue, asset
from pydantic import Field

from westep_ops.defs import owners
from westep_ops.defs.monitoring.assets import health_samples, incidents, performance_metrics
from westep_ops.defs.monitoring.partitions import monthly
from westep_ops.lib.sla import SlaFigures
from westep_ops.monitoring import sla
from westep_ops.monitoring.history import HistoryStore
from westep_ops.resources import MonitoredStackResource, PostgresResource

CHART_WIDTH_PX = 560


class SlaReportConfig(Config):
    lang: str | None = Field(None, description="en or ja (default: the config's reportLanguage)")
    thresholds: str | None = Field(
        None, description="JSON file of alternative alert settings (what-if)"
    )
    reports_dir: str = "reports"


def numeric_figures(f: SlaFigures) -> dict[str, int | float]:
    """Every numeric figure of ``f`` (ints stay ints), None/NaN left out.

    Dicts of numbers (coverage_by, incidents_by, ...) become ``key.sub`` entries; lists,
    dates, strings and flags are not figures and are skipped. Generic over the dataclass,
    so a figure added to SlaFigures appears without touching this.
    """
    out: dict[str, int | float] = {}

    def put(key: str, value: Any) -> None:
        if isinstance(value, bool) or value is None:
            return
        if isinstance(value, int):
            out[key] = int(value)
        elif isinstance(value, float) and math.isfinite(value):
            out[key] = float(value)
        elif hasattr(value, "item") and not isinstance(value, str):  # numpy scalars
            put(key, value.item())

    for key, value in f.as_dict().items():
        if isinstance(value, dict):
            for sub, v in value.items():
                put(f"{key}.{sub}", v)
        else:
            put(key, value)
    return out


def _small_png(path: Path) -> bytes:
    """The chart scaled to at most CHART_WIDTH_PX wide, in a palette: a few kB inline."""
    from PIL import Image

    with Image.open(path) as img:
        rgb = img.convert("RGB")
    rgb.thumbnail((CHART_WIDTH_PX, CHART_WIDTH_PX * 4))
    buf = io.BytesIO()
    rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=128).save(buf, "PNG", optimize=True)
    return buf.getvalue()


def report_metadata(f: SlaFigures, report_path: Path, charts: dict[str, str]) -> dict[str, Any]:
    """The asset's metadata: the report and chart files, inline charts, numeric figures."""
    verdicts = f.verdicts()
    metadata: dict[str, Any] = {
        "report": MetadataValue.path(str(report_path)),
        "targets_met": sum(1 for v in verdicts.values() if v),
        "targets_judged": sum(1 for v in verdicts.values() if v is not None),
    }
    for name, file in charts.items():
        path = report_path.parent / file
        if path.is_file():
            png = base64.b64encode(_small_png(path)).decode()
            metadata[f"{name}_chart"] = MetadataValue.md(f"![{name}](data:image/png;base64,{png})")
            metadata[f"{name}_chart_file"] = MetadataValue.path(str(path))
    metadata.update(numeric_figures(f))
    return metadata


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
    metadata = report_metadata(report.figures, report.path, report.charts)
    context.log.info(
        f"{report.path}: {metadata['targets_met']} of {metadata['targets_judged']} targets met"
    )
    return MaterializeResult(metadata=metadata)
