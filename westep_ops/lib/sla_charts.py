"""The monthly SLA report's four PNG charts, drawn so an SRE can read them.

What each chart plots (the shared day axis, bars, target lines, incident marks, counts)
is computed by ``sla_chart_data.py``; the functions here only read that data and draw
it. Matplotlib's Agg backend is used; labels are English.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from westep_ops.lib.sla import SlaFigures
from westep_ops.lib.sla_chart_data import chart_data

if TYPE_CHECKING:  # matplotlib is imported where a chart is drawn
    from matplotlib.artist import Artist

GREEN, RED, ORANGE, GREY, DARK = "#2a9d8f", "#e76f51", "#f4a261", "#bdbdbd", "#9b2226"


def _day_ticks(ax: Any, axis: dict[str, Any]) -> None:
    n = len(axis["days"])
    step = max(1, math.ceil(n / 31))
    ax.set_xticks([i + 0.5 for i in range(0, n, step)], axis["labels"][::step], fontsize=7)
    ax.set_xticks(range(n + 1), minor=True)
    ax.tick_params(axis="x", which="major", length=0)
    ax.tick_params(axis="x", which="minor", length=3)
    ax.set_xlim(0, n)
    ax.set_xlabel(axis["xlabel"], fontsize=8)


def _future(ax: Any, axis: dict[str, Any]) -> None:
    end, n = axis["period_end"], len(axis["days"])
    if end < n:
        ax.axvspan(end, n, color="#f6f6f6", zorder=0, linewidth=0)
        ax.text(
            (end + n) / 2 if n - end > 3 else n - 0.1,
            0.5,
            "after period end",
            transform=ax.get_xaxis_transform(),
            ha="center" if n - end > 3 else "right",
            va="center",
            fontsize=7,
            color="#999999",
        )


def draw_availability(data: dict[str, Any]) -> Any:
    """Lost availability hangs down from 100%: the worse the day, the longer its bar."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    fig, ax = plt.subplots(figsize=(7.5, 2.8))
    low, high = data["ylim"]
    ax.set_ylim(low, high)
    _future(ax, data["axis"])
    seen: set[str] = set()
    for b in data["bars"]:
        if b["state"] == "future":
            continue
        if b["state"] == "no data":
            ax.bar(
                b["x"],
                high - low,
                bottom=low,
                width=0.8,
                color="white",
                edgecolor=GREY,
                hatch="///",
                linewidth=0.5,
                zorder=1,
            )
            seen.add("no data")
            continue
        color = GREEN if b["state"] == "met" else RED
        seen.add(b["state"])
        seen.update(["partial"] if b["partial"] else [])
        ax.bar(
            b["x"],
            b["shown"] - 100,
            bottom=100,
            width=0.8,
            color=color,
            alpha=0.5 if b["partial"] else 1.0,
            zorder=2,
        )
        ax.plot(
            b["x"],
            b["shown"],
            marker="_",
            markersize=7,
            markeredgewidth=2.5,
            color=color,
            markerfacecolor="white",
            zorder=3,
            clip_on=False,
        )
        if b["clipped"]:
            ax.plot(b["x"], low, marker="v", color=DARK, markersize=7, clip_on=False, zorder=5)
        parts = [f"{b['value']:.2f}%"] if b["state"] == "missed" else []
        if b["partial"] and b["measured"] is not None:
            parts.append(f"{b['measured']:.0%} measured")
        if parts:
            # Below the bar's end when there is room, else inside the (long) bar.
            room = b["shown"] - low > (high - low) * 0.45
            inside = not room and b["state"] == "missed" and not b["partial"]
            ax.text(
                b["x"],
                b["shown"] - (high - low) * 0.03 if room else low + (high - low) * 0.12,
                ", ".join(parts),
                rotation=90,
                ha="center",
                va="top" if room else "bottom",
                fontsize=6,
                color="white" if inside else DARK if b["state"] == "missed" else "#555555",
                zorder=4,
            )
    ax.axhline(data["target"], color="black", linestyle="--", linewidth=1, zorder=3)
    ax.yaxis.set_major_formatter(lambda v, _pos: f"{v:.1f}%")
    ax.tick_params(axis="y", labelsize=7)
    _day_ticks(ax, data["axis"])
    handles: list[Artist] = [
        Line2D([], [], color="black", linestyle="--", label=f"target {data['target']:g}%")
    ]
    legend = {
        "met": Patch(color=GREEN, label="met"),
        "missed": Patch(color=RED, label="below target"),
        "partial": Patch(color=GREY, label="partly measured (pale)"),
        "no data": Patch(facecolor="white", edgecolor=GREY, hatch="///", label="no data"),
    }
    handles += [p for k, p in legend.items() if k in seen]
    if any(b["clipped"] for b in data["bars"]):
        handles.append(
            Line2D([], [], marker="v", color=DARK, linestyle="", label=f"below {low:g}%")
        )
    ax.legend(
        handles=handles,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.2),
        ncol=6,
        fontsize=7,
        frameon=False,
    )
    title = "availability per day (of the time measured)"
    if all(b["value"] is None for b in data["bars"]):
        title += ": nothing measured"
    if data["down_minutes"] is not None and data["budget_minutes"]:
        title += (
            f": {data['down_minutes']:.1f} min down, error budget {data['budget_minutes']:.1f} min"
        )
    ax.set_title(title, fontsize=9)
    return fig


def draw_response(data: dict[str, Any]) -> Any:
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    fig, ax = plt.subplots(figsize=(7.5, 2.8))
    ax.set_yscale(data["yscale"])
    ax.set_ylim(*data["ylim"])
    _future(ax, data["axis"])
    have = [d for d in data["days"] if d["p50"] is not None]
    ax.vlines(
        [d["x"] for d in have],
        [d["p50"] for d in have],
        [d["p95"] for d in have],
        color="#8ecae6",
        linewidth=3,
    )
    # NaN on the days without data breaks the lines there instead of bridging the gap.
    xs = [d["x"] for d in data["days"]]
    for key, marker, color in (("p95", "^", RED), ("p50", "o", "#264653")):
        ys = [math.nan if d[key] is None else d[key] for d in data["days"]]
        ax.plot(xs, ys, marker=marker, color=color, markersize=4, linewidth=1, label=key)
    for d in data["days"]:
        if d["state"] == "no data":
            ax.axvspan(
                d["x"] - 0.4,
                d["x"] + 0.4,
                facecolor="white",
                edgecolor=GREY,
                hatch="///",
                linewidth=0.5,
                zorder=0,
            )
    ax.axhline(data["target"], color="black", linestyle="--", linewidth=1)
    ax.set_ylabel("API response, ms", fontsize=8)
    ax.tick_params(axis="y", labelsize=7)
    _day_ticks(ax, data["axis"])
    handles = [
        Line2D([], [], color="black", linestyle="--", label=f"target {data['target'] / 1000:g} s"),
        *ax.get_legend_handles_labels()[0],
    ]
    if any(d["state"] == "no data" for d in data["days"]):
        from matplotlib.patches import Patch

        handles.append(Patch(facecolor="white", edgecolor=GREY, hatch="///", label="no data"))
    ax.legend(handles=handles, loc="upper right", fontsize=7, ncol=len(handles))
    if not have:
        ax.text(
            0.5,
            0.5,
            "no response samples in this period",
            transform=ax.transAxes,
            ha="center",
            va="center",
            fontsize=8,
            color="#444444",
            bbox={"facecolor": "white", "edgecolor": "none"},
        )
    ax.set_title("API response time per day: p50 and p95 of the samples", fontsize=9)
    return fig


def draw_incidents(data: dict[str, Any]) -> Any:
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    marks = data["shown"]
    fig, ax = plt.subplots(figsize=(7.5, 1.3 + 0.3 * max(1, len(marks))))
    n = data["xlim"][1]
    _future(ax, data["axis"])
    for row, m in enumerate(marks):
        if m["x1"] - m["x0"] < data["min_width"]:
            # Too short to split: one mark of the minimum width.
            ax.barh(
                row,
                m["width"],
                left=m["left"],
                height=0.6,
                color="white" if m["open"] else RED,
                edgecolor=DARK,
                hatch="///" if m["open"] else None,
                linewidth=0.6,
            )
        else:
            ax.barh(row, m["detect"] - m["x0"], left=m["x0"], height=0.6, color=ORANGE)
            ax.barh(
                row,
                m["x1"] - m["detect"],
                left=m["detect"],
                height=0.6,
                color="white" if m["open"] else RED,
                edgecolor=RED,
                hatch="///" if m["open"] else None,
                linewidth=0.6,
            )
        end = m["left"] + m["width"]
        if m["open"]:
            ax.plot(end, row, marker=">", color=DARK, markersize=6, clip_on=False)
        right = end < n * 0.7
        ax.text(
            end + n * (0.02 if m["open"] else 0.01) if right else m["left"] - n * 0.01,
            row,
            m["text"],
            ha="left" if right else "right",
            va="center",
            fontsize=7,
        )
    ax.set_yticks(range(len(marks)), [m["label"] for m in marks], fontsize=7)
    ax.set_ylim(len(marks) - 0.5 if marks else 0.5, -0.5)
    _day_ticks(ax, data["axis"])
    ax.grid(axis="x", which="minor", color="#eeeeee", linewidth=0.5)
    total = len(data["marks"])
    if not marks:
        ax.set_yticks([])
        ax.text(
            0.5,
            0.75,
            "no incidents in this period",
            transform=ax.transAxes,
            ha="center",
            va="center",
            fontsize=8,
            color="#666666",
        )
    else:
        split = any(m["x1"] - m["x0"] >= data["min_width"] for m in marks)
        legend = (
            [
                Patch(color=ORANGE, label="start to alert"),
                Patch(color=RED, label="alert to recovery"),
            ]
            if split
            else [Patch(color=RED, label="start to recovery")]
        )
        if any(m["open"] for m in marks):
            legend.append(Patch(facecolor="white", edgecolor=RED, hatch="///", label="still open"))
        ax.legend(
            handles=legend,
            loc="lower right",
            bbox_to_anchor=(1.0, 1.0),
            ncol=3,
            fontsize=7,
            frameon=False,
        )
    shown = f" (latest {len(marks)} shown)" if len(marks) < total else ""
    ax.set_title(f"incidents: {total}{shown}", fontsize=9, loc="left")
    return fig


def draw_alerts(data: dict[str, Any]) -> Any:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 2.6))
    bars = ax.bar(data["labels"], data["counts"], color=[GREEN, RED, GREY], width=0.6)
    ax.bar_label(bars, fontsize=8)
    ax.set_ylim(*data["ylim"])
    ax.set_yticks(data["yticks"])
    ax.tick_params(labelsize=8)
    ax.set_ylabel("opened alerts", fontsize=8)
    prec = data["precision"]
    judged = data["counts"][0] + data["counts"][1]
    total = sum(data["counts"])
    title = ("precision not measured" if prec is None else f"precision {prec:.0%}") + (
        f" ({judged} of {total} alerts judged)" if total else ": no alert opened in this period"
    )
    ax.set_title(title, fontsize=9)
    return fig


def charts(
    f: SlaFigures,
    performance: pd.DataFrame,
    incidents: pd.DataFrame,
    folder: Path,
    tz: str,
    *,
    availability_target: float = 0.999,
    response_target_ms: float = 2000,
    min_measured_share: float = 0.9,
) -> dict[str, str]:
    """Write availability.png, response.png, incidents.png and alerts.png into ``folder``.

    Returns {name: file name}.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = chart_data(
        f,
        performance,
        incidents,
        tz,
        availability_target=availability_target,
        response_target_ms=response_target_ms,
        min_measured_share=min_measured_share,
    )
    folder.mkdir(parents=True, exist_ok=True)
    made: dict[str, str] = {}
    for name, draw in (
        ("availability", draw_availability),
        ("response", draw_response),
        ("incidents", draw_incidents),
        ("alerts", draw_alerts),
    ):
        fig = draw(data[name])
        fig.savefig(folder / f"{name}.png", dpi=90, bbox_inches="tight")
        plt.close(fig)
        made[name] = f"{name}.png"
    return made
