"""The monthly SLA report: ``westep-ops trends``."""

from __future__ import annotations

import json
from pathlib import Path

import click

from westep_ops.cli.common import _cfg, _env, _separate_store, _table
from westep_ops.errors import WestepError
from westep_ops.redact import redact
from westep_ops.targets import DEFAULT_TARGET


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
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@click.pass_context
def trends_cmd(
    ctx: click.Context,
    month: str,
    thresholds: str | None,
    lang: str | None,
    reports_dir: str,
    as_json: bool,
) -> None:
    """Monthly SLA report: write reports/YYYY-MM/sla-report.md (.ja.md) with its charts.

    Availability (gaps never count as up), response time, error rate, incidents, MTTD,
    MTTR, auto-recovery success, alert precision and false positives, coverage; each
    against its target and the month before. --thresholds replays alerting over the
    stored samples under other settings and compares alerts, false positives and misses.
    Exit code 0, 2 on bad input (config, month, a month not begun, thresholds file), 3 ops
    store unavailable.
    """
    from westep_ops.monitoring import sla as monthly
    from westep_ops.monitoring.history import HistoryStore, HistoryUnavailable

    env, config = _env(), _cfg(ctx)
    monthly.parse_settings(thresholds, config)  # a bad file is refused before the store
    store = HistoryStore(env.require("storage_url"))
    _separate_store(env)
    try:
        report = monthly.build(
            store,
            config,
            month,
            target=DEFAULT_TARGET,
            lang=lang or config.report_language,
            thresholds=thresholds,
            reports_dir=Path(reports_dir),
        )
    except HistoryUnavailable as e:
        raise WestepError(f"ops store unavailable: {redact(e)}", exit_code=3) from None
    finally:
        store.close()
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
