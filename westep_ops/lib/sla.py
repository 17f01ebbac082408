"""SLA figures from the monitoring history (pure pandas, no database, no Dagster).

How each figure is measured (the report repeats this):

- **availability**: the month is cut into slots of one probe interval. A scheduled
  sample is *down* when H1 (connection) or H7 (API) is critical; otherwise *unknown*
  when one of them is ``error`` (the monitor could not look, e.g. it is misconfigured)
  or none of them applies; otherwise *up* (ok or warning). A check that is
  ``not_configured`` (e.g. H7 without endpoints) is left out: the sample is judged on
  the checks that apply. A slot is down when one of its
  samples is down, else up when one is up, else unknown (also when it has no sample:
  the monitor itself was down). Availability = up / all slots: unknown time is never
  counted as up, and never as down. The share of slots measured (up or down) is
  reported as the measured share. Slots that start inside a maintenance window
  (config ``maintenanceWindows``) are shown apart (maintenance time, and availability
  outside it); with ``sla.excludeMaintenance`` they are left out of availability.
- **response time** and **error rate**: from the performance samples (P1, P2).
- **MTTD** = alert time - first failing sample; **MTTR** = first passing sample after the
  alert - alert time; each incident counts on its own, overlapping or not.
- **auto-recovery success**: incidents recovered by an automatic repair (verified by the
  passing re-probe that closed them, and the repair really changed something: "nothing
  to do" is no success) / incidents that had one attempted.
- **alert precision**: opened alerts judged real / all opened alerts. An alert is judged
  by a person's label when there is one, else by drill ground truth (a fault was on),
  else by its confirmation probe (every alert is confirmed before it is sent).
  False-positive rate = alerts judged false / all.
- **monitoring coverage**: per category H1-H7, the share of expected samples (one per
  full-sweep interval) that exist; the figure is the mean, and "every interval" means 100%.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import pandas as pd

H_CATEGORIES = ("connection", "pool", "tables", "integrity", "realtime", "auth", "api")
SERVICE = ("connection", "api")
# A check that could not look (error) makes its sample blind: unknown, neither up nor
# down. A check that does not apply (not_configured, e.g. H7 without endpoints) is
# dropped: the sample is judged on the checks that apply.
BLIND = ("error",)
NOT_APPLICABLE = "not_configured"


@dataclass(frozen=True)
class Target:
    name: str
    target: float
    higher_is_better: bool
    unit: str

    def passes(self, value: float | None) -> bool | None:
        if value is None or pd.isna(value):
            return None
        return value >= self.target if self.higher_is_better else value < self.target


TARGETS = {
    "availability": Target("availability", 0.999, True, "ratio"),
    "mean_response_ms": Target("mean response time", 2000, False, "ms"),
    "error_rate": Target("error rate", 0.01, False, "ratio"),
    "mttd_mean_s": Target("detection (MTTD)", 300, False, "s"),
    "mttr_mean_s": Target("recovery (MTTR)", 900, False, "s"),
    "auto_recovery_success": Target("auto-recovery success", 0.80, True, "ratio"),
    "alert_precision": Target("alert accuracy", 0.95, True, "ratio"),
    "false_positive_rate": Target("false-positive rate", 0.05, False, "ratio"),
    "coverage": Target("monitoring coverage", 1.0, True, "ratio"),
}


@dataclass
class SlaFigures:
    start: datetime
    end: datetime
    slots: int = 0
    up: int = 0
    down: int = 0
    unknown: int = 0
    availability: float | None = None
    measured_share: float | None = None
    maintenance_slots: int = 0  # slots starting inside a maintenance window
    maintenance_minutes: float = 0.0
    maintenance_down: int = 0  # of those, down ones (planned downtime)
    availability_outside_maintenance: float | None = None
    maintenance_excluded: bool = False
    mean_response_ms: float | None = None
    p95_response_ms: float | None = None
    error_rate: float | None = None
    incidents: int = 0
    incidents_by: dict[str, int] = field(default_factory=dict)
    mttd_mean_s: float | None = None
    mttd_p90_s: float | None = None
    mttr_mean_s: float | None = None
    mttr_p90_s: float | None = None
    auto_recovery_attempted: int = 0
    auto_recovery_success: float | None = None
    alerts: int = 0
    alerts_true: int = 0
    alerts_false: int = 0
    alert_judged_by: dict[str, int] = field(default_factory=dict)
    alert_precision: float | None = None
    false_positive_rate: float | None = None
    coverage: float | None = None
    coverage_by: dict[str, float] = field(default_factory=dict)
    daily: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def verdicts(self) -> dict[str, bool | None]:
        return {k: t.passes(getattr(self, k)) for k, t in TARGETS.items()}


def _none(x: Any) -> float | None:
    return None if x is None or pd.isna(x) else float(x)


def slot_states(
    samples: pd.DataFrame, start: datetime, end: datetime, interval_s: float
) -> pd.Series:
    """Per slot: 'up', 'down' or 'unknown' (index: slot start time)."""
    n = max(
        0, math.ceil((end - start).total_seconds() / interval_s)
    )  # a month in progress ends mid-slot
    index = pd.date_range(start, periods=n, freq=pd.Timedelta(seconds=interval_s))
    states = pd.Series("unknown", index=index, dtype=object)
    if n == 0 or samples.empty:
        return states
    s = samples[samples["kind"].isin(["cheap", "full"]) & samples["category"].isin(SERVICE)]
    s = s[(s["ts"] >= start) & (s["ts"] < end) & (s["status"] != NOT_APPLICABLE)]
    if s.empty:
        return states
    # One sample = one sweep (its rows share ts and kind): down beats blind beats up; a
    # sample whose service checks all do not apply has no row left and stays unknown.
    per_sample = (
        s.assign(down=s["status"] == "critical", blind=s["status"].isin(BLIND))
        .groupby(["ts", "kind"])[["down", "blind"]]
        .any()
    )
    ts = per_sample.index.get_level_values("ts")
    per_sample["slot"] = ((ts - start).total_seconds() // interval_s).astype(int)
    per_sample["up"] = ~per_sample["down"] & ~per_sample["blind"]
    by_slot = per_sample.groupby("slot")[["down", "up"]].any()
    states.iloc[by_slot.index.to_numpy()] = [
        "down" if d else "up" if u else "unknown"
        for d, u in zip(by_slot["down"].to_numpy(), by_slot["up"].to_numpy(), strict=True)
    ]
    return states


def compute(
    start: datetime,
    end: datetime,
    *,
    samples: pd.DataFrame,
    performance: pd.DataFrame,
    incidents: pd.DataFrame,
    alerts: pd.DataFrame,
    repairs: pd.DataFrame,
    drill: pd.DataFrame | None = None,
    interval_s: float = 60,
    full_interval_s: float = 300,
    maintenance: list[tuple[datetime, datetime]] | None = None,
    exclude_maintenance: bool = False,
) -> SlaFigures:
    """All SLA figures of [start, end). Frames may be empty; columns as in the ops store.

    ``maintenance``: the maintenance-window intervals of the period (UTC); their time is
    reported apart, and left out of availability with ``exclude_maintenance``.
    """
    f = SlaFigures(start, end)
    states = slot_states(samples, start, end, interval_s)
    f.slots = int(len(states))
    counts = states.value_counts()
    f.up, f.down, f.unknown = (int(counts.get(k, 0)) for k in ("up", "down", "unknown"))
    in_window = pd.Series(False, index=states.index)
    for ws, we in maintenance or []:
        in_window |= (states.index >= pd.Timestamp(ws)) & (states.index < pd.Timestamp(we))
    f.maintenance_slots = int(in_window.sum())
    f.maintenance_minutes = f.maintenance_slots * interval_s / 60
    f.maintenance_down = int((states[in_window] == "down").sum())
    outside = states[~in_window]
    if len(outside):
        f.availability_outside_maintenance = float((outside == "up").mean())
    f.maintenance_excluded = exclude_maintenance
    if f.slots:
        f.availability = f.up / f.slots
        if exclude_maintenance:
            f.availability = f.availability_outside_maintenance
        f.measured_share = (f.up + f.down) / f.slots
        days = states.groupby(states.index.floor("D"))
        f.daily = [
            {
                "day": d.date().isoformat(),
                "availability": float((g == "up").mean()),
                "measured": float((g != "unknown").mean()),
            }
            for d, g in days
        ]

    p = (
        performance[(performance["ts"] >= start) & (performance["ts"] < end)]
        if len(performance)
        else performance
    )
    if len(p):
        f.mean_response_ms = _none(p["mean_api_ms"].mean())
        f.p95_response_ms = _none(p["mean_api_ms"].quantile(0.95))
        requests = p["http_requests"].sum()
        f.error_rate = float(p["http_failures"].sum() / requests) if requests else None

    inc = (
        incidents[(incidents["started_at"] >= start) & (incidents["started_at"] < end)]
        if len(incidents)
        else incidents
    )
    f.incidents = int(len(inc))
    if len(inc):
        f.incidents_by = {
            f"{c}/{s}": int(n) for (c, s), n in inc.groupby(["category", "severity"]).size().items()
        }
        mttd = (inc["detected_at"] - inc["started_at"]).dt.total_seconds()
        f.mttd_mean_s, f.mttd_p90_s = _none(mttd.mean()), _none(mttd.quantile(0.9))
        resolved = inc[inc["resolved_at"].notna()]
        if len(resolved):
            mttr = (resolved["resolved_at"] - resolved["detected_at"]).dt.total_seconds()
            f.mttr_mean_s, f.mttr_p90_s = _none(mttr.mean()), _none(mttr.quantile(0.9))
        tried = set(repairs["incident_id"].dropna().astype(int)) if len(repairs) else set()
        attempted = inc[inc["id"].isin(tried)]
        f.auto_recovery_attempted = int(len(attempted))
        if len(attempted):
            # "nothing to do" changed nothing: only an attempt that repaired counts.
            fixed = (
                set(
                    repairs.loc[repairs["outcome"] == "repaired", "incident_id"]
                    .dropna()
                    .astype(int)
                )
                if len(repairs) and "outcome" in repairs.columns
                else None
            )
            ok = attempted["resolved_at"].notna() & attempted["recovered_by"].fillna(
                ""
            ).str.startswith("auto:")
            if fixed is not None:
                ok &= attempted["id"].isin(fixed)
            f.auto_recovery_success = float(ok.mean())

    opened = (
        alerts[(alerts["kind"] == "opened") & (alerts["ts"] >= start) & (alerts["ts"] < end)]
        if len(alerts)
        else alerts
    )
    f.alerts = int(len(opened))
    if len(opened):
        judged = [judge(row, inc, drill) for row in opened.itertuples()]
        f.alerts_true = sum(1 for real, _how in judged if real)
        f.alerts_false = f.alerts - f.alerts_true
        f.alert_judged_by = pd.Series([how for _real, how in judged]).value_counts().to_dict()
        f.alert_precision = f.alerts_true / f.alerts
        f.false_positive_rate = f.alerts_false / f.alerts

    if len(samples):
        expected = max(1, int((end - start).total_seconds() // full_interval_s))
        s = samples[
            samples["kind"].isin(["cheap", "full"])
            & (samples["ts"] >= start)
            & (samples["ts"] < end)
        ]
        for cat in H_CATEGORIES:
            got = s[s["category"] == cat]
            slots = (
                ((got["ts"] - start).dt.total_seconds() // full_interval_s).nunique()
                if len(got)
                else 0
            )
            f.coverage_by[cat] = min(1.0, slots / expected)
        f.coverage = sum(f.coverage_by.values()) / len(H_CATEGORIES)
    elif f.slots:
        f.coverage = 0.0
    return f


def judge(alert: Any, incidents: pd.DataFrame, drill: pd.DataFrame | None) -> tuple[bool, str]:
    """Was an opened alert real? A person's label first, then drill truth, then confirmation."""
    label = getattr(alert, "label", None)
    if label is not None and not pd.isna(label):
        return bool(label), "label"
    if drill is not None and len(drill):
        ts = alert.ts
        # Drill truth only speaks for alerts raised while a drill ran: between its first
        # injection and a settling minute after its last removal.
        grace = pd.Timedelta(seconds=60)
        spans = drill.groupby("drill").agg(first=("injected_at", "min"), last=("removed_at", "max"))
        if ((spans["first"] <= ts) & (spans["last"].fillna(ts) + grace >= ts)).any():
            active = drill[
                (drill["injected_at"] <= ts) & (drill["removed_at"].fillna(ts) + grace / 2 >= ts)
            ]
            return (len(active) > 0), "drill"
    return True, "confirmation"
