"""The monthly SLA report as an asset: the seed's analyze-monthly-trends.py, on schedule.

Its metadata is what the Dagster UI shows: the four charts (small inline PNGs plus the
files' paths) and every figure as a number, so the Plots tab draws each figure's trend
across the monthly partitions. A figure that was not measured is left out, never 0.

What it is built from: the raw monitoring history (``probe_samples``: samples,
performance samples, incidents, alerts) over the whole month, with the same definitions
as the daily assets (``lib/sla.py``): availability over time needs the samples on either
side of midnight, and detection/recovery need each incident's own samples, which a daily
rollup no longer has. The daily partitions are views to drill into, not inputs; the
metadata says how many of the month's days have them (``daily_partitions_*``) beside the
figures' own measured share.
"""

import base64
import io
import math
from pathlib import Path
from typing import Any

import pandas as pd
from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetPartitionStatus,
    Config,
    MaterializeResult,
    MetadataValue,
    asset,
)
from pydantic import Field

from westep_ops.defs import owners
from westep_ops.defs.monitoring.assets import probe_samples
from westep_ops.defs.monitoring.partitions import daily, daily_by_target, split
from westep_ops.defs.monitoring.partitions import key as multi_key
from westep_ops.defs.sla.partitions import MONTH, monthly, monthly_by_target
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
    partitions_def=monthly_by_target,
    deps=[probe_samples],
    group_name="sla",
    owners=owners(),
    kinds={"pandas", "markdown"},
    description="A target's month of SLA figures against their goals and the month before,"
    " with charts (one partition per month and target).",
)
def monthly_sla_report(
    context: AssetExecutionContext,
    config: SlaReportConfig,
    stack: MonitoredStackResource,
    ops_storage: PostgresResource,
) -> MaterializeResult:
    month, target = split(context.partition_key, MONTH)
    cfg = stack.config(target)
    store = HistoryStore(ops_storage.value(), target=target)
    try:
        report = sla.build(
            store,
            cfg,
            month[:7],
            target=target,
            lang=config.lang or cfg.report_language,
            thresholds=config.thresholds,
            reports_dir=Path(config.reports_dir),
        )
    finally:
        store.close()
    metadata = {"target": target, **report_metadata(report.figures, report.path, report.charts)}
    completeness = daily_completeness(context, month, target)
    metadata.update(completeness)
    if completeness["daily_partitions_missing"] != "none":
        context.log.warning(
            f"{completeness['daily_partitions_materialized']} of"
            f" {completeness['daily_partitions_due']} days of {target}'s month have health_samples"
            f" materialized (missing: {completeness['daily_partitions_missing']}); the figures"
            " are computed from the raw samples all the same"
        )
    context.log.info(
        f"{target} {month[:7]}: {report.path}: {metadata['targets_met']} of"
        f" {metadata['targets_judged']} goals met"
    )
    return MaterializeResult(metadata=metadata)


def _ranges(keys: list[str]) -> str:
    """Consecutive days as ranges: 2026-11-02..2026-11-05, 2026-11-09."""
    out: list[list[str]] = []
    for k in keys:
        if out and (pd.Timestamp(k) - pd.Timestamp(out[-1][-1])).days == 1:
            out[-1].append(k)
        else:
            out.append([k])
    return ", ".join(r[0] if len(r) == 1 else f"{r[0]}..{r[-1]}" for r in out) or "none"


def daily_completeness(context: AssetExecutionContext, month: str, target: str) -> dict[str, Any]:
    """How many of ``target``'s days of ``month`` (those that exist so far) have their
    daily ``health_samples`` partition materialized, and which do not."""
    window = monthly.time_window_for_partition_key(month)
    existing = set(daily.get_partition_keys())
    due = [k for k in daily.get_partition_keys_in_time_window(window) if k in existing]
    keys = [str(multi_key(d, target)) for d in due]
    status = (
        context.instance.get_status_by_partition(AssetKey("health_samples"), keys, daily_by_target)
        or {}
        if keys
        else {}
    )
    done = [
        d
        for d, k in zip(due, keys, strict=True)
        if status.get(k) == AssetPartitionStatus.MATERIALIZED
    ]
    missing = [k for k in due if k not in done]
    out: dict[str, Any] = {
        "built_from": "raw samples (probe_samples) over the whole month, same definitions as"
        " the daily assets; daily partitions are views to drill into, not inputs",
        "days_in_month": len(daily.get_partition_keys_in_time_window(window)),
        "daily_partitions_due": len(due),
        "daily_partitions_materialized": len(done),
        "daily_partitions_missing": _ranges(missing),
    }
    if due:
        out["daily_partitions_share"] = len(done) / len(due)
    return out
