"""The monthly SLA report: ``westep-ops trends``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from westep_ops.cli.common import _cfg, _env, _separate_store, _table
from westep_ops.cli.status import pick_targets, target_options
from westep_ops.errors import WestepError
from westep_ops.redact import redact
from westep_ops.targets import DEFAULT_TARGET

if TYPE_CHECKING:
    from westep_ops.monitoring.sla import MonthlyReport


def _month(ctx: click.Context, param: click.Parameter, value: str) -> str:
    from westep_ops.monitoring.sla import check_month

    return check_month(value)  # before the store is opened; one error: line, exit 2


@click.command("trends")
@click.option(
    "--month",
    required=True,
    callback=_month,
    help="Month to analyse, YYYY-MM exactly, e.g. 2026-11 (configured time zone).",
)
@click.option(
    "--thresholds",
    "thresholds",
    default=None,
    help="JSON file of alternative alert settings (what-if).",
)
@click.option(
    "--lang",
    type=click.Choice(["en", "ja"]),
    default=None,
    help="Report language (default: reportLanguage).",
)
@click.option(
    "--reports-dir",
    envvar="WESTEP_OPS_REPORTS_DIR",
    default="reports",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Where the month's folder is written (or $WESTEP_OPS_REPORTS_DIR).",
)
@target_options
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@click.pass_context
def trends_cmd(
    ctx: click.Context,
    month: str,
    thresholds: str | None,
    lang: str | None,
    reports_dir: str,
    target_names: tuple[str, ...],
    tags: tuple[str, ...],
    as_json: bool,
) -> None:
    """Monthly SLA report: write reports/YYYY-MM/sla-report.md (.ja.md) with its charts.

    Availability (gaps never count as up), response time, error rate, incidents, MTTD,
    MTTR, auto-recovery success, alert precision and false positives, coverage; each
    against its target and the month before. --thresholds replays alerting over the
    stored samples under other settings and compares alerts, false positives and misses.

    With a fleet (the config's targets; --target/--tag pick some, default all): each
    target's report in reports/YYYY-MM/TARGET/ from its own history and effective config,
    and reports/YYYY-MM/fleet-report.md with one row per target (availability, measured
    share, verdict, incidents open/total, MTTD, MTTR); a target with too little measured
    time says "insufficient data" and is never counted as met.
    Exit code 0, 2 on bad input (config, month, a month not begun, thresholds file,
    unknown target), 3 ops store unavailable.
    """
    from westep_ops.monitoring import sla as monthly
    from westep_ops.monitoring.history import HistoryStore, HistoryUnavailable

    env, config = _env(), _cfg(ctx)
    chosen = pick_targets(ctx, target_names, tags)
    monthly.parse_settings(thresholds, config)  # a bad file is refused before the store
    store = HistoryStore(env.require("storage_url"))
    _separate_store(env)
    try:
        fleet = monthly.build_fleet(
            store,
            month,
            [(t.name, t.config) for t in chosen],
            lang=lang or config.report_language,
            thresholds=thresholds,
            reports_dir=Path(reports_dir),
        )
    except HistoryUnavailable as e:
        raise WestepError(f"ops store unavailable: {redact(e)}", exit_code=3) from None
    finally:
        store.close()
    if fleet.path is None:  # the one target of a config without targets: as before
        _single(fleet.reports[DEFAULT_TARGET], as_json)
        return
    if as_json:
        click.echo(json.dumps(fleet.as_json(), indent=2, default=str))
        return
    click.echo(fleet.path.read_text())
    for name, report in fleet.reports.items():
        click.echo(f"{name}: {report.path}")
    click.echo(f"fleet report: {fleet.path}")


def _single(report: MonthlyReport, as_json: bool) -> None:
    """One target's report as ``trends`` printed it before targets existed."""
    if as_json:
        click.echo(
            json.dumps(
                {
                    "report": str(report.path),
                    "figures": report.figures.as_dict(),
                    "verdicts": report.figures.verdicts(),
                    "whatif": report.whatif,
                },
                indent=2,
                default=str,
            )
        )
        return
    click.echo(report.path.read_text().split("\n## ")[0])
    if report.whatif:
        click.echo(
            _table(
                [
                    [
                        w["name"],
                        str(w["alerts"]),
                        str(w["judged_true"]),
                        str(w["false_positives"]),
                        str(w["unjudged"]),
                        f"{w['missed']} of {w['truth_windows']}",
                    ]
                    for w in report.whatif
                ],
                ["settings", "alerts", "real", "false positives", "unjudged", "missed"],
            )
        )
    click.echo(f"report: {report.path}")
