"""What-if re-analysis: replay alerting over stored samples under other settings.

The seed's monthly "review intervals, thresholds and recovery settings", made concrete:
the engine's own alert state machine (``lib/alerting.py``: open after N failing samples,
or after a confirming re-probe; close after M passing ones) is driven per category over
the stored samples, each sweep's failures grouped first as the engine groups them
(``lib/grouping.py``: an outage's tail and symptoms open nothing), and the performance
samples are re-judged against another response-time threshold.

Each setting's alerts are judged against what is known independently of any setting,
never against the incidents the current setting recorded (which would make it miss
nothing by construction): a person's label on a recorded alert, the drill's ground truth
(fault windows with the categories they break, quiet windows where nothing was broken),
and an explicit later signal (the recorded incident was closed after a repair that
repaired something). An alert none of these speaks for is unjudged. A truth window (a
drill fault, or an alert a person labelled real) that no replayed alert of its
categories overlaps is missed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import timedelta
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
from westep_ops.lib.alerting import (
    CONFIRMATION,
    Replay,
    Sample,
    Thresholds,
    failing,
    read_status,
)
from westep_ops.lib.grouping import CRITICAL, Observed, group
from westep_ops.lib.sla import (
    DRILL_GRACE,
    drill_windows,
    repaired_incidents,
    verdict,
    window_end,
)

CURRENT = "current"  # the name of the setting in force, always compared first


@dataclass(frozen=True)
class Setting:
    name: str
    failure_threshold: int = 2
    success_threshold: int = 2
    confirm: bool = True
    response_time_ms: float | None = None  # re-judge performance samples; None keeps stored status
    # grouping's grace (``groupGraceIntervals`` x the cheap interval): within it after a
    # critical incident closed, its category's tail opens nothing; 0 groups no tail
    group_grace_s: float = 0.0


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


VERIFICATION = "verification"  # a repair's re-probe: counts in later runs, decides nothing
INCIDENT_COLUMNS = ["category", "started", "detected", "resolved"]


def _listed(value: Any) -> list[str]:
    return list(value) if isinstance(value, list | tuple) else []


def _named(value: Any) -> list[str]:
    """The names of a stored sample's figures (its ``value`` object), if any."""
    return [str(k) for k in value] if isinstance(value, dict) else []


def _cause(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    return str(value)


def _sweeps(data: pd.DataFrame) -> Iterable[list[tuple[Any, ...]]]:
    """The rows in time order, those of one sample write (same ts and kind) together."""
    batch: list[tuple[Any, ...]] = []
    for r in data.itertuples(index=False, name=None):
        if batch and (r[0], r[1]) != (batch[0][0], batch[0][1]):
            yield batch
            batch = []
        batch.append(r)
    if batch:
        yield batch


def replay(
    samples: pd.DataFrame,
    performance: pd.DataFrame,
    s: Setting,
    observe_only: Iterable[str] = (),
) -> pd.DataFrame:
    """Incidents the setting would have opened: category, started, detected, resolved.

    ``samples`` has ts, kind, category, status and, when known, findings, value and
    suspected_cause (a symptom opens nothing; an observe-only warning reads as ok). A
    sweep's failures are grouped with the replay's own open and just-closed incidents
    first, as the engine groups them (re-probes are not: the engine groups sweeps);
    without findings and values, only the stored suspected cause speaks. Re-probes that
    confirmed a first failure exist only with confirmation on; without, they are
    dropped. With ``response_time_ms`` the performance samples are re-judged against it
    (failing when the mean API time is over it), keeping the stored performance
    sample's suspected cause.
    """
    cols = ["ts", "kind", "category", "status", "findings", "suspected_cause", "value"]
    data = samples.reindex(columns=cols)
    if s.response_time_ms is not None and len(performance):
        stored = data[data["category"] == "performance"].drop_duplicates("ts", keep="last")
        p = performance[["ts"]].merge(stored[["ts", "kind", "suspected_cause"]], "left", "ts")
        p["kind"] = p["kind"].fillna("cheap")
        p["category"] = "performance"
        p["status"] = [
            "warning" if ms > s.response_time_ms else "ok" for ms in performance["mean_api_ms"]
        ]
        p["findings"] = None
        p["value"] = None
        data = pd.concat([data[data["category"] != "performance"], p[cols]])
    if not s.confirm:
        data = data[data["kind"] != CONFIRMATION]
    if not len(data):
        return pd.DataFrame(columns=INCIDENT_COLUMNS)
    data = data.sort_values("ts", kind="stable")
    th = Thresholds(s.failure_threshold, s.success_threshold, s.confirm)
    grace = timedelta(seconds=s.group_grace_s)
    observe_only = frozenset(observe_only)
    replays: dict[str, Replay] = {}
    for sweep in _sweeps(data):
        ts, kind = sweep[0][0], sweep[0][1]
        seen, reads = [], []
        for _ts, _kind, cat, status, findings, cause, value in sweep:
            found = _listed(findings)
            read = read_status(status, found, observe_only)
            reads.append(read)
            seen.append(
                Observed.of(cat, status, failing(read), found, _named(value), _cause(cause))
            )
        grouped: dict[str, str] = {}
        if kind not in (CONFIRMATION, VERIFICATION):
            open_ = {c: r.open.severity for c, r in replays.items() if r.open is not None}
            tail = {
                c
                for c, r in replays.items()
                for i in r.incidents
                if grace and i.severity == CRITICAL and i.closed and i.closed > ts - grace
            }
            grouped = group(seen, open_, tail)
        for o, read in zip(seen, reads, strict=True):
            symptom = o.cause is not None or o.category in grouped
            sample = Sample(ts, read, symptom, kind)
            replays.setdefault(o.category, Replay(o.category, th)).feed(
                sample, decides=kind != VERIFICATION
            )
    rows = [
        {
            "category": i.category,
            "started": i.started,
            "detected": i.detected,
            "resolved": i.resolved,
        }
        for r in replays.values()
        for i in r.incidents
    ]
    return pd.DataFrame(rows, columns=INCIDENT_COLUMNS)


def _overlaps(a0: Any, a1: Any, b0: Any, b1: Any) -> bool:
    return bool(a0 <= b1 and b0 <= a1)


@dataclass(frozen=True)
class _Recorded:
    """What the month's records say about a span of one category."""

    category: str
    start: Any
    end: Any
    label: bool | None = None  # a person's label of the alert that opened it
    repaired: bool = False  # closed after a repair that repaired something


def _recorded(frames: Mapping[str, pd.DataFrame], end: pd.Timestamp) -> list[_Recorded]:
    """Recorded incidents (with their repairs) and labelled alerts, as spans."""
    alerts = frames.get("alerts")
    incidents = frames.get("incidents")
    repairs = frames.get("repairs")
    fixed = repaired_incidents(incidents, repairs)  # the monthly figures' own rule
    spans: dict[Any, _Recorded] = {}
    for r in incidents.itertuples() if incidents is not None else ():
        closed = pd.notna(r.resolved_at)
        spans[r.id] = _Recorded(
            r.category,
            r.started_at,
            r.resolved_at if closed else end,
            repaired=bool(closed and r.id in fixed),
        )
    out = list(spans.values())
    if alerts is None or "label" not in alerts.columns:
        return out
    for a in alerts.itertuples():
        if a.kind != "opened" or a.label is None or pd.isna(a.label):
            continue
        span = spans.get(a.incident_id)
        start, stop = (span.start, span.end) if span is not None else (a.ts, a.ts)
        out.append(_Recorded(a.category, start, stop, label=bool(a.label)))
    return out


def score(incidents: pd.DataFrame, frames: Mapping[str, pd.DataFrame], end: Any) -> dict[str, Any]:
    """Judge a setting's replayed incidents: alerts, judged true/false, unjudged, missed.

    ``frames`` are the period's alerts (with ``label``), incidents, repairs and drill
    rows. A replayed alert takes the label of a labelled recorded alert of its category
    whose incident it overlaps (real wins over false), and the repair signal of a
    recorded incident it overlaps. Truth windows: drill faults of known categories, and
    alerts labelled real outside them.
    """
    end = pd.Timestamp(end)
    # A drill row not removed (a drill still running, or killed) lasts until ``end``, at
    # most DRILL_OPEN_LIMIT (the monthly figures' rule).
    windows = [replace(w, end=min(window_end(w), end)) for w in drill_windows(frames.get("drill"))]
    recorded = _recorded(frames, end)
    verdicts: list[bool | None] = []
    spans: list[tuple[str, Any, Any]] = []
    for inc in incidents.itertuples():
        a0, a1 = inc.started, inc.resolved if pd.notna(inc.resolved) else end
        spans.append((inc.category, a0, a1))
        near = [
            r for r in recorded if r.category == inc.category and _overlaps(a0, a1, r.start, r.end)
        ]
        labels = {r.label for r in near if r.label is not None}
        label = True if True in labels else (False if labels else None)
        repaired = any(r.repaired for r in near)
        verdicts.append(verdict(label, inc.detected, inc.category, windows, repaired)[0])

    def in_fault(category: str, start: Any, stop: Any) -> bool:
        return any(
            w.categories
            and category in w.categories
            and _overlaps(start, stop, w.start, w.end + DRILL_GRACE)
            for w in windows
        )

    truth = [
        (w.categories, w.start, min(w.end, end) + DRILL_GRACE) for w in windows if w.categories
    ]
    truth += [
        ((r.category,), r.start, r.end)
        for r in recorded
        if r.label is True and not in_fault(r.category, r.start, r.end)
    ]
    missed = sum(
        1
        for cats, b0, b1 in truth
        if not any(c in (cats or ()) and _overlaps(a0, a1, b0, b1) for c, a0, a1 in spans)
    )
    true, false = verdicts.count(True), verdicts.count(False)
    return {
        "alerts": len(verdicts),
        "judged_true": true,
        "false_positives": false,
        "unjudged": verdicts.count(None),
        "missed": missed,
        "truth_windows": len(truth),
        "precision": true / (true + false) if true + false else None,
    }


def compare(
    frames: Mapping[str, pd.DataFrame],
    settings: list[Setting],
    end: Any,
    observe_only: Iterable[str] = (),
) -> list[dict[str, Any]]:
    """One row per setting: its replayed alerts judged against labels and drill truth.

    ``frames``: samples (ts, kind, category, status, findings, suspected_cause),
    performance (ts, mean_api_ms), and the alerts, incidents, repairs and drill rows
    that judge them (see :func:`score`).
    """
    empty = pd.DataFrame(columns=["ts", "mean_api_ms"])
    return [
        {
            "name": s.name,
            **score(
                replay(frames["samples"], frames.get("performance", empty), s, observe_only),
                frames,
                end,
            ),
        }
        for s in settings
    ]
