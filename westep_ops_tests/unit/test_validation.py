"""Validation of thresholds files and months, called directly (no process, no sandbox)."""

from __future__ import annotations

import json
from pathlib import Path

from westep_ops.config import load_config
from westep_ops.lib.whatif import read_thresholds
from westep_ops.monitoring.sla import check_month, month_window, parse_settings
from westep_ops_tests.helpers import ROOT


def test_a_valid_thresholds_file_fills_what_it_leaves_out(tmp_path: Path) -> None:
    th = tmp_path / "th.json"
    th.write_text(
        json.dumps({"settings": [{"name": "stricter", "failureThreshold": 3, "confirm": False}]})
    )
    assert [s.name for s in read_thresholds(th)] == ["stricter"]
    config = load_config(ROOT / "westep-ops.json")
    current, stricter = parse_settings(str(th), config)
    a = config.monitoring.alerting
    assert current.name == "current" and current.failure_threshold == a.failure_threshold
    assert (stricter.failure_threshold, stricter.confirm) == (3, False)
    assert stricter.success_threshold == a.success_threshold  # left out: as configured
    assert stricter.response_time_ms == config.monitoring.thresholds.response_time


def test_month_window_of_a_valid_month() -> None:
    start, end = month_window(check_month("2026-12"), "Asia/Tokyo")
    assert (start.year, start.month, end.year, end.month) == (2026, 12, 2027, 1)
