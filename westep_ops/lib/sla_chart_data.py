"""What the monthly SLA report's four charts plot, as plain data (no matplotlib).

Every chart shares one x axis: the LOCAL days (config time zone) of the period, day ``i``
spanning ``[i, i + 1)``, labelled with the day of the month. A monthly report whose
period starts on the 1st shows the whole calendar month, so day 2 of 31 looks like day 2
of 31 (days after the period's end are left blank, not "no data"). Inside the period a
day with nothing measured is drawn as "no data", never as 0.

The pure ``*_data`` functions return what is plotted (bars per day, target line and
y-limits, one mark per incident, counts); tests assert on them and the drawing in
``sla_charts.py`` only reads them.
"""

from __future__ import annotations

import calendar
import math
from datetime import date, datetime, timedelta
from typing import Any

import pandas as pd

from westep_ops.lib.sla import SlaFigures

# A mark is at least this share of the time axis wide: a 10-second incident stays visible.
MIN_MARK_SHARE = 0.008
# The availability axis spans this many error budgets below 100% (99.0-100% for 99.9%).
BUDGETS_SHOWN = 10
MAX_INCIDENT_ROWS = 40


def _local(ts: Any, tz: str) -> pd.Timestamp:
    t = pd.Timestamp(ts)
    return (t.tz_localize("UTC") if t.tzinfo is None else t).tz_convert(tz)


def day_axis(start: datetime, end: datetime, tz: str) -> dict[str, Any]:
    """The local days the charts show, and where the period ends on that axis.

    Returns {"days": [date, ...], "origin": local midnight of the first day (naive),
    "period_end": x of the period's end, "labels": one unique tick label per day,
    "xlabel": the month(s) and zone}. A period starting at local midnight on the 1st is
    padded to the end of its calendar month.
    """
    s, e = _local(start, tz), _local(end, tz)
    first = s.date()
    last = (e - pd.Timedelta(microseconds=1)).date() if e > s else first
    if s == s.normalize() and s.day == 1:
        month_end = date(s.year, s.month, calendar.monthrange(s.year, s.month)[1])
        last = max(last, month_end)
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    origin = pd.Timestamp(first)
    months = sorted({d.strftime("%Y-%m") for d in days})
    one_month = len(months) == 1
    labels = [str(d.day) if one_month else d.strftime("%m-%d") for d in days]
    return {
        "days": days,
        "origin": origin,
        "period_start": to_x(s, origin, tz),
        "period_end": to_x(e, origin, tz),
        "labels": labels,
        "xlabel": f"day of {months[0]} ({tz})"
        if one_month
        else f"day, {months[0]} to {months[-1]} ({tz})",
    }


def to_x(ts: Any, origin: pd.Timestamp, tz: str) -> float:
    """Position on the day axis: local wall-clock days since the first day's midnight."""
    return float((_local(ts, tz).tz_localize(None) - origin) / pd.Timedelta(days=1))


def _day_state(i: int, axis: dict[str, Any]) -> str:
    """'future' for a day wholly after the period's end, else 'period'."""
    return "future" if i >= axis["period_end"] else "period"


def availability_data(
    f: SlaFigures,
    tz: str,
    *,
    target: float = 0.999,
    min_measured_share: float = 0.9,
) -> dict[str, Any]:
    """One bar per local day (from ``f.daily``), the target line and the y-limits (in %).

    A bar's ``state`` is "met", "missed", "no data" (nothing measured that day) or
    "future" (after the period's end: no bar). Values below the axis are drawn clipped
    at its bottom and flagged ``clipped``; ``partial`` marks days measured below
    ``min_measured_share``.
    """
    axis = day_axis(f.start, f.end, tz)
    budget = (1 - target) * 100
    low = max(0.0, 100 - BUDGETS_SHOWN * budget) if budget > 0 else 99.0
    high = 100 + (100 - low) * 0.06
    by_day = {d["day"]: d for d in f.daily}
    bars = []
    for i, d in enumerate(axis["days"]):
        row = by_day.get(d.isoformat(), {})
        value = row.get("availability")
        value = None if value is None or pd.isna(value) else float(value) * 100
        measured = row.get("measured")
        if _day_state(i, axis) == "future" and not row:
            state = "future"
        elif value is None:
            state = "no data"
        else:
            state = "met" if value >= target * 100 else "missed"
        bars.append(
            {
                "day": d.isoformat(),
                "x": i + 0.5,
                "label": axis["labels"][i],
                "value": value,
                "shown": None if value is None else max(value, low),
                "clipped": value is not None and value < low,
                "partial": value is not None
                and measured is not None
                and float(measured) < min_measured_share,
                "measured": None if measured is None else float(measured),
                "down_minutes": row.get("down_minutes"),
                "state": state,
            }
        )
    # Down minutes only of days that measured something: an unmeasured day is no "0 down".
    down = [
        b["down_minutes"] for b in bars if b["down_minutes"] is not None and b["value"] is not None
    ]
    period_min = (pd.Timestamp(f.end) - pd.Timestamp(f.start)).total_seconds() / 60
    return {
        "axis": axis,
        "bars": bars,
        "target": target * 100,
        "ylim": (low, high),
        "xlim": (0.0, float(len(axis["days"]))),
        "down_minutes": float(sum(down)) if down else None,
        "budget_minutes": (1 - target) * period_min if period_min > 0 else None,
    }


def response_data(
    f: SlaFigures, performance: pd.DataFrame, tz: str, *, target_ms: float = 2000
) -> dict[str, Any]:
    """p50 and p95 of the API response samples per local day, the target and the y-limits.

    Days with no sample inside the period have ``None`` (drawn as "no data").
    """
    axis = day_axis(f.start, f.end, tz)
    p = performance
    if len(p):
        p = p[(p["ts"] >= pd.Timestamp(f.start)) & (p["ts"] < pd.Timestamp(f.end))]
        p = p[p["mean_api_ms"].notna()]
    stats: dict[str, tuple[float, float, int]] = {}
    if len(p):
        local_day = p["ts"].dt.tz_convert(tz).dt.date
        for d, g in pd.to_numeric(p["mean_api_ms"]).groupby(local_day.to_numpy()):
            stats[d.isoformat()] = (float(g.quantile(0.5)), float(g.quantile(0.95)), len(g))
    days = []
    for i, d in enumerate(axis["days"]):
        p50, p95, n = stats.get(d.isoformat(), (None, None, 0))
        state = (
            "future" if _day_state(i, axis) == "future" and not n else "data" if n else "no data"
        )
        days.append(
            {
                "day": d.isoformat(),
                "x": i + 0.5,
                "p50": p50,
                "p95": p95,
                "samples": n,
                "state": state,
            }
        )
    worst = max((d["p95"] for d in days if d["p95"] is not None), default=0.0)
    best = min((d["p50"] for d in days if d["p50"]), default=0.0)
    # Responses far under the target would sit flat on a linear 0-2.6 s axis: a log axis
    # then shows both the milliseconds and the target line.
    log = 0 < worst < target_ms / 10
    return {
        "axis": axis,
        "days": days,
        "target": float(target_ms),
        "yscale": "log" if log else "linear",
        "ylim": (
            (max(0.1, best / 2), target_ms * 2) if log else (0.0, max(target_ms * 1.3, worst * 1.1))
        ),
        "xlim": (0.0, float(len(axis["days"]))),
    }


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def incident_data(f: SlaFigures, incidents: pd.DataFrame, tz: str) -> dict[str, Any]:
    """One mark per incident that started in the period, on the local-day axis.

    Each mark: x0 (start), detect (x of the alert), x1 (recovery, or the period's end when
    still open), width (at least ``MIN_MARK_SHARE`` of the axis), label "#id category",
    left (where the mark is drawn, inside the axis), text (local start time and duration),
    open.
    """
    axis = day_axis(f.start, f.end, tz)
    span = float(len(axis["days"]))
    min_w = span * MIN_MARK_SHARE
    inc = incidents
    if len(inc):
        inc = inc[
            (inc["started_at"] >= pd.Timestamp(f.start)) & (inc["started_at"] < pd.Timestamp(f.end))
        ].sort_values("started_at")
    marks = []
    for row in inc.itertuples():
        open_ = pd.isna(row.resolved_at) or row.resolved_at >= pd.Timestamp(f.end)
        end = pd.Timestamp(f.end) if open_ else row.resolved_at
        detected = row.detected_at if pd.notna(row.detected_at) else end
        x0 = to_x(row.started_at, axis["origin"], tz)
        x1 = min(to_x(end, axis["origin"], tz), span)
        seconds = (end - row.started_at).total_seconds()
        start_local = _local(row.started_at, tz).strftime("%m-%d %H:%M")
        marks.append(
            {
                "id": int(row.id),
                "label": f"#{int(row.id)} {row.category}",
                "x0": x0,
                "detect": min(to_x(detected, axis["origin"], tz), x1),
                "x1": x1,
                "width": max(x1 - x0, min_w),
                # Where the mark is drawn: a short one at the axis' end stays inside it.
                "left": min(x0, span - max(x1 - x0, min_w)),
                "open": bool(open_),
                "text": f"{start_local}  "
                + (f"open, {_duration(seconds)} so far" if open_ else _duration(seconds)),
            }
        )
    return {
        "axis": axis,
        "marks": marks,
        "shown": marks[-MAX_INCIDENT_ROWS:],
        "xlim": (0.0, span),
        "min_width": min_w,
    }


def alerts_data(f: SlaFigures) -> dict[str, Any]:
    """Opened alerts judged real, false and not judged, with integer y ticks."""
    counts = [int(f.alerts_true), int(f.alerts_false), int(f.alerts_unjudged)]
    top = max(counts + [1])
    step = max(1, math.ceil(top / 6))
    return {
        "labels": ["real", "false", "not judged"],
        "counts": counts,
        "ylim": (0.0, top * 1.15 + 0.2),
        "yticks": list(range(0, top + step, step)),
        "precision": f.alert_precision,
    }


def chart_data(
    f: SlaFigures,
    performance: pd.DataFrame,
    incidents: pd.DataFrame,
    tz: str,
    *,
    availability_target: float = 0.999,
    response_target_ms: float = 2000,
    min_measured_share: float = 0.9,
) -> dict[str, dict[str, Any]]:
    """The data of all four charts, keyed like the files."""
    return {
        "availability": availability_data(
            f, tz, target=availability_target, min_measured_share=min_measured_share
        ),
        "response": response_data(f, performance, tz, target_ms=response_target_ms),
        "incidents": incident_data(f, incidents, tz),
        "alerts": alerts_data(f),
    }
