"""The monthly SLA asset materialized on the real sandbox: its charts and numbers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from westep_ops_tests.integration.dagster_idioms import materialize_month
from westep_ops_tests.unit.test_sla_charts import TZ


def test_materialized_asset_shows_charts_and_numbers(sandbox: Any, tmp_path: Path) -> None:
    """The real asset on the sandbox's ops store (whatever history it holds)."""
    from dagster import (
        DagsterInstance,
        FloatMetadataValue,
        IntMetadataValue,
        MarkdownMetadataValue,
        PathMetadataValue,
    )

    month = pd.Timestamp.now(tz=TZ).strftime("%Y-%m")
    with DagsterInstance.ephemeral() as instance:
        result = materialize_month(instance, month, tmp_path)
    assert result.success
    (event,) = result.get_asset_materialization_events()
    meta = event.event_specific_data.materialization.metadata
    for name in ("availability", "response", "incidents", "alerts"):
        assert isinstance(meta[f"{name}_chart"], MarkdownMetadataValue)
        assert Path(meta[f"{name}_chart_file"].value) == tmp_path / month / f"{name}.png"
        assert (tmp_path / month / f"{name}.png").is_file()
    assert isinstance(meta["report"], PathMetadataValue)
    words = {"report", "built_from", "daily_partitions_missing", "target"}  # what, of whom
    figures_meta = {k: v for k, v in meta.items() if k not in words and "_chart" not in k}
    assert {"period_minutes", "incidents", "alerts", "targets_met"} <= set(figures_meta)
    assert all(isinstance(v, IntMetadataValue | FloatMetadataValue) for v in figures_meta.values())
