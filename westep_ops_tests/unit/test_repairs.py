"""The Dagster instance's per-target repair limit, read from dagster.yaml."""

from __future__ import annotations

from pathlib import Path


def test_dagster_instance_limits_repairs_per_target(tmp_path: Path) -> None:
    import yaml

    from westep_ops.defs.repairs.jobs import REPAIR_TAG
    from westep_ops_tests.helpers import ROOT

    conf = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    limits = conf["concurrency"]["runs"]["tag_concurrency_limits"]
    assert {"key": REPAIR_TAG, "value": {"applyLimitPerUniqueValue": True}, "limit": 1} in limits
