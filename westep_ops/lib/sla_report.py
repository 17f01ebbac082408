"""The monthly SLA report in Markdown (English or Japanese).

The PNG charts are drawn by ``lib/sla_charts.py``; ``render`` embeds them by name.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from westep_ops.lib.sla import INSUFFICIENT, NOT_MEASURED, PASS, TARGETS, SlaFigures

TEXT = {
    "en": {
        "title": "SLA report {month} ({tz})",
        "verdict": "Verdict: {met} of {judged} judged targets met",
        "verdict_none": "Verdict: no target could be judged",
        "not_judged": "not judged: {items}",
        "insufficient_item": "{name} (insufficient data: {share} of the month measured)",
        "na_item": "{name} (not measured)",
        "fleet_title": "Fleet SLA report {month} ({tz})",
        "fleet": "Fleet",
        "fleet_verdict": (
            "Availability: {met} of {n} targets met {target}; {insufficient} with insufficient"
            " data and {na} not measured (never counted as met), {failed} below"
        ),
        "fleet_head": (
            "| target | availability | measured | verdict | incidents open / total | MTTD | MTTR"
            " | report |"
        ),
        "fleet_note": (
            "Each target is judged with the same rule as its own report: availability over"
            ' its measured time, and under {min_share} measured "insufficient data".'
        ),
        "figure": "figure",
        "this": "this month",
        "target": "target",
        "pass": "pass",
        "prev": "previous month",
        "yes": "PASS",
        "no": "FAIL",
        "na": "not measured",
        "insufficient": "insufficient data",
        "measured": "measured share (of the month so far)",
        "lower": "availability lower bound (unknown time as down)",
        "judged_share": "alerts judged",
        "how": "How the figures are measured",
        "daily": "Daily availability",
        "response": "Response time",
        "incidents": "Incidents",
        "alerts": "Alert accuracy",
        "coverage": "Monitoring coverage",
        "category": "category",
        "by": "by category / severity",
        "drill_note": (
            "{n} of them injected by a fault drill (sandbox): the detection, recovery and"
            " auto-recovery figures include them, at the drill's own probe cadence"
        ),
        "judged": "alerts judged by",
        "whatif": "What-if: other thresholds",
        "maintenance": (
            "maintenance windows: {minutes:.0f} min ({down:.0f} min down); availability outside"
            " maintenance {outside}; maintenance time is {how} availability"
            " (sla.excludeMaintenance)"
        ),
        "excluded": "excluded from",
        "included": "included in",
        "whatif_head": (
            "| settings | alerts | judged real | false positives | unjudged | precision"
            " | missed (of truth windows) |"
        ),
        "of": "of",
        "not_measured": "not measured",
        "time": "time: up {up:.1f} min, down {down:.1f} min, unknown {unknown:.1f} min of {total:.1f} min",
        "day_table": "| day | availability | measured | down min | unknown min |",
        "mttd": "MTTD {range} (first failing sample - last passing sample before it; mean over"
        " {n} incident(s)), upper bound p90 {p90}",
        "unbounded": "; {n} incident(s) with no passing sample before them in the data (lower bound only)",
        "mttr": "MTTR mean {mean} / p90 {p90}",
        "mttr_open": " (at least: {n} incident(s) still open at the period's end counted to its end)",
        "alerts_line": "{true} true, {false} false, {unjudged} unjudged of {n} alerts (judged {share});"
        " precision over judged alerts {precision}",
        "how_text": (
            "**Availability** is measured over time: each scheduled sample's state holds until the next "
            "sample, at most {stale:.0f} s (2x the {cheap:.0f} s probe interval + the confirmation delay); "
            "after that the time is unknown. A sample is down when the connection (H1) or the API (H7) is "
            "critical, up when they are ok or warning, unknown when the monitor could not look (a check in "
            "error) or neither check applies. Availability = up / (up + down): the measured time. Beside it, "
            "the measured share (measured / all time) and a lower bound that counts unknown time as down; "
            'under {min_share} measured the verdict is "insufficient data". Days are local days ({tz}). '
            "**Detection (MTTD)** is a bound: from the first failing sample (lower) and from the last passing "
            "sample before it (upper; the fault began in between); the verdict uses the upper bound. "
            "**Recovery (MTTR)** = first passing sample after the alert - alert; an incident still open at "
            "the period's end counts as at least (end - alert). An incident counts once, with its alerts and "
            "repairs, in the month it started. **Auto-recovery success** = incidents recovered by an "
            "automatic repair that changed something / incidents with one attempted. **Alert accuracy** "
            "counts judged alerts only: a person's label, drill ground truth (a fault of the alert's "
            "category on: true; a quiet window or another category's fault: false), or the incident closed "
            "after an automatic repair that changed something (true); other alerts are unjudged. "
            "**Coverage**: per category, the share of time with a sample fresh for 2x the interval at which "
            "that category is probed + the confirmation delay."
        ),
    },
    "ja": {
        "title": "SLAレポート {month}（{tz}）",
        "verdict": "判定: 判定できた{judged}項目中{met}項目を達成",
        "verdict_none": "判定: 判定できた項目なし",
        "not_judged": "判定できず: {items}",
        "insufficient_item": "{name}（データ不足: 測定割合 {share}）",
        "na_item": "{name}（未測定）",
        "fleet_title": "フリートSLAレポート {month}（{tz}）",
        "fleet": "フリート",
        "fleet_verdict": (
            "稼働率: {n}対象中{met}対象が目標{target}を達成。データ不足{insufficient}対象・"
            "未測定{na}対象（達成には数えません）、未達{failed}対象"
        ),
        "fleet_head": (
            "| 対象 | 稼働率 | 測定割合 | 判定 | インシデント 未解決／全体 | 検出時間（MTTD）"
            " | 復旧時間（MTTR） | レポート |"
        ),
        "fleet_note": (
            "各対象はそれぞれのレポートと同じ基準で判定します：測定できた時間に対する稼働率で、"
            "測定割合が{min_share}未満なら「データ不足」です。"
        ),
        "figure": "指標",
        "this": "今月",
        "target": "目標",
        "pass": "判定",
        "prev": "前月",
        "yes": "達成",
        "no": "未達",
        "na": "未測定",
        "insufficient": "データ不足",
        "measured": "測定できた時間の割合（今月のこれまで）",
        "lower": "稼働率の下限（不明時間を停止とみなす）",
        "judged_share": "判定できたアラート",
        "how": "指標の測り方",
        "daily": "日別稼働率",
        "response": "応答時間",
        "incidents": "インシデント",
        "alerts": "アラート精度",
        "coverage": "監視カバレッジ",
        "category": "カテゴリ",
        "by": "カテゴリ／重大度別",
        "drill_note": (
            "うち{n}件は障害訓練（サンドボックス）で注入したもの。検出・復旧・自動復旧の指標は"
            "訓練の監視間隔での値を含みます"
        ),
        "judged": "アラートの判定方法",
        "whatif": "閾値の見直し（what-if）",
        "maintenance": (
            "メンテナンス時間帯: {minutes:.0f}分（うち停止{down:.0f}分）。メンテナンス外の稼働率 {outside}。"
            "メンテナンス時間は稼働率の計算に{how}（sla.excludeMaintenance）"
        ),
        "excluded": "含めません",
        "included": "含めます",
        "whatif_head": (
            "| 設定 | アラート | 正しいと判定 | 誤検知 | 未判定 | 精度 | 見逃し（正解期間中） |"
        ),
        "of": "/",
        "not_measured": "未測定",
        "time": "時間: 稼働 {up:.1f}分、停止 {down:.1f}分、不明 {unknown:.1f}分（全 {total:.1f}分）",
        "day_table": "| 日付 | 稼働率 | 測定割合 | 停止（分） | 不明（分） |",
        "mttd": "検出時間（MTTD）{range}（最初の失敗サンプル～その前の最後の成功サンプルから；"
        "{n}件の平均）、上限のp90 {p90}",
        "unbounded": "；{n}件はデータ内に先行する成功サンプルがない（下限のみ）",
        "mttr": "復旧時間（MTTR）平均 {mean}／p90 {p90}",
        "mttr_open": "（以上：期間末に未解決の{n}件を期間末までとして算入）",
        "alerts_line": "{n}件中 正 {true}件、誤 {false}件、未判定 {unjudged}件（判定率 {share}）；"
        "判定済みアラートに対する精度 {precision}",
        "how_text": (
            "**稼働率**は時間で測ります。定期サンプルの状態は次のサンプルまで、最大{stale:.0f}秒"
            "（監視間隔{cheap:.0f}秒の2倍＋確認遅延）有効で、それを過ぎた時間は不明です。接続（H1）か"
            "API（H7）がcriticalなら停止、okかwarningなら稼働、監視側が確認できない（チェックがerror）か"
            "どちらも該当しない場合は不明です。稼働率＝稼働／（稼働＋停止）で、測定できた時間に対する割合です。"
            "あわせて測定できた時間の割合と、不明時間を停止とみなした下限を示します。測定割合が{min_share}"
            "未満なら判定は「データ不足」です。日付は{tz}の日付です。**検出時間（MTTD）**は範囲で示します："
            "最初の失敗サンプルから（下限）と、その前の最後の成功サンプルから（上限。障害はその間に始まった）。"
            "判定は上限で行います。**復旧時間（MTTR）**＝アラート後最初の成功サンプル－アラート時刻。期間末に"
            "未解決のインシデントは「以上」（期間末－アラート）として数えます。インシデントは始まった月に、"
            "そのアラートと修復とともに一度だけ数えます。**自動復旧成功率**＝実際に変更を加えた自動修復で"
            "復旧したインシデント／自動修復を試みたインシデント。**アラート精度**は判定できたアラートだけで"
            "数えます：担当者のラベル、訓練の正解記録（アラートのカテゴリの障害中なら正、静穏時間や別カテゴリ"
            "の障害中なら誤）、または変更を加えた自動修復の後にインシデントが閉じた場合（正）。それ以外は"
            "未判定です。**監視カバレッジ**：カテゴリごとに、そのカテゴリの監視間隔の2倍＋確認遅延以内の"
            "サンプルがあった時間の割合。"
        ),
    },
}
NAMES_JA = {
    "availability": "稼働率",
    "mean_response_ms": "平均応答時間",
    "error_rate": "エラー率",
    "mttd_upper_mean_s": "検出時間（MTTD）",
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


def mttd_range(f: SlaFigures) -> str:
    """Detection as its bound: "12-75 s" (lower-upper mean), ">= 12 s" without an upper."""
    if f.mttd_lower_mean_s is None:
        return "-"
    if f.mttd_upper_mean_s is None:
        return f">= {f.mttd_lower_mean_s:.0f} s"
    return f"{f.mttd_lower_mean_s:.0f}-{f.mttd_upper_mean_s:.0f} s"


def cell(key: str, f: SlaFigures | None) -> str:
    """A figure as the table shows it: detection as its bound, MTTR "at least" when open."""
    if f is None:
        return "-"
    if key == "mttd_upper_mean_s":
        return mttd_range(f)
    if key == "mttr_mean_s" and f.mttr_open_incidents and f.mttr_mean_s is not None:
        return f">= {fmt(key, f.mttr_mean_s)}"
    return fmt(key, getattr(f, key))


def _share(value: float | None, none: str = "not measured") -> str:
    """A what-if precision: "not measured" when nothing it raised could be judged."""
    return none if value is None else f"{value:.0%}"


def verdict_line(f: SlaFigures, lang: str = "en") -> str:
    """ "Verdict: 6 of 8 judged targets met; not judged: availability (insufficient data:
    2% of the month measured)": the targets left out of the count are named beside it,
    so a month the monitor barely saw never reads as a good one."""
    t = TEXT[lang]
    status = f.status()
    judged = [s for s in status.values() if s not in (NOT_MEASURED, INSUFFICIENT)]
    line = (
        t["verdict"].format(met=judged.count(PASS), judged=len(judged))
        if judged
        else t["verdict_none"]
    )
    items = []
    for key, s in status.items():
        name = NAMES_JA[key] if lang == "ja" else f.targets[key].name
        if s == INSUFFICIENT:
            share = fmt("coverage", f.measured_share if f.measured_share is not None else 0.0)
            items.append(t["insufficient_item"].format(name=name, share=share))
        elif s == NOT_MEASURED:
            items.append(t["na_item"].format(name=name))
    if items:
        line += ("；" if lang == "ja" else "; ") + t["not_judged"].format(
            items=("、" if lang == "ja" else ", ").join(items)
        )
    return line


def fleet_incidents(f: SlaFigures) -> str:
    """ "open / total" incidents of the period (open: still open at its end)."""
    return f"{f.mttr_open_incidents} / {f.incidents}"


def render_fleet(
    month: str,
    tz: str,
    rows: list[tuple[str, SlaFigures, str]],
    lang: str = "en",
) -> str:
    """The fleet section: one row per target (name, its figures, its report's relative
    path), judged with each target's own availability rule (``SlaFigures.status``);
    "insufficient data" and "not measured" are named and never counted as met."""
    t = TEXT[lang]
    verdicts = [f.status()["availability"] for _, f, _ in rows]
    words = {PASS: t["yes"], INSUFFICIENT: t["insufficient"], NOT_MEASURED: t["na"]}
    targets = {fmt("availability", f.targets["availability"].target) for _, f, _ in rows}
    min_shares = {fmt("coverage", f.min_measured_share) for _, f, _ in rows}
    out = [
        f"## {t['fleet']}",
        "",
        "**"
        + t["fleet_verdict"].format(
            met=verdicts.count(PASS),
            n=len(rows),
            target=">= " + " / ".join(sorted(targets)) if targets else "-",
            insufficient=verdicts.count(INSUFFICIENT),
            na=verdicts.count(NOT_MEASURED),
            failed=len(rows)
            - verdicts.count(PASS)
            - verdicts.count(INSUFFICIENT)
            - verdicts.count(NOT_MEASURED),
        )
        + "**",
        "",
        t["fleet_head"],
        "|---|---|---|---|---|---|---|---|",
    ]
    for (name, f, link), v in zip(rows, verdicts, strict=True):
        out.append(
            f"| {name} | {fmt('availability', f.availability)} | "
            f"{fmt('coverage', f.measured_share)} | {words.get(v, t['no'])} | "
            f"{fleet_incidents(f)} | {mttd_range(f)} | {cell('mttr_mean_s', f)} | "
            f"[{link}]({link}) |"
        )
    out += ["", t["fleet_note"].format(min_share=" / ".join(sorted(min_shares)) or "-"), ""]
    return "\n".join(out)


def render_fleet_report(
    month: str, tz: str, rows: list[tuple[str, SlaFigures, str]], lang: str = "en"
) -> str:
    """The month's fleet report: its title and the fleet section (each target's own
    report beside it, linked)."""
    t = TEXT[lang]
    return f"# {t['fleet_title'].format(month=month, tz=tz)}\n\n" + render_fleet(
        month, tz, rows, lang
    )


def render(
    month: str,
    tz: str,
    f: SlaFigures,
    prev: SlaFigures | None,
    charts: dict[str, str],
    lang: str = "en",
    whatif: list[dict[str, Any]] | None = None,
    *,
    stale_s: float = 125,
    cheap_s: float = 60,
    target: str | None = None,
) -> str:
    """The report's Markdown; ``stale_s``/``cheap_s`` only explain how it was measured;
    ``target`` (a fleet target's name) goes into the title."""
    t = TEXT[lang]
    status = f.status()
    words = {PASS: t["yes"], INSUFFICIENT: t["insufficient"], NOT_MEASURED: t["na"]}
    title = t["title"].format(month=month, tz=tz)
    out = [
        f"# {title}" if target is None else f"# {target}: {title}",
        "",
        f"**{verdict_line(f, lang)}**",
        "",
        f"| {t['figure']} | {t['this']} | {t['target']} | {t['pass']} | {t['prev']} |",
        "|---|---|---|---|---|",
    ]
    for key, goal in f.targets.items():
        name = NAMES_JA[key] if lang == "ja" else goal.name
        sign = ">=" if goal.higher_is_better else "<"
        verdict = words.get(status[key], t["no"])
        out.append(
            f"| {name} | {cell(key, f)} | {sign} {fmt(key, goal.target)} | {verdict} | {cell(key, prev)} |"
        )
        if key == "availability":
            out.append(
                f"| {t['measured']} | {fmt('coverage', f.measured_share)} | >= "
                f"{fmt('coverage', f.min_measured_share)} | - | "
                f"{fmt('coverage', prev.measured_share) if prev else '-'} |"
            )
            out.append(
                f"| {t['lower']} | {fmt('availability', f.availability_lower_bound)} | - | - | "
                f"{fmt('availability', prev.availability_lower_bound) if prev else '-'} |"
            )
        if key == "alert_precision":
            out.append(
                f"| {t['judged_share']} | {fmt('coverage', f.alert_judged_share)} | - | - | "
                f"{fmt('coverage', prev.alert_judged_share) if prev else '-'} |"
            )
    out += [
        "",
        f"## {t['how']}",
        "",
        t["how_text"].format(
            stale=stale_s, cheap=cheap_s, min_share=fmt("coverage", f.min_measured_share), tz=tz
        ),
        "",
        t["time"].format(
            up=f.up_minutes, down=f.down_minutes, unknown=f.unknown_minutes, total=f.period_minutes
        ),
        "",
        t["maintenance"].format(
            minutes=f.maintenance_minutes,
            down=f.maintenance_down_minutes,
            outside=fmt("availability", f.availability_outside_maintenance),
            how=t["excluded"] if f.maintenance_excluded else t["included"],
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
        if key == "availability" and f.daily:
            out += [t["day_table"], "|---|---|---|---|---|"]
            out += [
                f"| {d['day']} | {fmt('availability', d['availability'])} | "
                f"{fmt('coverage', d['measured'])} | {d['down_minutes']:.1f} | {d['unknown_minutes']:.1f} |"
                for d in f.daily
            ]
            out.append("")
        if key == "incidents":
            s = "mttd_upper_mean_s"
            mttd = t["mttd"].format(
                range=mttd_range(f),
                n=f.incidents,
                p90=fmt(s, f.mttd_upper_p90_s),
            )
            if f.mttd_unbounded:
                mttd += t["unbounded"].format(n=f.mttd_unbounded)
            mttr = t["mttr"].format(mean=fmt(s, f.mttr_mean_s), p90=fmt(s, f.mttr_p90_s))
            if f.mttr_open_incidents:
                mttr += t["mttr_open"].format(n=f.mttr_open_incidents)
            out += [
                f"{f.incidents} — {t['by']}: "
                + (", ".join(f"{k} {v}" for k, v in sorted(f.incidents_by.items())) or "-"),
                "",
            ]
            if f.drill_incidents:
                out += [t["drill_note"].format(n=f.drill_incidents), ""]
            out += [
                mttd,
                "",
                mttr,
                "",
            ]
        if key == "alerts":
            out += [
                t["alerts_line"].format(
                    true=f.alerts_true,
                    false=f.alerts_false,
                    unjudged=f.alerts_unjudged,
                    n=f.alerts,
                    share=fmt("coverage", f.alert_judged_share),
                    precision=fmt("alert_precision", f.alert_precision)
                    if f.alert_precision is not None
                    else t["na"],
                ),
                "",
                f"{t['judged']}: "
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
            t["whatif_head"],
            "|---|---|---|---|---|---|---|",
        ]
        out += [
            f"| {w['name']} | {w['alerts']} | {w['judged_true']} | {w['false_positives']}"
            f" | {w['unjudged']} | {_share(w.get('precision'), t['not_measured'])}"
            f" | {w['missed']} {t['of']} {w['truth_windows']} |"
            for w in whatif
        ]
    return "\n".join(out) + "\n"
