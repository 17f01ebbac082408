"""The monthly SLA report: Markdown (English or Japanese) and PNG charts.

Charts use matplotlib's Agg backend. Their labels are English unless a CJK font is
installed (the report text itself is fully translated with ``--lang ja``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from westep_ops.lib.sla import TARGETS, SlaFigures

TEXT = {
    "en": {
        "title": "SLA report {month} ({tz})",
        "verdict": "Verdict: {met} of {judged} targets met",
        "figure": "figure",
        "this": "this month",
        "target": "target",
        "pass": "pass",
        "prev": "previous month",
        "yes": "PASS",
        "no": "FAIL",
        "na": "n/a",
        "how": "How the figures are measured",
        "daily": "Daily availability",
        "response": "Response time",
        "incidents": "Incidents",
        "alerts": "Alert accuracy",
        "coverage": "Monitoring coverage",
        "category": "category",
        "by": "by category / severity",
        "judged": "alerts judged by",
        "whatif": "What-if: other thresholds",
        "how_text": (
            "Time is cut into slots of one probe interval. A slot is down when a scheduled sample shows the "
            "connection (H1) or the API (H7) critical, up when one shows both ok or warning, unknown when "
            "there is no sample or the monitor could not look (a check in error, e.g. the monitor is "
            "misconfigured, or not configured); availability = up / all slots, so missing data never counts "
            "as up. MTTD = alert - first "
            "failing sample; MTTR = first passing sample after the alert - alert. Auto-recovery success = "
            "incidents recovered by an automatic repair / incidents with one attempted. An alert is judged by "
            "a person's label, else by drill ground truth, else by its confirmation probe."
        ),
    },
    "ja": {
        "title": "SLAレポート {month}（{tz}）",
        "verdict": "判定: {judged}項目中{met}項目を達成",
        "figure": "指標",
        "this": "今月",
        "target": "目標",
        "pass": "判定",
        "prev": "前月",
        "yes": "達成",
        "no": "未達",
        "na": "該当なし",
        "how": "指標の測り方",
        "daily": "日別稼働率",
        "response": "応答時間",
        "incidents": "インシデント",
        "alerts": "アラート精度",
        "coverage": "監視カバレッジ",
        "category": "カテゴリ",
        "by": "カテゴリ／重大度別",
        "judged": "アラートの判定方法",
        "whatif": "閾値の見直し（what-if）",
        "how_text": (
            "期間を監視間隔ごとの枠に分け、定期サンプルで接続（H1）かAPI（H7）がcriticalなら停止、"
            "両方がokかwarningなら稼働、サンプルがないか監視側が確認できなかった場合（チェックがerror、"
            "例えば監視の設定誤り、または未設定）は不明とします。稼働率＝稼働枠／全枠で、欠測は稼働に数えません。"
            "検出時間（MTTD）＝アラート時刻－最初の失敗サンプル、復旧時間（MTTR）＝アラート後最初の成功サンプル－"
            "アラート時刻。自動復旧成功率＝自動修復で復旧したインシデント／自動修復を試みたインシデント。"
            "アラートは担当者のラベル、なければ訓練の正解記録、なければ確認プローブで判定します。"
        ),
    },
}
NAMES_JA = {
    "availability": "稼働率",
    "mean_response_ms": "平均応答時間",
    "error_rate": "エラー率",
    "mttd_mean_s": "検出時間（MTTD）",
    "mttr_mean_s": "復旧時間（MTTR）",
    "auto_recovery_success": "自動復旧成功率",
    "alert_precision": "アラート精度",
    "false_positive_rate": "誤検知率",
    "coverage": "監視カバレッジ",
}


def fmt(key: str, value: float | None) -> str:
    if value is None or pd.isna(value):
        return "-"
    unit = TARGETS[key].unit if key in TARGETS else ""
    if unit == "ratio":
        return f"{value:.3%}" if key == "availability" else f"{value:.1%}"
    if unit == "ms":
        return f"{value:.0f} ms"
    if unit == "s":
        return f"{value:.0f} s"
    return f"{value:g}"


def render(
    month: str,
    tz: str,
    f: SlaFigures,
    prev: SlaFigures | None,
    charts: dict[str, str],
    lang: str = "en",
    whatif: list[dict[str, Any]] | None = None,
) -> str:
    t = TEXT[lang]
    verdicts = f.verdicts()
    judged = [v for v in verdicts.values() if v is not None]
    out = [
        f"# {t['title'].format(month=month, tz=tz)}",
        "",
        f"**{t['verdict'].format(met=sum(judged), judged=len(judged))}**",
        "",
        f"| {t['figure']} | {t['this']} | {t['target']} | {t['pass']} | {t['prev']} |",
        "|---|---|---|---|---|",
    ]
    for key, target in TARGETS.items():
        name = NAMES_JA[key] if lang == "ja" else target.name
        sign = ">=" if target.higher_is_better else "<"
        verdict = {True: t["yes"], False: t["no"], None: t["na"]}[verdicts[key]]
        before = fmt(key, getattr(prev, key)) if prev is not None else "-"
        out.append(
            f"| {name} | {fmt(key, getattr(f, key))} | {sign} {fmt(key, target.target)} | {verdict} | {before} |"
        )
    out += [
        "",
        f"## {t['how']}",
        "",
        t["how_text"],
        "",
        f"slots: {f.slots}, up {f.up}, down {f.down}, unknown {f.unknown} "
        f"(measured share {fmt('coverage', f.measured_share)})",
        "",
        (
            f"maintenance windows: {f.maintenance_minutes:.0f} min ({f.maintenance_slots} slots, "
            f"{f.maintenance_down} down); availability outside maintenance "
            f"{fmt('availability', f.availability_outside_maintenance)}; maintenance time is "
            + ("excluded from" if f.maintenance_excluded else "included in")
            + " availability (sla.excludeMaintenance)"
        ),
        "",
    ]
    for key, title in (
        ("availability", t["daily"]),
        ("response", t["response"]),
        ("incidents", t["incidents"]),
        ("alerts", t["alerts"]),
    ):
        out += [f"## {title}", ""]
        if key in charts:
            out += [f"![{key}]({charts[key]})", ""]
        if key == "incidents":
            out += [
                f"{f.incidents} — {t['by']}: "
                + (", ".join(f"{k} {v}" for k, v in sorted(f.incidents_by.items())) or "-"),
                f"MTTD mean {fmt('mttd_mean_s', f.mttd_mean_s)} / p90 {fmt('mttd_mean_s', f.mttd_p90_s)}; "
                f"MTTR mean {fmt('mttr_mean_s', f.mttr_mean_s)} / p90 {fmt('mttr_mean_s', f.mttr_p90_s)}",
                "",
            ]
        if key == "alerts":
            out += [
                f"{f.alerts_true}/{f.alerts} — {t['judged']}: "
                + (", ".join(f"{k} {v}" for k, v in sorted(f.alert_judged_by.items())) or "-"),
                "",
            ]
    out += [f"## {t['coverage']}", "", f"| {t['category']} | % |", "|---|---|"]
    out += [f"| {c} | {v:.1%} |" for c, v in f.coverage_by.items()]
    if whatif:
        out += [
            "",
            f"## {t['whatif']}",
            "",
            "| settings | alerts | false positives | missed incidents |",
            "|---|---|---|---|",
        ]
        out += [
            f"| {w['name']} | {w['alerts']} | {w['false_positives']} | {w['missed']} |"
            for w in whatif
        ]
    return "\n".join(out) + "\n"


def charts(
    f: SlaFigures, performance: pd.DataFrame, incidents: pd.DataFrame, folder: Path, tz: str
) -> dict[str, str]:
    """Write the PNG charts into ``folder``; returns {name: file name}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    made: dict[str, str] = {}

    def save(fig: Any, name: str) -> None:
        fig.savefig(folder / f"{name}.png", dpi=90, bbox_inches="tight")
        plt.close(fig)
        made[name] = f"{name}.png"

    fig, ax = plt.subplots(figsize=(7, 2.6))
    if f.daily:
        days = [d["day"][5:] for d in f.daily]
        ax.bar(
            days,
            [d["availability"] * 100 for d in f.daily],
            color=["#2a9d8f" if d["availability"] >= 0.999 else "#e76f51" for d in f.daily],
        )
        ax.set_ylim(min(99.0, min(d["availability"] * 100 for d in f.daily) - 0.5), 100.05)
        ax.tick_params(axis="x", labelrotation=90, labelsize=7)
    ax.axhline(99.9, color="black", linestyle="--", linewidth=1, label="target 99.9%")
    ax.set_ylabel("availability %")
    ax.set_title("daily availability")
    ax.legend(loc="lower left", fontsize=8)
    save(fig, "availability")

    fig, ax = plt.subplots(figsize=(7, 2.6))
    if len(performance):
        daily = performance.set_index("ts")["mean_api_ms"].resample("1D").mean()
        ax.plot(daily.index, daily.to_numpy(), marker=".")
    ax.axhline(2000, color="black", linestyle="--", linewidth=1, label="target 2 s")
    ax.set_ylabel("mean API ms")
    ax.set_title("response time per day")
    ax.legend(loc="upper left", fontsize=8)
    save(fig, "response")

    fig, ax = plt.subplots(figsize=(7, 2.8))
    # Bars on a date axis: widths are in days, matplotlib's date unit.
    for i, row in enumerate(incidents.itertuples()):
        end = row.resolved_at if pd.notna(row.resolved_at) else f.end
        ax.barh(
            i,
            (row.detected_at - row.started_at).total_seconds() / 86400,
            left=row.started_at,
            color="#f4a261",
        )
        ax.barh(
            i,
            (pd.Timestamp(end) - row.detected_at).total_seconds() / 86400,
            left=row.detected_at,
            color="#e76f51",
        )
    ax.set_yticks(
        range(len(incidents)), [f"#{r.id} {r.category}" for r in incidents.itertuples()], fontsize=7
    )
    ax.set_xlim(pd.Timestamp(f.start), pd.Timestamp(f.end))
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d"))
    ax.set_title(
        f"incidents (orange: to detection, red: to recovery) MTTD {fmt('mttd_mean_s', f.mttd_mean_s)}, "
        f"MTTR {fmt('mttr_mean_s', f.mttr_mean_s)}",
        fontsize=9,
    )
    save(fig, "incidents")

    fig, ax = plt.subplots(figsize=(4, 2.6))
    ax.bar(["real", "false"], [f.alerts_true, f.alerts_false], color=["#2a9d8f", "#e76f51"])
    prec = "-" if f.alert_precision is None else f"{f.alert_precision:.0%}"
    ax.set_title(f"alerts: precision {prec} (target 95%)", fontsize=9)
    save(fig, "alerts")
    return made
