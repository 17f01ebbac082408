"""A snapshot of the Dagster definitions, so the graph never changes silently.

Pure: loads ``westep_ops.definitions.defs`` (no sandbox, no database) and compares asset
keys, their dependencies, check names, partitions, jobs, schedules and sensors with
``definitions_snapshot.json`` beside this file, exactly. To change the graph on
purpose, rewrite the snapshot and review its diff with the change:

    WESTEP_OPS_UPDATE_SNAPSHOT=1 python -m pytest westep_ops_tests/test_definitions_snapshot.py

The test also holds every definition to a description (its business meaning in the
UI) and every asset to owners and kinds.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from dagster import (
    MultiPartitionsDefinition,
    PartitionsDefinition,
    StaticPartitionsDefinition,
    TimeWindowPartitionsDefinition,
)

SNAPSHOT = Path(__file__).with_name("definitions_snapshot.json")


def _partitions(p: PartitionsDefinition | None) -> dict[str, Any] | None:
    if p is None:
        return None
    if isinstance(p, TimeWindowPartitionsDefinition):
        return {
            "type": type(p).__name__,
            "start": p.start.isoformat(),
            "timezone": p.timezone,
            "end_offset": p.end_offset,
            "cron": p.cron_schedule,
        }
    if isinstance(p, MultiPartitionsDefinition):
        return {
            "type": type(p).__name__,
            "dimensions": {d.name: _partitions(d.partitions_def) for d in p.partitions_defs},
        }
    if isinstance(p, StaticPartitionsDefinition):
        return {"type": type(p).__name__, "keys": list(p.get_partition_keys())}
    return {"type": type(p).__name__}


def snapshot() -> dict[str, Any]:
    """The shape of the definitions as plain JSON-able data, sorted."""
    from westep_ops.definitions import defs

    repo = defs.get_repository_def()
    graph = repo.asset_graph
    assets = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        assets[key.to_user_string()] = {
            "deps": sorted(k.to_user_string() for k in node.parent_keys),
            "checks": sorted(c.name for c in node.check_keys),
            "partitions": _partitions(node.partitions_def),
            "group": node.group_name,
        }
    return {
        "assets": assets,
        "resources": sorted(repo.get_top_level_resources()),
        "jobs": sorted(j.name for j in repo.get_all_jobs() if not j.name.startswith("__")),
        "schedules": {
            s.name: {
                "job": s.job_name,
                "cron": s.cron_schedule,
                "timezone": s.execution_timezone,
                "default_status": s.default_status.value,
            }
            for s in sorted(repo.schedule_defs, key=lambda s: s.name)
        },
        "sensors": {
            s.name: {
                "jobs": sorted(t.job_name for t in s.targets),
                "minimum_interval_seconds": s.minimum_interval_seconds,
                "default_status": s.default_status.value,
            }
            for s in sorted(repo.sensor_defs, key=lambda s: s.name)
        },
    }


def test_definitions_match_the_snapshot(monkeypatch: pytest.MonkeyPatch) -> None:
    current = snapshot()
    text = json.dumps(current, indent=2, sort_keys=True) + "\n"
    if os.environ.get("WESTEP_OPS_UPDATE_SNAPSHOT") == "1":
        SNAPSHOT.write_text(text, encoding="utf-8")
    assert SNAPSHOT.is_file(), "no snapshot: run once with WESTEP_OPS_UPDATE_SNAPSHOT=1"
    saved = json.loads(SNAPSHOT.read_text(encoding="utf-8"))
    assert current == saved, (
        "the Dagster definitions changed; if on purpose, rerun with"
        " WESTEP_OPS_UPDATE_SNAPSHOT=1 and commit the snapshot's diff"
    )


def test_every_definition_says_what_it_is_for() -> None:
    from westep_ops.definitions import defs

    repo = defs.get_repository_def()
    graph = repo.asset_graph
    missing = []
    for key in graph.get_all_asset_keys():
        spec = graph.get(key)
        assets_def = defs.resolve_assets_def(key)
        if not spec.description:
            missing.append(f"asset {key.to_user_string()}")
        if not assets_def.specs_by_key[key].owners:
            missing.append(f"owners of {key.to_user_string()}")
        if not assets_def.specs_by_key[key].kinds:
            missing.append(f"kinds of {key.to_user_string()}")
        missing += [f"check {c.name}" for c in assets_def.check_specs if not c.description]
    missing += [
        f"job {j.name}"
        for j in repo.get_all_jobs()
        if not j.description and not j.name.startswith("__")
    ]
    missing += [f"schedule {s.name}" for s in repo.schedule_defs if not s.description]
    missing += [f"sensor {s.name}" for s in repo.sensor_defs if not s.description]
    assert missing == []
