"""What-if re-analysis: replay alerting over stored samples under other settings.

The seed's monthly "review intervals, thresholds and recovery settings", made concrete:
the alert state machine (open after N failing samples, or after a confirming re-probe;
close after M passing ones) is replayed per category over the raw samples, and the
performance samples are re-judged against another response-time threshold. Each
setting's incidents are compared with the ground truth (drill faults, and recorded
incidents not labelled false): how many alerts, how many false ones, how many missed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
from pydantic import AfterValidator, Field, ValidationError, field_validator

from westep_ops.config import (
    MAX_PROBE_TIMEOUT_MS,
    MAX_SAMPLES,
    StrictModel,
    check_shape,
    describe_validation_error,
    read_json_file,
)
from westep_ops.errors import WestepError

FAILING = {"warning", "critical", "error"}
CURRENT = "current"  # the name of the setting in force, always compared first


@dataclass(frozen=True)
class Setting:
    name: str
    failure_threshold: int = 2
    success_threshold: int = 2
    confirm: bool = True
    response_time_ms: float | None = None  # re-judge performance samples; None keeps stored status


def _label(value: str) -> str:
    if value != value.strip() or not value.isprintable():
        raise ValueError("a name without surrounding spaces or control characters")
    return value


class WhatIfSetting(StrictModel):
    """One alternative in a thresholds file; what it leaves out stays as configured."""

    name: Annotated[str, Field(min_length=1, max_length=60), AfterValidator(_label)]
    failure_threshold: int | None = Field(None, ge=1, le=MAX_SAMPLES)
    success_threshold: int | None = Field(None, ge=1, le=MAX_SAMPLES)
    confirm: bool = True
    response_time: float | None = Field(None, gt=0, le=MAX_PROBE_TIMEOUT_MS, description="ms")


class ThresholdsFile(StrictModel):
    """``{"settings": [...]}``: strict like the config (unknown keys, bools, bounds)."""

    settings: list[WhatIfSetting] = Field(min_length=1, max_length=20)

    @field_validator("settings")
    @classmethod
    def _distinct(cls, settings: list[WhatIfSetting]) -> list[WhatIfSetting]:
        names = [s.name for s in settings]
        taken = sorted({n for n in names if names.count(n) > 1 or n == CURRENT})
        if taken:
            raise ValueError(f"names must be distinct and not {CURRENT!r}: {', '.join(taken)}")
        return settings


def read_thresholds(path: str | Path) -> list[WhatIfSetting]:
    """Parse a ``--thresholds`` file; any problem is one line naming the key."""
    what, source = "thresholds error", str(path)
    data = read_json_file(Path(path), what)
    if not isinstance(data, dict):
        raise WestepError(f"{what} in {source}: the top level must be a JSON object")
    check_shape(data, source, what)
    try:
        return ThresholdsFile.model_validate(data).settings
    except ValidationError as e:
        raise WestepError(describe_validation_error(e, source, what)) from None


def replay(samples: pd.DataFrame, performance: pd.DataFrame, s: Setting) -> pd.DataFrame:
    """Incidents the setting would have opened: category, started, detected, resolved."""
    rows: list[dict[str, Any]] = []
    frames = [samples[["ts", "kind", "category", "status"]]] if len(samples) else []
    if s.response_time_ms is not None and len(performance):
        p = performance[["ts"]].copy()
        p["kind"] = "cheap"
        p["category"] = "performance"
        p["status"] = (performance["mean_api_ms"] > s.response_time_ms).map(
            {True: "warning", False: "ok"}
        )
        frames = [f[f["category"] != "performance"] for f in frames] + [p]
    if not frames:
        return pd.DataFrame(columns=["category", "started", "detected", "resolved"])
    data = pd.concat(frames).sort_values("ts", kind="stable")
    if not s.confirm:
        data = data[data["kind"] != "confirmation"]
    for cat, g in data.groupby("category", sort=False):
        fails, passes, start, open_at = 0, 0, None, None
        for ts, kind, status in zip(g["ts"], g["kind"], g["status"], strict=True):
            if status == "error":
                # The check could not run (the monitor's own problem): as in the engine it
                # opens nothing and ends a run of failing or passing samples.
                if open_at is None:
                    fails, start = 0, None
                else:
                    passes = 0
                continue
            failing = status in FAILING
            if open_at is None:
                if failing:
                    fails += 1
                    start = start or ts
                    confirmed = s.confirm and kind == "confirmation"
                    if fails >= s.failure_threshold or confirmed:
                        open_at, passes = ts, 0
                else:
                    fails, start = 0, None
            else:
                passes = 0 if failing else passes + 1
                if passes >= s.success_threshold:
                    rows.append(
                        {"category": cat, "started": start, "detected": open_at, "resolved": ts}
                    )
                    open_at, fails, start = None, 0, None
        if open_at is not None:
            rows.append(
                {"category": cat, "started": start, "detected": open_at, "resolved": pd.NaT}
            )
    return pd.DataFrame(rows, columns=["category", "started", "detected", "resolved"])


def score(incidents: pd.DataFrame, truth: pd.DataFrame, end: Any) -> dict[str, int]:
    """Alerts, false positives (matching no truth window) and missed truth windows."""

    def overlaps(a0: Any, a1: Any, b0: Any, b1: Any) -> bool:
        return a0 <= b1 and b0 <= a1

    truth_spans = [(r.start, r.end if pd.notna(r.end) else end) for r in truth.itertuples()]
    inc_spans = [
        (r.started, r.resolved if pd.notna(r.resolved) else end) for r in incidents.itertuples()
    ]
    fp = sum(1 for a in inc_spans if not any(overlaps(*a, *t) for t in truth_spans))
    missed = sum(1 for t in truth_spans if not any(overlaps(*a, *t) for a in inc_spans))
    return {"alerts": len(inc_spans), "false_positives": fp, "missed": missed}


def compare(
    samples: pd.DataFrame,
    performance: pd.DataFrame,
    truth: pd.DataFrame,
    settings: list[Setting],
    end: Any,
) -> list[dict[str, Any]]:
    return [
        {"name": s.name, **score(replay(samples, performance, s), truth, end)} for s in settings
    ]
