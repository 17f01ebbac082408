"""End to end: a real ``dagster dev`` (webserver + daemon) on the sandbox's ops PostgreSQL.

A backfill launched through GraphQL, as the UI launches it, runs as one run (single-run
backfill policy), and each daily partition's metadata read back through GraphQL is that
day's own. ``dagster dev`` runs in its own process group with a temporary DAGSTER_HOME and
is stopped by pid (SIGTERM, then SIGKILL of the group).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from westep_ops.sandbox.manager import Sandbox
from westep_ops_tests.helpers import ROOT
from westep_ops_tests.integration.conftest import clear_history
from westep_ops_tests.integration.test_dagster_ui import DAYS, seven_days

LAUNCH = """
mutation($p: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $p) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
  }
}"""
MATERIALIZATIONS = """
query($k: AssetKeyInput!, $parts: [String!]) {
  assetOrError(assetKey: $k) {
    ... on Asset {
      assetMaterializations(partitions: $parts) {
        partition runId timestamp
        metadataEntries {
          label
          ... on IntMetadataEntry { intValue }
          ... on FloatMetadataEntry { floatValue }
          ... on TextMetadataEntry { text }
        }
      }
    }
  }
}"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def dagster_dev(sandbox: Sandbox, tmp_path: Path) -> Iterator[str]:
    """``dagster dev`` on the sandbox's ops PostgreSQL; yields its GraphQL URL."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    env = dict(os.environ)
    env["DAGSTER_HOME"] = str(home)
    env["WESTEP_OPS_DAGSTER_STORAGE_URL"] = env["WESTEP_OPS_STORAGE_URL"].replace(
        "postgresql://", "postgresql+psycopg2://", 1
    )
    port = _free_port()
    log = (tmp_path / "dagster-dev.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "dagster", "dev", "-w", "workspace.yaml"]
        + ["-p", str(port), "-h", "127.0.0.1"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, stopped by pid below
    )
    url = f"http://127.0.0.1:{port}/graphql"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "dagster-dev.log").read_text()[-2000:]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/server_info", timeout=2).is_success:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        else:
            pytest.fail("dagster dev did not answer in 60 s")
        yield url
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        except ProcessLookupError:
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # what SIGTERM left of the group
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)
        log.close()


def _gql(url: str, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    r = httpx.post(url, json={"query": query, "variables": variables}, timeout=30)
    r.raise_for_status()
    body = r.json()
    assert "errors" not in body, body["errors"]
    return body["data"]


KEYS = [f"{d}|default" for d in DAYS]


def _latest_by_partition(url: str, asset: str) -> dict[str, dict[str, Any]]:
    data = _gql(url, MATERIALIZATIONS, {"k": {"path": [asset]}, "parts": KEYS})
    latest: dict[str, dict[str, Any]] = {}
    for m in sorted(data["assetOrError"]["assetMaterializations"], key=lambda m: m["timestamp"]):
        latest[m["partition"].split("|")[0]] = {
            "runId": m["runId"],
            **{
                e["label"]: e.get("intValue", e.get("floatValue", e.get("text")))
                for e in m["metadataEntries"]
            },
        }
    return latest


def test_backfill_through_graphql_shows_each_day_its_figures(
    sandbox: Sandbox, dagster_dev: str
) -> None:
    clear_history()
    seven_days(os.environ["WESTEP_OPS_STORAGE_URL"])
    launched = _gql(
        dagster_dev,
        LAUNCH,
        {
            "p": {
                "partitionNames": KEYS,  # the default target's week (date|target keys)
                "assetSelection": [{"path": ["health_samples"]}, {"path": ["incidents"]}],
                "title": "e2e: 7 days",
            }
        },
    )["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    deadline = time.monotonic() + 100
    incidents: dict[str, dict[str, Any]] = {}
    health: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        incidents = _latest_by_partition(dagster_dev, "incidents")
        health = _latest_by_partition(dagster_dev, "health_samples")
        if len(incidents) == len(health) == len(DAYS):
            break
        time.sleep(2)
    assert sorted(incidents) == sorted(health) == DAYS, "the backfill did not finish in time"
    assert [incidents[d]["incidents"] for d in DAYS] == list(range(7))
    assert [health[d]["categories_below_target"] for d in DAYS] == [
        "pool" if d == "2026-04-04" else "none" for d in DAYS
    ]
    # one run for the whole range (single-run backfill policy), each day its own figures
    assert len({m["runId"] for m in (*incidents.values(), *health.values())}) == 1
