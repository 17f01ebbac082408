"""The asset graph's lineage, read from the definitions (no sandbox)."""

from __future__ import annotations


def test_lineage_runs_from_the_probes_to_the_month() -> None:
    from westep_ops.definitions import defs

    graph = defs.resolve_asset_graph()

    def parents(key: str) -> set[str]:
        from dagster import AssetKey

        return {p.to_user_string() for p in graph.get(AssetKey(key)).parent_keys}

    assert parents("probe_samples") == {"health_check"}
    for daily in ("health_samples", "performance_metrics", "incidents"):
        assert parents(daily) == {"probe_samples"}
    assert parents("monthly_sla_report") == {"probe_samples"}
