"""The monthly report's fleet section and its verdict line (en and ja), from figures."""

from __future__ import annotations

from datetime import UTC, datetime

from westep_ops.lib.sla import SlaFigures
from westep_ops.lib.sla_report import render_fleet, render_fleet_report, verdict_line

START, END = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)


def _figures(**kw: object) -> SlaFigures:
    return SlaFigures(START, END, **kw)  # type: ignore[arg-type]


def _rows() -> list[tuple[str, SlaFigures, str]]:
    met = _figures(
        availability=0.9995,
        measured_share=0.98,
        incidents=2,
        mttd_lower_mean_s=20,
        mttd_upper_mean_s=80,
        mttr_mean_s=120,
    )
    below = _figures(
        availability=0.95,
        measured_share=0.99,
        incidents=3,
        mttr_open_incidents=1,
        mttd_lower_mean_s=30,
        mttr_mean_s=600,
    )
    blind = _figures(availability=1.0, measured_share=0.02)  # 100% of 2%: not "met"
    never = _figures()
    return [
        ("prod", met, "prod/sla-report.md"),
        ("staging", below, "staging/sla-report.md"),
        ("dev", blind, "dev/sla-report.md"),
        ("new", never, "new/sla-report.md"),
    ]


def test_the_fleet_section_has_one_row_per_target_judged_by_the_same_rule() -> None:
    text = render_fleet("2026-11", "Asia/Tokyo", _rows())
    lines = text.splitlines()
    assert lines[0] == "## Fleet"
    assert lines[2] == (
        "**Availability: 1 of 4 targets met >= 99.900%; 1 with insufficient data and 1 not"
        " measured (never counted as met), 1 below**"
    )
    rows = {
        line.split("|")[1].strip(): line for line in lines if line.startswith("| ") and "[" in line
    }
    assert rows["prod"] == (
        "| prod | 99.950% | 98.0% | PASS | 0 / 2 | 20-80 s | 120 s |"
        " [prod/sla-report.md](prod/sla-report.md) |"
    )
    assert "| 95.000% | 99.0% | FAIL | 1 / 3 | >= 30 s | >= 600 s |" in rows["staging"]
    assert "| 100.000% | 2.0% | insufficient data | 0 / 0 | - | - |" in rows["dev"]
    assert "| - | - | not measured | 0 / 0 | - | - |" in rows["new"]
    assert "under 90.0% measured" in text


def test_the_fleet_section_in_japanese() -> None:
    text = render_fleet_report("2026-11", "Asia/Tokyo", _rows(), lang="ja")
    assert text.startswith("# フリートSLAレポート 2026-11（Asia/Tokyo）\n\n## フリート\n")
    assert "稼働率: 4対象中1対象が目標>= 99.900%を達成。データ不足1対象・未測定1対象" in text
    assert "| dev | 100.000% | 2.0% | データ不足 |" in text
    assert (
        "| prod | 99.950% | 98.0% | 達成 |" in text
        and "| staging | 95.000% | 99.0% | 未達 |" in text
    )
    assert "| new | - | - | 未測定 |" in text


def test_the_verdict_line_names_what_it_could_not_judge() -> None:
    """The demo's "6 of 8 targets met" beside 0% measured: the line now says why."""
    f = _figures(
        availability=1.0,
        measured_share=0.0,
        mean_response_ms=100,
        error_rate=0.0,
        coverage=0.0,
    )
    assert verdict_line(f) == (
        "Verdict: 2 of 3 judged targets met; not judged: availability (insufficient data: 0.0%"
        " of the month measured), detection (MTTD) (not measured), recovery (MTTR) (not"
        " measured), auto-recovery success (not measured), alert accuracy (not measured),"
        " false-positive rate (not measured)"
    )
    assert verdict_line(_figures(), "ja").startswith(
        "判定: 判定できた項目なし；判定できず: 稼働率（未測定）"
    )
    judged = _figures(availability=0.9999, measured_share=1.0)
    assert verdict_line(judged).startswith("Verdict: 1 of 1 judged targets met; not judged: mean")
