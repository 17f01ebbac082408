"""SLA figures from the monitoring history (pure pandas, no database, no Dagster).

How each figure is measured (the report repeats this):

- **available**: one definition for the monthly figure and the daily assets. A check
  result is *up* when ok or warning (degraded but serving), *down* when critical,
  *unknown* when ``error`` (the monitor could not look, e.g. it is misconfigured);
  ``not_configured`` (e.g. H7 without endpoints) is dropped. A scheduled sample (one
  sweep) of the service is down when H1 (connection) or H7 (API) is down, else unknown
  when one of them is unknown or none applies, else up.
- **availability** is measured over time, not slots: each scheduled sample's state holds
  until the next sample, at most a staleness limit (2x the cheap-probe interval + the
  confirmation delay); time with no fresh sample is unknown (the monitor itself was not
  looking). Availability = up / (up + down) over the measured time; beside it the
  measured share = (up + down) / all time, and a lower bound = up / all time that counts
  unknown time as down. When the measured share is under ``sla.minMeasuredShare`` the
  verdict is "insufficient data", not a failure. Maintenance-window time (config
  ``maintenanceWindows``) is shown apart; with ``sla.excludeMaintenance`` it is left out.
- **days** are local days of the configured time zone.
- **response time** and **error rate**: from the performance samples (P1, P2).
- **detection (MTTD)** is a bound per incident: lower = alert - first failing sample,
  upper = alert - last passing sample of the same category before it (the fault began
  somewhere in between). The verdict uses the upper bound.
- **recovery (MTTR)** = first passing sample after the alert - alert; an incident still
  open at the period's end counts as "at least" (end - alert). Incidents, their alerts
  and their repairs count in the period where the incident started, once.
- **auto-recovery success**: incidents recovered by an automatic repair (verified by the
  passing re-probe that closed them, and the repair really changed something: "nothing
  to do" is no success) / incidents that had one attempted.
- **alert precision**: only judged alerts count (``judge``): a person's label, drill ground
  truth (a fault of the alert's category was on: true; a quiet window or a fault of
  other categories: false), or an explicit later signal (the incident closed after an
  automatic repair that changed something: true). Precision = true / judged, reported
  with the judged share; "not measured" when nothing is judged.
- **monitoring coverage**: per category H1-H7, the share of the period with a fresh sample
  of it, fresh for 2x the interval at which that category is probed + the confirmation
  delay; the figure is the mean over the categories.

One module over 400 lines on purpose: each figure's definition above and the pure
function that computes it are kept in one file, so the report's "how it is measured" can
be checked against the code in one read.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

H_CATEGORIES = ("connection", "pool", "tables", "integrity", "realtime", "auth", "api")
SERVICE = ("connection", "api")
SCHEDULED = ("cheap", "full")
# A check that could not look (error) makes its sample blind: unknown, neither up nor
# down. A check that does not apply (not_configured, e.g. H7 without endpoints) is
# dropped: the sample is judged on the checks that apply.
NOT_APPLICABLE = "not_configured"
# The one definition of "available" per check result (None: dropped).
STATE = {"ok": "up", "warning": "up", "critical": "down", "error": "unknown"}
DRILL_GRACE = pd.Timedelta(seconds=60)  # a fault's alert may come just after its removal
# No drill keeps one fault on this long (its timeouts end it sooner): an older open row
# is a killed drill's leftover.
DRILL_OPEN_LIMIT = pd.Timedelta(hours=6)


def status_state(status: str) -> str | None:
    """'up', 'down' or 'unknown' for one check result; None when it does not apply."""
    return None if status == NOT_APPLICABLE else STATE.get(status, "unknown")


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


def targets(sla_cfg: Any | None = None) -> dict[str, Target]:
    """The nine targets from the config's ``sla`` block (its defaults when None).

    Keys are the ``SlaFigures`` attributes they judge.
    """
    if sla_cfg is None:
        from westep_ops.config import Sla

        sla_cfg = Sla()
    t = sla_cfg.targets
    return {
        "availability": Target("availability", t.availability, True, "ratio"),
        "mean_response_ms": Target("mean response time", t.mean_response_ms, False, "ms"),
        "error_rate": Target("error rate", t.error_rate, False, "ratio"),
        "mttd_upper_mean_s": Target("detection (MTTD)", t.detection_seconds, False, "s"),
        "mttr_mean_s": Target("recovery (MTTR)", t.recovery_seconds, False, "s"),
        "auto_recovery_success": Target(
            "auto-recovery success", t.auto_recovery_success, True, "ratio"
        ),
        "alert_precision": Target("alert accuracy", t.alert_precision, True, "ratio"),
        "false_positive_rate": Target("false-positive rate", t.false_positive_rate, False, "ratio"),
        "coverage": Target("monitoring coverage", t.coverage, True, "ratio"),
    }


TARGETS = targets()  # the defaults; a report uses targets(config.sla)

# Verdict words (``SlaFigures.status``).
PASS, FAIL, INSUFFICIENT, NOT_MEASURED = "pass", "fail", "insufficient data", "not measured"


@dataclass
class SlaFigures:
    start: datetime
    end: datetime
    tz: str = "UTC"
    period_minutes: float = 0.0
    up_minutes: float = 0.0
    down_minutes: float = 0.0
    unknown_minutes: float = 0.0
    availability: float | None = None  # up / (up + down): over the measured time
    availability_lower_bound: float | None = None  # up / all time: unknown counted as down
    measured_share: float | None = None  # (up + down) / all time
    min_measured_share: float = 0.9
    maintenance_minutes: float = 0.0  # time inside maintenance windows
    maintenance_down_minutes: float = 0.0  # of it, down (planned downtime)
    availability_outside_maintenance: float | None = None
    maintenance_excluded: bool = False
    mean_response_ms: float | None = None
    p95_response_ms: float | None = None
    error_rate: float | None = None
    incidents: int = 0
    drill_incidents: int = 0  # of those, started while a drill fault of their category was on
    incidents_by: dict[str, int] = field(default_factory=dict)
    mttd_lower_mean_s: float | None = None  # alert - first failing sample
    mttd_upper_mean_s: float | None = None  # alert - last passing sample (judged)
    mttd_upper_p90_s: float | None = None
    mttd_unbounded: int = 0  # incidents with no passing sample before them in the data
    mttr_mean_s: float | None = None  # "at least" when mttr_open_incidents > 0
    mttr_p90_s: float | None = None
    mttr_open_incidents: int = 0
    auto_recovery_attempted: int = 0
    auto_recovery_success: float | None = None
    alerts: int = 0
    alerts_true: int = 0
    alerts_false: int = 0
    alerts_unjudged: int = 0
    alert_judged_share: float | None = None
    alert_judged_by: dict[str, int] = field(default_factory=dict)
    alert_precision: float | None = None  # true / judged
    false_positive_rate: float | None = None  # false / judged
    coverage: float | None = None
    coverage_by: dict[str, float] = field(default_factory=dict)
    daily: list[dict[str, Any]] = field(default_factory=list)
    targets: dict[str, Target] = field(default_factory=lambda: dict(TARGETS))

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "status": self.status()}

    def status(self) -> dict[str, str]:
        """Per target: "pass", "fail", "insufficient data" or "not measured"."""
        out = {}
        for key, t in self.targets.items():
            ok = t.passes(getattr(self, key))
            if ok is None:
                out[key] = NOT_MEASURED
            elif key == "availability" and (self.measured_share or 0.0) < self.min_measured_share:
                out[key] = INSUFFICIENT
            else:
                out[key] = PASS if ok else FAIL
        return out

    def verdicts(self) -> dict[str, bool | None]:
        """True/False per target; None when not measured or on insufficient data."""
        return {k: {PASS: True, FAIL: False}.get(s) for k, s in self.status().items()}


def _none(x: Any) -> float | None:
    return None if x is None or pd.isna(x) else float(x)


def _ns(t: Any) -> int:
    return int(pd.Timestamp(t).as_unit("ns").value)


def _asi8(values: Any) -> np.ndarray:
    """Timestamps as int64 ns since the epoch (UTC), whatever their resolution."""
    return pd.DatetimeIndex(pd.to_datetime(values, utc=True)).as_unit("ns").asi8


# -- time intervals ---------------------------------------------------------------------
@dataclass
class Intervals:
    """Half-open [begin, end) spans in ns (UTC) with a state each; the rest is unknown."""

    begin: np.ndarray
    end: np.ndarray
    state: np.ndarray

    def seconds(self, a: int, b: int) -> dict[str, float]:
        """Seconds of up and down inside [a, b) (ns), and unknown for the rest."""
        d = np.clip(np.minimum(self.end, b) - np.maximum(self.begin, a), 0, None) / 1e9
        up = float(d[self.state == "up"].sum())
        down = float(d[self.state == "down"].sum())
        return {"up": up, "down": down, "unknown": max(0.0, (b - a) / 1e9 - up - down)}


def _hold(ts: np.ndarray, stale_ns: int) -> np.ndarray:
    """End of each sample's span: the next sample, at most ``stale_ns`` later."""
    nxt = np.append(ts[1:], np.iinfo(np.int64).max)
    return np.minimum(nxt, ts + stale_ns)


def sample_states(samples: pd.DataFrame, categories: Iterable[str] = SERVICE) -> pd.Series:
    """Per scheduled sample (its ts, sorted): 'up', 'down' or 'unknown' over ``categories``.

    Down beats unknown beats up; a sample whose checks there all do not apply is unknown.
    """
    if samples.empty:
        return pd.Series(dtype=object)
    s = samples[samples["kind"].isin(SCHEDULED) & samples["category"].isin(tuple(categories))]
    if s.empty:
        return pd.Series(dtype=object)
    states = s["status"].map(status_state)
    g = s.assign(down=states == "down", blind=states == "unknown", applies=states.notna()).groupby(
        "ts"
    )[["down", "blind", "applies"]]
    per = g.any()
    return pd.Series(
        np.where(per["down"], "down", np.where(per["blind"] | ~per["applies"], "unknown", "up")),
        index=per.index,
    ).sort_index()


def state_intervals(samples: pd.DataFrame, stale_s: float) -> Intervals:
    """The service's state over time: each sample holds until the next, at most ``stale_s``."""
    st = sample_states(samples)
    if st.empty:
        empty = np.array([], dtype=np.int64)
        return Intervals(empty, empty, np.array([], dtype=object))
    ts = _asi8(st.index)
    return Intervals(ts, _hold(ts, int(stale_s * 1e9)), st.to_numpy(dtype=object))


def covered_seconds(ts: pd.Series, a: int, b: int, stale_s: float) -> float:
    """Seconds of [a, b) (ns) within ``stale_s`` of a sample (and before the next one)."""
    if ts.empty:
        return 0.0
    t = np.unique(_asi8(ts))
    end = _hold(t, int(stale_s * 1e9))
    return float(np.clip(np.minimum(end, b) - np.maximum(t, a), 0, None).sum() / 1e9)


def local_days(start: datetime, end: datetime, tz: str) -> list[tuple[date, int, int]]:
    """The local days of ``tz`` meeting [start, end): (date, from ns, to ns), clipped."""
    zone = ZoneInfo(tz)
    a, b = _ns(start), _ns(end)
    if b <= a:
        return []
    first = pd.Timestamp(start).tz_convert(zone).date()
    last = pd.Timestamp(end - timedelta(microseconds=1)).tz_convert(zone).date()
    out = []
    d = first
    while d <= last:
        lo = _ns(datetime.combine(d, time(), tzinfo=zone))
        hi = _ns(datetime.combine(d + timedelta(days=1), time(), tzinfo=zone))
        out.append((d, max(lo, a), min(hi, b)))
        d += timedelta(days=1)
    return out


def _merge(spans: Iterable[tuple[datetime, datetime]], a: int, b: int) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for lo, hi in sorted((max(_ns(s), a), min(_ns(e), b)) for s, e in spans):
        if hi <= lo:
            continue
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


# -- detection -------------------------------------------------------------------------
def detection_bounds(
    incidents: pd.DataFrame, samples: pd.DataFrame, observe_only: Iterable[str] = ()
) -> pd.DataFrame:
    """Per incident: ``lower_s`` = detected - started; ``upper_s`` = detected - the last
    passing sample of its category before it started (NaN when none is in ``samples``).

    Passing as alerting reads it (``alerting.read_status``): a warning made only of
    ``observe_only`` findings (``findings`` column, when loaded) passes too.
    """
    out = pd.DataFrame(index=incidents.index)
    out["lower_s"] = (incidents["detected_at"] - incidents["started_at"]).dt.total_seconds()
    out["upper_s"] = np.nan
    if samples.empty or incidents.empty:
        return out
    passing = samples["status"] == "ok"
    if "findings" in samples.columns and observe_only:
        only = set(observe_only)
        passing |= (samples["status"] == "warning") & samples["findings"].map(
            lambda f: isinstance(f, list | tuple) and bool(f) and set(f) <= only
        )
    ok = samples[passing]
    for cat, rows in incidents.groupby("category"):
        ts = np.sort(_asi8(ok.loc[ok["category"] == cat, "ts"]))
        if not len(ts):
            continue
        started = _asi8(rows["started_at"])
        i = np.searchsorted(ts, started, side="left") - 1  # strictly before started_at
        detected = _asi8(rows["detected_at"])
        upper = np.where(i >= 0, (detected - ts[np.clip(i, 0, None)]) / 1e9, np.nan)
        out.loc[rows.index, "upper_s"] = upper
    return out


# -- the figures -------------------------------------------------------------------------
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
    confirm_s: float = 5,
    cadence_s: Mapping[str, float] | None = None,
    maintenance: list[tuple[datetime, datetime]] | None = None,
    exclude_maintenance: bool = False,
    tz: str = "UTC",
    sla_cfg: Any | None = None,
    observe_only: Iterable[str] = (),
) -> SlaFigures:
    """All SLA figures of [start, end). Frames may be empty; columns as in the ops store.

    ``samples`` may begin before ``start`` (a sample just before it holds into the period
    and bounds detection). ``interval_s``: the cheap-probe interval; ``cadence_s``: the
    interval at which each category is probed (default: H4 integrity at
    ``full_interval_s``, the others at ``interval_s``). ``maintenance``: the maintenance
    windows of the period (UTC); left out of availability with ``exclude_maintenance``.
    ``sla_cfg``: the config's ``sla`` block (targets, minimum measured share).
    """
    f = SlaFigures(start, end, tz=tz)
    if sla_cfg is not None:
        f.targets = targets(sla_cfg)
        f.min_measured_share = sla_cfg.min_measured_share
    a, b = _ns(start), _ns(end)
    total = max(0.0, (b - a) / 1e9)
    f.period_minutes = total / 60
    _availability(f, samples, a, b, interval_s, confirm_s, maintenance, exclude_maintenance)

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
    _incidents(f, inc, samples, repairs, end, observe_only)
    windows = drill_windows(drill)
    f.drill_incidents = sum(
        verdict(None, row.started_at, row.category, windows, False) == (True, "drill")
        for row in inc.itertuples()
    )
    _alerts(f, alerts, incidents, inc, repairs, drill, start, end)

    cadence = {
        c: (full_interval_s if c == "integrity" else interval_s) for c in H_CATEGORIES
    } | dict(cadence_s or {})
    s = (
        samples[samples["kind"].isin(SCHEDULED)]
        if len(samples)
        else pd.DataFrame(columns=["ts", "category"])
    )
    # A period in which the monitor never ran (e.g. the month before it was installed) has
    # no coverage figure: "not measured", as for availability, not 0%.
    ran = bool(len(s)) and bool(
        ((s["ts"] >= pd.Timestamp(start)) & (s["ts"] < pd.Timestamp(end))).any()
    )
    if total and ran:
        for cat in H_CATEGORIES:
            got = s.loc[s["category"] == cat, "ts"]
            stale = 2 * cadence[cat] + confirm_s
            f.coverage_by[cat] = min(1.0, covered_seconds(got, a, b, stale) / total)
        f.coverage = sum(f.coverage_by.values()) / len(H_CATEGORIES)
    return f


def _availability(
    f: SlaFigures,
    samples: pd.DataFrame,
    a: int,
    b: int,
    interval_s: float,
    confirm_s: float,
    maintenance: list[tuple[datetime, datetime]] | None,
    exclude: bool,
) -> None:
    if b <= a:
        return
    iv = state_intervals(samples, 2 * interval_s + confirm_s)
    whole = iv.seconds(a, b)
    f.up_minutes, f.down_minutes, f.unknown_minutes = (
        whole[k] / 60 for k in ("up", "down", "unknown")
    )
    windows = _merge(maintenance or [], a, b)
    inside = {"up": 0.0, "down": 0.0, "unknown": 0.0}
    for lo, hi in windows:
        for k, v in iv.seconds(lo, hi).items():
            inside[k] += v
    f.maintenance_minutes = sum(hi - lo for lo, hi in windows) / 6e10
    f.maintenance_down_minutes = inside["down"] / 60
    out = {k: whole[k] - inside[k] for k in whole}
    if out["up"] + out["down"] > 0:
        f.availability_outside_maintenance = out["up"] / (out["up"] + out["down"])
    f.maintenance_excluded = exclude
    use = out if exclude else whole
    span = sum(use.values())
    measured = use["up"] + use["down"]
    f.availability = use["up"] / measured if measured > 0 else None
    f.measured_share = measured / span if span > 0 else 0.0
    # Nothing measured: no figure at all ("-"), not a lower bound of 0%.
    f.availability_lower_bound = use["up"] / span if measured > 0 else None
    for day, lo, hi in local_days(f.start, f.end, f.tz):
        d = iv.seconds(lo, hi)
        m = d["up"] + d["down"]
        f.daily.append(
            {
                "day": day.isoformat(),
                "availability": d["up"] / m if m > 0 else None,
                "measured": m / ((hi - lo) / 1e9),
                "down_minutes": d["down"] / 60,
                "unknown_minutes": d["unknown"] / 60,
            }
        )


def _incidents(
    f: SlaFigures,
    inc: pd.DataFrame,
    samples: pd.DataFrame,
    repairs: pd.DataFrame,
    end: datetime,
    observe_only: Iterable[str] = (),
) -> None:
    f.incidents = int(len(inc))
    if not len(inc):
        return
    f.incidents_by = {
        f"{c}/{s}": int(n) for (c, s), n in inc.groupby(["category", "severity"]).size().items()
    }
    bounds = detection_bounds(inc, samples, observe_only)
    bounded = bounds[bounds["upper_s"].notna()]
    f.mttd_unbounded = int(len(bounds) - len(bounded))
    # Both ends over the same incidents, so a range never reads "505-20 s"; incidents with
    # no passing sample before them (counted apart) give only the lower bound.
    f.mttd_lower_mean_s = _none((bounded if len(bounded) else bounds)["lower_s"].mean())
    if len(bounded):
        upper = bounded["upper_s"]
        f.mttd_upper_mean_s, f.mttd_upper_p90_s = _none(upper.mean()), _none(upper.quantile(0.9))
    open_ = inc["resolved_at"].isna()
    f.mttr_open_incidents = int(open_.sum())
    resolved_or_end = inc["resolved_at"].where(~open_, pd.Timestamp(end))
    mttr = (resolved_or_end - inc["detected_at"]).dt.total_seconds().clip(lower=0)
    f.mttr_mean_s, f.mttr_p90_s = _none(mttr.mean()), _none(mttr.quantile(0.9))
    auto = _automatic(repairs)
    tried = set(auto["incident_id"].dropna().astype(int)) if len(auto) else set()
    attempted = inc[inc["id"].isin(tried)]
    f.auto_recovery_attempted = int(len(attempted))
    if len(attempted):
        f.auto_recovery_success = float(
            attempted["id"].isin(repaired_incidents(inc, repairs)).mean()
        )


def _automatic(repairs: pd.DataFrame | None) -> pd.DataFrame:
    """The automatic repair attempts: a person's run (trigger "manual ...") is not one."""
    if repairs is None or not len(repairs):
        return pd.DataFrame(columns=["incident_id", "outcome"])
    if "trigger" in repairs.columns:
        return repairs[~repairs["trigger"].fillna("").astype(str).str.startswith("manual")]
    return repairs


def repaired_incidents(incidents: pd.DataFrame | None, repairs: pd.DataFrame | None) -> set[int]:
    """Incidents an automatic repair fixed: closed, recovered by ``auto:...``, and an
    automatic attempt of theirs changed something ("nothing to do" is no repair).

    The one rule behind auto-recovery success and the "repaired" signal that judges an
    alert true, in the monthly figures and in the what-if alike.
    """
    auto = _automatic(repairs)
    if incidents is None or not len(incidents) or not len(auto) or "outcome" not in auto:
        return set()
    fixed = set(auto.loc[auto["outcome"] == "repaired", "incident_id"].dropna().astype(int))
    ok = (
        incidents["resolved_at"].notna()
        & incidents["recovered_by"].fillna("").astype(str).str.startswith("auto:")
        & incidents["id"].isin(fixed)
    )
    return set(incidents.loc[ok, "id"].astype(int))


def _alerts(
    f: SlaFigures,
    alerts: pd.DataFrame,
    incidents: pd.DataFrame,
    inc: pd.DataFrame,
    repairs: pd.DataFrame,
    drill: pd.DataFrame | None,
    start: datetime,
    end: datetime,
) -> None:
    if not len(alerts):
        return
    opened = alerts[alerts["kind"] == "opened"]
    # An alert counts with its incident, in the period the incident started (once), even
    # when it went out after the period's end; an alert of no known incident by its time.
    known = set(incidents["id"].dropna().astype(int)) if len(incidents) else set()
    mine = set(inc["id"].dropna().astype(int)) if len(inc) else set()
    iid = opened["incident_id"]
    has = iid.notna() & iid.isin(known)
    in_time = (opened["ts"] >= start) & (opened["ts"] < end)
    opened = opened[(has & iid.isin(mine)) | (~has & in_time)]
    f.alerts = int(len(opened))
    if not len(opened):
        return
    judged = [judge(row, incidents, drill, repairs) for row in opened.itertuples()]
    f.alerts_true = sum(1 for real, _how in judged if real is True)
    f.alerts_false = sum(1 for real, _how in judged if real is False)
    f.alerts_unjudged = f.alerts - f.alerts_true - f.alerts_false
    f.alert_judged_by = dict(sorted(pd.Series([h for _r, h in judged]).value_counts().items()))
    n = f.alerts_true + f.alerts_false
    f.alert_judged_share = n / f.alerts
    if n:
        f.alert_precision = f.alerts_true / n
        f.false_positive_rate = f.alerts_false / n


# -- judging one alert -------------------------------------------------------------------
QUIET = "quiet"  # a drill row that is a window where nothing was broken


@dataclass(frozen=True)
class DrillWindow:
    """A drill row as a window: a fault's (categories it breaks), or quiet (none)."""

    start: pd.Timestamp
    end: pd.Timestamp | None  # None: not removed yet (a drill still running, or killed)
    categories: tuple[str, ...] | None  # () quiet; None unknown (an older row)


def window_end(w: DrillWindow) -> pd.Timestamp:
    """When a window stops judging: its removal, or, for a row never removed (a drill
    still running, or one killed before it could remove its fault), ``DRILL_OPEN_LIMIT``
    after the injection, so a killed drill's leftover row does not judge alerts for ever."""
    return w.end if w.end is not None else w.start + DRILL_OPEN_LIMIT


def drill_categories(row: Any) -> list[str] | None:
    """A drill row's categories; [] for a quiet window; None when unknown (an old row)."""
    if getattr(row, "fault", None) == QUIET:
        return []
    cats = getattr(row, "categories", None)
    if isinstance(cats, str) or cats is None:
        return None
    try:
        return [str(c) for c in cats]
    except TypeError:  # NaN: the column did not exist
        return None


def drill_windows(drill: pd.DataFrame | None) -> list[DrillWindow]:
    if drill is None or not len(drill):
        return []
    out = []
    for row in drill.itertuples(index=False):
        cats = drill_categories(row)
        stop = row.removed_at if pd.notna(row.removed_at) else None
        out.append(DrillWindow(row.injected_at, stop, None if cats is None else tuple(cats)))
    return out


def verdict(
    label: Any, ts: Any, category: str | None, windows: list[DrillWindow], repaired: bool
) -> tuple[bool | None, str]:
    """The one rule that judges an alert (recorded, or replayed by the what-if).

    In order: a person's label ("label"); drill truth ("drill": inside a drill window,
    +60 s grace after its removal, whose categories hold the alert's category -> True;
    inside quiet windows or faults of other categories only -> False); an explicit later
    signal ("repaired": its incident closed after an automatic repair that changed
    something -> True); otherwise (None, "unjudged"). A window of unknown categories
    (older rows) judges nothing.
    """
    if label is not None and not pd.isna(label):
        return bool(label), "label"
    ts = pd.Timestamp(ts)
    inside = [w for w in windows if w.start <= ts <= window_end(w) + DRILL_GRACE]
    if any(w.categories is not None and category in w.categories for w in inside):
        return True, "drill"
    if inside and all(w.categories is not None for w in inside):
        return False, "drill"
    if repaired:
        return True, "repaired"
    return None, "unjudged"


def judge(
    alert: Any,
    incidents: pd.DataFrame | None,
    drill: pd.DataFrame | None,
    repairs: pd.DataFrame | None = None,
) -> tuple[bool | None, str]:
    """Was an opened alert real? -> (True | False | None, how), by :func:`verdict`.

    ``alert`` needs ``ts``, ``category``, ``label`` and ``incident_id``; the "repaired"
    signal needs ``repairs``.
    """
    incident_id = getattr(alert, "incident_id", None)
    repaired = (
        incident_id is not None
        and not pd.isna(incident_id)
        and int(incident_id) in repaired_incidents(incidents, repairs)
    )
    return verdict(
        getattr(alert, "label", None),
        alert.ts,
        getattr(alert, "category", None),
        drill_windows(drill),
        repaired,
    )
