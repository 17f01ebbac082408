"""The SLA charts and the monthly asset's metadata, on constructed figures (no database)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib
import pandas as pd
import pytest
from dagster import MaterializeResult

from westep_ops.defs.sla.assets import numeric_figures, report_metadata
from westep_ops.lib.sla import SlaFigures
from westep_ops.lib.sla_charts import (
    chart_data,
    charts,
    draw_alerts,
    draw_availability,
    draw_incidents,
    draw_response,
)

matplotlib.use("Agg")

TZ = "Asia/Tokyo"
START = pd.Timestamp("2026-12-01", tz=TZ).tz_convert("UTC")  # 2026-11-30 15:00 UTC
MONTH_END = pd.Timestamp("2027-01-01", tz=TZ).tz_convert("UTC")
INCIDENT_COLUMNS = [
    "id",
    "category",
    "severity",
    "started_at",
    "detected_at",
    "resolved_at",
    "recovered_by",
    "escalation",
]
NO_INCIDENTS = pd.DataFrame(columns=INCIDENT_COLUMNS)


def local(text: str, tz: str = TZ) -> pd.Timestamp:
    return pd.Timestamp(text, tz=tz).tz_convert("UTC")


def day(d: str, availability: float | None, measured: float = 1.0) -> dict[str, Any]:
    down = 0.0 if availability is None else (1 - availability) * measured * 1440
    return {
        "day": d,
        "availability": availability,
        "measured": measured,
        "down_minutes": down,
        "unknown_minutes": (1 - measured) * 1440,
    }


def figures(end: pd.Timestamp, daily: list[dict[str, Any]], **kw: Any) -> SlaFigures:
    f = SlaFigures(START.to_pydatetime(), end.to_pydatetime(), **kw)
    f.daily = daily
    return f


def performance(*stamps: tuple[pd.Timestamp, float]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"ts": ts, "mean_api_ms": ms, "http_requests": 10, "http_failures": 0}
            for ts, ms in stamps
        ]
    )


def incidents(*rows: tuple[int, str, pd.Timestamp, float, float | None]) -> pd.DataFrame:
    """(id, category, start, seconds to detection, seconds to resolution or None = open)."""
    return pd.DataFrame(
        [
            {
                "id": i,
                "category": cat,
                "severity": "critical",
                "started_at": s,
                "detected_at": s + pd.Timedelta(seconds=det),
                "resolved_at": pd.NaT if res is None else s + pd.Timedelta(seconds=res),
                "recovered_by": None,
                "escalation": None,
            }
            for i, cat, s, det, res in rows
        ]
    )


def tick_labels(fig: Any) -> list[str]:
    return [t.get_text() for t in fig.axes[0].get_xticklabels()]


def one_day() -> tuple[SlaFigures, pd.DataFrame, pd.DataFrame]:
    """The 1st of the month monitored until 20:00 local, three incidents, one still open."""
    end = local("2026-12-01 20:00")
    f = figures(
        end,
        [day("2026-12-01", 0.9978, measured=0.83)],
        alerts=3,
        alerts_true=1,
        alerts_false=1,
        alerts_unjudged=1,
        alert_precision=0.5,
    )
    perf = performance(
        (local("2026-11-30 23:59"), 9999.0),  # the month before: not charted
        (local("2026-12-01 00:01"), 200.0),
        (local("2026-12-01 10:00"), 400.0),
        (local("2026-12-01 19:59"), 600.0),
    )
    inc = incidents(
        (1, "tables", local("2026-12-01 02:00"), 70, 1200),
        (2, "connection", local("2026-12-01 05:00"), 3, 10),  # ten seconds long
        (3, "api", local("2026-12-01 18:00"), 60, None),  # still open
    )
    return f, perf, inc


def full_month() -> tuple[SlaFigures, pd.DataFrame, pd.DataFrame]:
    """31 local days: day 23 far below the axis, day 27 unmeasured, day 13 partly measured."""
    daily = []
    for i in range(1, 32):
        a = {5: 0.9975, 23: 0.962, 27: None}.get(i, 1.0)
        daily.append(day(f"2026-12-{i:02d}", a, measured={13: 0.6, 27: 0.0}.get(i, 1.0)))
    f = figures(
        MONTH_END,
        daily,
        alerts=20,
        alerts_true=11,
        alerts_false=2,
        alerts_unjudged=7,
        alert_precision=11 / 13,
    )
    perf = performance(
        *[
            (local(f"2026-12-{d:02d} {h:02d}:30"), 300.0 + h)
            for d in range(1, 32)
            if d != 27
            for h in range(0, 24, 6)
        ]
    )
    inc = incidents(
        (10, "pool", local("2026-12-03 00:30"), 5, 10),  # 10 s, just after local midnight
        (11, "tables", local("2026-12-10 12:00"), 120, 4000),
        (12, "connection", local("2026-12-23 01:00"), 60, 3 * 3600),
        (13, "realtime", local("2026-12-30 18:00"), 60, None),  # open at the month's end
    )
    return f, perf, inc


def test_one_day_shows_the_day_on_the_month_axis() -> None:
    f, perf, inc = one_day()
    data = chart_data(f, perf, inc, TZ)
    av = data["availability"]
    assert [d.isoformat() for d in av["axis"]["days"]][::30] == ["2026-12-01", "2026-12-31"]
    assert av["xlim"] == (0.0, 31.0)
    states = [b["state"] for b in av["bars"]]
    assert states == ["missed"] + ["future"] * 30  # one bar; the rest of the month is not yet
    bar = av["bars"][0]
    assert bar["value"] == pytest.approx(99.78) and bar["partial"] and not bar["clipped"]
    low, high = av["ylim"]
    assert av["target"] == pytest.approx(99.9) and low == pytest.approx(99.0)
    assert low < av["target"] < high <= 100.1
    assert av["down_minutes"] == pytest.approx(0.0022 * 0.83 * 1440)

    resp = data["response"]
    first = resp["days"][0]
    assert (first["samples"], first["p50"]) == (3, 400.0)  # 23:59 of the 30th is not December
    assert [d["state"] for d in resp["days"][1:]] == ["future"] * 30
    assert resp["ylim"][0] < resp["target"] == 2000 < resp["ylim"][1]

    marks = data["incidents"]["marks"]
    assert [m["label"] for m in marks] == ["#1 tables", "#2 connection", "#3 api"]
    assert [m["open"] for m in marks] == [False, False, True]
    ten = marks[1]
    assert ten["x1"] - ten["x0"] == pytest.approx(10 / 86400)
    assert ten["width"] == pytest.approx(data["incidents"]["min_width"]) and ten["width"] > 0.2
    assert ten["x0"] == pytest.approx(5 / 24)  # 05:00 local on day 1
    assert marks[2]["x1"] == pytest.approx(20 / 24) and "open" in marks[2]["text"]
    assert marks[0]["text"] == "12-01 02:00  20 min"

    al = data["alerts"]
    assert al["counts"] == [1, 1, 1]
    assert all(isinstance(t, int) for t in al["yticks"])


def test_full_month_one_bar_per_local_day_and_a_mark_per_incident() -> None:
    f, perf, inc = full_month()
    data = chart_data(f, perf, inc, TZ, availability_target=0.999, response_target_ms=2000)
    av = data["availability"]
    bars = av["bars"]
    assert len(bars) == 31 and [b["day"] for b in bars] == [d["day"] for d in f.daily]
    assert [b["x"] for b in bars] == [i + 0.5 for i in range(31)]
    by = {b["day"][-2:]: b for b in bars}
    assert by["27"]["state"] == "no data" and by["27"]["value"] is None  # not 0
    assert by["23"]["clipped"] and by["23"]["shown"] == av["ylim"][0] == pytest.approx(99.0)
    assert by["05"]["state"] == "missed" and not by["05"]["clipped"]
    assert by["13"]["partial"] and by["13"]["state"] == "met"
    assert sum(b["state"] == "met" for b in bars) == 28
    assert av["ylim"][0] < av["target"] < av["ylim"][1]

    resp = data["response"]["days"]
    assert len(resp) == 31 and resp[26]["state"] == "no data" and resp[26]["p95"] is None
    assert resp[0]["samples"] == 4 and resp[0]["p50"] == pytest.approx(309.0)

    inc_data = data["incidents"]
    marks = inc_data["marks"]
    assert len(marks) == len(inc) == 4 and inc_data["xlim"] == (0.0, 31.0)
    assert marks[0]["x0"] == pytest.approx(2 + 0.5 / 24)  # 00:30 local on the 3rd, not the 2nd
    assert marks[0]["width"] == pytest.approx(31 * 0.008)
    assert [m["open"] for m in marks] == [False, False, False, True]
    assert marks[3]["x1"] == pytest.approx(31.0)
    assert all(0 <= m["left"] <= m["x0"] and m["left"] + m["width"] <= 31 for m in marks)


def test_kolkata_half_hour_midnight_cuts_the_response_days() -> None:
    tz = "Asia/Kolkata"
    start, end = local("2026-12-01", tz), local("2026-12-03", tz)
    f = SlaFigures(start.to_pydatetime(), end.to_pydatetime())
    perf = performance(
        (pd.Timestamp("2026-12-01 18:29", tz="UTC"), 100.0),  # 23:59 IST on the 1st
        (pd.Timestamp("2026-12-01 18:31", tz="UTC"), 900.0),  # 00:01 IST on the 2nd
    )
    days = chart_data(f, perf, NO_INCIDENTS, tz)["response"]["days"]
    assert [(d["day"], d["p50"]) for d in days[:2]] == [
        ("2026-12-01", 100.0),
        ("2026-12-02", 900.0),
    ]
    assert len(days) == 31  # a period starting on the 1st shows its whole month


@pytest.mark.parametrize("history", [one_day, full_month])
def test_drawn_charts_keep_target_inside_and_ticks_unique(history: Any, tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    f, perf, inc = history()
    data = chart_data(f, perf, inc, TZ)
    for draw, name in (
        (draw_availability, "availability"),
        (draw_response, "response"),
        (draw_incidents, "incidents"),
    ):
        fig = draw(data[name])
        ax = fig.axes[0]
        labels = tick_labels(fig)
        assert labels[:3] == ["1", "2", "3"] and labels[-1] == "31"
        assert len(labels) == len(set(labels)) == 31
        assert ax.get_xlim() == (0.0, 31.0)
        if name != "incidents":
            low, high = ax.get_ylim()
            assert low < data[name]["target"] < high
        else:
            assert [t.get_text() for t in ax.get_yticklabels()] == [
                m["label"] for m in data["incidents"]["marks"]
            ]
            # Every incident's row is drawn at least the minimum width wide.
            for row in range(len(inc)):
                widths = [p.get_width() for p in ax.patches if abs(p.get_y() + 0.3 - row) < 0.01]
                assert sum(widths) >= data["incidents"]["min_width"] * 0.999 > 0
        plt.close(fig)
    fig = draw_alerts(data["alerts"])
    ticks = fig.axes[0].get_yticks()
    assert all(float(t).is_integer() for t in ticks)
    plt.close(fig)

    made = charts(f, perf, inc, tmp_path, TZ)
    assert made == {n: f"{n}.png" for n in ("availability", "response", "incidents", "alerts")}
    for file in made.values():
        assert (tmp_path / file).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (tmp_path / file).stat().st_size > 3000


def test_empty_month_draws_no_data_not_zero(tmp_path: Path) -> None:
    f = figures(MONTH_END, [day(f"2026-12-{i:02d}", None, 0.0) for i in range(1, 32)])
    data = chart_data(f, performance(), NO_INCIDENTS, TZ)
    assert {b["state"] for b in data["availability"]["bars"]} == {"no data"}
    assert data["availability"]["down_minutes"] is None  # not "0 min down"
    assert data["incidents"]["marks"] == [] and data["alerts"]["counts"] == [0, 0, 0]
    assert len(charts(f, performance(), NO_INCIDENTS, tmp_path, TZ)) == 4


def test_asset_metadata_is_numeric_with_four_charts(tmp_path: Path) -> None:
    from dagster import (
        DagsterInstance,
        FloatMetadataValue,
        IntMetadataValue,
        MarkdownMetadataValue,
        PathMetadataValue,
        asset,
        materialize,
    )

    f, perf, inc = full_month()
    f.availability, f.mean_response_ms, f.mttd_mean_s = 0.9987, float("nan"), None
    f.incidents, f.coverage_by = 4, {"connection": 1.0, "api": 0.5}
    made = charts(f, perf, inc, tmp_path, TZ)
    report = tmp_path / "sla-report.md"
    report.write_text("# report\n")
    meta = report_metadata(f, report, made)

    numbers = numeric_figures(f)
    assert numbers["availability"] == 0.9987 and numbers["incidents"] == 4
    assert numbers["coverage_by.api"] == 0.5
    assert "mean_response_ms" not in numbers and "mttd_mean_s" not in numbers  # not measured
    assert "daily" not in numbers and "start" not in numbers

    @asset
    def sla_metadata_probe() -> MaterializeResult:
        return MaterializeResult(metadata=meta)

    with DagsterInstance.ephemeral() as instance:
        result = materialize([sla_metadata_probe], instance=instance)
    (event,) = result.get_asset_materialization_events()
    stored = event.event_specific_data.materialization.metadata
    assert isinstance(stored["availability"], FloatMetadataValue)
    assert isinstance(stored["incidents"], IntMetadataValue)
    assert isinstance(stored["targets_met"], IntMetadataValue)
    assert isinstance(stored["report"], PathMetadataValue)
    for name in ("availability", "response", "incidents", "alerts"):
        md = stored[f"{name}_chart"]
        assert isinstance(md, MarkdownMetadataValue)
        assert md.value.startswith(f"![{name}](data:image/png;base64,")
        assert len(md.value) < 40_000  # small inline images
        assert stored[f"{name}_chart_file"].value == str(tmp_path / f"{name}.png")
    assert not any(isinstance(v.value, str) and "%" in v.value for v in stored.values())


def test_responses_far_under_the_target_get_a_log_axis_that_still_shows_it() -> None:
    from westep_ops.lib.sla_chart_data import response_data

    f, _perf, _inc = one_day()
    fast = performance(
        (local("2026-12-01 01:00"), 6.0),
        (local("2026-12-01 02:00"), 9.0),
    )
    data = response_data(f, fast, TZ)
    assert data["yscale"] == "log"
    low, high = data["ylim"]
    assert 0 < low < 6.0 and high > data["target"] == 2000  # every point and the target
